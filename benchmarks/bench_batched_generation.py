"""Batched in-process generation: llama.cpp decoding several prompts at once against one at a time, one run.

The same prompts (support instructions + inputs from the demo seeds, rendered with record_messages) go through
LlamaCppBackend at parallel=1 (the one-at-a-time path, Llama.create_completion per prompt) and at each
--parallel level (continuous batching: one llama_decode per step over every running sequence), for the weak
model and the strong base. Sides take turns, the order rotating every round, so background load on a shared
machine falls on all of them alike; read the ratios, not the absolute numbers. Tokens/s counts completion
tokens over wall time (prompt processing included, as a generate stage pays it). Each batched side's texts
are compared with the one-at-a-time side's, prompt by prompt. On a shared 2-core machine llama.cpp's two
threads spin-wait whenever another process takes a core, which swamps everything else: --threads 1 (what
pool shards run with) measures the batching itself.

    python benchmarks/bench_batched_generation.py --threads 1              # 32 prompts, 128 tokens, both models
    python benchmarks/bench_batched_generation.py --prompts 16 --max-tokens 64 --models weak
    python benchmarks/bench_batched_generation.py --threads 1 --rounds 1 --parallel 8 --alone   # alone vs batched
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from ballast.backends.base import Decoding
from ballast.backends.llamacpp import LlamaCppBackend
from ballast.policy.schema import load_policy
from ballast.seeds import load_seeds
from ballast.templates.prompts import record_messages

MODELS = {"weak": ("smollm2-135m-instruct", 2048), "strong": ("gemma3-270m", 2048)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--parallel", type=int, nargs="+", default=[4, 8, 16])
    ap.add_argument("--rounds", type=int, default=2, help="turns per side; the order rotates each round")
    ap.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    ap.add_argument("--threads", type=int, default=None, help="llama.cpp threads (default: every core)")
    ap.add_argument(
        "--alone",
        action="store_true",
        help="also run every prompt alone through each batched "
        "backend and count the texts equal to that backend's batched texts (untimed)",
    )
    args = ap.parse_args()

    example = ROOT / "examples" / "harbor-support"
    policy = load_policy(example / "policy.yaml")
    seeds = load_seeds(example / "seeds.jsonl", policy)
    prompts = [record_messages(seeds[i % len(seeds)], policy.company, with_response=False) for i in range(args.prompts)]
    decoding = Decoding(temperature=args.temperature, top_p=0.95, max_tokens=args.max_tokens, seed=0)
    print(
        f"{len(prompts)} prompts, max_tokens={args.max_tokens}, temperature={args.temperature}, "
        f"rounds={args.rounds}, threads={args.threads or os.cpu_count()}, cores={os.cpu_count()}, "
        f"load average at start {os.getloadavg()[0]:.1f}"
    )

    summary = []
    for name in args.models:
        model, n_ctx = MODELS[name]
        levels = [1, *args.parallel]
        backends = {p: LlamaCppBackend(model, n_ctx=n_ctx, n_threads=args.threads, parallel=p) for p in levels}
        for b in backends.values():  # load the weights and build the contexts outside the timing
            b.generate(prompts[:1], Decoding(max_tokens=1))
        wall = dict.fromkeys(levels, 0.0)
        tokens = dict.fromkeys(levels, 0)
        texts: dict[int, list[str | None]] = {}
        for r in range(args.rounds):
            order = levels[r % len(levels) :] + levels[: r % len(levels)]
            for p in order:
                start = time.perf_counter()
                gens = backends[p].generate(prompts, decoding)
                elapsed = time.perf_counter() - start
                wall[p] += elapsed
                tokens[p] += sum(g.completion_tokens for g in gens if g.ok)
                texts.setdefault(p, [g.text for g in gens])
                print(
                    f"  {name} round {r} parallel={p:>2}: {sum(g.completion_tokens for g in gens)} tokens "
                    f"in {elapsed:6.1f} s = {sum(g.completion_tokens for g in gens) / elapsed:6.1f} tok/s "
                    f"(load {os.getloadavg()[0]:.1f})",
                    flush=True,
                )
        base = tokens[1] / wall[1]
        for p in levels:
            same = sum(a == b for a, b in zip(texts[p], texts[1], strict=True))
            alone = "-"
            if args.alone and p > 1:
                alone_texts = [backends[p].generate([prompt], decoding)[0].text for prompt in prompts]
                alone = f"{sum(a == b for a, b in zip(alone_texts, texts[p], strict=True))}/{len(prompts)}"
            summary.append((name, p, tokens[p] / wall[p], tokens[p] / wall[p] / base, same, len(prompts), alone))
        del backends
        report(summary)  # after each model, so a run cut short keeps what it measured


def report(summary: list[tuple]) -> None:
    print("\nmodel   parallel   tok/s   vs one-at-a-time   texts equal to one-at-a-time   alone = in batch", flush=True)
    for name, p, tps, ratio, same, n, alone in summary:
        print(f"{name:<7} {p:>8} {tps:7.1f} {ratio:12.2f}x {same:>16}/{n} {alone:>24}", flush=True)


if __name__ == "__main__":
    main()
