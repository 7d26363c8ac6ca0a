"""Policy-check failure rate of the weak model's answers on the held-out prompts: plain vs policy-grounded.

The held-out prompts are split_heldout(seeds, 0.25, salt="heldout:13").heldout, used here only to measure:
grounding retrieves rules from the policy and examples from the training seeds alone. Each answer is checked
with PolicyChecker (the audience is the seed's own); an answer fails when the checker has any finding. The
weak model answers both ways with the same decoding and seeds, so the comparison is paired.

    python benchmarks/bench_grounding.py                 # every held-out prompt
    python benchmarks/bench_grounding.py --limit 40      # a slice-stratified subset
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from ballast.backends.base import Decoding
from ballast.backends.cache import CachedGenerator
from ballast.backends.llamacpp import LlamaCppBackend
from ballast.generate.grounding import PolicyGrounding
from ballast.generate.responses import Responder
from ballast.policy.checks import PolicyChecker
from ballast.policy.schema import load_policy
from ballast.recipe import GroundingConfig
from ballast.seeds import load_seeds, split_heldout

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "harbor-support"


def stratified(records, limit: int | None, seed: int = 0):
    if not limit or limit >= len(records):
        return records
    by_slice = defaultdict(list)
    for r in records:
        by_slice[r.slice].append(r)
    rng = random.Random(seed)
    for members in by_slice.values():
        rng.shuffle(members)
    out, k = [], 0
    while len(out) < limit:  # round-robin over slices
        for members in by_slice.values():
            if k < len(members) and len(out) < limit:
                out.append(members[k])
        k += 1
    return out


def bootstrap_ci(flags: list[bool], n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    rng = random.Random(seed)
    means = sorted(sum(rng.choice(flags) for _ in flags) / len(flags) for _ in range(n_boot))
    return means[int(0.025 * n_boot)], means[int(0.975 * n_boot) - 1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=None, help="held-out prompts to use (stratified by slice)")
    ap.add_argument("--max-tokens", type=int, default=220, help="the recipe's response max_tokens")
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--top-p", type=float, default=0.9)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="llama.cpp threads")
    ap.add_argument("--cache", type=Path, default=None, help="model-call cache (reruns reuse answers)")
    ap.add_argument("--out", type=Path, default=None, help="write the full results as JSON")
    args = ap.parse_args()

    policy = load_policy(EXAMPLE / "policy.yaml")
    split = split_heldout(load_seeds(EXAMPLE / "seeds.jsonl", policy), 0.25, salt="heldout:13")
    heldout = stratified(split.heldout, args.limit)
    cache = args.cache or Path(tempfile.mkdtemp()) / "calls.sqlite"
    weak = CachedGenerator(LlamaCppBackend("smollm2-135m-instruct", n_threads=args.threads), cache)
    decoding = Decoding(temperature=args.temperature, top_p=args.top_p, max_tokens=args.max_tokens, seed=args.seed)
    grounding = PolicyGrounding(policy, split.train, GroundingConfig())
    pairs = [(r.instruction, r.input) for r in heldout]
    checker = PolicyChecker(policy)
    print(
        f"{len(heldout)} held-out prompts of {len(split.heldout)}; {len(split.train)} training seeds for examples; "
        f"load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )

    results = {}
    for mode, responder in (
        ("plain", Responder(weak, decoding, policy.company)),
        ("grounded", Responder(weak, decoding, policy.company, grounding=grounding)),
    ):
        start = time.perf_counter()
        answers = responder.answer(pairs, label="held-out answers")
        seconds = time.perf_counter() - start
        if mode == "grounded":
            shown = {ex.id for a in answers for ex in a.grounding.examples}
            assert not shown & split.heldout_ids, "a held-out seed was shown as an example"
        flags, per_rule, per_slice, errors = [], Counter(), defaultdict(list), 0
        for r, a in zip(heldout, answers):
            if not a.generation.ok:  # a failed call is a recorded failure, counted, not a policy verdict
                errors += 1
                continue
            findings = checker.check(r.instruction, r.input, a.generation.text or "", r.audience)
            flags.append(bool(findings))
            per_slice[r.slice].append(bool(findings))
            per_rule.update({f.rule_id for f in findings})
        low, high = bootstrap_ci(flags)
        results[mode] = {
            "n": len(flags),
            "failed_calls": errors,
            "failure_rate": sum(flags) / len(flags),
            "ci95": [low, high],
            "seconds": round(seconds, 1),
            "per_rule": dict(per_rule.most_common()),
            "per_slice": {k: sum(v) / len(v) for k, v in sorted(per_slice.items())},
            "flags": flags,
        }
        print(
            f"{mode:>8}: {sum(flags)}/{len(flags)} answers with a policy finding = {sum(flags) / len(flags):.3f} "
            f"(95% CI {low:.3f}-{high:.3f}); {errors} failed calls; {seconds:.0f} s",
            flush=True,
        )

    plain, grounded = results["plain"]["flags"], results["grounded"]["flags"]
    if len(plain) == len(grounded):
        fixed = sum(p and not g for p, g in zip(plain, grounded))
        broke = sum(g and not p for p, g in zip(plain, grounded))
        print(f"paired: grounding fixed {fixed} answers and broke {broke}")
    print("\nfindings per rule (answers with at least one):")
    rules = sorted(set(results["plain"]["per_rule"]) | set(results["grounded"]["per_rule"]))
    for rid in rules:
        print(
            f"  {rid:>4}: plain {results['plain']['per_rule'].get(rid, 0):3d}   "
            f"grounded {results['grounded']['per_rule'].get(rid, 0):3d}"
        )
    print("\nfailure rate per slice:")
    for s in results["plain"]["per_slice"]:
        print(
            f"  {s:>11}: plain {results['plain']['per_slice'][s]:.2f}   "
            f"grounded {results['grounded']['per_slice'].get(s, float('nan')):.2f}"
        )
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
