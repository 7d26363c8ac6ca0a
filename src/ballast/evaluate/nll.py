"""Mean negative log-likelihood of the held-out human replies under a model: no generation, so it is cheap, and
being an average over every token of every reference it has little variance, so small differences between models
show (compare them per example with `ballast.evaluate.paired`).

The reply is scored exactly as training supervises it: the prompt is the system + user turns rendered with the
generation prompt (`record_messages(record, company, with_response=False)`), and the continuation is what the chat
template adds for the assistant turn after that, i.e. the trimmed reply plus the end-of-turn marker (for Gemma,
`<end_of_turn>` and its newline): TRL's completion-only loss learns the same tokens (the full conversation's tokens
past the rendered prompt), so a lower NLL here means the model learnt more of what training taught, including to
stop. Unlike training, nothing is truncated: each reply is scored in full.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from ballast.backends.base import Prompt, TokenScores
from ballast.evaluate.metrics import bootstrap_ci
from ballast.records import ModelRef, Record
from ballast.templates.prompts import Message, record_messages


class RenderingScorer(Protocol):
    """A Scorer that also renders chat messages to the text its model sees (TransformersBackend does)."""

    model: ModelRef

    def render(self, prompt: Prompt, *, add_generation_prompt: bool = True) -> str: ...

    def score(self, prompts: Sequence[Prompt], continuations: Sequence[str]) -> list[TokenScores]: ...


def reply_continuation(scorer: RenderingScorer, record: Record, company: str) -> tuple[list[Message], str]:
    """The prompt messages of a record and the text the model must continue them with: the assistant turn as the
    chat template renders it after the generation prompt (reply + end-of-turn)."""
    prompt = record_messages(record, company, with_response=False)
    head = scorer.render(prompt, add_generation_prompt=True)
    full = scorer.render(record_messages(record, company, with_response=True), add_generation_prompt=False)
    if not full.startswith(head):
        raise ValueError(
            "the chat template renders the prompt differently once the reply follows it; "
            f"cannot tell the reply's text apart: {head[-80:]!r} vs {full[len(head) - 80 : len(head)]!r}"
        )
    return prompt, full[len(head) :]


def reference_nll(
    scorer: RenderingScorer, records: Sequence[Record], company: str, *, outputs: Sequence[str] | None = None
) -> list[dict]:
    """One row per record: its id (`ref`, as `metrics.score_output` names it), slice, audience, the number of
    scored tokens, their summed NLL and `nll`, the mean NLL per token (nats). With `outputs`, those replies are
    scored in place of the records' own (e.g. a mismatched reply as a control)."""
    if outputs is not None:
        records = [r.model_copy(update={"output": o}) for r, o in zip(records, outputs, strict=True)]
    pairs = [reply_continuation(scorer, r, company) for r in records]
    scores = scorer.score([p for p, _ in pairs], [c for _, c in pairs])
    rows = []
    for r, s in zip(records, scores, strict=True):
        total = -float(np.sum(s.logprobs))
        rows.append(
            {
                "ref": r.meta.get("ref", r.id),
                "slice": r.slice,
                "audience": r.audience,
                "tokens": len(s.logprobs),
                "sum_nll": total,
                "nll": total / len(s.logprobs),
            }
        )
    return rows


def _stat(values: list[float], seed: int) -> dict:
    return {
        "mean": float(np.mean(values)) if values else None,
        "n": len(values),
        "ci95": list(bootstrap_ci(values, seed=seed)) if values else None,
    }


def summarize_nll(rows: Sequence[dict], *, key: str = "nll", seed: int = 0) -> dict:
    """Mean per-token NLL over examples (each reply counts once, whatever its length), overall and per slice, each
    with its 95% bootstrap interval; plus the token-weighted mean (total NLL / total tokens) overall."""
    by_slice: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        by_slice[r["slice"] or ""].append(r[key])
    tokens = sum(r["tokens"] for r in rows)
    return {
        "overall": _stat([r[key] for r in rows], seed),
        "per_token": sum(r["sum_nll"] for r in rows) / tokens if tokens else None,
        "tokens": tokens,
        "slices": {s: _stat(v, seed) for s, v in sorted(by_slice.items())},
    }


def model_reference_nll(
    records: Sequence[Record],
    company: str,
    *,
    model: str = "gemma3-270m",
    adapter: Path | None = None,
    batch_size: int = 8,
) -> tuple[str, list[dict]]:
    """Load the strong base (with `adapter` merged in, if any) and score the records' replies: (the model's name as
    the backend reports it, rows of `reference_nll`)."""
    from ballast.backends.transformers_hf import TransformersBackend

    backend = TransformersBackend(model, adapter=adapter, batch_size=batch_size)
    return backend.model.name, reference_nll(backend, records, company)
