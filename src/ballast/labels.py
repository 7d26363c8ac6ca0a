"""Spot-check labels: records of the pool read and labelled by a person (labels/GUIDE.md), the set curation is
measured on. The sample and its blind split are fixed by record ids, so a relabelled or extended sample keeps
every earlier record's split."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ballast.errors import InputError
from ballast.records import Record

PROBLEMS = (
    "bad_instruction",
    "incoherent",
    "truncated",
    "off_task",
    "role",
    "ungrounded",
    "violation",
    "casual",
    "duplicate",
)


def split_of(record_id: str) -> Literal["tune", "blind"]:
    """`blind` for about 5 in 16 ids: nothing is tuned on them, and they are not read while tuning."""
    return "blind" if int(hashlib.sha256(f"blind:{record_id}".encode()).hexdigest()[0], 16) < 5 else "tune"


def sample_order(records: Sequence[Record]) -> list[Record]:
    """The pool in the order the sample draws it: by a hash of the id, so the first N are a uniform sample and
    the first N + M contain the first N."""
    return sorted(records, key=lambda r: hashlib.sha256(f"sample:{r.id}".encode()).digest())


class Label(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1)
    usable: bool
    problems: list[Literal[PROBLEMS]] = []  # type: ignore[valid-type]
    rules: list[str] = []
    span: str = ""
    duplicate_of: str | None = None
    note: str = ""
    split: Literal["tune", "blind"]
    labeller: str = ""

    def consistent(self) -> str | None:
        """Why the label contradicts itself, or None."""
        if self.usable and self.problems:
            return f"usable but lists problems {self.problems}"
        if not self.usable and not self.problems:
            return "not usable but lists no problem"
        if self.split != split_of(self.id):
            return f"split is {self.split!r} but the id's hash puts it in {split_of(self.id)!r}"
        if "duplicate" in self.problems and not self.duplicate_of:
            return "a duplicate must name duplicate_of"
        return None


def load_labels(path: Path) -> dict[str, Label]:
    """Labels by record id; a bad line stops with the file, line and field."""
    labels: dict[str, Label] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            label = Label.model_validate_json(line)
        except ValidationError as exc:  # a line that is not JSON lands here too, with no field
            err = exc.errors()[0]
            raise InputError(err["msg"], file=path, line=n, field=".".join(map(str, err["loc"]))) from None
        problem = label.consistent()
        if problem:
            raise InputError(problem, file=path, line=n, field="id")
        if label.id in labels:
            raise InputError(f"record {label.id} is labelled twice", file=path, line=n, field="id")
        labels[label.id] = label
    return labels
