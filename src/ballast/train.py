"""Train: LoRA on the strong base with TRL, loss on response tokens only, each record's loss scaled by its weight."""

from __future__ import annotations

import json
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from peft import LoraConfig
from pydantic import BaseModel, ConfigDict
from trl import SFTConfig, SFTTrainer
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from ballast.backends.transformers_hf import ADAPTER_WEIGHTS, label_logprobs, load_strong_base
from ballast.models import file_sha256, resolve
from ballast.prompts import record_messages
from ballast.records import ModelRef, Record


class TrainConfig(BaseModel):
    """Defaults sized for a laptop CPU: a small adapter, short sequences, one pass over the data."""

    model_config = ConfigDict(extra="forbid")
    base: str = "gemma3-270m"
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    target_modules: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    learning_rate: float = 2e-4
    epochs: float = 1.0
    max_steps: int | None = None  # caps the steps that epochs imply
    batch_size: int = 4
    grad_accumulation: int = 4
    max_seq_len: int = 512
    seed: int = 0
    logging_steps: int = 10


class TrainResult(BaseModel):
    config: TrainConfig
    base: ModelRef
    adapter_sha256: str
    examples: int
    dropped_too_long: int  # records whose prompt alone fills max_seq_len: nothing of the response is left to learn
    steps: int
    tokens_seen: int
    train_seconds: float
    tokens_per_second: float
    final_loss: float
    versions: dict[str, str]


def weighted_response_loss(logprobs: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood of each example's response tokens, averaged over examples by weight.

    `logprobs` is label_logprobs' output (0 where the label is -100)."""
    counts = (labels[:, 1:] != -100).sum(1).clamp(min=1)
    per_example = -logprobs.sum(1) / counts
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

    def compute_loss(self, model: torch.nn.Module, inputs: dict[str, torch.Tensor], return_outputs: bool = False,
                     num_items_in_batch: torch.Tensor | None = None) -> torch.Tensor | tuple[torch.Tensor, dict]:
        logprobs = label_logprobs(model, inputs["input_ids"], inputs["attention_mask"], inputs["labels"])
        loss = weighted_response_loss(logprobs, inputs["labels"], inputs["weight"].to(logprobs.dtype))
        if model.training:
            self.tokens_seen += int(inputs["attention_mask"].sum())
        return (loss, {}) if return_outputs else loss


def build_trainer(records: list[Record], company: str, cfg: TrainConfig, out_dir: Path) -> SFTTrainer:
    """The TRL trainer over a fresh copy of the strong base, its dataset tokenised with ballast's chat template:
    each record is a prompt (system + user) and a completion (the assistant turn), and only the completion is learnt.
    """
    if not records:
        raise ValueError("no records to train on")
    model, tokenizer, _ = load_strong_base(cfg.base, training=True)
    conversations = [record_messages(r, company, with_response=True) for r in records]
    dataset = Dataset.from_dict({"prompt": [m[:-1] for m in conversations],
                                 "completion": [m[-1:] for m in conversations],
                                 "weight": [r.weight for r in records]})
    cuda = torch.cuda.is_available()
    args = SFTConfig(
        output_dir=str(out_dir), seed=cfg.seed, data_seed=cfg.seed, learning_rate=cfg.learning_rate,
        num_train_epochs=cfg.epochs, max_steps=cfg.max_steps or -1, per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accumulation, max_length=cfg.max_seq_len,
        completion_only_loss=True, logging_steps=cfg.logging_steps, save_strategy="no", report_to="none",
        # Off on a CPU: bf16 autocast is slow there, and a 270M model does not need activation checkpointing.
        bf16=cuda, use_cpu=not cuda, activation_checkpointing=False,
        remove_unused_columns=False)  # the collator needs the weight column, which the model's signature lacks
    peft_config = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                             target_modules=cfg.target_modules, task_type="CAUSAL_LM")
    trainer = _WeightedSFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                                  peft_config=peft_config,
                                  data_collator=_WeightedCollator(pad_token_id=tokenizer.pad_token_id))
    if len(trainer.train_dataset) == 0:
        raise ValueError(f"every record's prompt alone fills max_seq_len={cfg.max_seq_len}; raise it")
    return trainer


def train_lora(records: list[Record], company: str, cfg: TrainConfig, out_dir: Path) -> TrainResult:
    """Fine-tune the strong base on the records; writes the adapter and train_meta.json into out_dir."""
    out_dir = Path(out_dir)
    trainer = build_trainer(records, company, cfg, out_dir)
    start = time.perf_counter()
    output = trainer.train()
    seconds = time.perf_counter() - start
    trainer.model.save_pretrained(out_dir)
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    result = TrainResult(
        config=cfg, base=resolve(cfg.base)[1], adapter_sha256=file_sha256(out_dir / ADAPTER_WEIGHTS),
        examples=len(trainer.train_dataset), dropped_too_long=len(records) - len(trainer.train_dataset),
        steps=output.global_step, tokens_seen=trainer.tokens_seen, train_seconds=round(seconds, 3),
        tokens_per_second=round(trainer.tokens_seen / seconds, 1),
        final_loss=losses[-1] if losses else output.training_loss,
        versions={p: version(p) for p in ("ballast", "torch", "transformers", "trl", "peft")})
    (out_dir / "train_meta.json").write_text(json.dumps(result.model_dump(mode="json"), indent=2) + "\n")
    return result
