"""Would a fine-tuned encoder catch what the shipped conformance classifier misses? MiniLM fine-tuned as a
sentence-level cross-encoder against ballast.curate.conformance (logistic heads on frozen MiniLM embeddings), each
combined
with the rule checks, on the same training data and the same devsets in one run.

Training data for both: the example's training seeds (conformant) and their contrastive negatives. The cross-encoder
reads (sentence, instruction + input) pairs: a negative's sentences that its parent seed lacks are violations, every
seed sentence is conformant (twice as many sampled as there are violations); a record's score is the highest over
its sentences. The held-out seeds and both devsets are never training input. About 15 minutes on two CPU cores,
nearly all of it fine-tuning.

    flock /tmp/cpu.lock .venv/bin/python benchmarks/bench_cross_encoder.py [--epochs 2]
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import numpy as np
import torch
from bench_devset import EXAMPLE, load_devset
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from ballast.backends.models import model_dir
from ballast.curate.conformance import fit_from_seeds
from ballast.generate.contrastive import contrastive_negatives
from ballast.policy.checks import PolicyChecker, split_sentences
from ballast.policy.schema import load_policy
from ballast.recipe import ClassifierConfig, ContrastiveConfig
from ballast.records import Record
from ballast.seeds import load_seeds, split_heldout

Pair = tuple[str, str]
THRESHOLDS = (0.5, 0.7, 0.8, 0.9, 0.95)


def _context(r: Record) -> str:
    return f"{r.instruction}\n{r.input}".strip()


def training_pairs(seeds: list[Record], negatives: list[Record], rng: random.Random) -> list[tuple[Pair, float]]:
    own = {s.id: set(split_sentences(s.output)) for s in seeds}
    bad = {(x, _context(r)) for r in negatives for x in split_sentences(r.output) if x not in own[r.parent_ids[0]]}
    good = sorted({(x, _context(s)) for s in seeds for x in own[s.id]} - bad)
    rng.shuffle(good)
    return [(p, 1.0) for p in sorted(bad)] + [(p, 0.0) for p in good[: 2 * len(bad)]]


class CrossEncoder:
    def __init__(self, max_len: int = 96) -> None:
        path = str(model_dir("all-minilm-l6-v2"))
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)
        self.max_len = max_len

    def _encode(self, pairs: list[Pair]) -> dict:
        return self.tokenizer(
            [s for s, _ in pairs],
            [c for _, c in pairs],
            truncation="only_second",
            max_length=self.max_len,
            padding=True,
            return_tensors="pt",
        )

    def fit(self, data: list[tuple[Pair, float]], epochs: int, rng: random.Random, batch: int = 16) -> None:
        opt = torch.optim.AdamW(self.model.parameters(), lr=3e-5, weight_decay=0.01)
        steps = epochs * -(-len(data) // batch)
        # linear warm-up over the first 10% of steps, then linear decay
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda i: min(1.0, (i + 1) / (0.1 * steps)) * (steps - i) / steps
        )
        self.model.train()
        for _ in range(epochs):
            rng.shuffle(data)
            for i in range(0, len(data), batch):
                chunk = data[i : i + batch]
                logits = self.model(**self._encode([p for p, _ in chunk])).logits.squeeze(-1)
                loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.tensor([y for _, y in chunk]))
                loss.backward()
                opt.step()
                sched.step()
                opt.zero_grad()
        self.model.eval()

    @torch.inference_mode()
    def score(self, records: list[Record]) -> np.ndarray:
        """Per record, the highest violation probability over its sentences."""
        pairs, owners = [], []
        for n, r in enumerate(records):
            for sentence in split_sentences(r.output) or [""]:
                pairs.append((sentence, _context(r)))
                owners.append(n)
        probs = torch.cat(
            [
                torch.sigmoid(self.model(**self._encode(pairs[i : i + 64])).logits.squeeze(-1))
                for i in range(0, len(pairs), 64)
            ]
        ).numpy()
        best = np.zeros(len(records))
        np.maximum.at(best, owners, probs)
        return best


def sweep(name: str, dev: list[Record], scores: np.ndarray, rules: np.ndarray) -> list[str]:
    violation = np.array([r.meta["label"] == "violation" for r in dev])
    clean = np.array([not r.rules for r in dev])
    rows = []
    for t in THRESHOLDS:
        cells = []
        for flag in (scores >= t, (scores >= t) | rules):
            tp, fp = int((flag & violation).sum()), int((flag & clean).sum())
            cells += [f"{tp / (tp + fp) if tp + fp else 0:.3f}", f"{tp / violation.sum():.3f}", str(fp)]
        rows.append(f"| {name} | {t:.2f} | " + " | ".join(cells) + " |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)

    policy = load_policy(EXAMPLE / "policy.yaml")
    split = split_heldout(load_seeds(EXAMPLE / "seeds.jsonl", policy), 0.25, salt="heldout:13")
    negatives, _ = contrastive_negatives(split.train, policy, ContrastiveConfig())
    data = training_pairs(split.train, negatives, rng)
    start = time.perf_counter()
    encoder = CrossEncoder()
    encoder.fit(data, args.epochs, rng)
    print(
        f"cross-encoder: {len(data)} sentence pairs ({int(sum(y for _, y in data))} violating), "
        f"{args.epochs} epochs in {time.perf_counter() - start:.0f} s"
    )
    negatives = contrastive_negatives(split.train, policy, ContrastiveConfig())[0]
    classifier = fit_from_seeds(policy, split.train, negatives, ClassifierConfig())
    checker = PolicyChecker(policy)

    def flagged(records: list[Record]) -> np.ndarray:
        return np.array([bool(checker.check(r.instruction, r.input, r.output, r.audience)) for r in records])

    held = split.heldout
    print(f"\nFalse alarms on the {len(held)} held-out seeds (all conformant), rules alone: {int(flagged(held).sum())}")
    for name, scores in (
        ("cross-encoder", encoder.score(held)),
        ("classifier", np.array([v.p_violation for v in classifier.predict(held)])),
    ):
        print(f"{name}: " + ", ".join(f"{t:.2f}: {int((scores >= t).sum())}" for t in THRESHOLDS))

    print(
        "\n| devset | method | threshold | alone P | alone R | alone false alarms | with rules P | with rules R "
        "| with rules false alarms |\n| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    )
    for path in (EXAMPLE / "devset.jsonl", EXAMPLE / "devset_blind.jsonl"):
        dev = load_devset(path)
        rules = flagged(dev)
        classified = np.array([v.p_violation for v in classifier.predict(dev)])
        for name, scores in (("cross-encoder", encoder.score(dev)), ("classifier", classified)):
            print("\n".join(f"| {Path(path).name} {row}" for row in sweep(name, dev, scores, rules)))


if __name__ == "__main__":
    main()
