from __future__ import annotations

import csv
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from ballast.cli import app
from ballast.errors import InputError
from ballast.pool_import import import_pool
from ballast.records import Source
from ballast.store import read_records

ROWS = [
    {"instruction": "Draft a reply to a customer whose lamp arrived cracked.", "input": "", "output": "Sorry."},
    {"instruction": "What is the return window?", "output": "30 days.", "ticket": "T-9"},
    {"instruction": "Summarise this ticket.", "input": "Customer wants a refund.", "output": ""},
]


def _jsonl(path, rows, extra_lines=()):
    lines = [json.dumps(r) for r in rows] + list(extra_lines)
    path.write_text("\n".join(lines) + "\n")
    return path


def test_jsonl_csv_and_parquet_import_alike(tmp_path):
    src = _jsonl(tmp_path / "pool.jsonl", ROWS)
    with open(tmp_path / "pool.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["instruction", "input", "output"])
        writer.writeheader()
        writer.writerows({k: r.get(k, "") for k in ("instruction", "input", "output")} for r in ROWS)
    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "pool.parquet")
    ids = []
    for name in ("pool.jsonl", "pool.csv", "pool.parquet"):
        report = import_pool(tmp_path / name, tmp_path / f"{name}.out.parquet")
        records = read_records(tmp_path / f"{name}.out.parquet")
        assert report.read == report.imported == 3 and report.quarantined == 0
        assert all(r.source is Source.imported for r in records)
        ids.append([r.id for r in records])
    assert ids[0] == ids[1] == ids[2]
    assert read_records(tmp_path / "pool.jsonl.out.parquet")[1].meta == {"ticket": "T-9"}
    assert src.exists()


def test_mapping_renames_columns(tmp_path):
    rows = [{"prompt": "Reword this sentence.", "context": "We is sorry.", "response": "We are sorry."}]
    _jsonl(tmp_path / "pool.jsonl", rows)
    import_pool(
        tmp_path / "pool.jsonl",
        tmp_path / "out.parquet",
        mapping={"instruction": "prompt", "input": "context", "output": "response"},
    )
    (record,) = read_records(tmp_path / "out.parquet")
    assert (record.instruction, record.input, record.output) == (
        "Reword this sentence.",
        "We is sorry.",
        "We are sorry.",
    )
    with pytest.raises(InputError, match="cannot map"):
        import_pool(tmp_path / "pool.jsonl", tmp_path / "o.parquet", mapping={"answer": "response"})


def test_bad_line_names_file_line_and_field(tmp_path):
    src = _jsonl(tmp_path / "pool.jsonl", ROWS, ['{"instruction": 5, "output": "x"}'])
    with pytest.raises(InputError) as info:
        import_pool(src, tmp_path / "out.parquet")
    assert (info.value.line, info.value.field) == (4, "instruction")
    assert "expected a string, got int" in str(info.value) and str(src) in str(info.value)
    assert not (tmp_path / "out.parquet").exists()


def test_skip_invalid_quarantines_every_bad_line(tmp_path):
    src = tmp_path / "pool.jsonl"
    good = "\n".join(json.dumps(r) for r in ROWS)
    src.write_bytes(
        good.encode() + b'\n{"output": "no instruction"}\n{not json\n"a string"\n'
        b'{"instruction": "caf\xe9"}\n{"instruction": "   "}\n'
    )
    report = import_pool(src, tmp_path / "out.parquet", skip_invalid=True)
    assert (report.read, report.imported, report.quarantined) == (8, 3, 5)
    bad = [json.loads(line) for line in report.quarantine_path.read_text().splitlines()]
    assert [b["line"] for b in bad] == [4, 5, 6, 7, 8]
    assert bad[0]["field"] == "instruction" and "missing" in bad[0]["error"]
    assert "not valid JSON" in bad[1]["error"] and "expected a JSON object" in bad[2]["error"]
    assert "not UTF-8" in bad[3]["error"] and "empty" in bad[4]["error"]
    assert len(read_records(tmp_path / "out.parquet")) == 3


def test_csv_error_reports_the_line_a_multiline_row_starts_on(tmp_path):
    src = tmp_path / "pool.csv"
    src.write_text('instruction,output\n"first\nspans two lines",ok\n"",missing instruction\n')
    with pytest.raises(InputError) as info:
        import_pool(src, tmp_path / "out.parquet")
    assert info.value.line == 4 and info.value.field == "instruction"


def test_cli_import_reports_counts_and_errors(tmp_path):
    src = _jsonl(tmp_path / "pool.jsonl", ROWS, ['{"input": "x"}'])
    runner = CliRunner()
    failed = runner.invoke(app, ["import", str(src), "--out", str(tmp_path / "o.parquet")])
    assert failed.exit_code == 2
    assert "pool.jsonl:4: instruction: missing" in failed.output.replace("\n", "")
    ok = runner.invoke(
        app, ["import", str(src), "--out", str(tmp_path / "o.parquet"), "--skip-invalid", "--map", "output=output"]
    )
    assert ok.exit_code == 0, ok.output
    assert "imported 3 records" in ok.output and "quarantined 1 bad rows" in ok.output
    bad_map = runner.invoke(app, ["import", str(src), "--out", str(tmp_path / "o.parquet"), "--map", "output"])
    assert bad_map.exit_code == 2 and "FIELD=COLUMN" in bad_map.output
