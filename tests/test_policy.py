from __future__ import annotations

import re

import pytest
import yaml

from ballast.errors import InputError
from ballast.policy.schema import load_policy, rule_ids_in_markdown
from conftest import EXAMPLE


def test_every_rule_in_the_prose_policy_is_in_the_yaml(policy):
    prose_ids = rule_ids_in_markdown((EXAMPLE / "POLICY.md").read_text())
    assert len(prose_ids) == 29
    assert sorted(prose_ids) == sorted(policy.rule_ids)


def test_policy_carries_the_facts_and_escalation_teams(policy):
    facts = {f.id: (f.value, f.unit) for r in policy.rules for f in r.facts}
    assert facts["return_window_standard"] == (30, "days")
    assert facts["return_window_plus"] == (60, "days")
    assert facts["agent_refund_limit"] == (500, "usd")
    assert facts["goodwill_credit_limit"] == (25, "usd")
    assert facts["lost_parcel_wait"] == (10, "business_days")
    assert facts["membership_refund_window"] == (14, "days")
    teams = {r.id: r.escalate_to for r in policy.rules if r.id.startswith("E")}
    assert teams == {
        "E1": "Product Safety team",
        "E2": "Tier 2",
        "E3": "Payments Risk team",
        "E4": "Tier 2",
        "E5": "Tier 2",
    }
    assert all(policy.rule(e).triggers for e in teams)
    assert policy.sign_off == "Kind regards,\n[Agent name]\nHarbor Home Goods Support"
    assert "no worries" in policy.register_.banned_phrases
    assert policy.sha256 and len(policy.sha256) == 64


def test_disclosure_patterns_catch_full_numbers_but_not_last_four(policy):
    patterns = [re.compile(p) for p in policy.rule("P2").forbidden_patterns]
    assert any(p.search("Your card 4111 1111 1111 1111 was charged") for p in patterns)
    assert any(p.search("write to jane.doe@example.com") for p in patterns)
    assert not any(p.search("the card ending in 1111 was charged for order HB-20931") for p in patterns)


def _write(tmp_path, data) -> object:
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    contrastive = data.get("contrastive")
    if isinstance(contrastive, str):  # the phrase-bank file the policy names, beside it
        (tmp_path / contrastive).write_text((EXAMPLE / contrastive).read_text())
    return path


@pytest.fixture
def raw_policy():
    return yaml.safe_load((EXAMPLE / "policy.yaml").read_text())


def test_missing_field_names_file_line_and_path(tmp_path, raw_policy):
    del raw_policy["rules"][3]["text"]
    path = _write(tmp_path, raw_policy)
    with pytest.raises(InputError) as info:
        load_policy(path)
    err = info.value
    assert err.file == str(path) and err.field == "rules[3].text"
    assert err.line is not None and "Field required" in str(err)
    # The line points into the rule that lacks the field.
    assert "T4" in path.read_text().splitlines()[err.line - 1]


def test_wrong_area_and_bad_regex_are_explained(tmp_path, raw_policy):
    raw_policy["rules"][5]["area"] = "delivery"
    with pytest.raises(InputError, match=r"area 'delivery' does not match .* expected 'returns'"):
        load_policy(_write(tmp_path, raw_policy))
    raw_policy["rules"][5]["area"] = "returns"
    raw_policy["rules"][5]["triggers"] = ["(unclosed"]
    with pytest.raises(InputError, match=r"rules\[5\]\.triggers.*not a valid regular expression"):
        load_policy(_write(tmp_path, raw_policy))


def test_wrong_type_and_unknown_key(tmp_path, raw_policy):
    raw_policy["register"]["max_exclamation_marks"] = "one"
    with pytest.raises(InputError, match=r"register\.max_exclamation_marks.*valid integer"):
        load_policy(_write(tmp_path, raw_policy))
    raw_policy["register"]["max_exclamation_marks"] = 1
    raw_policy["rules"][0]["severity"] = "high"
    with pytest.raises(InputError, match=r"rules\[0\]\.severity.*Extra inputs are not permitted"):
        load_policy(_write(tmp_path, raw_policy))


def test_broken_yaml_names_the_line(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text("policy_id: x\nrules:\n  - id: T1\n   area: [tone\n")
    with pytest.raises(InputError, match=r"policy\.yaml:\d+: not valid YAML"):
        load_policy(path)


def test_the_contrastive_data_is_read_from_the_file_the_policy_names(tmp_path, raw_policy, policy):
    assert policy.contrastive.banks["blame_sentence"].rule == "T3"
    assert policy.contrastive.instructions_first_rule == "T2" and len(policy.contrastive.rivals) == 6
    raw_policy["contrastive"] = "nowhere.yaml"
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(raw_policy, sort_keys=False))
    with pytest.raises(InputError, match="contrastive file .* does not exist") as info:
        load_policy(path)
    assert info.value.field == "contrastive" and info.value.line is not None
