from __future__ import annotations

import math

import pytest
import torch

from ballast.backends.transformers_hf import END_OF_TURN, TransformersBackend
from ballast.evaluate.nll import model_reference_nll, reference_nll, reply_continuation, summarize_nll
from ballast.evaluate.paired import compare_rows
from ballast.train import TrainConfig, build_trainer

pytestmark = pytest.mark.slow  # the real strong base on CPU: about two minutes on 2 busy cores


@pytest.fixture(scope="module")
def records(seeds):
    # Five short seeds from different slices where possible: cheap to score, and replies that belong to their prompts.
    ranked = sorted(seeds, key=lambda r: len(r.instruction) + len(r.input) + len(r.output))
    picked, slices = [], set()
    for r in ranked:
        if r.slice not in slices or len(slices) >= 5:
            picked.append(r)
            slices.add(r.slice)
        if len(picked) == 5:
            return picked
    return picked + [r for r in ranked if r not in picked][: 5 - len(picked)]


@pytest.fixture(scope="module")
def base():
    return TransformersBackend(batch_size=8)


@pytest.fixture(scope="module")
def base_rows(base, records, policy):
    return reference_nll(base, records, policy.company)


@pytest.fixture(scope="module")
def trainer(records, policy, tmp_path_factory):
    return build_trainer(
        records[:2],
        policy.company,
        TrainConfig(max_steps=1, batch_size=2, grad_accumulation=1),
        tmp_path_factory.mktemp("trainer"),
        "gemma3-270m",
    )


def test_the_reply_is_scored_as_training_supervises_it(base, records, policy, trainer):
    """The continuation is exactly the completion TRL's completion-only loss learns: reply + end of turn."""
    for record, row in zip(records, trainer.train_dataset, strict=False):
        prompt, continuation = reply_continuation(base, record, policy.company)
        assert continuation.startswith(record.output.strip()[:20]) and END_OF_TURN in continuation
        supervised = [label for label in row["labels"] if label != -100]
        full = base.encode(base.render(prompt) + continuation)
        assert full[len(full) - len(supervised) :] == supervised
        assert base.tokenizer.decode(supervised) == continuation


def test_nll_is_finite_positive_and_per_example(base_rows, records):
    assert [r["ref"] for r in base_rows] == [r.meta["ref"] for r in records]
    for r in base_rows:
        assert math.isfinite(r["nll"]) and r["nll"] > 0 and r["tokens"] > 1
        assert r["nll"] == pytest.approx(r["sum_nll"] / r["tokens"])
    summary = summarize_nll(base_rows)
    assert summary["overall"]["n"] == 5 and summary["overall"]["ci95"][0] <= summary["overall"]["mean"]
    assert sum(s["n"] for s in summary["slices"].values()) == 5


def test_the_human_reply_is_likelier_than_another_prompts_reply(base, base_rows, records, policy):
    mismatched = [records[(i + 1) % len(records)].output for i in range(len(records))]
    shuffled = reference_nll(base, records, policy.company, outputs=mismatched)
    wins = sum(own["nll"] < other["nll"] for own, other in zip(base_rows, shuffled, strict=True))
    assert wins >= 4, (base_rows, shuffled)


def test_an_adapter_changes_the_nll(records, policy, base_rows, trainer, tmp_path):
    # The trainer's LoRA adapter with random B (peft starts B at 0, which would change nothing), saved as training
    # saves one.
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in trainer.model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.05)
    trainer.model.save_pretrained(tmp_path / "adapter")
    name, rows = model_reference_nll(records[:3], policy.company, adapter=tmp_path / "adapter")
    assert "+lora:" in name
    assert [r["tokens"] for r in rows] == [r["tokens"] for r in base_rows[:3]]
    assert all(math.isfinite(r["nll"]) for r in rows)
    assert max(abs(a["nll"] - b["nll"]) for a, b in zip(rows, base_rows[:3], strict=True)) > 0.01
    # The per-example rows pair up with the base's for a paired comparison (base_rows has two examples more).
    (c,) = compare_rows(rows, base_rows, ["nll"], names=("adapter", "base"))
    assert c.n == 3 and c.missing_a == 2 and not c.binary
