"""Records on disk: Parquet with a fixed schema, written atomically, and the long decision log."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ballast.records import Record

_MODEL = pa.struct([("name", pa.string()), ("sha256", pa.string())])
_DECISION = pa.struct(
    [
        ("stage", pa.string()),
        ("kept", pa.bool_()),
        ("reason", pa.string()),
        ("rule_id", pa.string()),
        ("score", pa.float64()),
        ("duplicate_of", pa.string()),
    ]
)

RECORD_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("instruction", pa.string()),
        ("input", pa.string()),
        ("output", pa.string()),
        ("source", pa.string()),
        ("parent_ids", pa.list_(pa.string())),
        ("round", pa.int32()),
        ("generator", _MODEL),
        ("template_id", pa.string()),
        ("template_sha256", pa.string()),
        ("decoding", pa.string()),  # JSON: settings differ between backends, a fixed struct would not fit all
        ("policy_version", pa.string()),
        ("slice", pa.string()),
        ("rules", pa.list_(pa.string())),
        ("audience", pa.string()),
        ("weight", pa.float64()),
        ("scores", pa.map_(pa.string(), pa.float64())),
        ("decisions", pa.list_(_DECISION)),
        ("meta", pa.map_(pa.string(), pa.string())),
    ]
)

DECISION_SCHEMA = pa.schema([("record_id", pa.string()), ("source", pa.string()), *_DECISION])


def _row(r: Record) -> dict:
    row = r.model_dump(mode="json")
    row["decoding"] = json.dumps(r.decoding, sort_keys=True)
    row["scores"] = list(r.scores.items())
    row["meta"] = list(r.meta.items())
    return row


def to_table(records: Iterable[Record]) -> pa.Table:
    return pa.Table.from_pylist([_row(r) for r in records], schema=RECORD_SCHEMA)


def from_table(table: pa.Table) -> list[Record]:
    out = []
    for row in table.to_pylist():
        row["decoding"] = json.loads(row["decoding"] or "{}")
        row["scores"] = dict(row["scores"] or [])
        row["meta"] = dict(row["meta"] or [])
        out.append(Record.model_validate(row))
    return out


def _atomic(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def write_table(table: pa.Table, path: str | Path) -> Path:
    """Write then rename, so a killed process never leaves a half-written file under the real name."""
    path = Path(path)
    tmp = _atomic(path)
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, path)
    return path


def write_records(records: Iterable[Record], path: str | Path) -> Path:
    return write_table(to_table(records), path)


def read_records(path: str | Path) -> list[Record]:
    return from_table(pq.read_table(path, schema=RECORD_SCHEMA))


def decision_rows(records: Iterable[Record]) -> Iterator[dict]:
    for r in records:
        for d in r.decisions:
            yield {"record_id": r.id, "source": r.source.value, **d.model_dump()}


def decisions_table(records: Iterable[Record]) -> pa.Table:
    return pa.Table.from_pylist(list(decision_rows(records)), schema=DECISION_SCHEMA)


def write_json(data: object, path: str | Path) -> Path:
    path = Path(path)
    tmp = _atomic(path)
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path
