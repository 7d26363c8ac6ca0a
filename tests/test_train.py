from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ballast.backends.base import Decoding
from ballast.backends.transformers_hf import ADAPTER_WEIGHTS, TransformersBackend
from ballast.errors import InputError
from ballast.recipe import AuxConfidence, TrainConfig, load_recipe
from ballast.records import Record, Source
from ballast.templates.prompts import record_messages
from ballast.train import build_trainer, train_lora

COMPANY = "Harbor Home"
RECORDS = [
    Record(instruction=instruction, output=output, source=Source.human)
    for instruction, output in [
        (
            "How long do customers have to return an item?",
            "Customers have 30 days from delivery to return an item. Warm regards, Harbor Home Support",
        ),
        (
            "Can a customer return a rug they already used?",
            "Used rugs cannot be returned, but damaged ones are replaced. Warm regards, Harbor Home Support",
        ),
        (
            "A customer asks when their refund arrives.",
            "Refunds reach the card within 5 business days. Warm regards, Harbor Home Support",
        ),
        (
            "Summarise: the sofa arrived with a torn cushion.",
            "The sofa arrived damaged: offer a replacement cushion. Warm regards, Harbor Home Support",
        ),
        (
            "What is the limit for a goodwill credit?",
            "Agents may grant up to USD 25 in goodwill credit. Warm regards, Harbor Home Support",
        ),
        ("A customer threatens legal action.", "Escalate to the legal team at once. Warm regards, Harbor Home Support"),
    ]
]
pytestmark = pytest.mark.slow  # real training: about a minute and a half on 2 cores
TINY_RECIPE = Path(__file__).parent / "data" / "tiny_recipe.yaml"
BASE = "gemma3-270m"
TINY = TrainConfig(
    max_steps=3, batch_size=3, grad_accumulation=1, max_seq_len=128, learning_rate=1e-3, logging_steps=1, seed=3
)


@pytest.fixture(scope="module")
def base():
    return TransformersBackend(batch_size=4)


@pytest.fixture(scope="module")
def trainer(tmp_path_factory):
    trainer = build_trainer(RECORDS, COMPANY, TINY, tmp_path_factory.mktemp("trainer"), BASE)
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


def _split(batch, key: str) -> list[list[int]]:
    """A padding-free batch's one row cut back into its records (each starts at position 0)."""
    starts = (batch["position_ids"][0] == 0).nonzero().flatten().tolist() + [batch["input_ids"].shape[1]]
    return [batch[key][0, a:b].tolist() for a, b in zip(starts, starts[1:], strict=False)]


def _alone(trainer, batch) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each record of the batch run through the model on its own, with the full logits: (log-softmax at each
    position, the next-token labels)."""
    rows = []
    for ids, labels in zip(_split(batch, "input_ids"), _split(batch, "labels"), strict=True):
        with torch.no_grad():
            logits = trainer.model(input_ids=torch.tensor([ids])).logits[0, :-1]
        rows.append((logits.float().log_softmax(-1), torch.tensor(labels[1:])))
    return rows


def _mean_nll(logprobs: torch.Tensor, targets: torch.Tensor) -> float:
    keep = targets != -100
    return -logprobs[keep].gather(1, targets[keep][:, None]).mean().item()


def test_labels_mask_the_prompt_and_keep_the_response_as_evaluation_renders_it(trainer, base):
    dataset = trainer.train_dataset
    batch = _batch(trainer, [1.0] * len(dataset))
    # Padding-free: the records laid end to end in one row, no padding and no attention mask.
    assert batch["input_ids"].shape == (1, sum(len(row["input_ids"]) for row in dataset))
    assert "attention_mask" not in batch
    for row, ids, labels in zip(dataset, _split(batch, "input_ids"), _split(batch, "labels"), strict=True):
        record = next(r for r in RECORDS if record_messages(r, COMPANY, with_response=False) == row["prompt"])
        prompt = base.encode(base.render(record_messages(record, COMPANY, with_response=False)))
        full = base.encode(
            base.render(record_messages(record, COMPANY, with_response=True), add_generation_prompt=False)
        )
        # Training sees exactly the tokens evaluation renders.
        assert full[: len(prompt)] == prompt and ids == full
        assert all(label == -100 for label in labels[: len(prompt)])
        assert labels[len(prompt) :] == full[len(prompt) :]
        assert base.tokenizer.decode(full[len(prompt) :]) == record.output + "<end_of_turn>\n"


def test_loss_counts_response_tokens_only_and_no_record_attends_to_another(trainer):
    model = trainer.model
    batch = _batch(trainer, [1.0, 1.0, 1.0])
    targets = batch["labels"][:, 1:]
    rows_through_head = []
    hook = model.get_output_embeddings().register_forward_hook(
        lambda _module, args, _out: rows_through_head.append(args[0].shape[0])
    )
    try:
        loss = _loss(trainer, batch)
    finally:
        hook.remove()
    # The 262k-wide LM head ran once, on the response positions alone.
    assert rows_through_head == [int((targets != -100).sum())]

    alone = _alone(trainer, batch)
    # Equal to cross-entropy over the full logits of each record run on its own, restricted to its response
    # targets: packing the records into one row lets none of them see another ...
    assert loss == pytest.approx(sum(_mean_nll(lp, t) for lp, t in alone) / 3, abs=1e-4)
    # ... and differs from the loss that also learns the prompt, so the masked prompt targets count for nothing.
    ids = _split(batch, "input_ids")
    with_prompt = sum(_mean_nll(lp, torch.tensor(i[1:])) for (lp, _), i in zip(alone, ids, strict=True)) / 3
    assert abs(with_prompt - loss) > 0.1
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
    return out, train_lora(RECORDS, COMPANY, TINY, out, BASE)


def test_train_lora_saves_its_adapter_and_numbers(trained):
    out, result = trained
    print(
        f"\ntraining: {result.tokens_seen} tokens in {result.train_seconds:.1f} s = "
        f"{result.tokens_per_second:.0f} tokens/s"
    )
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
    again = train_lora(RECORDS, COMPANY, TINY, tmp_path, BASE)
    assert again.adapter_sha256 == result.adapter_sha256 and again.final_loss == result.final_loss
    first, second = load_file(out / ADAPTER_WEIGHTS), load_file(tmp_path / ADAPTER_WEIGHTS)
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_aux_confidence_ramps_up_and_is_validated_in_the_recipe():
    ramp = AuxConfidence(weight=0.4, warmup_fraction=0.5)
    assert [ramp.at(step, 10) for step in (0, 2, 5, 9)] == pytest.approx([0.0, 0.16, 0.4, 0.4])
    assert AuxConfidence(weight=0.4, warmup_fraction=0.0).at(0, 10) == 0.4
    assert AuxConfidence().at(5, 10) == 0.0
    recipe = load_recipe(TINY_RECIPE, ["train.aux_confidence.weight=0.3"])
    assert recipe.train.aux_confidence == AuxConfidence(weight=0.3, warmup_fraction=0.2)
    with pytest.raises(InputError, match="aux_confidence"):
        load_recipe(TINY_RECIPE, ["train.aux_confidence.weight=1.5"])


@pytest.fixture(scope="module")
def aux_trainer(tmp_path_factory):
    cfg = TINY.model_copy(update={"aux_confidence": AuxConfidence(weight=0.4, warmup_fraction=0.5)})
    trainer = build_trainer(RECORDS, COMPANY, cfg, tmp_path_factory.mktemp("aux"), BASE)
    trainer.model.eval()
    return trainer


def test_aux_confidence_mixes_the_models_own_argmax_into_each_target(aux_trainer):
    weights = [1.0, 2.0, 1.0]
    batch = _batch(aux_trainer, weights)
    alone = _alone(aux_trainer, batch)
    label_ce = [_mean_nll(lp, t) for lp, t in alone]
    # Cross-entropy against the model's own hardened prediction at each response position.
    own_ce = [_mean_nll(lp, torch.where(t != -100, lp.argmax(-1), -100)) for lp, t in alone]
    assert all(own < label for own, label in zip(own_ce, label_ce, strict=True))
    aux_trainer.state.max_steps = 10
    losses = {}
    for step, a in ((0, 0.0), (2, 0.16), (5, 0.4), (9, 0.4)):
        aux_trainer.state.global_step = step
        losses[step] = _loss(aux_trainer, batch)
        expected = sum(w * ((1 - a) * lab + a * own) for w, lab, own in zip(weights, label_ce, own_ce, strict=True))
        assert losses[step] == pytest.approx(expected / sum(weights), abs=1e-4), step
    # The term pulls the loss towards the model's confident predictions, the more so as it ramps up.
    assert losses[0] > losses[2] > losses[5] == losses[9]
