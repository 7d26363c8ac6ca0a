"""The filter step: a filter says why a record goes; the base batches, counts, times and writes the decisions.

A filter implements `drop(record)` (or `drop_batch(records)` when it decides many records at once: vectorised
hashing, embedding, index search) and returns a `Drop` with the reason, or None to keep the record. Everything
else is done here once: `Filter.verdicts` batches the records and counts and times the verdicts, `decision`
turns a verdict into the decision the log stores, and the executors (`run_filters` below for records in memory,
`ballast.curate.stream` for a Parquet pool read in chunks) run the same filter objects in order over the records
still kept, so a record gets the same decisions on either path.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rich.progress import Progress

from ballast.records import Record
from ballast.stages import decision_stage


@dataclass(frozen=True)
class Drop:
    reason: str
    rule_id: str | None = None
    score: float | None = None
    duplicate_of: str | None = None


@dataclass
class StageCount:
    decided: int = 0
    kept: int = 0
    dropped: int = 0
    seconds: float = 0.0


def decision(stage: str, verdict: Drop | None) -> dict:
    """The decision a verdict becomes: kept with "passed", or dropped with the verdict's reason and details."""
    if verdict is None:
        return {"stage": stage, "kept": True, "reason": "passed", "rule_id": None, "score": None, "duplicate_of": None}
    return {
        "stage": stage,
        "kept": False,
        "reason": verdict.reason,
        "rule_id": verdict.rule_id,
        "score": verdict.score,
        "duplicate_of": verdict.duplicate_of,
    }


class Filter:
    """Subclasses implement `drop(record)` or `drop_batch(records)`. Filters that compare records see them in order
    and may keep state: within a batch an earlier record counts as earlier, exactly as one at a time."""

    name: str = "filter"
    batch_size: int = 20_000  # records per drop_batch call
    concurrent: bool = False  # its work leaves the GIL: a chunked run may overlap it with the filters before it

    @property
    def stage(self) -> str:
        return decision_stage("curate", self.name)

    def drop(self, record: Record) -> Drop | None:
        return self.drop_batch([record])[0]

    def drop_batch(self, records: Sequence[Record]) -> list[Drop | None]:
        """One verdict per record (all still kept), in order."""
        return [self.drop(r) for r in records]

    def prepare(self, instructions: Iterable[str]) -> None:
        """Optional: see the instructions to come before the first verdict (to order an index, say)."""

    def run(self, records: Iterable[Record]) -> dict[str, StageCount]:
        """This filter alone over the records, in memory (the executor below, without a progress bar)."""
        return run_filters([self], list(records), progress=False)

    def verdicts(self, records: Sequence[Record], count: StageCount, advance: object = None) -> list[Drop | None]:
        """Verdicts on `records` (all still kept) in batches of `batch_size`, counted and timed into `count`;
        `advance(n)`, when given, is told how many records each batch decided."""
        start = time.perf_counter()
        out: list[Drop | None] = []
        for at in range(0, len(records), self.batch_size):
            batch = records[at : at + self.batch_size]
            verdicts = self.drop_batch(batch)
            if len(verdicts) != len(batch):
                raise ValueError(f"{self.name}: {len(verdicts)} verdicts for {len(batch)} records")
            out += verdicts
            if advance is not None:
                advance(len(batch))
        count.seconds += time.perf_counter() - start
        count.decided += len(records)
        count.dropped += sum(v is not None for v in out)
        count.kept = count.decided - count.dropped
        return out


def run_filters(filters: Sequence[Filter], records: Sequence[Record], progress: bool = True) -> dict[str, StageCount]:
    """The in-memory executor: each filter in order over the records it has not dropped yet; the decisions go onto
    the records. Returns the count per filter stage."""
    counts = {f.stage: StageCount() for f in filters}
    with Progress(transient=True, disable=not progress) as bar:
        for f in filters:
            alive = [r for r in records if r.kept]
            f.prepare(r.instruction for r in alive)
            task = bar.add_task(f"curate: {f.name}", total=len(alive))
            verdicts = f.verdicts(alive, counts[f.stage], advance=lambda n, task=task: bar.advance(task, n))
            for record, verdict in zip(alive, verdicts, strict=True):
                record.decide(**decision(f.stage, verdict))
    return counts
