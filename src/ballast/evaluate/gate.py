"""The release gate: thresholds from the recipe, plus no slice regressing beyond its interval against the
last released run."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from ballast.recipe import GateConfig
from ballast.store import write_json

RELEASED = "released.json"  # beside the run folders: which run was released last


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    value: float | None
    limit: str


def _mean(stat: dict) -> float | None:
    return stat.get("mean") if stat else None


def _threshold(name: str, value: float | None, limit: float, *, at_most: bool) -> Check:
    if value is None:
        return Check(name, False, None, f"{'<=' if at_most else '>='} {limit:g} (no examples to measure)")
    passed = value <= limit if at_most else value >= limit
    return Check(name, passed, value, f"{'<=' if at_most else '>='} {limit:g}")


def released_run(runs_root: Path) -> Path | None:
    pointer = runs_root / RELEASED
    return Path(json.loads(pointer.read_text())["run"]) if pointer.is_file() else None


def evaluate_gate(results: dict, cfg: GateConfig, previous: dict | None) -> list[Check]:
    if cfg.model not in results["models"]:
        raise ValueError(f"gate.model {cfg.model!r} was not evaluated; evaluated: {list(results['models'])}")
    model = results["models"][cfg.model]
    overall = model["overall"]
    checks: list[Check] = []
    for name, limit, key, at_most in (
        ("violation rate", cfg.max_violation_rate, "violation", True),
        ("benign refusal rate", cfg.max_benign_refusal, "benign_refusal", True),
        ("escalation recall", cfg.min_escalation_recall, "escalation_recall", False),
        ("sign-off rate", cfg.min_signoff, "signoff", False),
    ):
        if limit is not None:
            checks.append(_threshold(name, _mean(overall[key]), limit, at_most=at_most))
    for area, limit in cfg.max_area_violation.items():
        checks.append(_threshold(f"violation rate in {area}", _mean(model["areas"].get(area)), limit, at_most=True))
    if previous is not None:
        before = previous["models"].get(cfg.model)
        for name, stat in model["slices"].items():
            old = (before or {}).get("slices", {}).get(name, {}).get("violation")
            now = stat["violation"]
            if not old or old.get("ci95") is None or now.get("mean") is None:
                continue
            upper = old["ci95"][1]
            checks.append(
                Check(
                    f"no regression in slice {name}",
                    now["mean"] <= upper,
                    now["mean"],
                    f"<= {upper:.3f} (upper 95% bound of the released run)",
                )
            )
    return checks


def run_gate(run_dir: Path, cfg: GateConfig, against: Path | None = None) -> list[Check]:
    """Evaluate the gate for a finished run and write gate.json beside its report."""
    results = json.loads((run_dir / "stages" / "evaluate" / "results.json").read_text())
    baseline = against or released_run(run_dir.parent)
    previous = None
    if baseline is not None and baseline.resolve() != run_dir.resolve():
        previous = json.loads((baseline / "stages" / "evaluate" / "results.json").read_text())
    checks = evaluate_gate(results, cfg, previous)
    write_json(
        {
            "model": cfg.model,
            "against": str(baseline) if previous else None,
            "passed": all(c.passed for c in checks),
            "checks": [asdict(c) for c in checks],
        },
        run_dir / "gate.json",
    )
    return checks


def mark_released(run_dir: Path) -> Path:
    return write_json({"run": str(run_dir.resolve())}, run_dir.parent / RELEASED)
