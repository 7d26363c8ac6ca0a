"""Running many prompts through a generator: streamed to disk as each call finishes, with a progress bar.

Backends that take `on_result` (llama.cpp in process, OpenAI-compatible servers, the call cache) hand over
each result as it finishes: the cache stores it and the call log appends it at once, so a crash loses at
most the calls in flight. Others are called in chunks, and a crash loses at most one chunk.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rich.progress import Progress

from ballast.backends.base import Decoding, Generation, Generator, Prompt, streams_results

# Prompts handed to a streaming backend per call: enough to keep a server's concurrency busy, few enough
# that building the coroutines or prompt list never matters.
STREAM_WINDOW = 256


def prompt_sha256(prompt: Prompt) -> str:
    return hashlib.sha256(json.dumps(prompt, ensure_ascii=False, sort_keys=True).encode("utf-8")).hexdigest()


@dataclass
class CallLog:
    """Every finished call appended as one JSON line the moment it returns (successes and failures), and
    counted per label, so a stage can report how many calls failed and a crash leaves a readable trail."""

    path: Path
    ok: Counter = field(default_factory=Counter)
    failed: Counter = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - open for the stage

    def write(self, label: str, prompt: Prompt, gen: Generation) -> None:
        (self.ok if gen.ok else self.failed)[label] += 1
        self._fh.write(
            json.dumps(
                {
                    "time": round(time.time(), 3),
                    "label": label,
                    "prompt_sha256": prompt_sha256(prompt),
                    "ok": gen.ok,
                    "text": gen.text,
                    "error": gen.error,
                    "attempts": gen.attempts,
                    "prompt_tokens": gen.prompt_tokens,
                    "completion_tokens": gen.completion_tokens,
                    "finish_reason": gen.finish_reason,
                },
                ensure_ascii=False,
            )
            + "\n"
        )
        self._fh.flush()  # into the OS: a killed process loses nothing already written

    def summary(self) -> dict[str, int]:
        return {"calls_ok": sum(self.ok.values()), "calls_failed": sum(self.failed.values())}

    def close(self) -> None:
        self._fh.close()


def generate_all(
    generator: Generator,
    prompts: Sequence[Prompt],
    decoding: Decoding,
    *,
    label: str,
    chunk: int = 8,
    log: CallLog | None = None,
    progress: bool = True,
) -> list[Generation]:
    """One Generation per prompt, in order. Failures come back as Generation(error=...); an exception from
    the backend fails the prompts of that call (recorded, counted) instead of losing finished work."""
    results: list[Generation | None] = [None] * len(prompts)
    streaming = streams_results(generator)
    step = max(chunk, STREAM_WINDOW) if streaming else chunk
    with Progress(transient=False, disable=not progress) as bar:
        task = bar.add_task(label, total=len(prompts))

        def finish(i: int, gen: Generation) -> None:
            if results[i] is not None:
                return
            results[i] = gen
            if log is not None:
                log.write(label, prompts[i], gen)
            bar.advance(task)

        for start in range(0, len(prompts), step):
            batch = list(prompts[start : start + step])
            try:
                if streaming:
                    returned = generator.generate(
                        batch,
                        decoding,  # type: ignore[call-arg]
                        on_result=lambda j, gen, s=start: finish(s + j, gen),
                    )
                else:
                    returned = generator.generate(batch, decoding)
            except Exception as exc:  # noqa: BLE001 - a backend bug must not lose the finished calls
                returned = []
                error = f"{type(exc).__name__} from {generator.model.name}: {exc}"
            else:
                error = f"{generator.model.name} returned {len(returned)} results for {len(batch)} prompts"
            for j, gen in enumerate(returned[: len(batch)]):
                finish(start + j, gen)
            for j in range(len(batch)):
                finish(start + j, Generation(text=None, error=error))
    return results  # type: ignore[return-value]


def tokens_of(generations: Sequence[Generation]) -> int:
    return sum(g.completion_tokens for g in generations if g.ok)
