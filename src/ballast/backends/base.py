"""The backend interfaces every stage talks to (generate, score, embed), and the values that cross them."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from ballast.records import ModelRef

Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": ...}
Prompt = str | Sequence[Message]  # raw text for completion, messages for chat models


def call_seed(text: str, seed: int) -> int:
    """A sampling seed per prompt, so a prompt's output depends on (prompt, seed) alone, not on which
    prompts ran before it or share its batch."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{text}".encode()).digest()[:4], "little")


@dataclass(frozen=True)
class Decoding:
    """Sampling settings; recorded on every record a model writes."""

    temperature: float = 0.7
    top_p: float = 0.95
    max_tokens: int = 256
    seed: int = 0
    stop: tuple[str, ...] = ()
    # 1.0 is off; small models loop under greedy decoding without it.
    repetition_penalty: float = 1.0

    def as_dict(self) -> dict[str, float | int | str | None]:
        d = asdict(self)
        d["stop"] = "|".join(self.stop) if self.stop else None
        return d


@dataclass
class Generation:
    """One model call's result. `error` is set instead of `text` when the call failed for good."""

    text: str | None
    error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None
    attempts: int = 1

    @property
    def ok(self) -> bool:
        return self.error is None and self.text is not None


@dataclass
class TokenScores:
    """Log-probabilities of a continuation's tokens given a prompt."""

    logprobs: list[float] = field(default_factory=list)

    @property
    def mean_nll(self) -> float:
        return -float(np.mean(self.logprobs)) if self.logprobs else float("nan")


@runtime_checkable
class Generator(Protocol):
    model: ModelRef

    def generate(self, prompts: Sequence[Prompt], decoding: Decoding) -> list[Generation]:
        """One generation per prompt, in order; failures come back as Generation(error=...)."""
        ...


@runtime_checkable
class Scorer(Protocol):
    """Token log-probabilities. HTTP servers disagree on prompt log-probs, so only in-process backends score."""

    model: ModelRef

    def score(self, prompts: Sequence[Prompt], continuations: Sequence[str]) -> list[TokenScores]:
        """Log-probabilities of each continuation's tokens after its prompt."""
        ...


@runtime_checkable
class Embedder(Protocol):
    model: ModelRef

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised float32 vectors, one row per text."""
        ...


def streams_results(generator: object) -> bool:
    """Whether `generator.generate` takes `on_result`, the callback that hands over each result as it finishes."""
    import inspect

    try:
        return "on_result" in inspect.signature(generator.generate).parameters  # type: ignore[attr-defined]
    except (AttributeError, TypeError, ValueError):
        return False
