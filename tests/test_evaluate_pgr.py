from __future__ import annotations

import pytest

from ballast.evaluate.metrics import RATES
from ballast.evaluate.pgr import METRICS, performance_gap_recovered
from ballast.report import pgr_section


def _model(**means: float | None) -> dict:
    """results.json's entry for one model, with the given overall means (others 0.5)."""
    overall = {k: {"mean": means.get(k, 0.5), "n": 10, "ci95": (0.0, 1.0)} for k in METRICS}
    return {"overall": overall, "slices": {}, "areas": {}}


def test_pgr_is_the_share_of_the_weak_to_ceiling_gap_the_student_closes():
    models = {
        "base": _model(),
        "weak": _model(violation=0.6, escalation_recall=0.2, signoff=0.5, benign_refusal=0.1),
        "seeds": _model(violation=0.2, escalation_recall=0.6, signoff=0.5, benign_refusal=0.3),
        "curated": _model(violation=0.3, escalation_recall=0.7, signoff=0.9, benign_refusal=0.2),
        "pilot": _model(violation=0.7, escalation_recall=0.4, signoff=0.1, benign_refusal=None),
    }
    pgr = performance_gap_recovered(models)
    assert pgr["weak"] == "weak" and pgr["ceiling"] == "seeds" and pgr["students"] == ["curated", "pilot"]
    assert "(student - weak) / (seeds - weak)" in pgr["note"]
    violation = pgr["metrics"]["violation"]
    # Lower is better: the gap is oriented so the ceiling's 0.2 beats the weak 0.6 by +0.4.
    assert violation["gap"] == pytest.approx(0.4)
    assert violation["pgr"]["curated"] == pytest.approx(0.75)  # 0.6 -> 0.3 of 0.6 -> 0.2
    assert violation["pgr"]["pilot"] == pytest.approx(-0.25)  # worse than the weak model
    recall = pgr["metrics"]["escalation_recall"]
    assert recall["gap"] == pytest.approx(0.4) and recall["pgr"]["curated"] == pytest.approx(1.25)
    assert recall["pgr"]["pilot"] == pytest.approx(0.5)
    # No gap, or a ceiling worse than the weak model: nothing to recover, so no ratio.
    assert pgr["metrics"]["signoff"]["pgr"] == {"curated": None, "pilot": None}
    assert pgr["metrics"]["benign_refusal"]["gap"] == pytest.approx(-0.2)
    assert pgr["metrics"]["benign_refusal"]["pgr"] == {"curated": None, "pilot": None}
    assert set(pgr["metrics"]) == {*RATES, "reference_rougeL"}
    html = pgr_section(pgr)
    assert "Performance gap recovered" in html and "<td>0.75</td>" in html and "<td>-0.25</td>" in html


def test_pgr_needs_the_weak_model_the_ceiling_and_a_student():
    assert performance_gap_recovered({"base": _model(), "seeds": _model(), "curated": _model()}) is None
    assert performance_gap_recovered({"weak": _model(), "curated": _model()}) is None
    assert performance_gap_recovered({"weak": _model(), "seeds": _model(), "base": _model()}) is None
    only = performance_gap_recovered(
        {"weak": _model(signoff=0.1), "seeds": _model(signoff=0.5), "curated": _model(signoff=0.3)}
    )
    assert only["students"] == ["curated"] and only["metrics"]["signoff"]["pgr"] == {"curated": pytest.approx(0.5)}
    assert pgr_section(None) == ""
