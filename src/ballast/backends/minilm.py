"""Sentence embeddings from the packaged all-MiniLM-L6-v2, loaded offline from site-packages."""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import cached_property

import numpy as np

from ballast.backends.models import model_dir, resolve


class MiniLMEmbedder:
    def __init__(self, *, batch_size: int = 64, device: str = "cpu") -> None:
        _, self.model = resolve("all-minilm-l6-v2")
        self.batch_size = batch_size
        self.device = device

    @cached_property
    def _st(self):  # noqa: ANN202
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        return SentenceTransformer(str(model_dir("all-minilm-l6-v2")), device=self.device)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        vectors = self._st.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return vectors.astype(np.float32, copy=False)
