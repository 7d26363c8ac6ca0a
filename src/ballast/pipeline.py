"""The main job: generate -> curate -> select -> train (pilot and curated) -> evaluate -> report."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console

from ballast.cache import CachedGenerator
from ballast.coverage import compare_coverage
from ballast.curate.filters import curation_filters
from ballast.evaluate.run import evaluate_models
from ballast.gate import run_gate
from ballast.generate.calls import CallLog
from ballast.generate.stage import backend_for, generate_records, templates_used, weak_generator
from ballast.manifest import FileHash, hash_file
from ballast.models import resolve
from ballast.policy import Policy, load_policy
from ballast.policy_checks import PolicyChecker
from ballast.recipe import Recipe
from ballast.records import Record
from ballast.report import render_data_card, render_report
from ballast.run import Run, fingerprint
from ballast.seeds import SeedSplit, load_seeds, split_heldout
from ballast.select import make_embedder, select, training_set
from ballast.store import write_json
from ballast.train import train_lora

console = Console()


class HeldOutLeak(RuntimeError):
    pass


def guard_heldout(records: list[Record], split: SeedSplit, where: str) -> None:
    """The held-out set is never an input to generation or selection; fail loudly if it ever is."""
    leaked = {r.id for r in records} | {p for r in records for p in r.parent_ids}
    leaked &= split.heldout_ids
    if leaked:
        raise HeldOutLeak(f"{len(leaked)} held-out records reached {where}: {sorted(leaked)[:3]}")


def curate(records: list[Record], seen: list[Record], recipe: Recipe, policy: Policy) -> list[Record]:
    records = [r.model_copy(deep=True) for r in records]
    checker = PolicyChecker(policy)
    for r in records:
        if r.audience is None:
            r.audience = checker.infer_audience(r.instruction, r.output, policy.sign_off)
    classifier = None
    if recipe.curate.classifier.enabled:  # fitted on the training seeds and their contrastive negatives
        from ballast.conformance import fit_from_seeds

        classifier = fit_from_seeds(policy, seen, recipe.curate.classifier, recipe.generate.contrastive)
    for step in curation_filters(recipe.curate, seen, checker, classifier):
        step.run(records)
    return records


def score(records: list[Record], recipe: Recipe, policy: Policy, log: CallLog) -> list[Record]:
    """IFD and perplexity from the weak model (and the judge's grade when one is configured) on the records
    curation kept; selection ranks by them."""
    records = [r.model_copy(deep=True) for r in records]
    kept = [r for r in records if r.kept]
    if recipe.score.enabled and kept:
        from ballast.quality import QualityScorer

        summary = QualityScorer(policy.company, recipe.models.weak, batch_size=recipe.score.batch_size,
                                max_len=recipe.score.max_len).score(kept)
        console.print(f"score: IFD of {summary.scored} records ({summary.truncated} truncated, "
                      f"{summary.unscorable} unscorable)")
    judge = recipe.score.judge
    if judge is not None and kept:
        from ballast.judge import Judge

        backend = backend_for(judge.server, recipe.models.weak)
        Judge(backend, policy, decoding=judge.decoding.to_decoding(recipe.seed), max_rules=judge.max_rules,
              log=log).score(kept, min_score=judge.min_score)
    return records


STAGES = ("generate", "curate", "score", "select", "train", "evaluate", "report")


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
    run.manifest.models = {"weak": FileHash(path=str(weak_path), sha256=weak_ref.sha256, name=weak_ref.name),
                           "strong": FileHash(path=str(strong_path), sha256=strong_ref.sha256, name=strong_ref.name)}
    if recipe.curate.semantic.enabled:  # the static model distilled from MiniLM (once, then cached)
        from ballast.backends.static import StaticEmbedder

        static = StaticEmbedder(pca_dims=recipe.curate.semantic.pca_dims)
        run.manifest.models["semantic"] = FileHash(path=str(static.folder / "model.safetensors"),
                                                   sha256=static.model.sha256, name=static.model.name)
    run.manifest.data = {"seeds": hash_file(recipe.seeds), "policy": hash_file(recipe.policy)}
    templates = templates_used(recipe.generate)
    run.manifest.templates = dict(templates)
    run.save_manifest()
    heldout_ids = sorted(split.heldout_ids)
    (run.root / "heldout_ids.json").write_text(json.dumps(heldout_ids, indent=0))
    seeds_key = fingerprint([r.id for r in split.train], heldout_ids)

    guard_heldout(split.train, split, "generation")
    weak = CachedGenerator(weak_generator(recipe), run.cache_path)
    writer = None
    if recipe.generate.self_instruct.enabled and recipe.generate.self_instruct.writer == "strong":
        writer = CachedGenerator(backend_for(None, recipe.models.strong, recipe.models.threads), run.cache_path)
    # Every model call of the stage, appended as it returns: a crash leaves a trail and the failures counted.
    call_log, gen_counts = CallLog(run.root / "logs" / "generate.calls.jsonl"), {}

    def produce_generated() -> list[Record]:
        records, counts = generate_records(split.train, weak, recipe, policy, log=call_log, writer=writer)
        gen_counts.update(counts)
        return records

    writer_sha = writer.model.sha256 if writer is not None else None
    gen_key, generated = run.records_step(
        "generate", recipe.generate,
        [seeds_key, weak.model.sha256 or weak.model.name, writer_sha, recipe.seed, templates, policy.sha256],
        len(split.train),
        produce_generated, extra=lambda: {"cache_hits": weak.hits, "cache_misses": weak.misses, **gen_counts})
    call_log.close()
    if until == "generate":
        return run.root
    cur_key, curated = run.records_step(
        "curate", [recipe.curate, policy.sha256], [gen_key, seeds_key], len(generated),
        lambda: curate(generated, split.train, recipe, policy))
    if until == "curate":
        return run.root
    score_log = CallLog(run.root / "logs" / "score.calls.jsonl")
    score_key, curated = run.records_step("score", recipe.score, [cur_key, weak_ref.sha256], len(curated),
                                          lambda: score(curated, recipe, policy, score_log))
    score_log.close()
    if until == "score":
        return run.root
    # The pilot is what the team shipped: every seed plus everything the weak model wrote, unfiltered.
    pilot_set = split.train + [r for r in generated if r.decisions and r.decisions[0].kept]
    sel_key, selected = run.records_step(
        "select", recipe.select, [score_key], len(curated) + len(split.train),
        lambda: _select(split.train, curated, pilot_set, recipe, run.root / "stages" / "select"))
    guard_heldout(training_set(selected), split, "selection")
    run.write_decision_log(selected)
    if until == "select":
        return run.root

    adapters: dict[str, Path | None] = {"base": None, "weak": None}
    upstream = {"seeds": [seeds_key], "pilot": [gen_key, seeds_key], "curated": [sel_key]}
    sets = {"seeds": split.train, "pilot": pilot_set, "curated": training_set(selected)}
    train_keys = []
    for name in sets:
        if name not in recipe.evaluate.models:
            continue
        folder = run.root / "stages" / f"train.{name}"
        train_keys.append(run.step(f"train.{name}", recipe.train, [*upstream[name], strong_ref.sha256],
                                   lambda out, records=sets[name]: _train(records, policy, recipe, out)))
        adapters[name] = folder / "adapter"
    if until == "train":
        return run.root

    run.step("evaluate", recipe.evaluate, [*train_keys, seeds_key, policy.sha256],
             lambda out: evaluate_models({m: adapters[m] for m in recipe.evaluate.models}, split.heldout, policy,
                                         recipe, out))
    if until == "evaluate":
        return run.root
    run_gate(run.root, recipe.gate)
    render_data_card(run.root)
    report = render_report(run.root)
    console.print(f"[green]done[/] {run.root}: report {report}")
    return run.root


def _select(train: list[Record], curated: list[Record], pilot: list[Record], recipe: Recipe,
            folder: Path) -> list[Record]:
    """Selection, plus its coverage beside the pilot's (slices, rules, embedding clusters) in coverage.json."""
    embedder = make_embedder(recipe.select.embedder)
    selected = select(train, curated, recipe.select, recipe.seed, embedder)
    seed = recipe.select.seed if recipe.select.seed is not None else recipe.seed
    coverage = compare_coverage({"pilot": pilot, "curated": training_set(selected)}, embedder,
                                clusters=recipe.select.coverage_clusters, seed=seed)
    write_json(coverage, folder / "coverage.json")
    return selected


def _train(records: list[Record], policy: Policy, recipe: Recipe, out: Path) -> dict:
    result = train_lora(records, policy.company, recipe.train, out / "adapter")
    return {"records_in": len(records), "records_out": len(records), "kept": len(records), "dropped": 0,
            "train": result.model_dump(mode="json")}

