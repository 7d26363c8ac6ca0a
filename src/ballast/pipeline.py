"""The main job, and the only module that knows the order of the stages: generate -> curate -> score -> select ->
train (pilot and curated) -> evaluate -> report. Each stage gets its own recipe section and the shared values it
needs (seed, model names, policy), never the whole recipe."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console

from ballast import train
from ballast.backends.cache import CachedGenerator
from ballast.backends.calls import CallLog
from ballast.backends.factory import backend_for
from ballast.backends.models import resolve
from ballast.curate import stage as curate_stage
from ballast.evaluate import stage as evaluate_stage
from ballast.evaluate.gate import run_gate
from ballast.generate import stage as generate_stage
from ballast.manifest import FileHash, hash_file
from ballast.policy.schema import Policy, load_policy
from ballast.recipe import Recipe
from ballast.records import Record, Source
from ballast.report import render_data_card, render_report
from ballast.run import Run, fingerprint
from ballast.score import stage as score_stage
from ballast.seeds import SeedSplit, load_seeds, split_heldout
from ballast.select import stage as select_stage
from ballast.select.stage import training_set
from ballast.stages import STAGES

console = Console()


class HeldOutLeak(RuntimeError):
    pass


def guard_heldout(records: list[Record], split: SeedSplit, where: str) -> None:
    """The held-out set is never an input to generation or selection; fail loudly if it ever is."""
    leaked = {r.id for r in records} | {p for r in records for p in r.parent_ids}
    leaked &= split.heldout_ids
    if leaked:
        raise HeldOutLeak(f"{len(leaked)} held-out records reached {where}: {sorted(leaked)[:3]}")


def run_recipe(recipe: Recipe, until: str = "report") -> Path:
    """Run the stages in order up to and including `until`; returns the run folder."""
    if until not in STAGES:
        raise ValueError(f"unknown stage {until!r}; stages are {', '.join(STAGES)}")
    run = Run(recipe)
    policy = load_policy(recipe.policy)
    split = split_heldout(load_seeds(recipe.seeds, policy), recipe.heldout_fraction, salt=f"heldout:{recipe.seed}")
    weak_path, weak_ref = resolve(recipe.models.weak)
    strong_path, strong_ref = resolve(recipe.models.strong)
    run.manifest.policy = {"policy_id": policy.policy_id, "version": policy.version, "sha256": policy.sha256}
    run.manifest.models = {
        "weak": FileHash(path=str(weak_path), sha256=weak_ref.sha256, name=weak_ref.name),
        "strong": FileHash(path=str(strong_path), sha256=strong_ref.sha256, name=strong_ref.name),
    }
    if recipe.curate.semantic.enabled:  # the static model distilled from MiniLM (once, then cached)
        from ballast.backends.static import StaticEmbedder

        static = StaticEmbedder(pca_dims=recipe.curate.semantic.pca_dims)
        run.manifest.models["semantic"] = FileHash(
            path=str(static.folder / "model.safetensors"), sha256=static.model.sha256, name=static.model.name
        )
    run.manifest.data = {"seeds": hash_file(recipe.seeds), "policy": hash_file(recipe.policy)}
    templates = generate_stage.templates_used(recipe.generate)
    run.manifest.templates = dict(templates)
    run.save_manifest()
    heldout_ids = sorted(split.heldout_ids)
    (run.root / "heldout_ids.json").write_text(json.dumps(heldout_ids, indent=0))
    seeds_key = fingerprint([r.id for r in split.train], heldout_ids)

    guard_heldout(split.train, split, "generation")
    weak = CachedGenerator(
        backend_for(recipe.generate.server, recipe.models.weak, recipe.models.threads, recipe.models.parallel),
        run.cache_path,
    )
    writer = None
    if recipe.generate.self_instruct.enabled and recipe.generate.self_instruct.writer == "strong":
        writer = CachedGenerator(
            backend_for(None, recipe.models.strong, recipe.models.threads, recipe.models.parallel), run.cache_path
        )
    # What stages declare they read besides recipe keys: file hashes rather than names and paths.
    run.provide(
        {
            "seeds": seeds_key,
            "policy": policy.sha256,
            "templates": templates,
            "models.weak": weak_ref.sha256,
            "models.strong": strong_ref.sha256,
            "models.writer": writer.model.sha256 if writer is not None else None,
        }
    )
    # Every model call of the stage, appended as it returns: a crash leaves a trail and the failures counted.
    call_log, gen_counts = CallLog(run.root / "logs" / "generate.calls.jsonl"), {}

    def produce_generated() -> list[Record]:
        records, counts = generate_stage.generate_records(
            split.train, weak, recipe.generate, recipe.seed, policy, log=call_log, writer=writer
        )
        gen_counts.update(counts)
        return records

    gen_key, generated = run.records_step(
        "generate",
        generate_stage.READS,
        [],
        len(split.train),
        produce_generated,
        extra=lambda: {"cache_hits": weak.hits, "cache_misses": weak.misses, **gen_counts},
    )
    call_log.close()
    if until == "generate":
        return run.root
    cur_key, curated = run.records_step(
        "curate",
        curate_stage.READS,
        [gen_key],
        len(generated),
        lambda: curate_stage.curate(
            generated, split.train, recipe.curate, policy, negatives=_negatives(generated, split.train, recipe, policy)
        ),
    )
    if until == "curate":
        return run.root
    score_log = CallLog(run.root / "logs" / "score.calls.jsonl")
    score_key, curated = run.records_step(
        "score",
        score_stage.READS,
        [cur_key],
        len(curated),
        lambda: score_stage.score(curated, recipe.score, recipe.models.weak, recipe.seed, policy, score_log),
    )
    score_log.close()
    if until == "score":
        return run.root
    # The pilot is what the team shipped: every seed plus everything the weak model wrote, unfiltered.
    pilot_set = split.train + [r for r in generated if r.decisions and r.decisions[0].kept]
    sel_key, selected = run.records_step(
        "select",
        select_stage.READS,
        [score_key, gen_key],
        len(curated) + len(split.train),
        lambda: select_stage.select_stage(
            split.train, curated, pilot_set, recipe.select, recipe.seed, run.root / "stages" / "select"
        ),
    )
    guard_heldout(training_set(selected), split, "selection")
    run.write_decision_log(selected)
    if until == "select":
        return run.root

    adapters: dict[str, Path | None] = {"base": None, "weak": None}
    upstream = {"seeds": [], "pilot": [gen_key], "curated": [sel_key]}
    sets = {"seeds": split.train, "pilot": pilot_set, "curated": training_set(selected)}
    train_keys = []
    for name in sets:
        if name not in recipe.evaluate.models:
            continue
        folder = run.root / "stages" / f"train.{name}"
        train_keys.append(
            run.step(
                f"train.{name}",
                train.READS,
                upstream[name],
                lambda out, records=sets[name]: _train(records, policy, recipe, out),
            )
        )
        adapters[name] = folder / "adapter"
    if until == "train":
        return run.root

    def weak_model():  # noqa: ANN202 - the weak model as generation serves it, for "weak" in evaluate.models
        return backend_for(recipe.generate.server, recipe.models.weak, recipe.models.threads, recipe.models.parallel)

    judge = None
    if recipe.evaluate.judge is not None:
        judge = score_stage.make_judge(recipe.evaluate.judge, recipe.models.weak, recipe.seed, policy)
    run.step(
        "evaluate",
        evaluate_stage.READS,
        train_keys,
        lambda out: evaluate_stage.evaluate_models(
            {m: adapters[m] for m in recipe.evaluate.models},
            split.heldout,
            policy,
            recipe.evaluate,
            recipe.seed,
            recipe.models.strong,
            weak_model,
            out,
            judge=judge,
        ),
    )
    if until == "evaluate":
        return run.root
    run_gate(run.root, recipe.gate)
    render_data_card(run.root)
    report = render_report(run.root)
    console.print(f"[green]done[/] {run.root}: report {report}")
    return run.root


def _negatives(generated: list[Record], train: list[Record], recipe: Recipe, policy: Policy) -> list[Record]:
    """The contrastive negatives the conformance classifier is fitted on: the ones already in curate's input
    when the recipe generates them; else built from the training seeds with the same settings, which gives the
    same records (contrastive edits are deterministic), so the classifier is fitted on the same set either way."""
    if not recipe.curate.classifier.enabled:
        return []
    if recipe.generate.contrastive.enabled:
        return [r for r in generated if r.source is Source.contrastive]
    from ballast.generate.contrastive import contrastive_negatives

    return contrastive_negatives(train, policy, recipe.generate.contrastive)[0]


def _train(records: list[Record], policy: Policy, recipe: Recipe, out: Path) -> dict:
    result = train.train_lora(
        records, policy.company, recipe.train, out / "adapter", base=recipe.models.strong, seed=recipe.seed
    )
    return {
        "records_in": len(records),
        "records_out": len(records),
        "kept": len(records),
        "dropped": 0,
        "train": result.model_dump(mode="json"),
    }
