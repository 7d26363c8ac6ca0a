"""The filter step: a filter says why a record goes; the base applies it and writes the decisions."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rich.progress import track

from ballast.records import Record


@dataclass(frozen=True)
class Drop:
    reason: str
    rule_id: str | None = None
    score: float | None = None
    duplicate_of: str | None = None


class Filter:
    """Subclasses implement `drop(record)`; filters that compare records see them in order and may keep state."""

    name: str = "filter"

    def drop(self, record: Record) -> Drop | None:
        raise NotImplementedError

    def run(self, records: Iterable[Record]) -> None:
        """Decide on every record that is still kept; dropped ones are skipped but keep their reason."""
        stage = f"curate.{self.name}"
        for record in track(list(records), description=f"curate: {self.name}", transient=True):
            if not record.kept:
                continue
            verdict = self.drop(record)
            if verdict is None:
                record.decide(stage, True, "passed")
            else:
                record.decide(stage, False, verdict.reason, rule_id=verdict.rule_id, score=verdict.score,
                              duplicate_of=verdict.duplicate_of)


class BatchFilter(Filter):
    """A filter that decides many records at once (vectorised hashing, embedding, index search). Records in a
    batch are still decided in order: an earlier record of the same batch counts as earlier, exactly as with
    `Filter.run`. `drop_batch` sees only records that are still kept and returns one verdict per record."""

    batch_size: int = 20_000

    def drop_batch(self, records: Sequence[Record]) -> list[Drop | None]:
        raise NotImplementedError

    def drop(self, record: Record) -> Drop | None:
        return self.drop_batch([record])[0]

    def run(self, records: Iterable[Record]) -> None:
        stage = f"curate.{self.name}"
        alive = [r for r in records if r.kept]
        for start in range(0, len(alive), self.batch_size):
            batch = alive[start:start + self.batch_size]
            for record, verdict in zip(batch, self.drop_batch(batch), strict=True):
                if verdict is None:
                    record.decide(stage, True, "passed")
                else:
                    record.decide(stage, False, verdict.reason, rule_id=verdict.rule_id, score=verdict.score,
                                  duplicate_of=verdict.duplicate_of)
