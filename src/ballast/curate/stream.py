"""Curating a pool too large to hold as Record objects: read Parquet in chunks, run the filters over each chunk in
order, append every record (with its new decisions) and every decision to Parquet as each chunk finishes.

Memory holds one chunk plus what the filters must remember about kept records (hashes, MinHash signatures,
the novelty index, vectors), so it grows with the kept pool's summaries, not with its text. The filters are the
same objects the in-memory pipeline uses; a record here gets the same decisions it would get there.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from rich.progress import Progress

from ballast.curate.base import Filter, StageCount, decision
from ballast.errors import InputError
from ballast.policy.schema import Policy
from ballast.recipe import CurateConfig
from ballast.records import Record, Source, content_id
from ballast.store import DECISION_SCHEMA, RECORD_SCHEMA

_DECISIONS_TYPE = RECORD_SCHEMA.field("decisions").type


@dataclass
class StreamReport:
    records_in: int = 0
    kept: int = 0
    dropped: int = 0
    seconds: float = 0.0
    peak_rss_mb: float = 0.0
    stages: dict[str, StageCount] = field(default_factory=dict)
    models: dict[str, dict] = field(default_factory=dict)  # stage -> the model it used (name, sha256)

    def as_dict(self) -> dict:
        return {
            "records_in": self.records_in,
            "records_out": self.records_in,
            "kept": self.kept,
            "dropped": self.dropped,
            "seconds": round(self.seconds, 2),
            "peak_rss_mb": round(self.peak_rss_mb),
            "stages": {k: vars(v) | {"seconds": round(v.seconds, 2)} for k, v in self.stages.items()},
            "models": self.models,
        }


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _conform(batch: pa.RecordBatch) -> pa.Table:
    """A chunk in RECORD_SCHEMA: missing optional columns are filled with nulls, present ones are cast."""
    table = pa.Table.from_batches([batch])
    columns = []
    for f in RECORD_SCHEMA:
        if f.name in table.column_names:
            columns.append(table.column(f.name).cast(f.type))
        else:
            columns.append(pa.nulls(len(table), type=f.type))
    return pa.Table.from_arrays(columns, schema=RECORD_SCHEMA)


def _records(table: pa.Table) -> list[Record]:
    """Light Record objects (no validation: the chunk came from our own schema) with what the filters read."""
    cols = {
        name: table.column(name).to_pylist() for name in ("id", "instruction", "input", "output", "source", "audience")
    }
    out = []
    for rid, inst, inp, outp, src, aud in zip(
        cols["id"], cols["instruction"], cols["input"], cols["output"], cols["source"], cols["audience"]
    ):
        inst, inp, outp = inst or "", inp or "", outp or ""
        out.append(
            Record.model_construct(
                id=rid or content_id(inst, inp, outp),
                instruction=inst,
                input=inp,
                output=outp,
                source=Source(src or "imported"),
                audience=aud,
                decisions=[],
            )
        )
    return out


def _instructions(pool: Path, chunk_size: int) -> Iterator[str]:
    for batch in pq.ParquetFile(pool).iter_batches(batch_size=chunk_size, columns=["instruction"]):
        yield from (t or "" for t in batch.column(0).to_pylist())


def curate_parquet(
    pool: str | Path,
    records_out: str | Path,
    decisions_out: str | Path,
    cfg: CurateConfig,
    seen: Sequence[Record] = (),
    policy: Policy | None = None,
    filters: list[Filter] | None = None,
    progress: bool = True,
    negatives: Sequence[Record] | None = None,
) -> StreamReport:
    """Curate the records in `pool` (Parquet, RECORD_SCHEMA) chunk by chunk; write every record with its
    decisions to `records_out` and the long decision log to `decisions_out` (both written under temporary
    names and renamed at the end, so a killed run leaves no half-written file under the real name).
    Without `filters`, they are built as the in-memory curation builds them (`ballast.curate.stage.build_filters`):
    with `cfg.classifier.enabled` the conformance classifier is fitted on `seen` (the human training seeds) and
    `negatives` (the contrastive records built from them)."""
    from ballast.curate.stage import build_filters

    pool, records_out, decisions_out = Path(pool), Path(records_out), Path(decisions_out)
    if not pool.is_file():
        raise InputError("no such pool file", file=pool)
    try:
        meta = pq.ParquetFile(pool)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"not a Parquet file: {exc}", file=pool) from None
    if "instruction" not in meta.schema_arrow.names:
        raise InputError("the pool has no 'instruction' column; import it with `ballast import`", file=pool)
    checker = None
    if policy is not None:
        from ballast.policy.checks import PolicyChecker

        checker = PolicyChecker(policy)
    if filters is None:
        if cfg.classifier.enabled and (policy is None or not seen or not negatives):
            raise InputError(
                "needs the policy, the human training seeds and their contrastive negatives to fit "
                "the conformance classifier on (run with a recipe)",
                field="curate.classifier.enabled",
            )
        filters = build_filters(cfg, list(seen), policy, negatives or (), checker=checker)
    start = time.perf_counter()
    report = StreamReport(stages={f.stage: StageCount() for f in filters})
    for f in filters:
        model = getattr(getattr(f, "embedder", None), "model", None)
        if model is not None:
            report.models[f.stage] = model.model_dump()
    for f in filters:
        t0 = time.perf_counter()
        f.prepare(_instructions(pool, cfg.chunk_size))
        report.stages[f.stage].seconds += time.perf_counter() - t0

    for path in (records_out, decisions_out):
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp_records = records_out.with_name(f".{records_out.name}.{os.getpid()}.tmp")
    tmp_decisions = decisions_out.with_name(f".{decisions_out.name}.{os.getpid()}.tmp")
    # Filters from the first `concurrent` one on (embedding, index search: work that leaves the GIL) run in a
    # second thread on chunk k while the first ones run on chunk k+1; each filter still sees chunks in order.
    split = next((k for k, f in enumerate(filters) if f.concurrent), len(filters))
    head, tail = filters[:split], filters[split:]
    total = meta.metadata.num_rows
    with (
        pq.ParquetWriter(tmp_records, RECORD_SCHEMA, compression="zstd") as rec_writer,
        pq.ParquetWriter(tmp_decisions, DECISION_SCHEMA, compression="zstd") as dec_writer,
        Progress(transient=True, disable=not progress) as bar,
        ThreadPoolExecutor(max_workers=1) as worker,
    ):
        task = bar.add_task("curate", total=total)

        def finish(chunk: _Chunk) -> None:
            _run_filters(tail, chunk, report)
            rec_writer.write_table(chunk.table_with_decisions())
            dec_writer.write_table(_decision_log(chunk.rows, chunk.decisions))
            report.records_in += len(chunk.rows)
            report.kept += sum(chunk.kept)
            bar.advance(task, len(chunk.rows))

        pending: Future | None = None
        for batch in meta.iter_batches(batch_size=cfg.chunk_size):
            chunk = _Chunk(_conform(batch))
            if checker is not None:
                for r in chunk.rows:
                    if r.audience is None:
                        r.audience = checker.infer_audience(r.instruction, r.output, policy.sign_off)
            _run_filters(head, chunk, report)
            if pending is not None:
                pending.result()  # in order, one chunk at a time; re-raises the worker's error here
            pending = worker.submit(finish, chunk)
        if pending is not None:
            pending.result()
    os.replace(tmp_records, records_out)
    os.replace(tmp_decisions, decisions_out)
    report.dropped = report.records_in - report.kept
    report.seconds = time.perf_counter() - start
    report.peak_rss_mb = peak_rss_mb()
    return report


class _Chunk:
    """One chunk in flight: its table, light records, their decisions so far and which are still kept."""

    def __init__(self, table: pa.Table) -> None:
        self.table = table
        self.rows = _records(table)
        self.decisions = [list(d or []) for d in table.column("decisions").to_pylist()]
        self.kept = [all(d["kept"] for d in ds) for ds in self.decisions]

    def table_with_decisions(self) -> pa.Table:
        table = self.table.set_column(
            RECORD_SCHEMA.get_field_index("id"), "id", pa.array([r.id for r in self.rows], pa.string())
        )
        return table.set_column(
            RECORD_SCHEMA.get_field_index("decisions"), "decisions", pa.array(self.decisions, type=_DECISIONS_TYPE)
        )


def _run_filters(filters: list[Filter], chunk: _Chunk, report: StreamReport) -> None:
    """The chunked executor's step: each filter in order over the chunk's records it has not dropped yet."""
    for f in filters:
        alive = [i for i, k in enumerate(chunk.kept) if k]
        verdicts = f.verdicts([chunk.rows[i] for i in alive], report.stages[f.stage])
        for i, v in zip(alive, verdicts, strict=True):
            chunk.decisions[i].append(decision(f.stage, v))
            chunk.kept[i] = v is None


def _decision_log(rows: list[Record], decisions: list[list[dict]]) -> pa.Table:
    cols: dict[str, list] = {name: [] for name in DECISION_SCHEMA.names}
    for r, ds in zip(rows, decisions):
        for d in ds:
            cols["record_id"].append(r.id)
            cols["source"].append(r.source.value)
            for key in ("stage", "kept", "reason", "rule_id", "score", "duplicate_of"):
                cols[key].append(d.get(key))
    return pa.table(cols, schema=DECISION_SCHEMA)
