"""Template slots: instructions written from recipe templates whose `{slot}` placeholders take values such as
a product, an order situation, a customer's mood and a channel, aimed at the slices the seeds cover thinly.

Fills are spread over templates in inverse proportion to how many human training seeds their slice has,
so a slice with 10 seeds gets more new prompts than one with 60. Each template's combinations of slot values
are drawn without repetition from a seeded generator. The weak model answers each filled prompt (plain or
grounded). A template whose slot has no value stops with an error naming the template and the slot.
"""

from __future__ import annotations

import hashlib
import itertools
import random
from collections import Counter

from ballast.generate.responses import Responder
from ballast.recipe import SlotTemplate, TemplateSlotsConfig
from ballast.records import Record, Source
from ballast.stages import decision_stage
from ballast.templates.render import fill, slots_of

STAGE = decision_stage("generate", "template_slots")


def template_sha256(t: SlotTemplate) -> str:
    return hashlib.sha256(f"{t.instruction}\x00{t.input}".encode()).hexdigest()


def fill_template(t: SlotTemplate, values: dict[str, str]) -> tuple[str, str]:
    tid = f"recipe:{t.id}"
    return fill(tid, t.instruction, values), fill(tid, t.input, values)


def allocate(
    templates: list[SlotTemplate], total: int, seeds: list[Record], capacity: list[int] | None = None
) -> list[int]:
    """Fills per template, weight 1 / (1 + seeds in its slice), by largest remainder; a template never gets
    more fills than it has distinct combinations (`capacity`), and what it cannot take goes to the others."""
    if not templates:
        return []
    capacity = capacity or [total] * len(templates)
    per_slice = Counter(s.slice for s in seeds)
    weights = [1.0 / (1 + per_slice.get(t.slice, 0)) for t in templates]
    counts = [0] * len(templates)
    left = min(total, sum(capacity))
    while left > 0:
        open_ = [i for i in range(len(templates)) if counts[i] < capacity[i]]
        share = sum(weights[i] for i in open_)
        raw = {i: left * weights[i] / share for i in open_}
        grant = {i: min(int(raw[i]), capacity[i] - counts[i]) for i in open_}
        if not any(grant.values()):  # fewer fills left than open templates: largest remainder, one each
            for i in sorted(open_, key=lambda i: raw[i], reverse=True)[:left]:
                grant[i] = 1
        for i, g in grant.items():
            counts[i] += g
            left -= g
    return counts


def plan_fills(cfg: TemplateSlotsConfig, seeds: list[Record], seed: int) -> list[tuple[SlotTemplate, dict[str, str]]]:
    spaces = []
    for t in cfg.templates:
        names = slots_of(t.instruction + "\n" + t.input)
        for name in names:
            if not cfg.slots.get(name):
                fill_template(t, {k: v[0] for k, v in cfg.slots.items() if v})  # raises MissingSlot
        spaces.append((names, list(itertools.product(*(cfg.slots[name] for name in names)))))
    plans = []
    counts = allocate(cfg.templates, cfg.total, seeds, [len(space) for _, space in spaces])
    for t, (names, space), n in zip(cfg.templates, spaces, counts):
        rng = random.Random(f"slots:{seed}:{t.id}")
        for combo in rng.sample(space, n):
            plans.append((t, dict(zip(names, combo))))
    return plans


def template_records(
    cfg: TemplateSlotsConfig, seeds: list[Record], responder: Responder, policy_version: str, seed: int
) -> tuple[list[Record], Counter]:
    plans = plan_fills(cfg, seeds, seed)
    pairs = [fill_template(t, values) for t, values in plans]
    answers = responder.answer(pairs, label="template slots: responses")
    counts: Counter = Counter()
    records = []
    for (t, values), (instruction, input), ans in zip(plans, pairs, answers):
        gen = ans.generation
        record = Record(
            instruction=instruction,
            input=input,
            output=(gen.text or "") if gen.ok else "",
            source=Source.template,
            generator=responder.generator.model,
            template_id=f"recipe:{t.id}",
            template_sha256=template_sha256(t),
            decoding=responder.decoding_fields(),
            policy_version=policy_version,
            slice=t.slice,
            rules=list(t.rules),
            audience=t.audience,
            meta={**{f"slot.{k}": v for k, v in values.items()}, **responder.provenance(ans)},
        )
        if gen.ok:
            record.decide(STAGE, True, f"template {t.id} filled ({', '.join(f'{k}={v}' for k, v in values.items())})")
            counts["kept"] += 1
        else:
            record.decide(STAGE, False, f"weak model failed to answer: {gen.error}")
            counts["failed"] += 1
        records.append(record)
    return records, counts
