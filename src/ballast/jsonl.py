"""Line-by-line JSONL reading that validates each line and says which line and field is wrong."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from ballast.errors import InputError
from ballast.yamlio import format_loc

M = TypeVar("M", bound=BaseModel)


def parse_line(model: type[M], text: str, *, file: Path, line: int) -> M:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON: {exc.msg} at column {exc.colno}", file=file, line=line) from None
    if not isinstance(data, dict):
        raise InputError(f"expected a JSON object, got {type(data).__name__}", file=file, line=line)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise InputError(err["msg"], file=file, line=line, field=format_loc(tuple(err["loc"])) or None) from None


def read_jsonl(model: type[M], path: Path) -> Iterator[tuple[int, M]]:
    """Yield (line number, parsed model) for every non-blank line; the first bad line raises InputError."""
    with open(path, encoding="utf-8") as fh:
        for n, text in enumerate(fh, start=1):
            if text.strip():
                yield n, parse_line(model, text, file=path, line=n)
