from __future__ import annotations

import json

import numpy as np
import pytest

from ballast.evaluate.paired import (
    compare,
    compare_models,
    compare_rows,
    markdown_table,
    mcnemar_exact,
    paired_bootstrap_ci,
)


def _ids(n: int) -> list[str]:
    return [f"ex{i}" for i in range(n)]


def test_identical_models_differ_by_nothing():
    rng = np.random.default_rng(1)
    nll = dict(zip(_ids(50), rng.normal(3, 0.5, 50).tolist()))
    c = compare(nll, nll, metric="nll")
    assert not c.binary and c.n == 50 and c.difference == 0.0
    assert c.ci95[0] <= 0 <= c.ci95[1] and not c.beyond_noise and c.mcnemar_p is None

    violation = dict(zip(_ids(50), (rng.random(50) < 0.4).tolist()))
    c = compare(violation, violation, metric="violation")
    assert c.binary and c.difference == 0.0 and c.ci95 == (0.0, 0.0) and not c.beyond_noise
    assert (c.a_only, c.b_only, c.mcnemar_p) == (0, 0, 1.0)


def test_thirty_of_thirty_discordant_wins_are_beyond_the_noise():
    ids = _ids(100)
    # 30 pairs where only A signs off, 70 where both agree (40 both yes, 30 both no).
    a = {k: i < 70 for i, k in enumerate(ids)}
    b = {k: 30 <= i < 70 for i, k in enumerate(ids)}
    c = compare(a, b, metric="signoff", names=("curated", "pilot"))
    assert (c.a_only, c.b_only) == (30, 0)
    assert c.mcnemar_p < 0.001 and c.mcnemar_p == pytest.approx(2 * 0.5**30)
    assert c.difference == pytest.approx(0.3) and c.mean_a == pytest.approx(0.7) and c.mean_b == pytest.approx(0.4)
    assert c.ci95[0] > 0 and c.beyond_noise
    # The other way round: the same p, the interval mirrored.
    r = compare(b, a, metric="signoff")
    assert r.mcnemar_p == c.mcnemar_p and r.ci95[1] < 0 and r.beyond_noise


def test_mcnemar_is_the_exact_binomial_on_discordant_pairs():
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(5, 5) == 1.0
    assert mcnemar_exact(1, 0) == 1.0  # one discordant pair says nothing
    assert mcnemar_exact(6, 0) == pytest.approx(2 / 64)
    assert mcnemar_exact(0, 6) == mcnemar_exact(6, 0)


def test_a_small_numeric_shift_shows_in_the_paired_interval_though_not_in_the_unpaired_spread():
    rng = np.random.default_rng(2)
    base = rng.normal(3, 1, 120)  # examples differ a lot from each other...
    a = dict(zip(_ids(120), (base - 0.05 + rng.normal(0, 0.02, 120)).tolist()))  # ...the models only a little
    b = dict(zip(_ids(120), base.tolist()))
    c = compare(a, b, metric="nll")
    assert c.difference == pytest.approx(-0.05, abs=0.01) and c.ci95[1] < 0 and c.beyond_noise


def test_examples_missing_or_not_applicable_for_one_model_are_left_out_and_counted():
    a = {"x": True, "y": False, "z": None, "only_a": True}
    b = {"x": False, "y": False, "z": True, "only_b": True}
    c = compare(a, b, metric="signoff")
    assert c.n == 2 and c.missing_a == 2 and c.missing_b == 1  # a lacks z and only_b; b lacks only_a
    assert (c.a_only, c.b_only) == (1, 0) and c.difference == 0.5

    none = compare({"x": 1.0}, {"y": 2.0}, metric="nll")
    assert none.n == 0 and none.difference is None and none.ci95 is None and not none.beyond_noise


def test_seeded_and_reproducible():
    rng = np.random.default_rng(3)
    d = rng.normal(0.1, 1, 80)
    assert paired_bootstrap_ci(d, seed=7) == paired_bootstrap_ci(d, seed=7)
    assert paired_bootstrap_ci(d, seed=7) != paired_bootstrap_ci(d, seed=8)
    a = dict(zip(_ids(80), d.tolist()))
    b = dict.fromkeys(_ids(80), 0.0)
    # The order of the examples in b does not matter.
    shuffled = dict(reversed(list(b.items())))
    assert compare(a, b, metric="nll") == compare(a, shuffled, metric="nll")


def test_rows_compared_per_metric_and_slice_render_and_serialise():
    def rows(violations: list[bool], signoff: list[bool | None], nll: list[float]) -> list[dict]:
        slices = ["policy", "policy", "benign", "benign"]
        return [
            {"ref": f"r{i}", "slice": s, "violation": v, "signoff": so, "nll": x}
            for i, (s, v, so, x) in enumerate(zip(slices, violations, signoff, nll, strict=True))
        ]

    models = {
        "curated": rows([False, False, False, True], [True, None, True, True], [2.0, 2.1, 2.2, 2.3]),
        "pilot": rows([True, True, False, True], [False, None, False, True], [2.5, 2.4, 2.6, 2.3]),
    }
    out = compare_models(models, [("curated", "pilot")], ["violation", "signoff", "nll"], by_slice=True)
    assert [(c.slice, c.metric) for c in out] == [
        (s, m) for s in (None, "benign", "policy") for m in ("violation", "signoff", "nll")
    ]
    overall = {c.metric: c for c in out if c.slice is None}
    assert overall["violation"].binary and overall["violation"].difference == -0.5
    signoff = overall["signoff"]
    assert signoff.n == 3 and signoff.missing_a == signoff.missing_b == 0  # r1 is n/a to both: not missing
    assert not overall["nll"].binary and overall["nll"].difference == pytest.approx(-0.3)
    assert compare_rows(models["curated"], models["pilot"], ["nll"], names=("curated", "pilot")) == [overall["nll"]]

    table = markdown_table(out)
    lines = table.splitlines()
    assert lines[0] == "| A vs B | metric | n | A | B | difference [95% CI] | McNemar p | beyond the noise? |"
    assert len(lines) == 2 + len(out)
    assert lines[2].startswith("| curated vs pilot | violation | 4 | 0.250 | 0.750 | -0.500 [")
    assert "| violation (policy) |" in table and lines[4].endswith("| – | yes |")  # nll: no McNemar, CI < 0

    dumped = json.loads(json.dumps([c.to_dict() for c in out]))
    assert dumped[0]["beyond_noise"] is False and dumped[0]["a_only"] == 0 and dumped[0]["b_only"] == 2
    assert dumped[2]["ci95"][1] < 0 and dumped[2]["mcnemar_p"] is None


def test_a_repeated_example_is_an_error_and_binary_metrics_take_only_zero_or_one():
    with pytest.raises(ValueError, match="twice"):
        compare_rows([{"ref": "a", "nll": 1.0}, {"ref": "a", "nll": 2.0}], [{"ref": "a", "nll": 1.0}], ["nll"])
    with pytest.raises(ValueError, match="0/1"):
        compare({"a": 0.5}, {"a": 1.0}, metric="rate", binary=True)
