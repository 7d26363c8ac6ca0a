"""YAML loading that keeps line numbers, so schema errors point at the line to fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from ballast.errors import InputError

M = TypeVar("M", bound=BaseModel)


def line_of(node: yaml.Node | None, loc: tuple[int | str, ...]) -> int | None:
    """Walk the composed YAML tree along a pydantic error location; return a 1-based line: the line of the
    deepest key found (a section's own line, not its first entry's), or of the list item."""
    line = node.start_mark.line + 1 if node is not None else None
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            entry = next(((k, v) for k, v in node.value if k.value == key), None)
            mark, child = (entry[0].start_mark, entry[1]) if entry else (None, None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            child = node.value[key]
            mark = child.start_mark
        else:
            child = None
        if child is None:
            break
        node = child
        line = mark.line + 1
    return line


def format_loc(loc: tuple[int | str, ...]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else str(p)) for i, p in enumerate(loc))


def load_yaml(path: Path) -> tuple[Any, yaml.Node | None]:
    text = Path(path).read_text(encoding="utf-8")
    try:
        return yaml.safe_load(text), yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise InputError(
            f"not valid YAML: {getattr(exc, 'problem', exc)}", file=path, line=mark.line + 1 if mark else None
        ) from None


def validate(model: type[M], data: Any, *, file: Path, node: yaml.Node | None = None) -> M:
    """Validate data against a pydantic model; the first error becomes an InputError with file, line, field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        more = f" (and {exc.error_count() - 1} more errors)" if exc.error_count() > 1 else ""
        raise InputError(
            f"{err['msg']}{more}", file=file, line=line_of(node, loc), field=format_loc(loc) or None
        ) from None


def load_model(model: type[M], path: Path) -> M:
    data, node = load_yaml(path)
    return validate(model, data, file=path, node=node)
