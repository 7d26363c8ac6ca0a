"""Model calls cached by prompt hash in SQLite: a killed run re-asks only what it had not finished."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

from ballast.backends.base import Decoding, Generation, Generator, Prompt, streams_results


def call_key(model_sha256: str | None, model_name: str, prompt: Prompt, decoding: Decoding) -> str:
    payload = json.dumps([model_sha256 or model_name, prompt, decoding.as_dict()], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class CachedGenerator:
    """Wraps a Generator; successful generations are stored as soon as they return (failures are retried
    on the next run, never cached)."""

    def __init__(self, inner: Generator, path: Path) -> None:
        self.inner = inner
        self.model = inner.model
        path.parent.mkdir(parents=True, exist_ok=True)
        # autocommit + WAL: each stored call survives a kill -9 of the process.
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("pragma journal_mode=wal")
        self.db.execute("create table if not exists calls (key text primary key, generation text)")
        self.hits = 0
        self.misses = 0

    def generate(
        self, prompts: Sequence[Prompt], decoding: Decoding, on_result: Callable[[int, Generation], None] | None = None
    ) -> list[Generation]:
        """`on_result(i, generation)` is called for cached prompts first, then as each new call finishes
        (each stored before the callback), when the inner generator streams its results."""
        keys = [call_key(self.model.sha256, self.model.name, p, decoding) for p in prompts]
        found: dict[str, Generation] = {}
        for key in set(keys):
            row = self.db.execute("select generation from calls where key = ?", (key,)).fetchone()
            if row:
                found[key] = Generation(**json.loads(row[0]))
        missing = [i for i, k in enumerate(keys) if k not in found]
        self.hits += len(prompts) - len(missing)
        self.misses += len(missing)
        if on_result is not None:
            for i, key in enumerate(keys):
                if key in found:
                    on_result(i, found[key])

        stored: set[int] = set()

        def store(j: int, gen: Generation) -> None:
            i = missing[j]
            stored.add(j)
            if gen.ok:
                self.db.execute("insert or replace into calls values (?, ?)", (keys[i], json.dumps(asdict(gen))))
            found.setdefault(keys[i], gen)
            if on_result is not None:
                on_result(i, found[keys[i]])

        if missing:
            batch = [prompts[i] for i in missing]
            streaming = streams_results(self.inner)
            returned = (
                self.inner.generate(batch, decoding, on_result=store)
                if streaming
                else self.inner.generate(batch, decoding)
            )
            for j, gen in enumerate(returned):
                if j not in stored:
                    store(j, gen)
            for j in range(len(batch)):
                if j not in stored:
                    store(j, Generation(text=None, error=f"{self.model.name} returned no result for this prompt"))
        return [found[k] for k in keys]
