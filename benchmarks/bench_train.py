"""Training tokens/s: ballast's trainer against a plain TRL SFTTrainer with default settings, in one run.

Both train a LoRA adapter (the same PEFT config, from ballast's TrainConfig) on the same Gemma 3 270M base, loaded
as the pipeline loads it, over the same data: the example's training seeds (split_heldout(..., 0.25,
salt="heldout:13")) rendered by ballast's chat template as prompt + completion records. Each side takes one
warm-up step, then `--steps` timed optimiser steps of `--batch-size` records, without gradient accumulation.

The TRL side is `SFTTrainer(model, args=SFTConfig(...), train_dataset, processing_class=tokenizer, peft_config)`
with SFTConfig at its defaults except: output_dir, per_device_train_batch_size, max_steps and max_length (the same
batch size, step count and sequence length as ballast), seed and data_seed (ballast's, so both draw the same
records in the same order), report_to="none" (no logging integrations offline), and use_cpu on a machine without
a GPU (TrainingArguments refuses its default bf16 on a CPU unless told the CPU is meant). Its defaults therefore stand:
completion-only loss for prompt-completion data, activation checkpointing on, bf16 mixed precision (on a CPU
too), padded batches, TRL's fused LM head over completion positions, learning rate 2e-5 (speed does not depend on
it). The ballast side is the trainer `train_lora` runs (`build_trainer`), at the same batch size, steps, length and
seed. Tokens counted are the records' real tokens (no padding), taken as each batch is collated.

    python benchmarks/bench_train.py [--steps 6] [--batch-size 4] [--max-len 384]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback
from trl import SFTConfig, SFTTrainer

from ballast.backends.transformers_hf import load_causal_lm
from ballast.policy.schema import load_policy
from ballast.recipe import TrainConfig
from ballast.records import Record
from ballast.seeds import load_seeds, split_heldout
from ballast.train import build_trainer, lora_config, sft_dataset

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "harbor-support"


class _CountingCollator:
    """Passes batches through, noting each one's real tokens in the order they are collated."""

    def __init__(self, collate: Callable[[list[dict[str, Any]]], dict[str, Any]]) -> None:
        self.collate, self.tokens = collate, []

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        self.tokens.append(sum(len(e["input_ids"]) for e in examples))
        return self.collate(examples)


class _StepClock(TrainerCallback):
    def __init__(self) -> None:
        self.ends: list[float] = []

    def on_step_end(self, args, state, control, **kwargs) -> None:
        self.ends.append(time.perf_counter())


def timed_train(trainer: SFTTrainer, steps: int) -> tuple[int, float, list[int]]:
    """Train warm-up + `steps` steps; returns the timed steps' tokens, their seconds, and every batch's tokens."""
    counter, clock = _CountingCollator(trainer.data_collator), _StepClock()
    trainer.data_collator = counter
    trainer.add_callback(clock)
    trainer.train()
    if len(clock.ends) != steps + 1:
        raise RuntimeError(f"expected {steps + 1} optimiser steps, got {len(clock.ends)}")
    # The data loader may collate one batch ahead; batches are counted in order, so batch k is step k.
    return sum(counter.tokens[1 : steps + 1]), clock.ends[-1] - clock.ends[0], counter.tokens[: steps + 1]


def trl_default(records: list[Record], company: str, cfg: TrainConfig, out: Path, base: str) -> SFTTrainer:
    model, tokenizer, _ = load_causal_lm(base, training=True)
    dataset = sft_dataset(records, company).remove_columns("weight")
    # use_cpu: without a GPU, TrainingArguments refuses its default bf16 unless told the CPU is meant.
    args = SFTConfig(
        output_dir=str(out),
        per_device_train_batch_size=cfg.batch_size,
        max_steps=cfg.max_steps,
        max_length=cfg.max_seq_len,
        seed=cfg.seed,
        data_seed=cfg.seed,
        report_to="none",
        use_cpu=not torch.cuda.is_available(),
    )
    return SFTTrainer(
        model=model, args=args, train_dataset=dataset, processing_class=tokenizer, peft_config=lora_config(cfg)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6, help="timed optimiser steps, after one warm-up step")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-len", type=int, default=384)
    opts = parser.parse_args()

    policy = load_policy(EXAMPLE / "policy.yaml")
    train = split_heldout(load_seeds(EXAMPLE / "seeds.jsonl", policy), 0.25, salt="heldout:13").train
    cfg = TrainConfig(
        max_steps=opts.steps + 1,
        batch_size=opts.batch_size,
        grad_accumulation=1,
        max_seq_len=opts.max_len,
        seed=13,
        logging_steps=opts.steps + 1,
    )
    print(
        f"{len(train)} training seeds; {opts.steps} timed steps (+1 warm-up) of {opts.batch_size} records, "
        f"max length {opts.max_len}; LoRA r={cfg.lora_r} on {', '.join(cfg.target_modules)}"
    )
    rates = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, make in (("TRL SFTTrainer, defaults", trl_default), ("ballast train_lora", build_trainer)):
            trainer = make(train, policy.company, cfg, Path(tmp) / name.split()[0], "gemma3-270m")
            tokens, seconds, batches = timed_train(trainer, opts.steps)
            rates[name] = tokens / seconds
            print(
                f"{name:26s} {tokens:6d} tokens in {seconds:6.1f} s = {rates[name]:7.1f} tokens/s "
                f"(batches' tokens: {batches})"
            )
            del trainer
    trl, ours = rates.values()
    print(f"ballast / TRL defaults: {ours / trl:.2f}x")


if __name__ == "__main__":
    main()
