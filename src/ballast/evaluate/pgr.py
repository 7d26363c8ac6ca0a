"""Performance gap recovered (Burns et al. 2023, weak-to-strong generalisation): the share of the gap between the
weak model and a strong ceiling that a student trained on weak-model data closes."""

from __future__ import annotations

from ballast.evaluate.metrics import RATES

WEAK = "weak"  # the weak model answering the held-out prompts itself
CEILING = "seeds"  # the strong base trained on human data only
STUDENTS = ("curated", "pilot")
# Rates where lower is better enter negated; the ratio is the same, but the gap's sign says whether the ceiling
# really is better than the weak model, without which the ratio means nothing.
LOWER_IS_BETTER = frozenset({"violation", "false_escalation", "register_violation", "benign_refusal"})
METRICS = (*RATES, "reference_rougeL")


def _score(models: dict, model: str, metric: str) -> float | None:
    mean = models[model]["overall"][metric]["mean"]
    return None if mean is None else (-mean if metric in LOWER_IS_BETTER else mean)


def performance_gap_recovered(
    models: dict, weak: str = WEAK, ceiling: str = CEILING, students: tuple[str, ...] = STUDENTS
) -> dict | None:
    """PGR = (student - weak) / (ceiling - weak) per headline metric, for each student evaluated; None unless the
    weak model and the ceiling were both evaluated. `models` is results.json's "models". A metric whose ceiling is
    not above the weak model (gap <= 0) has no PGR."""
    present = [s for s in students if s in models]
    if weak not in models or ceiling not in models or not present:
        return None
    table: dict[str, dict] = {}
    for metric in METRICS:
        w, c = _score(models, weak, metric), _score(models, ceiling, metric)
        gap = None if w is None or c is None else c - w
        per_student = {}
        for s in present:
            x = _score(models, s, metric)
            per_student[s] = None if x is None or gap is None or gap <= 0 else (x - w) / gap
        table[metric] = {"gap": gap, "pgr": per_student}
    return {
        "weak": weak,
        "ceiling": ceiling,
        "students": present,
        "note": f"PGR = (student - {weak}) / ({ceiling} - {weak}) on the overall means; rates where lower is "
        f"better are negated; no PGR where the ceiling is not above the weak model",
        "metrics": table,
    }
