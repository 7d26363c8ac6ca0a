"""A run folder: the resolved recipe, the manifest, and stages that are reused when nothing they read changed."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import yaml
from pydantic import BaseModel

from ballast.manifest import Manifest, StageEntry, new_manifest
from ballast.recipe import Recipe
from ballast.records import Record
from ballast.store import decisions_table, read_records, write_json, write_records, write_table


def _jsonable(value: object) -> object:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return str(value)


def fingerprint(*parts: object) -> str:
    payload = json.dumps(parts, sort_keys=True, default=_jsonable, ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class Run:
    """Stages write into stages/<name>/ and finish by writing done.json with their key; a stage whose key
    matches a finished one is reused, so a killed run resumes after its last finished stage.

    A stage's key is built here from what the stage declares it reads (its `READS`): names of recipe keys
    ("generate", "seed", "generate.contrastive") and of shared values the pipeline provides ("policy",
    "models.weak" as the model file's sha256, "seeds" as the training split's ids), plus the keys of the stages
    whose output it takes."""

    def __init__(self, recipe: Recipe) -> None:
        self.recipe = recipe
        self.root = recipe.resolved_run_dir()
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "recipe.yaml").write_text(
            yaml.safe_dump(json.loads(recipe.model_dump_json()), sort_keys=False), encoding="utf-8"
        )
        self.manifest: Manifest = new_manifest(recipe.name, recipe.seed)
        self.values: dict[str, object] = {}  # shared values stages read, by name; they win over recipe keys
        self.save_manifest()

    @property
    def cache_path(self) -> Path:
        return self.root / "cache" / "calls.sqlite"

    def save_manifest(self) -> None:
        write_json(self.manifest.model_dump(mode="json"), self.root / "manifest.json")

    def provide(self, values: dict[str, object]) -> None:
        """Shared values stages may declare they read, by name (e.g. "policy": the policy file's sha256)."""
        self.values.update(values)

    def read(self, name: str) -> object:
        """A declared read: a value the pipeline provided, else the recipe key of that dotted name."""
        if name in self.values:
            return self.values[name]
        node: object = self.recipe
        for part in name.split("."):
            if not hasattr(node, part):
                raise KeyError(f"a stage reads {name!r}, which is neither a provided value nor a recipe key")
            node = getattr(node, part)
        return node

    def step(self, name: str, reads: Sequence[str], upstream: list[str], produce: Callable[[Path], dict]) -> str:
        """Run `produce(folder)` unless a finished stage with the same key exists; returns the stage key.
        The key covers the values of `reads` (the first is the stage's own recipe section), the `upstream` stage
        keys and the code. `produce` returns the counts to record (records_in, records_out, kept, dropped)."""
        values = {r: self.read(r) for r in reads}
        config, inputs = values[reads[0]], [upstream, {r: v for r, v in values.items() if r != reads[0]}]
        key = fingerprint(name, values, upstream, self.manifest.code_sha256)
        folder = self.root / "stages" / name
        done = folder / "done.json"
        if done.is_file() and json.loads(done.read_text())["key"] == key:
            info, reused = json.loads(done.read_text()), True
        else:
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            start = time.perf_counter()
            counts = produce(folder)
            info = {"key": key, "seconds": round(time.perf_counter() - start, 2), **counts}
            write_json(info, done)
            reused = False
        self.manifest.stages = [s for s in self.manifest.stages if s.name != name]
        self.manifest.stages.append(
            StageEntry(
                name=name,
                records_in=info.get("records_in", 0),
                records_out=info.get("records_out", 0),
                kept=info.get("kept", 0),
                dropped=info.get("dropped", 0),
                seconds=info["seconds"],
                config_sha256=fingerprint(config),
                inputs_sha256=fingerprint(inputs),
                reused=reused,
            )
        )
        self.save_manifest()
        return key

    def records_step(
        self,
        name: str,
        reads: Sequence[str],
        upstream: list[str],
        records_in: int,
        produce: Callable[[], list[Record]],
        extra: Callable[[], dict] = dict,
    ) -> tuple[str, list[Record]]:
        """A stage whose output is records: stored as records.parquet (every record, kept or dropped).
        `extra()` adds stage facts known only after it ran (e.g. model-call cache hits)."""

        def write(folder: Path) -> dict:
            records = produce()
            write_records(records, folder / "records.parquet")
            kept = sum(r.kept for r in records)
            return {
                "records_in": records_in,
                "records_out": len(records),
                "kept": kept,
                "dropped": len(records) - kept,
                **extra(),
            }

        key = self.step(name, reads, upstream, write)
        return key, read_records(self.root / "stages" / name / "records.parquet")

    def write_decision_log(self, records: list[Record]) -> Path:
        return write_table(decisions_table(records), self.root / "decisions.parquet")
