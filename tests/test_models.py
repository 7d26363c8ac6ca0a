from __future__ import annotations

import numpy as np
import pytest

from ballast.backends import models
from ballast.backends.base import Embedder
from ballast.backends.minilm import MiniLMEmbedder


def test_embedded_models_resolve_with_pinned_hashes():
    for name, spec in models.EMBEDDED.items():
        path, ref = models.resolve(name)
        assert path.is_file() and ref.sha256 == spec.sha256 and ref.name == name


def test_a_file_with_the_wrong_hash_is_refused(monkeypatch, tmp_path):
    fake = models.EmbeddedModel("fake", "ballast", "ballast", "__init__.py", "0" * 64, "gguf")
    monkeypatch.setitem(models.EMBEDDED, "fake", fake)
    with pytest.raises(models.ModelFileError, match="expected 0000"):
        models.resolve.__wrapped__("fake")
    with pytest.raises(models.ModelFileError, match="neither an embedded model"):
        models.resolve.__wrapped__(str(tmp_path / "missing.gguf"))


def test_a_users_own_model_file_is_hashed(tmp_path):
    own = tmp_path / "own.gguf"
    own.write_bytes(b"weights")
    path, ref = models.resolve.__wrapped__(str(own))
    assert ref.sha256 == models.file_sha256(own) and ref.name == "own.gguf"


def test_minilm_embeds_offline_and_ranks_paraphrases_closer():
    emb = MiniLMEmbedder()
    assert isinstance(emb, Embedder)
    vecs = emb.embed(["How long do refunds take?", "When will I get my money back?", "Season a cast-iron pan."])
    assert vecs.shape == (3, 384) and vecs.dtype == np.float32
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert vecs[0] @ vecs[1] > vecs[0] @ vecs[2] + 0.2
