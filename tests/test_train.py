from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from ballast.backends.base import Decoding
from ballast.backends.transformers_hf import ADAPTER_WEIGHTS, TransformersBackend
from ballast.prompts import record_messages
from ballast.records import Record, Source
from ballast.train import TrainConfig, build_trainer, train_lora

COMPANY = "Harbor Home"
RECORDS = [
    Record(instruction=instruction, output=output, source=Source.human)
    for instruction, output in [
        ("How long do customers have to return an item?",
         "Customers have 30 days from delivery to return an item. Warm regards, Harbor Home Support"),
        ("Can a customer return a rug they already used?",
         "Used rugs cannot be returned, but damaged ones are replaced. Warm regards, Harbor Home Support"),
        ("A customer asks when their refund arrives.",
         "Refunds reach the card within 5 business days. Warm regards, Harbor Home Support"),
        ("Summarise: the sofa arrived with a torn cushion.",
         "The sofa arrived damaged: offer a replacement cushion. Warm regards, Harbor Home Support"),
        ("What is the limit for a goodwill credit?",
         "Agents may grant up to USD 25 in goodwill credit. Warm regards, Harbor Home Support"),
        ("A customer threatens legal action.",
         "Escalate to the legal team at once. Warm regards, Harbor Home Support"),
    ]
]
pytestmark = pytest.mark.slow  # real training: about a minute and a half on 2 cores
TINY = TrainConfig(max_steps=3, batch_size=3, grad_accumulation=1, max_seq_len=128, learning_rate=1e-3,
                   logging_steps=1, seed=3)


@pytest.fixture(scope="module")
def base():
    return TransformersBackend(batch_size=4)


@pytest.fixture(scope="module")
def trainer(tmp_path_factory):
    trainer = build_trainer(RECORDS, COMPANY, TINY, tmp_path_factory.mktemp("trainer"))
    trainer.model.eval()  # no LoRA dropout: the loss checks below compare exact numbers
    return trainer


def _batch(trainer, weights: list[float], rows: list[int] | None = None) -> dict[str, torch.Tensor]:
    """A collated batch of dataset rows (in order) with the given weights."""
    rows = list(range(len(weights))) if rows is None else rows
    examples = [{**trainer.train_dataset[i], "weight": w} for i, w in zip(rows, weights, strict=True)]
    return trainer.data_collator(examples)


def _loss(trainer, batch) -> float:
    with torch.no_grad():
        return trainer.compute_loss(trainer.model, dict(batch)).item()


def test_labels_mask_the_prompt_and_keep_the_response_as_evaluation_renders_it(trainer, base):
    dataset = trainer.train_dataset
    batch = _batch(trainer, [1.0] * len(dataset))
    for b, row in enumerate(dataset):
        record = next(r for r in RECORDS if record_messages(r, COMPANY, with_response=False) == row["prompt"])
        prompt = base.encode(base.render(record_messages(record, COMPANY, with_response=False)))
        full = base.encode(base.render(record_messages(record, COMPANY, with_response=True),
                                       add_generation_prompt=False))
        ids, labels = batch["input_ids"][b].tolist(), batch["labels"][b].tolist()
        # Training sees exactly the tokens evaluation renders, then right padding that is never a target.
        assert full[: len(prompt)] == prompt and ids[: len(full)] == full
        assert all(label == -100 for label in labels[: len(prompt)])
        assert labels[len(prompt) : len(full)] == full[len(prompt) :]
        assert all(label == -100 for label in labels[len(full) :])
        assert base.tokenizer.decode(full[len(prompt) :]) == record.output + "<end_of_turn>\n"


def test_loss_counts_response_tokens_only_and_scores_only_them(trainer):
    model = trainer.model
    batch = _batch(trainer, [1.0, 1.0, 1.0])
    targets = batch["labels"][:, 1:]
    rows_through_head = []
    hook = model.get_output_embeddings().register_forward_hook(
        lambda _module, args, _out: rows_through_head.append(args[0].shape[0]))
    try:
        loss = _loss(trainer, batch)
    finally:
        hook.remove()
    # The 262k-wide LM head ran once, on the response positions alone.
    assert rows_through_head == [int((targets != -100).sum())]

    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    logprobs = logits.log_softmax(-1)

    def reference(labels: torch.Tensor) -> float:
        picked = logprobs.gather(2, labels.clamp(min=0)[..., None]).squeeze(2)
        nll = -picked * (labels != -100)
        return (nll.sum(1) / (labels != -100).sum(1)).mean().item()

    # Equal to cross-entropy over the full logits restricted to response targets ...
    assert loss == pytest.approx(reference(targets), abs=1e-4)
    # ... which differs from the loss that also learns the prompt, so the masked prompt targets count for nothing.
    full_sequence = torch.where(batch["attention_mask"][:, 1:] == 1, batch["input_ids"][:, 1:], -100)
    assert abs(reference(full_sequence) - loss) > 0.1
    # A response token's target moves the loss.
    changed = {**batch, "labels": batch["labels"].clone()}
    last = int((batch["labels"][0] != -100).nonzero().max())
    changed["labels"][0, last] = 1234
    assert abs(_loss(trainer, changed) - loss) > 1e-3


def test_record_weight_scales_its_loss_and_zero_contributes_nothing(trainer):
    alone = [_loss(trainer, _batch(trainer, [1.0], rows=[i])) for i in (0, 1)]
    assert _loss(trainer, _batch(trainer, [1.0, 0.0])) == pytest.approx(alone[0], abs=1e-4)
    assert _loss(trainer, _batch(trainer, [3.0, 1.0])) == pytest.approx((3 * alone[0] + alone[1]) / 4, abs=1e-4)
    assert abs(alone[0] - alone[1]) > 1e-3


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("adapter")
    return out, train_lora(RECORDS, COMPANY, TINY, out)


def test_train_lora_saves_its_adapter_and_numbers(trained):
    out, result = trained
    print(f"\ntraining: {result.tokens_seen} tokens in {result.train_seconds:.1f} s = "
          f"{result.tokens_per_second:.0f} tokens/s")
    assert {"adapter_config.json", ADAPTER_WEIGHTS, "train_meta.json"} <= {p.name for p in out.iterdir()}
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["r"] == TINY.lora_r and set(config["target_modules"]) == set(TINY.target_modules)
    assert json.loads((out / "train_meta.json").read_text()) == result.model_dump(mode="json")
    assert result.examples == len(RECORDS) and result.dropped_too_long == 0 and result.steps == 3
    # Three steps of three records each, every token of every sequence counted once.
    assert 9 * 40 < result.tokens_seen < 9 * 128
    assert result.tokens_per_second == pytest.approx(result.tokens_seen / result.train_seconds, rel=1e-2)
    assert result.base.sha256 == "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
    assert set(result.versions) >= {"torch", "transformers", "trl", "peft"}


def test_a_trained_adapter_loads_and_changes_what_the_model_says(trained, base):
    out, result = trained
    tuned = TransformersBackend(adapter=out)
    assert tuned.model.name == f"gemma3-270m+lora:{result.adapter_sha256[:12]}"
    assert tuned.model.sha256 == base.model.sha256
    prompts = [record_messages(r, COMPANY, with_response=False) for r in RECORDS[:2]]
    greedy = Decoding(temperature=0.0, max_tokens=12)
    assert [g.text for g in tuned.generate(prompts, greedy)] != [g.text for g in base.generate(prompts, greedy)]
    # What it learnt: the trained responses became much more likely.
    outputs = [r.output for r in RECORDS[:2]]
    for before, after in zip(base.score(prompts, outputs), tuned.score(prompts, outputs), strict=True):
        assert after.mean_nll < before.mean_nll - 0.5


def test_training_is_deterministic_given_the_seed(trained, tmp_path):
    out, result = trained
    again = train_lora(RECORDS, COMPANY, TINY, tmp_path)
    assert again.adapter_sha256 == result.adapter_sha256 and again.final_loss == result.final_loss
    first, second = load_file(out / ADAPTER_WEIGHTS), load_file(tmp_path / ADAPTER_WEIGHTS)
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
