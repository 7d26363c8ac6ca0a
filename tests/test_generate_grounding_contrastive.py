"""Policy-grounded prompts (rules by trigger and by embedding, nearest training seeds), and contrastive
negatives: one named rule broken, caught by the checker, never a positive in selection."""

from __future__ import annotations

import pytest

from ballast.backends.base import Decoding
from ballast.generate.contrastive import ContrastiveBuilder, check_negatives, contrastive_negatives
from ballast.generate.grounding import PolicyGrounding
from ballast.generate.responses import Responder
from ballast.recipe import ContrastiveConfig, GroundingConfig, SelectConfig
from ballast.records import Record, Source
from ballast.seeds import split_heldout
from ballast.select.stage import select, training_set
from test_policy_checks import SEED_EXCEPTIONS


@pytest.fixture(scope="module")
def split(seeds):
    return split_heldout(seeds, 0.25, salt="heldout:13")


@pytest.fixture(scope="module")
def grounding(policy, split):
    return PolicyGrounding(policy, split.train, GroundingConfig())


def test_grounding_finds_triggered_and_nearest_rules_and_training_seeds(grounding, split, policy):
    fire = ("Draft a reply to this customer.", "Customer: the lamp sparked and burned my hand, I had to go to A&E.")
    refund = ("How long does a refund take once the warehouse has the item back?", "")
    plans = grounding.plan([fire, refund])
    assert plans[0].rules[0] == "E1"  # triggered, so first
    assert "R3" in plans[1].rules and len(plans[1].rules) <= 4
    train_ids = {s.id for s in split.train}
    assert all(ex.id in train_ids for p in plans for ex in p.examples)
    assert not {ex.id for p in plans for ex in p.examples} & split.heldout_ids
    messages = grounding.messages(*fire, plans[0])
    assert messages[0]["role"] == "system" and "E1 Safety:" in messages[0]["content"]
    assert policy.sign_off in messages[0]["content"]
    assert [m["role"] for m in messages[1:]] == ["user", "assistant"] * len(plans[0].examples) + ["user"]
    assert messages[-1]["content"].startswith("Draft a reply to this customer.")


def test_grounded_answers_on_the_weak_model(weak, grounding):
    responder = Responder(weak, Decoding(temperature=0.0, max_tokens=24), "Harbor Home Goods", grounding=grounding)
    (ans,) = responder.answer([("A customer asks how long a refund takes. Reply in one sentence.", "")])
    assert ans.generation.ok and ans.generation.text and ans.generation.prompt_tokens > 200
    meta = responder.provenance(ans)
    assert meta["response_mode"] == "grounded" and meta["grounding_rules"] and meta["grounding_examples"]
    assert meta["response_template"].startswith("generate/grounded@")


# The edits the rule checker was built to see; the others exist because it cannot see them.
RULE_VISIBLE = {
    "changed_number",
    "dropped_escalation",
    "casual_rewrite",
    "promised_date",
    "over_limit_approval",
    "skipped_identity_check",
    "dropped_sign_off",
}
# The classifier-only kinds and the rule each breaks (wrong_team: the escalation rule the trigger fired).
CLASSIFIER_ONLY = {
    "blame_sentence": "T3",
    "instructions_first": "T2",
    "invented_fact": "T5",
    "alternative_refund": "R3",
    "accepted_final_sale": "R7",
    "accepted_late_return": "R1",
    "outside_advice": "C1",
    "competitor_mention": "C2",
    "claimed_done": "C3",
    "waived_condition": "R2",
    "price_difference": "R8",
    "early_lost": "D2",
    "credential_request": "P4",
    "wrong_team": None,
}


def test_each_negative_breaks_one_named_rule_and_the_checker_catches_most(policy, split):
    negatives, counts = contrastive_negatives(split.train, policy, ContrastiveConfig())
    assert set(counts) == set(ContrastiveConfig().edits)
    parents = {s.id: s for s in split.train}
    for r in negatives:
        assert r.source is Source.contrastive and len(r.rules) == 1 and r.rules[0] in policy.by_id
        assert not r.kept and r.decisions[0].rule_id == r.rules[0] and r.rules[0] in r.decisions[0].reason
        parent = parents[r.parent_ids[0]]
        assert r.output != parent.output and (r.instruction, r.input) == (parent.instruction, parent.input)

    # Only the seeds the checker is known to misread may already carry their negative's rule.
    def misread(records: list) -> int:
        return sum(r.rules[0] in SEED_EXCEPTIONS.get(parents[r.parent_ids[0]].meta["ref"], []) for r in records)

    visible = [r for r in negatives if r.meta["edit"] in RULE_VISIBLE]
    result = check_negatives(visible, split.train, policy)
    assert result["catch_rate"] >= 0.9 and result["seed_already_flagged"] == misread(visible)
    assert all(v["catch_rate"] >= 0.8 for v in result["by_edit"].values()), result["by_edit"]
    assert check_negatives(negatives, split.train, policy)["seed_already_flagged"] == misread(negatives)


@pytest.mark.parametrize("kind", sorted(CLASSIFIER_ONLY))
def test_classifier_only_edits_break_their_rule_deterministically(policy, split, kind):
    builder = ContrastiveBuilder(policy, ContrastiveConfig())
    made = [(s, e) for s in split.train if (e := builder.edit(kind, s)) is not None]
    assert len(made) >= 5, f"{kind} fits only {len(made)} training seeds"
    escalation_rules = {r.id for r in policy.rules if r.escalate_to and r.escalate_to != "supervisor"}
    for seed, edit in made:
        assert edit.kind == kind and edit.output.strip() != seed.output.strip()
        if CLASSIFIER_ONLY[kind]:
            assert edit.rule_id == CLASSIFIER_ONLY[kind]
        else:  # the team named is another of the policy's teams than the one the fired trigger requires
            assert edit.rule_id in escalation_rules
            assert edit.rule_id in builder.checker.triggered(seed.instruction, seed.input)
            assert policy.by_id[edit.rule_id].escalate_to not in edit.output
        assert builder.edit(kind, seed) == edit  # deterministic
    # The phrase banks vary the wording across seeds.
    if kind not in ("instructions_first", "wrong_team"):
        assert len({e.detail for _, e in made}) >= 3


def test_instructions_first_moves_the_acknowledgement_without_changing_words(policy, split):
    builder = ContrastiveBuilder(policy, ContrastiveConfig())
    seed, edit = next((s, e) for s in split.train if (e := builder.edit("instructions_first", s)) is not None)
    assert sorted(edit.output.split()) == sorted(seed.output.split())
    assert edit.output.split("\n\n")[:3] != seed.output.split("\n\n")[:3]


def test_edits_are_deterministic_and_driven_by_the_policy(policy, split):
    builder = ContrastiveBuilder(policy, ContrastiveConfig())
    seed = next(s for s in split.train if "30-day" in s.output)
    edit = builder.changed_number(seed)
    assert edit.rule_id == "R1" and edit.detail.startswith("return_window") and edit == builder.changed_number(seed)
    assert edit.output != seed.output and len(edit.output) - len(seed.output) in (-1, 0, 1)
    casual = builder.casual_rewrite(seed)
    assert casual.rule_id == policy.register_.rule
    assert any(p in casual.output.lower() for p in policy.register_.banned_phrases)
    with pytest.raises(KeyError, match="unknown rule id 'Z9'"):
        ContrastiveBuilder(policy, ContrastiveConfig(promise_rule="Z9"))


def test_selection_never_takes_a_contrastive_record_as_a_positive(policy, split):
    negatives, _ = contrastive_negatives(split.train[:40], policy, ContrastiveConfig())
    # Even with its generation decision stripped (or a later stage keeping it), selection refuses it.
    stripped = [r.model_copy(update={"decisions": []}) for r in negatives]
    synthetic = Record(instruction="Summarise the ticket.", output="A summary.", source=Source.self_instruct)
    selected = select(split.train[:5], stripped + [synthetic], SelectConfig(budget=1000), seed=0)
    chosen = training_set(selected)
    assert not [r for r in chosen if r.source is Source.contrastive]
    assert synthetic.id in {r.id for r in chosen}
    refused = [r for r in selected if r.source is Source.contrastive]
    assert all(
        not r.kept and r.decisions[-1].stage == "select" and "never a positive" in r.decisions[-1].reason
        for r in refused
    )
    assert not training_set(negatives + stripped)
