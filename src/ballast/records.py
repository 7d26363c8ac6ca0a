"""The one record type: an instruction/response pair with its full provenance and every decision on it."""

from __future__ import annotations

import hashlib
import json
from enum import Enum

from pydantic import BaseModel, ConfigDict, Field


class Source(str, Enum):
    human = "human"
    self_instruct = "self_instruct"
    evol = "evol"
    paraphrase = "paraphrase"
    template = "template"
    contrastive = "contrastive"
    imported = "imported"


class ModelRef(BaseModel):
    """Which model wrote something: a name and the sha256 of the exact weights file (None for a
    remote server whose weights we cannot hash and the user did not pin)."""

    model_config = ConfigDict(frozen=True)
    name: str
    sha256: str | None = None


class Decision(BaseModel):
    """One stage's verdict on a record. A dropped record keeps every decision that led there."""

    stage: str
    kept: bool
    reason: str
    rule_id: str | None = None
    score: float | None = None
    duplicate_of: str | None = None


def content_id(instruction: str, input: str, output: str) -> str:
    """Stable id from the text alone: the same pair gets the same id in every run and on every machine."""
    payload = json.dumps([instruction, input, output], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:20]


class Record(BaseModel):
    id: str = ""
    instruction: str
    input: str = ""
    output: str = ""
    source: Source
    parent_ids: list[str] = []
    round: int = 0
    generator: ModelRef | None = None
    template_id: str | None = None
    template_sha256: str | None = None
    decoding: dict[str, float | int | str | None] = {}
    policy_version: str | None = None
    slice: str | None = None
    rules: list[str] = []
    audience: str | None = None  # "customer" when the output is a draft to send, else "agent"
    weight: float = 1.0
    scores: dict[str, float] = {}
    decisions: list[Decision] = []
    meta: dict[str, str] = Field(default_factory=dict)  # user columns carried through import, seed refs

    def model_post_init(self, _context: object) -> None:
        if not self.id:
            self.id = content_id(self.instruction, self.input, self.output)

    @property
    def kept(self) -> bool:
        """A record is in the data while no decision has dropped it."""
        return all(d.kept for d in self.decisions)

    def decide(self, stage: str, kept: bool, reason: str, **details: object) -> Record:
        self.decisions.append(Decision(stage=stage, kept=kept, reason=reason, **details))
        return self


def record_text(record: Record) -> str:
    """The text a duplicate is judged on (and an embedding is made of): the whole example, as trained on."""
    return f"{record.instruction}\n{record.input}\n{record.output}"
