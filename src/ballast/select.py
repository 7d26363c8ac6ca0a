"""Selection: human training seeds always in and up-weighted; kept synthetic records up to a budget."""

from __future__ import annotations

import hashlib

from ballast.recipe import SelectConfig
from ballast.records import Record, Source

STAGE = "select"


def select(human: list[Record], curated: list[Record], cfg: SelectConfig, seed: int) -> list[Record]:
    """Every record comes back with a select decision; the training set is the kept ones."""
    out = []
    for r in human:
        chosen = r.model_copy(deep=True, update={"weight": cfg.human_weight})
        out.append(chosen.decide(STAGE, True, f"human seed: always in, weight {cfg.human_weight:g}"))
    # A seeded hash order: deterministic, and unrelated to generation order.
    ranked = sorted((r for r in curated if r.kept and r.source is not Source.contrastive),
                    key=lambda r: hashlib.sha256(f"{seed}:{r.id}".encode()).digest())
    rank = {r.id: i for i, r in enumerate(ranked)}
    for r in curated:
        r = r.model_copy(deep=True)
        if r.source is Source.contrastive and r.kept:
            r.decide(STAGE, False, "contrastive negative: never a positive training example",
                     rule_id=r.rules[0] if r.rules else None)
        elif r.id in rank:
            within = rank[r.id] < cfg.budget
            r.decide(STAGE, within, f"within budget of {cfg.budget}" if within else f"over budget of {cfg.budget}")
        out.append(r)
    return out


def training_set(records: list[Record]) -> list[Record]:
    return [r for r in records if r.kept and r.source is not Source.contrastive]
