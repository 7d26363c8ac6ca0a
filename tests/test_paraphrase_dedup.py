"""Reworded near-duplicates (issue 13, item 7): the demo recipe's configured dedup on the hand-written paraphrase
pairs (examples/harbor-support/paraphrase_pairs.jsonl), tune split. benchmarks/bench_paraphrase.py prints the
full table, the threshold sweep and the blind split."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_paraphrase import (  # noqa: E402 - the benchmark's folder joins the path first
    RECIPE,
    TARGET_PRECISION,
    TARGET_RECALL,
    MemoEmbedder,
    b_dropped,
    is_blind,
    load_pairs,
    recipe_dedup,
    score,
)

from ballast.backends.static import StaticEmbedder  # noqa: E402
from ballast.curate.dedup import numbers, same_facts  # noqa: E402
from ballast.recipe import load_recipe  # noqa: E402
from ballast.records import Record, Source  # noqa: E402

# Reached on tune with the recipe's semantic stage (static embedding, cosine 0.92, same_numbers): 0.894. The
# look-alikes still dropped differ in words only (verified or not, twice or three times, a benefit used).
PRECISION_FLOOR = 0.89


@pytest.fixture(scope="module")
def tune_score():
    cfg = load_recipe(RECIPE).curate
    assert cfg.semantic.enabled, "the demo recipe's semantic stage is off: reworded copies pass"
    pairs = [p for p in load_pairs() if not is_blind(p["pair_id"])]
    embedder = MemoEmbedder(StaticEmbedder(pca_dims=cfg.semantic.pca_dims, max_tokens=cfg.semantic.max_tokens))

    # Self-Instruct's novelty rule judges the instruction alone and drops look-alikes by design; it is a
    # diversity rule, measured apart by the benchmark.
    def make() -> list:
        return [f for f in recipe_dedup(cfg, embedder) if f.name != "rouge_novelty"]

    return score(pairs, [b_dropped(p, make) for p in pairs])


def test_pair_file_is_balanced():
    pairs = load_pairs()
    assert len({p["pair_id"] for p in pairs}) == len(pairs)
    assert sum(p["duplicate"] for p in pairs) >= 60 and sum(not p["duplicate"] for p in pairs) >= 60


def test_recipe_catches_reworded_copies(tune_score):
    assert tune_score["recall"] >= TARGET_RECALL, tune_score
    assert tune_score["precision"] >= PRECISION_FLOOR, tune_score


@pytest.mark.xfail(strict=True, reason="precision 0.95 not reached: look-alikes differing only in words")
def test_recipe_precision_target(tune_score):
    assert tune_score["precision"] >= TARGET_PRECISION, tune_score


def test_same_facts():
    def rec(instruction: str, output: str) -> Record:
        return Record(source=Source.self_instruct, instruction=instruction, output=output)

    a = numbers(rec("Return a lamp delivered 25 days ago?", "Yes, within 30 days. Refund USD 1,049.50."))
    assert numbers(rec("x", "USD 1,049.50"))[1] == {"1,049.50"}
    assert same_facts(a, numbers(rec("Can I return a lamp from 25 days ago?", "Yes, within 30 days.")))
    assert not same_facts(a, numbers(rec("Return a lamp delivered 35 days ago?", "No, past 30 days.")))
    assert not same_facts(a, numbers(rec("Return a lamp delivered 25 days ago?", "Yes. Refund USD 320.")))
