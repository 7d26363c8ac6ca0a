"""The policy is data: a second, small policy (tests/data/bike-rental: another domain, other rule ids, areas and
slices, its own phrase bank) runs through generate, curate and select with no change to the code."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from ballast.pipeline import run_recipe
from ballast.policy.schema import load_policy
from ballast.recipe import load_recipe
from ballast.store import read_records

pytestmark = pytest.mark.slow  # the weak model answers three prompts: a minute or two on 2 cores
BIKES = Path(__file__).parent / "data" / "bike-rental"
RULES = {"K1", "K2", "K3", "B1", "S1"}


def test_a_second_policy_runs_without_code_changes(tmp_path):
    recipe = load_recipe(BIKES / "recipe.yaml", [f"run_dir={tmp_path / 'run'}"])
    policy = load_policy(recipe.policy)
    assert policy.slices == ["billing", "safety", "courtesy"] and set(policy.rule_ids) == RULES
    root = run_recipe(recipe, until="select")

    decisions = pq.read_table(root / "decisions.parquet").to_pylist()
    named = {d["rule_id"] for d in decisions if d["rule_id"]}
    assert named and named <= RULES, named  # every rule a decision names is one of this policy's
    # The contrastive edits read this policy's data: its facts, register, sign-off, escalation and phrase bank.
    negatives = [
        r for r in read_records(root / "stages" / "generate" / "records.parquet") if r.source.value == "contrastive"
    ]
    assert {rule for r in negatives for rule in r.rules} == {"B1", "K1", "K2", "K3", "S1"}
    blame = [r for r in negatives if r.rules == ["K3"]]
    assert blame and all(("kerbs" in r.output) or ("locked the bike" in r.output) for r in blame)
    # Curation judged the weak model's answers against this policy (stages named from one place).
    assert any(d["stage"].startswith("curate.") for d in decisions)
    assert any(d["stage"] == "curate.policy_rules" for d in decisions)
    # Selection: every human training seed, by this policy's slices.
    selected = read_records(root / "stages" / "select" / "records.parquet")
    humans = [r for r in selected if r.source.value == "human" and r.kept]
    assert len(humans) == 9 and {r.slice for r in humans} == set(policy.slices)
    coverage = json.loads((root / "stages" / "select" / "coverage.json").read_text())
    assert set(json.dumps(coverage).split('"')) >= {"billing", "safety", "courtesy"}
