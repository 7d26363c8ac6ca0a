"""The pool as a versioned dataset: `ballast pool` builds shards into a folder with a manifest, a finished shard is
never regenerated, and a changed file is refused."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from ballast.pipeline import run_recipe
from ballast.pool_build import PoolIntegrityError, build_pool, load_pool, read_manifest
from conftest import EXAMPLE


def _tiny_pool_recipe(tmp_path: Path) -> Path:
    """Two shards of two template fills each, answered by the real weak model; nothing else generates."""
    recipe = {
        "name": "tiny-pool",
        "seed": 13,
        "policy": str(EXAMPLE / "policy.yaml"),
        "seeds": str(EXAMPLE / "seeds.jsonl"),
        "pool": {"shards": 2, "out": "pool"},
        "generate": {
            "self_instruct": {"enabled": False},
            "responses": {"decoding": {"temperature": 0.7, "top_p": 0.9, "max_tokens": 24}},
            "template_slots": {
                "enabled": True,
                "total": 2,
                "slots": {"product": ["oak table", "wool throw", "lamp"], "days": ["4", "40"]},
                "templates": [
                    {
                        "id": "ret",
                        "slice": "returns",
                        "audience": "customer",
                        "rules": ["R1"],
                        "instruction": "Draft a reply to this customer.",
                        "input": "Customer wants to return a {product} delivered {days} days ago.",
                    }
                ],
            },
        },
    }
    path = tmp_path / "pool.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return path


def test_pool_builds_shards_resumes_and_refuses_a_changed_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # shard runs go to ./runs
    recipe = _tiny_pool_recipe(tmp_path)
    folder = build_pool(recipe, run_recipe)
    manifest = read_manifest(folder)
    assert sorted(manifest["shards"]) == ["0", "1"]
    assert manifest["records"] == 4 and manifest["models"]["weak"]["sha256"]
    assert "/" not in manifest["recipe"]  # no machine path in a file that ships
    records = load_pool(folder)
    assert len(records) == 4 and all(r.kept and r.output for r in records)
    # Each shard samples its own fills (generate.seed = seed + k) from the same training seeds.
    assert len({(r.instruction, r.input) for r in records}) >= 3

    first = (folder / "shard-00.parquet").stat().st_mtime_ns
    build_pool(recipe, run_recipe)  # nothing to do: both shards are finished and match the manifest
    assert (folder / "shard-00.parquet").stat().st_mtime_ns == first

    tampered = tmp_path / "tampered"
    shutil.copytree(folder, tampered)
    with open(tampered / "shard-01.parquet", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(PoolIntegrityError, match="shard-01.parquet"):
        load_pool(tampered)
