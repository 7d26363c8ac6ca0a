"""Train: LoRA on the strong base with TRL, loss on response tokens only, each record's loss scaled by its weight.

Batches are padding-free (the records of a micro-batch laid end to end in one row, attention kept inside each record
by its position ids) and the 262k-wide LM head runs on response positions only: no compute goes to padding or to
logits that no loss reads."""

from __future__ import annotations

import json
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from peft import LoraConfig
from pydantic import BaseModel
from trl import SFTConfig, SFTTrainer
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from ballast.backends.models import file_sha256, resolve
from ballast.backends.transformers_hf import (
    ADAPTER_WEIGHTS,
    device_and_dtype,
    load_causal_lm,
    response_logits,
    stop_token_ids,
)
from ballast.mask_audit import MASK_AUDIT, audit_masks
from ballast.recipe import AuxConfidence, TrainConfig
from ballast.records import ModelRef, Record
from ballast.templates.prompts import record_messages

# What the stage reads (recipe keys and shared values), from which Run builds its cache key: training prompts
# carry the policy's company name, so the policy is one of them.
READS = ("train", "models.strong", "seed", "policy")


class TrainResult(BaseModel):
    config: TrainConfig
    base: ModelRef
    adapter_sha256: str
    examples: int
    dropped_too_long: int  # records whose reply + end of turn does not fit max_seq_len (mask_audit.json names them)
    steps: int
    tokens_seen: int
    train_seconds: float
    tokens_per_second: float
    final_loss: float
    versions: dict[str, str]


def weighted_response_loss(
    logits: torch.Tensor, targets: torch.Tensor, example: torch.Tensor, weights: torch.Tensor, aux_weight: float = 0.0
) -> torch.Tensor:
    """Mean negative log-likelihood of each record's response tokens, averaged over records by weight.

    With `aux_weight` a > 0, each token's loss is (1 - a) * CE(target) + a * CE(the model's own argmax)."""
    logprobs = logits.log_softmax(-1)
    nll = -logprobs.gather(1, targets[:, None]).squeeze(1)
    if aux_weight > 0:
        confident = -logprobs.max(-1).values  # CE against the argmax; the argmax itself carries no gradient
        nll = (1 - aux_weight) * nll + aux_weight * confident
    zeros = torch.zeros(weights.shape[0], dtype=nll.dtype, device=nll.device)
    per_example = zeros.index_add(0, example, nll) / zeros.index_add(0, example, torch.ones_like(nll)).clamp(min=1)
    weights = weights.to(nll.dtype)
    return (weights * per_example).sum() / weights.sum().clamp(min=1e-8)


class _WeightedCollator(DataCollatorForLanguageModeling):
    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = super().torch_call(examples)
        batch["weight"] = torch.tensor([e["weight"] for e in examples], dtype=torch.float32)
        return batch


class _WeightedSFTTrainer(SFTTrainer):
    # The loss is a weighted mean per micro-batch; Trainer averages it over the accumulation steps.
    loss_is_scaled_for_ga = False
    tokens_seen = 0
    aux_confidence = AuxConfidence()

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, torch.Tensor],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, dict]:
        logits, targets, example = response_logits(model, inputs)
        aux_weight = self.aux_confidence.at(self.state.global_step, self.state.max_steps)
        loss = weighted_response_loss(logits, targets, example, inputs["weight"], aux_weight)
        if model.training:
            # Padding-free batches hold real tokens only; padded ones count their attention mask.
            mask = inputs.get("attention_mask")
            self.tokens_seen += int(inputs["input_ids"].numel() if mask is None else mask.sum())
        return (loss, {}) if return_outputs else loss


def sft_dataset(records: list[Record], company: str) -> Dataset:
    """Each record as a prompt (system + user) and a completion (the assistant turn) in ballast's chat format."""
    conversations = [record_messages(r, company, with_response=True) for r in records]
    return Dataset.from_dict(
        {
            "id": [r.id for r in records],
            "prompt": [m[:-1] for m in conversations],
            "completion": [m[-1:] for m in conversations],
            "weight": [r.weight for r in records],
        }
    )


def lora_config(cfg: TrainConfig) -> LoraConfig:
    return LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=cfg.target_modules,
        task_type="CAUSAL_LM",
    )


def build_trainer(
    records: list[Record], company: str, cfg: TrainConfig, out_dir: Path, base: str, seed: int = 0
) -> SFTTrainer:
    """The TRL trainer over a fresh copy of the strong base (`base`, the recipe's models.strong), its dataset
    tokenised with ballast's chat template: each record is a prompt (system + user) and a completion (the assistant
    turn), and only the completion is learnt. `seed` is used when train.seed is not set.
    """
    if not records:
        raise ValueError("no records to train on")
    model, tokenizer, _ = load_causal_lm(base, training=True)
    cuda = torch.cuda.is_available()
    # bf16 mixed precision (float32 master weights) wherever the device has native bf16 arithmetic: a GPU, or a
    # CPU with AVX512-BF16 / AMX, where it measured 1.3x float32's training speed; elsewhere bf16 is emulated, slow.
    mixed_bf16 = device_and_dtype()[1] == torch.bfloat16
    args = SFTConfig(
        output_dir=str(out_dir),
        seed=cfg.seed_or(seed),
        data_seed=cfg.seed_or(seed),
        learning_rate=cfg.learning_rate,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps or -1,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accumulation,
        max_length=cfg.max_seq_len,
        completion_only_loss=True,
        logging_steps=cfg.logging_steps,
        save_strategy="no",
        report_to="none",
        # A 270M model does not need activation checkpointing, which would run each forward twice.
        bf16=mixed_bf16,
        use_cpu=not cuda,
        activation_checkpointing=False,
        remove_unused_columns=False,
    )  # the collator needs the weight column, which the model's signature lacks
    trainer = _WeightedSFTTrainer(
        model=model,
        args=args,
        train_dataset=sft_dataset(records, company),
        processing_class=tokenizer,
        peft_config=lora_config(cfg),
        data_collator=_WeightedCollator(pad_token_id=tokenizer.pad_token_id, padding_free=True),
    )
    trainer.aux_confidence = cfg.aux_confidence
    # What the model will learn, checked on the dataset it trains on; rows that max_seq_len cut are dropped.
    trainer.train_dataset, trainer.mask_audit = audit_masks(
        trainer.train_dataset,
        tokenizer,
        records,
        max_seq_len=cfg.max_seq_len,
        stop_ids=stop_token_ids(tokenizer),
        out=Path(out_dir) / MASK_AUDIT,
        seed=cfg.seed_or(seed),
    )
    return trainer


def train_lora(
    records: list[Record], company: str, cfg: TrainConfig, out_dir: Path, base: str, seed: int = 0
) -> TrainResult:
    """Fine-tune the strong base `base` on the records; writes the adapter, mask_audit.json and train_meta.json into
    out_dir."""
    out_dir = Path(out_dir)
    trainer = build_trainer(records, company, cfg, out_dir, base, seed)
    start = time.perf_counter()
    output = trainer.train()
    seconds = time.perf_counter() - start
    trainer.model.save_pretrained(out_dir)
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    result = TrainResult(
        config=cfg,
        base=resolve(base)[1],
        adapter_sha256=file_sha256(out_dir / ADAPTER_WEIGHTS),
        examples=len(trainer.train_dataset),
        dropped_too_long=len(records) - len(trainer.train_dataset),
        steps=output.global_step,
        tokens_seen=trainer.tokens_seen,
        train_seconds=round(seconds, 3),
        tokens_per_second=round(trainer.tokens_seen / seconds, 1),
        final_loss=losses[-1] if losses else output.training_loss,
        versions={p: version(p) for p in ("ballast", "torch", "transformers", "trl", "peft")},
    )
    (out_dir / "train_meta.json").write_text(json.dumps(result.model_dump(mode="json"), indent=2) + "\n")
    return result
