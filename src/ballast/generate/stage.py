"""The generate stage: every enabled generator on the human training seeds, one list of records out.

Self-Instruct is on by default; Evol-Instruct, paraphrase, template slots and contrastive negatives are
off unless the recipe turns them on. Responses come from one Responder (plain or policy-grounded) shared by
the generators that need the weak model to answer. Model calls go through the run's cache and call log.
"""

from __future__ import annotations

from collections import Counter

from rich.console import Console

from ballast.backends.base import Generator
from ballast.backends.calls import CallLog
from ballast.generate.responses import Responder
from ballast.policy.schema import Policy
from ballast.recipe import EVOL_METHODS, GenerateConfig
from ballast.records import Record
from ballast.templates import load_template

console = Console()
# What the stage reads (recipe keys and shared values), from which Run builds its cache key.
READS = ("generate", "seed", "seeds", "models.weak", "models.writer", "templates", "policy")


def templates_used(cfg: GenerateConfig) -> dict[str, str]:
    """Template id -> sha256 for every prompt template the enabled generators use (manifest, stage key)."""
    ids = []
    if cfg.self_instruct.enabled:
        ids.append("generate/self_instruct")
        if cfg.self_instruct.mode == "instances":
            ids += [
                "generate/self_instruct_is_clf",
                "generate/self_instruct_input_first",
                "generate/self_instruct_output_first",
            ]
    if cfg.responses.mode == "grounded":
        ids.append("generate/grounded")
    if cfg.evol.enabled:
        ids += [f"generate/evol_{m}" for m in EVOL_METHODS if m in cfg.evol.methods] + ["generate/evol_equal"]
    if cfg.paraphrase.enabled:
        ids.append("generate/paraphrase")
    out = {t: load_template(t).sha256 for t in ids}
    if cfg.template_slots.enabled:
        from ballast.generate.slots import template_sha256

        out |= {f"recipe:{t.id}": template_sha256(t) for t in cfg.template_slots.templates}
    return out


def generation_seed(cfg: GenerateConfig, seed: int) -> int:
    """generate.seed when set, else the recipe's seed."""
    return cfg.seed if cfg.seed is not None else seed


def make_responder(
    train: list[Record], weak: Generator, cfg: GenerateConfig, seed: int, policy: Policy, log: CallLog | None = None
) -> Responder:
    grounding = None
    if cfg.responses.mode == "grounded":
        from ballast.generate.grounding import PolicyGrounding

        grounding = PolicyGrounding(policy, train, cfg.responses.grounding)
    return Responder(
        weak,
        cfg.responses.decoding.to_decoding(generation_seed(cfg, seed)),
        policy.company,
        grounding=grounding,
        log=log,
        chunk=cfg.batch_size,
    )


def generate_records(
    train: list[Record],
    weak: Generator,
    cfg: GenerateConfig,
    seed: int,
    policy: Policy,
    log: CallLog | None = None,
    writer: Generator | None = None,
) -> tuple[list[Record], dict[str, int]]:
    """Records from every enabled generator (kept and dropped), and counts per generator and outcome; `seed` is
    the recipe's (generate.seed overrides it). `writer` writes Self-Instruct's new instructions when it is not
    the weak model."""
    responder = make_responder(train, weak, cfg, seed, policy, log)
    seed = generation_seed(cfg, seed)
    records: list[Record] = []
    counts: Counter = Counter()

    def add(name: str, produced: list[Record], extra: Counter | None = None) -> None:
        records.extend(produced)
        kept = sum(r.kept for r in produced)
        counts[f"{name}.records"] += len(produced)
        counts[f"{name}.kept"] += kept
        for key, value in (extra or {}).items():
            if key not in ("records", "kept"):
                counts[f"{name}.{key}"] += value
        console.print(f"generate: {name}: {len(produced)} records, {kept} kept")

    if cfg.self_instruct.enabled:
        from ballast.generate.self_instruct import self_instruct

        add(
            "self_instruct",
            self_instruct(
                train,
                writer or weak,
                cfg.self_instruct,
                cfg.responses.decoding,
                policy.company,
                policy.policy_id,
                seed,
                responder=responder,
                log=log,
            ),
        )
    if cfg.evol.enabled:
        from ballast.generate.evol import evolve

        add("evol", *evolve(train, weak, cfg.evol, responder, policy.policy_id, seed, log))
    if cfg.paraphrase.enabled:
        from ballast.generate.paraphrase import paraphrase

        add("paraphrase", *paraphrase(train, weak, cfg.paraphrase, responder, policy.policy_id, seed, log))
    if cfg.template_slots.enabled:
        from ballast.generate.slots import template_records

        add("template_slots", *template_records(cfg.template_slots, train, responder, policy.policy_id, seed))
    if cfg.contrastive.enabled:
        from ballast.generate.contrastive import check_negatives, contrastive_negatives

        negatives, made = contrastive_negatives(train, policy, cfg.contrastive)
        caught = check_negatives(negatives, train, policy)
        add("contrastive", negatives, made + Counter({"caught_by_checker": caught["caught"]}))
    if log is not None:
        counts.update(log.summary())
    return records, dict(counts)
