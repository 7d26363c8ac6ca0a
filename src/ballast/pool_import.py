"""Importing a user's pool (JSONL, CSV or Parquet) into records, streaming, with bad rows named or quarantined."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

from ballast.errors import InputError
from ballast.records import Record, Source
from ballast.store import RECORD_SCHEMA, to_table

FIELDS = ("instruction", "input", "output")
REQUIRED = ("instruction",)


@dataclass
class ImportReport:
    read: int = 0
    imported: int = 0
    quarantined: int = 0
    quarantine_path: Path | None = None
    errors: list[str] = field(default_factory=list)


def _rows(path: Path) -> Iterator[tuple[int, dict | None, str | None, str]]:
    """(line or row number, row dict or None, parse error or None, raw text) in file order."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        with open(path, "rb") as fh:
            for n, raw in enumerate(fh, start=1):
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    yield n, None, f"not UTF-8: {exc.reason} at byte {exc.start}", raw.decode("utf-8", "replace")
                    continue
                if not text.strip():
                    continue
                try:
                    row = json.loads(text)
                except json.JSONDecodeError as exc:
                    yield n, None, f"not valid JSON: {exc.msg} at column {exc.colno}", text
                    continue
                if isinstance(row, dict):
                    yield n, row, None, text
                else:
                    yield n, None, f"expected a JSON object, got {type(row).__name__}", text
    elif suffix in (".csv", ".tsv"):
        with open(path, encoding="utf-8", errors="strict", newline="") as fh:
            reader = csv.DictReader(fh, delimiter="\t" if suffix == ".tsv" else ",")
            line = reader.line_num
            try:
                for row in reader:
                    # Report the line a row starts on; quoted fields may span several lines.
                    yield line + 1, row, None, json.dumps(row, ensure_ascii=False)
                    line = reader.line_num
            except UnicodeDecodeError as exc:
                # A text-mode CSV cannot be resynchronised after bad bytes: stop with the place.
                raise InputError(
                    f"not UTF-8 ({exc.reason}); re-encode the file as UTF-8", file=path, line=line + 1
                ) from None
    elif suffix == ".parquet":
        n = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=8192):
            for row in batch.to_pylist():
                n += 1
                yield n, row, None, json.dumps(row, ensure_ascii=False, default=str)
    else:
        raise InputError(f"unsupported file type {suffix!r}; expected .jsonl, .csv, .tsv or .parquet", file=path)


def _to_record(row: dict, mapping: dict[str, str]) -> tuple[Record | None, str | None, str | None]:
    """(record, None, None) or (None, field, what was expected)."""
    values: dict[str, str] = {}
    for name in FIELDS:
        column = mapping.get(name, name)
        value = row.get(column)
        if value is None:
            if name in REQUIRED:
                return None, column, f"missing; expected a non-empty string for {name!r}"
            value = ""
        if not isinstance(value, str):
            return None, column, f"expected a string, got {type(value).__name__}"
        if name in REQUIRED and not value.strip():
            return None, column, f"empty; expected a non-empty string for {name!r}"
        values[name] = value
    used = {mapping.get(n, n) for n in FIELDS}
    meta = {
        k: v if isinstance(v, str) else json.dumps(v, default=str)
        for k, v in row.items()
        if k not in used and v is not None
    }
    return Record(source=Source.imported, meta=meta, **values), None, None


def import_pool(
    path: str | Path,
    out: str | Path,
    *,
    mapping: dict[str, str] | None = None,
    skip_invalid: bool = False,
    quarantine: str | Path | None = None,
    chunk_size: int = 50_000,
) -> ImportReport:
    """Stream a pool file into a Parquet of records. A bad row raises InputError (file, line, field)
    unless skip_invalid is set; then it goes, with its error, to the quarantine JSONL instead."""
    path, out = Path(path), Path(out)
    mapping = mapping or {}
    unknown = set(mapping) - set(FIELDS)
    if unknown:
        raise InputError(f"cannot map {sorted(unknown)}; mappable fields are {list(FIELDS)}")
    if not path.is_file():
        raise InputError("no such file", file=path)
    report = ImportReport()
    qpath = Path(quarantine) if quarantine else out.with_suffix(".quarantine.jsonl")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    qfile = None
    chunk: list[Record] = []
    try:
        with pq.ParquetWriter(tmp, RECORD_SCHEMA, compression="zstd") as writer:
            for line, row, error, raw in _rows(path):
                report.read += 1
                field_name = None
                record = None
                if row is not None:
                    record, field_name, error = _to_record(row, mapping)
                if record is None:
                    err = InputError(error or "invalid row", file=path, line=line, field=field_name)
                    if not skip_invalid:
                        raise err
                    if qfile is None:
                        qfile = open(qpath, "w", encoding="utf-8")
                    qfile.write(
                        json.dumps(
                            {"file": str(path), "line": line, "field": field_name, "error": error, "raw": raw},
                            ensure_ascii=False,
                        )
                        + "\n"
                    )
                    report.quarantined += 1
                    report.errors.append(str(err))
                    continue
                chunk.append(record)
                if len(chunk) >= chunk_size:
                    writer.write_table(to_table(chunk))
                    report.imported += len(chunk)
                    chunk = []
            if chunk:
                writer.write_table(to_table(chunk))
                report.imported += len(chunk)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        if qfile is not None:
            qfile.close()
    tmp.replace(out)
    report.quarantine_path = qpath if report.quarantined else None
    return report
