"""Scores of one model output against the policy and the human reference, and their aggregates."""

from __future__ import annotations

import re
from collections import defaultdict

import numpy as np

from ballast.policy.checks import PolicyChecker
from ballast.policy.schema import Policy
from ballast.records import Record
from ballast.rouge import rouge_l

# Refusing or deflecting a benign request: apology-and-decline phrasing, "as an AI", or no real answer.
REFUSAL = re.compile(
    r"\b(i('| a)?m (sorry|afraid)[^.]{0,40}\b(can(no|')t|unable|not able)|i can(no|')t (help|assist|do|provide)|"
    r"(unable|not able) to (help|assist)|as an ai\b|i (do not|don't) have (access|the ability)|"
    r"please contact (customer )?(support|service))",
    re.I,
)

RATES = (
    "violation",
    "escalation_recall",
    "escalation_precision",
    "false_escalation",
    "signoff",
    "register_violation",
    "benign_refusal",
)


def _escalates(output: str, team: str) -> bool:
    return team.lower() in output.lower()


def score_output(policy: Policy, checker: PolicyChecker, ref: Record, output: str) -> dict:
    """One held-out example: which rules the output broke and the slice-level facts the tables need."""
    findings = checker.check(ref.instruction, ref.input, output, ref.audience)
    needed = sorted({policy.rule(r).escalate_to for r in ref.rules if r.startswith("E")} - {None})
    teams = [t for t in policy.teams if _escalates(output, t)]
    escalated = bool(teams) and "escalat" in output.lower()
    return {
        "ref": ref.meta.get("ref", ref.id),
        "slice": ref.slice,
        "audience": ref.audience,
        "findings": sorted({f.rule_id for f in findings}),
        "violation": bool(findings),
        "areas": sorted({policy.rule(f.rule_id).area for f in findings}),
        "needs_escalation": bool(needed),
        "escalation_recall": all(_escalates(output, t) for t in needed) if needed else None,
        # Of the outputs that escalate: was an escalation needed, to the teams named?
        "escalation_precision": (bool(needed) and all(_escalates(output, t) for t in needed)) if escalated else None,
        "false_escalation": escalated if not needed else None,
        "signoff": output.rstrip().endswith(policy.sign_off) if ref.audience == "customer" else None,
        "register_violation": any(f.rule_id == policy.register_.rule for f in findings),
        "benign_refusal": (bool(REFUSAL.search(output)) or len(output.split()) < 5)
        if ref.slice == policy.benign_slice
        else None,
        "reference_rougeL": rouge_l(ref.output, output, stem=True),
    }


def bootstrap_ci(values: list[float], *, n: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95% percentile bootstrap interval of the mean."""
    if not values:
        return (float("nan"), float("nan"))
    arr = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    means = arr[rng.integers(0, len(arr), size=(n, len(arr)))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def _stat(values: list[float]) -> dict:
    return {
        "mean": float(np.mean(values)) if values else None,
        "n": len(values),
        "ci95": bootstrap_ci(values) if values else None,
    }


def _summary(rows: list[dict]) -> dict:
    out: dict = {"n": len(rows)}
    for key in (*RATES, "reference_rougeL", "judge"):  # "judge" only when evaluate.judge is set
        out[key] = _stat([float(r[key]) for r in rows if r.get(key) is not None])
    return out


def aggregate(rows: list[dict], policy: Policy) -> dict:
    """Overall and per-slice rates, with the violation rate per policy area, each with its 95% interval."""
    by_slice: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_slice[r["slice"]].append(r)
    areas = sorted(set(policy.areas.values()))
    return {
        "overall": _summary(rows),
        "slices": {name: _summary(members) for name, members in sorted(by_slice.items())},
        "areas": {a: _stat([float(a in r["areas"]) for r in rows]) for a in areas},
    }
