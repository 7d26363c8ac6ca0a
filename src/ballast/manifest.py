"""What a run was made from: versions, hashes of code, models, policy and data, and per-stage counts."""

from __future__ import annotations

import hashlib
import importlib.metadata
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

from pydantic import BaseModel

import ballast
from ballast.backends.models import file_sha256

PACKAGES = (
    "ballast",
    "torch",
    "transformers",
    "trl",
    "peft",
    "llama_cpp_python",
    "sentence-transformers",
    "pyarrow",
    "duckdb",
    "datasketch",
    "pydantic",
    "numpy",
)


class StageEntry(BaseModel):
    name: str
    records_in: int
    records_out: int
    kept: int
    dropped: int
    seconds: float
    config_sha256: str
    inputs_sha256: str
    reused: bool = False


class FileHash(BaseModel):
    path: str
    sha256: str | None = None
    name: str | None = None


class Manifest(BaseModel):
    run: str
    created: str
    ballast_version: str
    code_sha256: str
    git_commit: str | None
    python: str
    platform: str
    packages: dict[str, str]
    seed: int | None = None
    policy: dict[str, str] = {}
    models: dict[str, FileHash] = {}
    data: dict[str, FileHash] = {}
    templates: dict[str, str] = {}
    stages: list[StageEntry] = []


def code_sha256() -> str:
    """Hash of the installed ballast sources: changes whenever the code that made a run changes."""
    root = Path(ballast.__file__).parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.suffix in (".py", ".txt", ".yaml", ".jinja"):
            digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(ballast.__file__).parent, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def new_manifest(run: str, seed: int | None = None) -> Manifest:
    return Manifest(
        run=run,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        ballast_version=ballast.__version__,
        code_sha256=code_sha256(),
        git_commit=_git_commit(),
        python=sys.version.split()[0],
        platform=platform.platform(),
        packages=_versions(),
        seed=seed,
    )


def hash_file(path: str | Path) -> FileHash:
    return FileHash(path=str(path), sha256=file_sha256(Path(path)))
