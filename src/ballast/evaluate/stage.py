"""Generate with every compared model on the held-out set, with the same decoding, and score the outputs."""

from __future__ import annotations

import hashlib
import json
import math
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import pyarrow as pa

from ballast.backends.base import Generator
from ballast.backends.calls import generate_all
from ballast.backends.transformers_hf import TransformersBackend, device_and_dtype
from ballast.evaluate.metrics import aggregate, score_output
from ballast.evaluate.pgr import WEAK, performance_gap_recovered
from ballast.policy.checks import PolicyChecker
from ballast.policy.schema import Policy
from ballast.recipe import EvaluateConfig
from ballast.records import Record
from ballast.seeds import ProbeLine, load_seeds
from ballast.store import write_json, write_table
from ballast.templates.prompts import record_messages, user_content

# What the stage reads (recipe keys and shared values), from which Run builds its cache key; the weak model
# is served as generation serves it (generate.server).
READS = ("evaluate", "seed", "seeds", "policy", "models.strong", "models.weak", "generate.server")


class Grader(Protocol):
    """What evaluation needs of a judge (the score stage's, built by the pipeline): a grade per record."""

    def judge(self, records: list[Record]) -> list: ...


def eval_subset(heldout: list[Record], cap: int | None, seed: int) -> list[Record]:
    """All held-out examples, or `cap` of them stratified by slice (the same ones for every model): each slice
    gets one when the cap allows, the rest goes by share with the largest remainders rounded up."""
    if cap is None or cap >= len(heldout):
        return heldout
    ranked = sorted(heldout, key=lambda r: hashlib.sha256(f"{seed}:{r.id}".encode()).digest())
    by_slice: dict[str, list[Record]] = defaultdict(list)
    for r in ranked:
        by_slice[r.slice or ""].append(r)
    floor_each = 1 if cap >= len(by_slice) else 0
    rest = cap - floor_each * len(by_slice)
    shares = {s: rest * len(m) / len(heldout) for s, m in by_slice.items()}
    quota = {s: floor_each + math.floor(v) for s, v in shares.items()}
    for s in sorted(shares, key=lambda s: shares[s] - math.floor(shares[s]), reverse=True)[: cap - sum(quota.values())]:
        quota[s] += 1
    picked = [r for s, members in by_slice.items() for r in members[: quota[s]]]
    # A slice smaller than its quota leaves places; fill them in rank order.
    chosen = {r.id for r in picked}
    return picked + [r for r in ranked if r.id not in chosen][: cap - len(picked)]


def model_generator(
    name: str, adapter: Path | None, strong: str, batch_size: int, weak: Callable[[], Generator]
) -> Generator:
    """The strong base with the model's adapter (none for "base"), or for "weak" the weak model itself, served as
    generation serves it (`weak()` builds it): the floor of the performance gap recovered."""
    if name == WEAK:
        return weak()
    return TransformersBackend(strong, adapter=adapter, batch_size=batch_size)


def evaluate_models(
    adapters: dict[str, Path | None],
    heldout: list[Record],
    policy: Policy,
    cfg: EvaluateConfig,
    seed: int,
    strong: str,
    weak: Callable[[], Generator],
    out: Path,
    judge: Grader | None = None,
) -> dict:
    """Every model in `adapters` answers the held-out prompts; `strong` names the base the adapters were trained on,
    `judge` (built from evaluate.judge by the caller) grades every output when given."""
    examples = eval_subset(heldout, cfg.max_examples, seed)
    if cfg.probes is not None:
        examples += eval_subset(load_seeds(cfg.probes, policy, ProbeLine), cfg.max_probes, seed)
    checker = PolicyChecker(policy)
    decoding = cfg.decoding.to_decoding(seed)
    prompts = [record_messages(r, policy.company, with_response=False) for r in examples]
    results, outputs, rows, refs = {}, {}, [], {}
    for name, adapter in adapters.items():
        backend = model_generator(name, adapter, strong, cfg.batch_size, weak)
        refs[name] = backend.model.name
        gens = generate_all(backend, prompts, decoding, label=f"evaluate: {name}", chunk=cfg.batch_size)
        texts = [g.text if g.ok else "" for g in gens]
        scored = [score_output(policy, checker, r, t) for r, t in zip(examples, texts)]
        if judge is not None:  # the same rubric grades every model's answer to the same prompt
            graded = judge.judge([r.model_copy(update={"output": t}) for r, t in zip(examples, texts)])
            for s, j in zip(scored, graded):
                s["judge"] = j.score
        results[name] = aggregate(scored, policy)
        outputs[name] = texts
        rows += [
            {
                "model": name,
                "output": t,
                "error": g.error,
                "findings": s["findings"],
                "ref": s["ref"],
                "slice": s["slice"],
            }
            for t, g, s in zip(texts, gens, scored)
        ]
    write_table(pa.Table.from_pylist(rows), out / "outputs.parquet")
    device, dtype = device_and_dtype()
    summary = {
        "n_heldout": sum("probe" not in r.meta for r in examples),
        "n_probes": sum("probe" in r.meta for r in examples),
        "decoding": decoding.as_dict(),
        "device": str(device),
        "dtype": str(dtype).removeprefix("torch."),
        "model_refs": refs,
        "register_rule": policy.register_.rule,
        "models": results,
    }
    gap = performance_gap_recovered(results)
    if gap is not None:
        summary["pgr"] = gap
    write_json(summary, out / "results.json")
    # Two samples per slice, side by side, for the report.
    seen: dict[str, int] = defaultdict(int)
    samples = []
    for i, r in enumerate(examples):
        if seen[r.slice] < 2:
            seen[r.slice] += 1
            samples.append(
                {
                    "slice": r.slice,
                    "prompt": user_content(r.instruction, r.input),
                    "reference": r.output,
                    "outputs": {m: outputs[m][i] for m in adapters},
                }
            )
    (out / "samples.json").write_text(json.dumps(samples, indent=1), encoding="utf-8")
    return {"records_in": len(examples), "records_out": len(rows), "kept": len(rows), "dropped": 0}
