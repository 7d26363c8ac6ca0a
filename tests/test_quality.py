"""IFD and perplexity from the real weak model (SmolLM2-135M-Instruct through transformers)."""

from __future__ import annotations

import math

import pytest
import torch

from ballast.records import Record, Source
from ballast.score.ifd import QualityScorer
from ballast.seeds import split_heldout


@pytest.fixture(scope="module")
def scorer(policy):
    return QualityScorer(policy.company, batch_size=4, max_len=1024)


@pytest.fixture(scope="module")
def train(seeds):
    return split_heldout(seeds, 0.25, salt="heldout:13").train


def _copies(records: list[Record]) -> list[Record]:
    return [r.model_copy(deep=True) for r in records]


def _full_logit_loss(scorer: QualityScorer, ids: list[int], start: int) -> float:
    """The unoptimised computation: one sequence, logits over the whole vocabulary at every position."""
    input_ids = torch.tensor([ids])
    labels = input_ids.clone()
    labels[0, :start] = -100
    with torch.inference_mode():
        return scorer.lm(input_ids, labels=labels).loss.item()


def test_ifd_equals_per_example_full_logit_computation(scorer, train):
    records = _copies(train[:6])
    summary = scorer.score(records)
    assert summary.scored == 6 and summary.unscorable == 0
    for r in records:
        item = scorer.prepare(r)
        cond = _full_logit_loss(scorer, item.prompt + item.response, len(item.prompt))
        uncond = _full_logit_loss(scorer, item.alone + item.response, len(item.alone))
        assert r.scores["loss_cond"] == pytest.approx(cond, abs=1e-4)
        assert r.scores["loss_uncond"] == pytest.approx(uncond, abs=1e-4)
        assert r.scores["ifd"] == pytest.approx(math.exp(cond) / math.exp(uncond), abs=1e-4)
        assert r.scores["ppl"] == pytest.approx(math.exp(cond), rel=1e-4)


def test_relevant_instruction_lowers_conditioned_loss(scorer, train):
    # Replies that answer a specific customer message: the request names what the reply talks about.
    own = _copies([r for r in train if r.input and r.slice in ("returns", "delivery", "warranty")][:4])
    unrelated = next(r for r in train if r.slice == "benign")
    swapped = [
        Record(instruction=unrelated.instruction, input=unrelated.input, output=r.output, source=Source.self_instruct)
        for r in own
    ]
    scorer.score(own + swapped)
    for mine, other in zip(own, swapped, strict=True):
        assert mine.scores["loss_cond"] < other.scores["loss_cond"]
        assert mine.scores["ifd"] < other.scores["ifd"]
        assert mine.scores["loss_uncond"] == pytest.approx(other.scores["loss_uncond"], abs=1e-5)


def test_batching_and_padding_do_not_change_scores(scorer, train):
    # Lengths that differ a lot, so batches of 4 carry much padding.
    records = sorted(train[:40], key=lambda r: len(r.output))[::5]
    one_by_one, batched = _copies(records), _copies(records)[::-1]
    scorer.batch_size = 1
    try:
        scorer.score(one_by_one)
    finally:
        scorer.batch_size = 4
    scorer.score(batched)
    by_id = {r.id: r for r in batched}
    for r in one_by_one:
        for key in ("loss_cond", "loss_uncond", "ifd"):
            assert by_id[r.id].scores[key] == pytest.approx(r.scores[key], abs=1e-5)


def test_unscorable_and_truncated_records_are_counted(scorer, train):
    empty = Record(instruction="Summarise the ticket.", output="", source=Source.self_instruct)
    long = train[0].model_copy(deep=True)
    prompt = len(scorer.prepare(long).prompt)
    scorer.max_len = prompt + 3
    try:
        summary = scorer.score([empty, long])
    finally:
        scorer.max_len = 1024
    assert (summary.scored, summary.truncated, summary.unscorable) == (1, 1, 1)
    assert "ifd" not in empty.scores
    # Three response tokens scored: the same as scoring a record whose reply is those three tokens.
    head = Record(
        instruction=long.instruction,
        input=long.input,
        source=long.source,
        output=scorer.tokenizer.decode(scorer.prepare(long).response[:3]),
    )
    scorer.score([head])
    assert long.scores["loss_cond"] == pytest.approx(head.scores["loss_cond"], abs=1e-4)
