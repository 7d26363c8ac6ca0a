from __future__ import annotations

import json
import re
from collections import Counter

import pytest

from ballast.errors import InputError
from ballast.seeds import load_seeds, split_heldout
from conftest import EXAMPLE

HELDOUT_FRACTION = 0.25


def test_seed_set_size_and_rule_coverage(seeds, policy):
    assert len(seeds) >= 400
    per_rule = Counter(rule for r in seeds for rule in r.rules)
    thin = {rule: per_rule[rule] for rule in policy.rule_ids if per_rule[rule] < 6}
    assert not thin, f"rules with fewer than 6 examples: {thin}"
    benign = sum(r.slice == "benign" for r in seeds) / len(seeds)
    assert 0.15 <= benign <= 0.25
    assert sum(len(r.rules) >= 3 for r in seeds) >= 50  # multi-rule examples
    assert len({r.id for r in seeds}) == len(seeds)


def test_seed_replies_follow_the_form_and_register_rules(seeds, policy):
    banned = re.compile("|".join(re.escape(p) for p in policy.register_.banned_phrases), re.I)
    for r in seeds:
        where = r.meta["ref"]
        if r.audience == "customer":
            assert r.output.rstrip().endswith(policy.sign_off), where
            assert "T4" in r.rules, where
        else:
            assert policy.sign_off not in r.output, where
        assert r.output.count("!") <= policy.register_.max_exclamation_marks, where
        assert not banned.search(r.output), where


def test_escalation_seeds_name_their_team(seeds, policy):
    for r in seeds:
        for rule_id in r.rules:
            team = policy.rule(rule_id).escalate_to
            if rule_id.startswith("E") and r.slice == "escalation":
                assert team.split()[0] in r.output, (r.meta["ref"], rule_id)


def test_heldout_split_is_deterministic_stratified_and_disjoint(seeds, policy):
    split = split_heldout(seeds, HELDOUT_FRACTION)
    assert len(split.heldout) >= 100
    assert not split.heldout_ids & {r.id for r in split.train}
    assert len(split.heldout) + len(split.train) == len(seeds)
    # Every slice is represented in the held-out set in proportion.
    for name in policy.slices:
        total = sum(r.slice == name for r in seeds)
        held = sum(r.slice == name for r in split.heldout)
        assert held >= 0.25 * total and held <= 0.25 * total + 1, name
    # The file's order does not change the split.
    again = split_heldout(list(reversed(seeds)), HELDOUT_FRACTION)
    assert again.heldout_ids == split.heldout_ids
    assert split_heldout(seeds, HELDOUT_FRACTION, salt="other").heldout_ids != split.heldout_ids


def test_bad_seed_lines_are_named(tmp_path, policy):
    good = (EXAMPLE / "seeds.jsonl").read_text().splitlines()[0]
    row = json.loads(good)
    cases = [
        ({**row, "rules": ["R1", "Z9"]}, "rules", "unknown rule ids"),
        ({**row, "slice": "shipping"}, "slice", "Input should be"),
        ({k: v for k, v in row.items() if k != "output"}, "output", "Field required"),
        ({**row, "audience": "public"}, "audience", "Input should be"),
    ]
    for bad, field, message in cases:
        path = tmp_path / "seeds.jsonl"
        path.write_text(good + "\n" + json.dumps({**bad, "ref": "X-2"}) + "\n")
        with pytest.raises(InputError, match=message) as info:
            load_seeds(path, policy)
        assert (info.value.line, info.value.field) == (2, field)
    path.write_text(good + "\n" + good + "\n")
    with pytest.raises(InputError, match="already used on line 1"):
        load_seeds(path, policy)
    path.write_text("\n")
    with pytest.raises(InputError, match="holds no examples"):
        load_seeds(path, policy)


def test_probes_load_as_their_own_slices_and_paraphrase_heldout_prompts(policy, seeds):
    from ballast.seeds import ProbeLine

    probes = load_seeds(EXAMPLE / "probes.jsonl", policy, ProbeLine)
    assert Counter(r.slice for r in probes) == {"paraphrase": 40, "adversarial": 40}
    assert all(r.meta["probe"] == r.slice for r in probes)
    # Probes are new prompts: none repeats a seed's instruction together with its input.
    assert not {(r.instruction, r.input) for r in probes} & {(r.instruction, r.input) for r in seeds}
