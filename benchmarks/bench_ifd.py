"""IFD scoring throughput: ballast.score.ifd against the reference approach, on the same records and model in one run.

The reference is Superfiltering's scoring code (data_analysis.py, after Cherry LLM): one example at a time through
a GPT-2 style causal LM, `model(input_ids, labels=labels)` computing full-vocabulary logits at every position, the
loss taken over the response span, whose first token is found by tokenising the text before `rfind(response)`.
Its prompt texts are ballast's (the weak model's chat template; the instruction-free prefix is the bare assistant
header, see ballast.score.ifd), so the two methods must agree to 1e-4 and only the computation differs.

The FLOP ratio ceiling is the speed-up the work saved allows if both methods ran their matmuls equally fast: ballast
skips the output layer at prompt positions, nothing else; both use float32, as the 1e-4 tolerance requires.

    flock /tmp/cpu.lock .venv/bin/python benchmarks/bench_ifd.py --records 200
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

import torch
from transformers import PretrainedConfig

from ballast.policy.schema import load_policy
from ballast.records import Record
from ballast.score.ifd import QualityScorer, ScoringInput, generation_header
from ballast.seeds import load_seeds, split_heldout
from ballast.templates.prompts import record_messages

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "harbor-support"
TARGET_RATIO, TOLERANCE = 3.0, 1e-4


def forward_flops(config: PretrainedConfig, length: int, head_positions: int) -> int:
    """Matmul FLOPs of a causal-LM forward over `length` tokens with the output layer at `head_positions` of them
    (norms, activations and softmax add a few percent)."""
    h, heads, kv = config.hidden_size, config.num_attention_heads, config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or h // heads
    # q and o, k and v projections; gate, up and down
    per_token = 2 * (2 * h * heads * head_dim + 2 * h * kv * head_dim + 3 * h * config.intermediate_size)
    # causal attention: query i reads i + 1 keys, 2 * heads * head_dim FLOPs each for QK^T and for AV
    keys_read = length * (length + 1) // 2
    body = length * per_token + 4 * heads * head_dim * keys_read
    return config.num_hidden_layers * body + head_positions * 2 * h * config.vocab_size


def flop_counts(config: PretrainedConfig, items: list[ScoringInput]) -> tuple[int, int]:
    """FLOPs of the reference (output layer at every position) and of ballast.score.ifd (output layer at response
    positions) over both passes of `items`."""
    reference = ours = 0
    for prefix in ("prompt", "alone"):
        for i in items:
            length = len(getattr(i, prefix)) + len(i.response)
            reference += forward_flops(config, length, length)
            ours += forward_flops(config, length, len(i.response))
    return reference, ours


def reference_loss(model: torch.nn.Module, tokenizer, text: str, target_span: str, max_length: int) -> float:
    """Superfiltering's get_perplexity_and_embedding_part_text: mean loss over the target span, full logits."""
    input_ids = tokenizer.encode(text, return_tensors="pt", truncation=True, max_length=max_length).to(model.device)
    start_index = text.rfind(target_span)
    start_token = len(tokenizer.encode(text[:start_index]))
    labels = input_ids.clone()
    labels[0, :start_token] = -100
    with torch.no_grad():
        loss = model(input_ids, labels=labels).loss
    return loss.item()


def reference_scores(scorer: QualityScorer, records: list[Record], max_length: int) -> list[float]:
    """IFD per record, one example at a time."""
    tokenizer, model = scorer.tokenizer, scorer.lm
    alone = generation_header(tokenizer)
    out = []
    for record in records:
        prompt = tokenizer.apply_chat_template(
            record_messages(record, scorer.company, with_response=False), tokenize=False, add_generation_prompt=True
        )
        cond = reference_loss(model, tokenizer, prompt + record.output, record.output, max_length)
        uncond = reference_loss(model, tokenizer, alone + record.output, record.output, max_length)
        out.append(math.exp(cond) / math.exp(uncond))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=200, help="training-split seeds to score")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-len", type=int, default=1024)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    policy = load_policy(EXAMPLE / "policy.yaml")
    train = split_heldout(load_seeds(EXAMPLE / "seeds.jsonl", policy), 0.25, salt="heldout:13").train
    if args.records > len(train):
        raise SystemExit(f"--records {args.records}: the training split holds {len(train)} seeds")
    records = train[: args.records]
    scorer = QualityScorer(policy.company, batch_size=args.batch_size, max_len=args.max_len)
    items = [scorer.prepare(r) for r in records]
    tokens = sum(len(i.prompt) + len(i.alone) + 2 * len(i.response) for i in items)
    print(
        f"model {scorer.model.name} (float32, {scorer.lm.device}, {torch.get_num_threads()} threads); "
        f"{len(records)} records, {tokens} tokens in both passes"
    )
    reference_flops, ours_flops = flop_counts(scorer.lm.config, items)
    print(
        f"FLOP ratio ceiling: {reference_flops / ours_flops:.2f}x (reference {reference_flops / 1e12:.1f} TFLOP, "
        f"ballast.score.ifd {ours_flops / 1e12:.1f} TFLOP)"
    )

    # Warm-up: first calls allocate and pick kernels.
    reference_scores(scorer, records[:2], args.max_len)
    scorer.score([r.model_copy(deep=True) for r in records[:2]])

    start = time.perf_counter()
    reference = reference_scores(scorer, records, args.max_len)
    reference_s = time.perf_counter() - start

    ours_records = [r.model_copy(deep=True) for r in records]
    start = time.perf_counter()
    summary = scorer.score(ours_records)
    ours_s = time.perf_counter() - start
    if summary.scored != len(records):
        raise SystemExit(f"ballast.score.ifd scored {summary.scored} of {len(records)} records: {summary}")

    diff = max(abs(r.scores["ifd"] - ref) for r, ref in zip(ours_records, reference, strict=True))
    ratio = reference_s / ours_s
    print(
        f"reference (per example, full logits): {len(records) / reference_s:8.2f} records/s  ({reference_s:.1f} s, "
        f"{reference_flops / reference_s / 1e9:.0f} GFLOP/s)"
    )
    print(
        f"ballast.score.ifd (batched, response-only head): {len(records) / ours_s:8.2f} records/s  "
        f"({ours_s:.1f} s, {ours_flops / ours_s / 1e9:.0f} GFLOP/s)"
    )
    print(f"speed-up: {ratio:.2f}x (target >= {TARGET_RATIO:g}x: {'met' if ratio >= TARGET_RATIO else 'NOT met'})")
    print(f"max |IFD difference|: {diff:.2e} (limit {TOLERANCE:g}: {'met' if diff <= TOLERANCE else 'NOT met'})")


if __name__ == "__main__":
    main()
