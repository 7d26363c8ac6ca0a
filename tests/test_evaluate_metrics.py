"""Per-output scores and their aggregates: escalation precision, per-area intervals, the judge's grade."""

import json
from pathlib import Path

from ballast.evaluate.metrics import aggregate, score_output
from ballast.policy.checks import PolicyChecker


def _by_ref(seeds, ref):
    return next(r for r in seeds if r.meta.get("ref") == ref)


def test_escalation_precision_counts_only_outputs_that_escalate(policy, seeds):
    checker = PolicyChecker(policy)
    injury = _by_ref(seeds, "ESC-001")  # needs the Product Safety team
    benign = next(r for r in seeds if r.slice == "benign")
    right = score_output(policy, checker, injury, "I have escalated this to our Product Safety team today.")
    wrong_team = score_output(policy, checker, injury, "I have escalated this to Tier 2.")
    needless = score_output(policy, checker, benign, "I have escalated this to the Payments Risk team.")
    silent = score_output(policy, checker, benign, "Here is the summary you asked for.")
    assert right["escalation_precision"] is True and right["escalation_recall"] is True
    assert wrong_team["escalation_precision"] is False and wrong_team["escalation_recall"] is False
    assert needless["escalation_precision"] is False and needless["false_escalation"] is True
    assert silent["escalation_precision"] is None and silent["false_escalation"] is False

    summary = aggregate([right, wrong_team, needless, silent], policy)
    precision = summary["overall"]["escalation_precision"]
    assert precision["n"] == 3 and abs(precision["mean"] - 1 / 3) < 1e-9
    lo, hi = precision["ci95"]
    assert 0.0 <= lo <= precision["mean"] <= hi <= 1.0


def test_every_policy_area_has_a_rate_and_an_interval(policy, seeds):
    checker = PolicyChecker(policy)
    clean = [r for r in seeds if not checker.check(r.instruction, r.input, r.output, r.audience)][:40]
    rows = [score_output(policy, checker, r, r.output) for r in clean]
    rows.append(score_output(policy, checker, seeds[0], "lol no worries, gonna sort it"))
    areas = aggregate(rows, policy)["areas"]
    assert set(areas) == set(policy.areas.values())
    tone = policy.rule(policy.register_.rule).area
    assert areas[tone]["mean"] == 1 / len(rows) and areas[tone]["n"] == len(rows)
    assert all(a["ci95"][0] <= a["mean"] <= a["ci95"][1] for a in areas.values())


def test_the_judge_grades_every_evaluated_output(policy, seeds, tmp_path):
    """evaluate.judge: the weak model (llama.cpp) answers two held-out prompts and the same model grades them."""
    from ballast.backends.factory import backend_for
    from ballast.evaluate.stage import evaluate_models
    from ballast.recipe import load_recipe
    from ballast.score.stage import make_judge

    recipe = load_recipe(
        Path(__file__).parent / "data" / "tiny_recipe.yaml",
        ["evaluate.judge={}", "evaluate.probes=null", "evaluate.decoding.max_tokens=48"],
    )
    judge = make_judge(recipe.evaluate.judge, recipe.models.weak, recipe.seed, policy)
    evaluate_models(
        {"weak": None},
        seeds[:2],
        policy,
        recipe.evaluate,
        recipe.seed,
        recipe.models.strong,
        lambda: backend_for(recipe.generate.server, recipe.models.weak),
        tmp_path,
        judge=judge,
    )
    results = json.loads((tmp_path / "results.json").read_text())
    grade = results["models"]["weak"]["overall"]["judge"]
    # Each grade is 1-5, or missing when the tiny model's answer did not parse (a recorded failure).
    assert grade["n"] <= 2
    assert grade["mean"] is None or 1 <= grade["mean"] <= 5
    assert results["models"]["weak"]["overall"]["violation"]["n"] == 2
