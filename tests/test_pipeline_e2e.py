"""The whole pipeline on a tiny recipe with the real models: kill -9 and resume, same data, report, explain."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ballast.cli import app
from ballast.pipeline import run_recipe
from ballast.recipe import load_recipe
from ballast.store import read_records

TINY = Path(__file__).parent / "data" / "tiny_recipe.yaml"


def _cli_run(run_dir: Path, until: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "ballast.cli", "run", str(TINY), f"run_dir={run_dir}", "--until", until],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _cached_calls(run_dir: Path) -> int:
    db = run_dir / "cache" / "calls.sqlite"
    if not db.is_file():
        return 0
    try:
        return sqlite3.connect(db).execute("select count(*) from calls").fetchone()[0]
    except sqlite3.OperationalError:  # table not created yet
        return 0


@pytest.fixture(scope="module")
def resumed_run(tmp_path_factory) -> Path:
    """A run killed with SIGKILL in the middle of generation, then run again to the end."""
    run_dir = tmp_path_factory.mktemp("e2e") / "run"
    proc = _cli_run(run_dir, "select")
    deadline = time.monotonic() + 300
    while _cached_calls(run_dir) < 3:
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, "no model calls were cached within 300 s"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run_dir / "stages" / "generate" / "done.json").exists()
    run_recipe(load_recipe(TINY, [f"run_dir={run_dir}"]))
    return run_dir


def test_resume_reuses_cached_calls_and_gives_the_same_data(resumed_run, tmp_path):
    generate = json.loads((resumed_run / "stages" / "generate" / "done.json").read_text())
    assert generate["cache_hits"] >= 3 and generate["cache_misses"] >= 1
    fresh = run_recipe(load_recipe(TINY, [f"run_dir={tmp_path / 'fresh'}"]), until="select")
    assert read_records(fresh / "stages" / "select" / "records.parquet") == read_records(
        resumed_run / "stages" / "select" / "records.parquet"
    )


def test_report_compares_three_models_on_the_heldout_set(resumed_run):
    results = json.loads((resumed_run / "stages" / "evaluate" / "results.json").read_text())
    assert list(results["models"]) == ["base", "pilot", "curated"]
    assert results["n_heldout"] == 9 and results["n_probes"] == 2
    for model in results["models"].values():
        overall = model["overall"]
        assert overall["n"] == 11 and 0 <= overall["violation"]["mean"] <= 1
        assert set(model["slices"]) >= {"returns", "escalation", "benign", "paraphrase", "adversarial"}
    html = (resumed_run / "report.html").read_text()
    assert html.count("<svg") >= 2 and "curated" in html and "Curation funnel" in html
    card = (resumed_run / "data_card.md").read_text()
    assert "## Filters and their drops" in card and "gemma3-270m" in card
    for name in ("pilot", "curated"):
        adapter = resumed_run / "stages" / f"train.{name}" / "adapter"
        assert (adapter / "adapter_config.json").is_file()
    manifest = json.loads((resumed_run / "manifest.json").read_text())
    assert manifest["models"]["weak"]["sha256"].startswith("b179c952")
    assert {s["name"] for s in manifest["stages"]} >= {
        "generate",
        "curate",
        "select",
        "train.pilot",
        "train.curated",
        "evaluate",
    }


def test_heldout_never_reaches_generation_or_selection(resumed_run):
    heldout = set(json.loads((resumed_run / "heldout_ids.json").read_text()))
    assert len(heldout) >= 100
    selected = read_records(resumed_run / "stages" / "select" / "records.parquet")
    generated = read_records(resumed_run / "stages" / "generate" / "records.parquet")
    assert not heldout & {r.id for r in selected if r.kept}
    assert not heldout & {p for r in generated for p in r.parent_ids}
    assert all(r.parent_ids for r in generated if r.kept)


def test_a_second_run_reuses_every_stage(resumed_run):
    run_recipe(load_recipe(TINY, [f"run_dir={resumed_run}"]))
    manifest = json.loads((resumed_run / "manifest.json").read_text())
    assert all(s["reused"] for s in manifest["stages"]), manifest["stages"]


def test_explain_shows_decisions_and_the_duplicated_record(resumed_run):
    records = read_records(resumed_run / "stages" / "select" / "records.parquet")
    dropped = next(r for r in records if not r.kept)
    out = CliRunner().invoke(app, ["explain", str(resumed_run), dropped.id[:12]])
    assert out.exit_code == 0, out.output
    assert dropped.id in out.output and "dropped" in out.output
    assert dropped.decisions[-1].stage in out.output
    missing = CliRunner().invoke(app, ["explain", str(resumed_run), "zzzz"])
    assert missing.exit_code == 2 and "no record 'zzzz'" in missing.output
