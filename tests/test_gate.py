from __future__ import annotations

import json

import yaml
from typer.testing import CliRunner

from ballast.cli import app
from ballast.evaluate.gate import RELEASED, evaluate_gate
from ballast.recipe import GateConfig


def _stat(mean, lo=None, hi=None, n=20):
    return {"mean": mean, "n": n, "ci95": [lo if lo is not None else mean, hi if hi is not None else mean]}


def _results(violation=0.2, refusal=0.0, recall=0.8, signoff=0.9, slice_violation=0.2, hi=0.3):
    overall = {
        "violation": _stat(violation),
        "benign_refusal": _stat(refusal),
        "escalation_recall": _stat(recall),
        "signoff": _stat(signoff),
    }
    slices = {
        "returns": {"violation": _stat(slice_violation, 0.1, hi)},
        "escalation": {"violation": _stat(0.1, 0.0, 0.2)},
    }
    return {
        "models": {"curated": {"overall": overall, "slices": slices, "areas": {"escalation": _stat(0.1, 0.0, 0.2)}}}
    }


CFG = GateConfig(
    max_violation_rate=0.3,
    max_benign_refusal=0.05,
    min_escalation_recall=0.7,
    min_signoff=0.8,
    max_area_violation={"escalation": 0.2},
)


def test_thresholds_pass_and_fail_by_name():
    assert all(c.passed for c in evaluate_gate(_results(), CFG, None))
    failed = {c.name for c in evaluate_gate(_results(violation=0.4, recall=0.5), CFG, None) if not c.passed}
    assert failed == {"violation rate", "escalation recall"}


def test_a_slice_worse_than_the_released_interval_fails():
    released = _results(slice_violation=0.2, hi=0.3)
    checks = {c.name: c for c in evaluate_gate(_results(slice_violation=0.35), CFG, released)}
    assert not checks["no regression in slice returns"].passed
    assert checks["no regression in slice escalation"].passed
    # Within the released run's interval is noise, not a regression.
    assert all(c.passed for c in evaluate_gate(_results(slice_violation=0.28), CFG, released))


def _run_dir(root, name, results, gate: GateConfig):
    run = root / name
    (run / "stages" / "evaluate").mkdir(parents=True)
    (run / "stages" / "evaluate" / "results.json").write_text(json.dumps(results))
    recipe = {"name": name, "policy": "p.yaml", "seeds": "s.jsonl", "gate": gate.model_dump()}
    (run / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    return run


def test_cli_exits_non_zero_listing_failures_and_releases_on_pass(tmp_path):
    runner = CliRunner()
    good = _run_dir(tmp_path, "good", _results(), CFG)
    ok = runner.invoke(app, ["gate", str(good), "--release"])
    assert ok.exit_code == 0, ok.output
    assert json.loads((tmp_path / RELEASED).read_text())["run"] == str(good.resolve())
    bad = _run_dir(tmp_path, "bad", _results(refusal=0.2, slice_violation=0.5), CFG)
    failed = runner.invoke(app, ["gate", str(bad), "--release"])
    assert failed.exit_code == 1
    assert "benign refusal rate" in failed.output and "no regression in slice returns" in failed.output
    gate = json.loads((bad / "gate.json").read_text())
    assert gate["passed"] is False and gate["against"] == str(good.resolve())
    assert json.loads((tmp_path / RELEASED).read_text())["run"] == str(good.resolve())
