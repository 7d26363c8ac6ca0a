"""The label-mask audit on the dataset TRL trains on: real seeds, the real Gemma tokenizer and chat template."""

from __future__ import annotations

import copy
import json

import pytest

from ballast.backends.transformers_hf import stop_token_ids
from ballast.errors import InputError
from ballast.mask_audit import MASK_AUDIT, audit_masks
from ballast.templates.prompts import record_messages
from ballast.train import TrainConfig, build_trainer, sft_dataset

COMPANY = "Harbor Home Goods"
MAX_SEQ_LEN = 320  # the demo's longest seed is 495 tokens: the longest records below are cut, the shortest are not
pytestmark = pytest.mark.slow  # loads the real model once: seconds


@pytest.fixture(scope="module")
def records(seeds):
    by_length = sorted(seeds, key=lambda r: len(r.instruction) + len(r.input) + len(r.output))
    return by_length[:5] + by_length[-3:]


@pytest.fixture(scope="module")
def built(records, tmp_path_factory):
    out = tmp_path_factory.mktemp("mask")
    trainer = build_trainer(records, COMPANY, TrainConfig(max_seq_len=MAX_SEQ_LEN, max_steps=1), out, "gemma3-270m")
    return trainer, out


def _prepare(trainer, records, tokenizer=None, *, completion_only_loss=True):
    """The dataset TRL's own preparation makes of the records, with the trainer's settings."""
    saved = trainer.completion_only_loss
    trainer.completion_only_loss = completion_only_loss
    try:
        return trainer._prepare_dataset(
            sft_dataset(records, COMPANY), tokenizer or trainer.processing_class, trainer.args, False, None, "train"
        )
    finally:
        trainer.completion_only_loss = saved


def _audit(dataset, tokenizer, records):
    return audit_masks(dataset, tokenizer, records, max_seq_len=MAX_SEQ_LEN, stop_ids=stop_token_ids(tokenizer))


def test_audit_passes_on_real_seeds_and_drops_the_rows_max_seq_len_cuts(built, records):
    trainer, out = built
    tokenizer, audit = trainer.processing_class, trainer.mask_audit

    def length(record):
        text = tokenizer.apply_chat_template(record_messages(record, COMPANY, with_response=True), tokenize=False)
        return len(tokenizer(text, add_special_tokens=False).input_ids)

    cut = [r.id for r in records if length(r) > MAX_SEQ_LEN]
    assert 1 <= len(cut) < len(records)
    assert audit.ok and not audit.failures and audit.turn_close == "<end_of_turn>\n"
    assert (audit.records, audit.prepared, audit.truncated) == (len(records), len(records), len(cut))
    assert audit.dropped_truncated == cut and audit.dropped_no_label == []
    assert audit.trained == audit.exact == len(records) - len(cut)
    assert audit.truncated_share == pytest.approx(len(cut) / len(records), abs=1e-4)
    # The cut rows are gone from what the trainer trains on; every kept row learns its whole reply and stops.
    assert [row["id"] for row in trainer.train_dataset] == [r.id for r in records if r.id not in cut]
    for row in trainer.train_dataset:
        record = next(r for r in records if r.id == row["id"])
        supervised = [t for t, label in zip(row["input_ids"], row["labels"], strict=True) if label != -100]
        assert tokenizer.decode(supervised) == record.output.strip() + "<end_of_turn>\n"
        audited = next(a for a in audit.rows if a.id == row["id"])
        assert audited.supervised == len(supervised) and audited.exact and not audited.truncated
    assert all(s["supervised_text"].endswith("<end_of_turn>\n") or s["id"] in cut for s in audit.samples)
    assert json.loads((out / MASK_AUDIT).read_text()) == audit.model_dump(mode="json")


def test_audit_fails_when_the_prompt_is_supervised(built, records):
    trainer, _ = built
    # TRL's own preparation with the completion-only loss off: the whole sequence is learnt, prompt included.
    dataset = _prepare(trainer, records[:3], completion_only_loss=False)
    with pytest.raises(InputError, match="prompt tokens are supervised") as failed:
        _audit(dataset, trainer.processing_class, records[:3])
    assert all(r.id in str(failed.value) for r in records[:3])


def test_audit_fails_on_a_row_with_no_supervised_token_or_without_its_end_of_turn(built, records):
    trainer, _ = built
    tokenizer, dataset = trainer.processing_class, trainer.train_dataset
    end = tokenizer.convert_tokens_to_ids("<end_of_turn>")

    def broken(row, index):
        if index == 0:  # nothing left to learn
            return {"labels": [-100] * len(row["labels"])}
        if index == 1:  # the end of turn masked out: the model would never learn to stop
            return {
                "labels": [
                    -100 if t == end else label for t, label in zip(row["input_ids"], row["labels"], strict=True)
                ]
            }
        return {}

    with pytest.raises(InputError) as failed:
        _audit(dataset.map(broken, with_indices=True), tokenizer, records)
    message = str(failed.value)
    assert f"no supervised token left: {dataset[0]['id']}" in message
    assert f"the supervised text is not the reply plus the end of turn: {dataset[1]['id']}" in message
    assert "<end_of_turn>" in message  # says what was expected


def test_audit_fails_on_a_template_that_does_not_close_the_reply_with_a_stop_token(built, records):
    trainer, _ = built
    tokenizer = copy.deepcopy(trainer.processing_class)
    # The assistant turn is not closed: no token generation stops on is ever learnt.
    tokenizer.chat_template = tokenizer.chat_template.replace(
        "{{ m['content'] | trim }}<end_of_turn>\n",
        "{{ m['content'] | trim }}{% if m['role'] != 'assistant' %}<end_of_turn>{% endif %}\n",
    )
    assert tokenizer.chat_template != trainer.processing_class.chat_template
    dataset = _prepare(trainer, records[:2], tokenizer)
    with pytest.raises(
        InputError,
        match="closes the assistant turn with '', not one of the tokens generation stops "
        "on .*: the model would not learn to stop: <template>",
    ):
        _audit(dataset, tokenizer, records[:2])


def test_audit_fails_when_no_record_fits(built, records):
    trainer, _ = built
    longest = records[-1:]
    dataset = _prepare(trainer, longest)
    assert len(dataset) == 1
    with pytest.raises(InputError, match=f"no record keeps its whole reply within max_seq_len={MAX_SEQ_LEN}"):
        _audit(dataset, trainer.processing_class, longest)
