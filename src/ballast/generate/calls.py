"""Running many prompts through a generator in chunks, with a progress bar."""

from __future__ import annotations

from collections.abc import Sequence

from rich.progress import Progress

from ballast.backends.base import Decoding, Generation, Generator, Prompt


def generate_all(generator: Generator, prompts: Sequence[Prompt], decoding: Decoding, *, label: str,
                 chunk: int = 8) -> list[Generation]:
    """Chunks keep the bar moving and bound what a crash can lose to one chunk (the cache holds the rest)."""
    results: list[Generation] = []
    with Progress(transient=False) as progress:
        task = progress.add_task(label, total=len(prompts))
        for start in range(0, len(prompts), chunk):
            batch = prompts[start : start + chunk]
            results.extend(generator.generate(batch, decoding))
            progress.advance(task, len(batch))
    return results
