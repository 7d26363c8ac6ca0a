"""Static sentence embeddings distilled offline from the packaged all-MiniLM-L6-v2 (model2vec).

MiniLM runs a transformer per text: about 100 texts a second on 2 CPU cores, so an hour for a 300,000-record
pool. model2vec distils it once into one vector per token (a forward pass per vocabulary entry, PCA, Zipf
weighting); a text's embedding is then the mean of its token vectors, thousands of texts a second. The
distilled model is cached under `ballast.models.cache_dir()` and identified by the sha256 of its weights.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path

import numpy as np

from ballast.models import cache_dir, file_sha256, model_dir, resolve
from ballast.records import ModelRef

SOURCE = "all-minilm-l6-v2"


def static_model_dir(pca_dims: int = 256) -> Path:
    """Where the distilled model lives: keyed by the source weights, the model2vec version and the settings,
    so a different MiniLM or model2vec release distils afresh instead of reusing a stale file."""
    import model2vec

    _, source = resolve(SOURCE)
    return cache_dir() / "models" / f"minilm-static-{source.sha256[:12]}-m2v{model2vec.__version__}-pca{pca_dims}"


def distil_static(pca_dims: int = 256) -> Path:
    """Distil (once) and return the folder of the static model; safe against a concurrent or killed run."""
    folder = static_model_dir(pca_dims)
    if (folder / "model.safetensors").is_file() and (folder / "ballast.json").is_file():
        return folder
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from model2vec.distill import distill

    _, source = resolve(SOURCE)
    model = distill(model_name=str(model_dir(SOURCE)), pca_dims=pca_dims, device="cpu")
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp))
    (tmp / "ballast.json").write_text(json.dumps({"source": SOURCE, "source_sha256": source.sha256,
                                                  "pca_dims": pca_dims,
                                                  "sha256": file_sha256(tmp / "model.safetensors")}, indent=1))
    folder.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(tmp, folder)
    except OSError:  # another process finished first; its copy is as good as ours
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


class StaticEmbedder:
    """`Embedder` over the distilled static model: L2-normalised float32 rows, one per text."""

    def __init__(self, *, pca_dims: int = 256, max_tokens: int = 256, batch_size: int = 2048) -> None:
        self.folder = distil_static(pca_dims)
        self.max_tokens = max_tokens
        self.batch_size = batch_size
        info = json.loads((self.folder / "ballast.json").read_text())
        self.model = ModelRef(name=f"{SOURCE}-static{pca_dims}", sha256=info["sha256"])

    @cached_property
    def _model(self):  # noqa: ANN202
        from model2vec import StaticModel

        return StaticModel.from_pretrained(str(self.folder))

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not len(texts):
            return np.zeros((0, self._model.dim), dtype=np.float32)
        vectors = self._model.encode(list(texts), max_length=self.max_tokens, batch_size=self.batch_size,
                                     use_multiprocessing=False)
        vectors = np.asarray(vectors, dtype=np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.where(norms > 0, norms, 1.0)
