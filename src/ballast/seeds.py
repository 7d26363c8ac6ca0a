"""The human seed set: loading, checking against the policy, and the held-out split."""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ballast.errors import InputError
from ballast.jsonl import read_jsonl
from ballast.policy.schema import Policy
from ballast.records import Record, Source


class SeedLine(BaseModel):
    """One line of a seed JSONL file, as a person writes it."""

    model_config = ConfigDict(extra="forbid")
    ref: str = Field(min_length=1)
    instruction: str = Field(min_length=1)
    input: str = ""
    output: str = Field(min_length=1)
    audience: Literal["customer", "agent"]
    rules: list[str]
    slice: str = Field(min_length=1)  # one of the policy's slices


class ProbeLine(SeedLine):
    """A generalisation probe: a paraphrase of a held-out prompt or an adversarial prompt, with a reference."""

    probe: Literal["paraphrase", "adversarial"]
    source_ref: str | None = None
    slice: Literal["paraphrase", "adversarial"]  # type: ignore[assignment]


@dataclass(frozen=True)
class SeedSplit:
    train: list[Record]
    heldout: list[Record]

    @property
    def heldout_ids(self) -> frozenset[str]:
        return frozenset(r.id for r in self.heldout)


def load_seeds(path: str | Path, policy: Policy, line_model: type[SeedLine] = SeedLine) -> list[Record]:
    """Read a seed (or probe) JSONL file into human records; unknown rule ids and repeated refs are input errors."""
    path = Path(path)
    records: list[Record] = []
    refs: dict[str, int] = {}
    for line, seed in read_jsonl(line_model, path):
        unknown = [r for r in seed.rules if r not in policy.by_id]
        if unknown:
            raise InputError(
                f"unknown rule ids {unknown}; expected ids from {policy.policy_id}", file=path, line=line, field="rules"
            )
        if policy.slices and line_model is SeedLine and seed.slice not in policy.slices:
            raise InputError(
                f"Input should be one of the policy's slices {policy.slices}, not {seed.slice!r}",
                file=path,
                line=line,
                field="slice",
            )
        if seed.ref in refs:
            raise InputError(
                f"ref {seed.ref!r} already used on line {refs[seed.ref]}", file=path, line=line, field="ref"
            )
        refs[seed.ref] = line
        records.append(
            Record(
                instruction=seed.instruction,
                input=seed.input,
                output=seed.output,
                source=Source.human,
                policy_version=policy.policy_id,
                slice=seed.slice,
                rules=seed.rules,
                audience=seed.audience,
                meta={"ref": seed.ref, **({"probe": seed.probe} if isinstance(seed, ProbeLine) else {})},
            )
        )
    if not records:
        raise InputError("the seed file holds no examples", file=path)
    return records


def _rank_key(record: Record, salt: str) -> str:
    return hashlib.sha256(f"{salt}:{record.meta['ref']}".encode()).hexdigest()


def split_heldout(seeds: list[Record], fraction: float, salt: str = "heldout") -> SeedSplit:
    """Deterministic split stratified by slice: in each slice, the ceil(fraction * n) records with the
    lowest salted hash of their ref are held out. The order of the file does not matter."""
    by_slice: dict[str, list[Record]] = defaultdict(list)
    for r in seeds:
        by_slice[r.slice or ""].append(r)
    heldout_refs: set[str] = set()
    for members in by_slice.values():
        ranked = sorted(members, key=lambda r: _rank_key(r, salt))
        heldout_refs.update(r.meta["ref"] for r in ranked[: math.ceil(fraction * len(members))])
    return SeedSplit(
        train=[r for r in seeds if r.meta["ref"] not in heldout_refs],
        heldout=[r for r in seeds if r.meta["ref"] in heldout_refs],
    )
