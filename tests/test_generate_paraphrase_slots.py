"""Paraphrases in personas' voices, and slot templates aimed at thin slices; a missing slot is a clear error."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import yaml

from ballast.backends.base import Decoding
from ballast.errors import InputError
from ballast.generate.paraphrase import clean_paraphrase, paraphrase
from ballast.generate.responses import Responder
from ballast.generate.slots import allocate, fill_template, plan_fills, template_records
from ballast.recipe import DecodingConfig, ParaphraseConfig, SlotTemplate, TemplateSlotsConfig, load_recipe
from ballast.records import Source
from ballast.templates.render import MissingSlot

SLOTS = {
    "product": ["oak dining table", "linen duvet cover", "ceramic table lamp"],
    "situation": ["arrived with a cracked leg", "has not arrived after two weeks", "was charged twice"],
    "mood": ["calm", "frustrated", "anxious"],
    "channel": ["chat", "email"],
}
TEMPLATES = [
    SlotTemplate(
        id="damaged",
        instruction="Draft a {channel} reply to this customer.",
        input="Customer ({channel}, {mood}): my {product} {situation}.",
        slice="returns",
        rules=["R4"],
        audience="customer",
    ),
    SlotTemplate(
        id="membership",
        instruction="A {mood} member asks by {channel} about cancelling Harbor Plus.",
        slice="membership",
        rules=["M1"],
        audience="agent",
    ),
]


def test_a_missing_slot_names_the_template_and_the_slot(tmp_path):
    with pytest.raises(MissingSlot, match="template 'recipe:damaged' needs slot 'mood'"):
        fill_template(TEMPLATES[0], {"channel": "chat", "product": "lamp", "situation": "broke"})
    with pytest.raises(ValueError, match="template 'damaged' uses slot 'mood'"):
        TemplateSlotsConfig(
            enabled=True, slots={k: v for k, v in SLOTS.items() if k != "mood"}, templates=[TEMPLATES[0]]
        )
    # Through a recipe file: the error names the file, the section, the template and the slot.
    recipe = yaml.safe_load((Path(__file__).parent / "data" / "tiny_recipe.yaml").read_text())
    recipe["policy"] = str((Path(__file__).parents[1] / "examples/harbor-support/policy.yaml").resolve())
    recipe["seeds"] = str((Path(__file__).parents[1] / "examples/harbor-support/seeds.jsonl").resolve())
    recipe["generate"]["template_slots"] = {
        "enabled": True,
        "slots": {"channel": ["chat"]},
        "templates": [TEMPLATES[1].model_dump()],
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    with pytest.raises(InputError, match=r"generate\.template_slots: .*template 'membership' uses slot 'mood'"):
        load_recipe(path)


def test_fills_lean_towards_thin_slices(seeds):
    per_slice = Counter(s.slice for s in seeds)
    assert per_slice["membership"] < per_slice["returns"]
    assert allocate(TEMPLATES, 12, seeds)[1] > allocate(TEMPLATES, 12, seeds)[0]
    cfg = TemplateSlotsConfig(enabled=True, slots=SLOTS, templates=TEMPLATES, total=12)
    plans = plan_fills(cfg, seeds, seed=0)
    assert len(plans) == 12 and plans == plan_fills(cfg, seeds, seed=0)
    membership = [values for t, values in plans if t.id == "membership"]
    assert len({tuple(sorted(v.items())) for v in membership}) == len(membership)  # no combination twice


def test_template_records_on_the_weak_model(weak, seeds):
    cfg = TemplateSlotsConfig(enabled=True, slots=SLOTS, templates=TEMPLATES, total=3)
    responder = Responder(weak, Decoding(temperature=0.7, max_tokens=24, seed=2), "Harbor Home Goods")
    records, counts = template_records(cfg, seeds, responder, "harbor", seed=0)
    assert len(records) == 3 and counts["kept"] + counts["failed"] == 3
    for r in records:
        assert r.source is Source.template and r.template_id in ("recipe:damaged", "recipe:membership")
        assert r.template_sha256 and "{" not in r.instruction + r.input and r.output
        assert r.meta["slot.channel"] in SLOTS["channel"] and r.meta["response_mode"] == "plain"
        assert r.slice in ("returns", "membership") and r.rules


def test_clean_paraphrase():
    assert clean_paraphrase('Rewritten request: "Can you draft a reply?"') == "Can you draft a reply?"
    assert clean_paraphrase("Please write the reply.\n\nSure! Here is the reply...") == "Please write the reply."


def test_paraphrases_on_the_weak_model(weak, seeds):
    cfg = ParaphraseConfig(
        enabled=True, max_seeds=3, decoding=DecodingConfig(temperature=0.9, top_p=0.95, max_tokens=40)
    )
    records, counts = paraphrase(seeds, weak, cfg, None, "harbor", seed=0)
    assert len(records) == 3 and counts["kept"] + counts["dropped"] == 3
    parents = {s.id: s for s in seeds}
    for r in records:
        parent = parents[r.parent_ids[0]]
        assert r.source is Source.paraphrase and r.template_id == "generate/paraphrase" and r.template_sha256
        assert r.meta["persona"] in cfg.personas and r.input == parent.input
        if r.kept:
            assert r.output == parent.output and r.rules == parent.rules and r.instruction != parent.instruction
        else:
            assert r.decisions[0].reason
