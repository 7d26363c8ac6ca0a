"""Static sentence embeddings distilled offline from the packaged all-MiniLM-L6-v2 (model2vec).

MiniLM runs a transformer per text: about 100 texts a second on 2 CPU cores, so an hour for a 300,000-record
pool. model2vec distils it once into one vector per token (a forward pass per vocabulary entry, PCA, Zipf
weighting); a text's embedding is then the mean of its token vectors, thousands of texts a second. The
distilled model is cached under `ballast.backends.models.cache_dir()` and identified by the sha256 of its weights.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from functools import cached_property
from itertools import chain
from pathlib import Path

import numpy as np

from ballast.backends.models import cache_dir, file_sha256, model_dir, resolve
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
    (tmp / "ballast.json").write_text(
        json.dumps(
            {
                "source": SOURCE,
                "source_sha256": source.sha256,
                "pca_dims": pca_dims,
                "sha256": file_sha256(tmp / "model.safetensors"),
            },
            indent=1,
        )
    )
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

    def _token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text's first `max_tokens` tokens. BERT's tokenizer always splits at whitespace, so
        each whitespace-separated chunk is tokenised once (through the model's own tokenizer) and cached: the
        same ids as tokenising the whole text, several times faster on a pool that repeats its words."""
        cache, model, limit = self._chunk_ids, self._model, self.max_tokens
        chunks = [t.split(None, limit)[:limit] for t in texts]  # a chunk holds at least one token
        missing = list({c for cs in chunks for c in cs if c not in cache})
        if missing:
            if len(cache) + len(missing) > 1_000_000:
                cache.clear()
            for chunk, ids in zip(missing, model.tokenize(missing)):
                cache[chunk] = ids
        get = cache.__getitem__
        return [list(chain.from_iterable(map(get, cs)))[:limit] for cs in chunks]

    @cached_property
    def _chunk_ids(self) -> dict[str, list[int]]:
        return {}

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Mean of the token vectors of each text's first `max_tokens` tokens, as model2vec's `encode` computes
        it, as one sparse (texts x vocabulary) count matrix times the vector table."""
        from scipy.sparse import csr_matrix

        table = self._table
        out = np.zeros((len(texts), table.shape[1]), dtype=np.float32)
        for start in range(0, len(texts), 4096):
            ids = self._token_ids(texts[start : start + 4096])
            lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
            flat = np.fromiter(chain.from_iterable(ids), dtype=np.int64, count=int(lengths.sum()))
            counts = csr_matrix(
                (np.ones(len(flat), dtype=np.float32), flat, np.concatenate(([0], np.cumsum(lengths)))),
                shape=(len(ids), len(table)),
            )
            out[start : start + len(ids)] = counts @ table  # the sum: the mean's direction
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms > 0, norms, 1.0)

    @cached_property
    def _table(self) -> np.ndarray:
        """One float32 row per token id: its vector times its weight (model2vec's pooling, precomputed)."""
        model = self._model
        rows = np.arange(len(model.tokenizer.get_vocab()))
        if model.token_mapping is not None:
            table = np.asarray(model.embedding, dtype=np.float32)[np.asarray(model.token_mapping)[rows]]
        else:
            table = np.asarray(model.embedding, dtype=np.float32)[rows]
        if model.weights is not None:
            table = table * np.asarray(model.weights, dtype=np.float32)[rows][:, None]
        return np.ascontiguousarray(table)
