"""Near-duplicate removal at pool scale: MinHash with LSH over word shingles, and semantic duplicates by
embedding similarity with an approximate nearest-neighbour index.

Both decide a batch at a time (vectorised hashing, one embedding call) but keep the order of `Filter.run`: a
record is compared with the records kept before it, in earlier batches or earlier in its own batch.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import xxhash

from ballast.curate.base import Drop, Filter
from ballast.curate.text import normalised
from ballast.records import Record, record_text

if TYPE_CHECKING:  # annotations only
    from ballast.recipe import MinHashConfig, SemanticConfig

_U64 = np.uint64
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")


def numbers(record: Record) -> tuple[frozenset[str], frozenset[str]]:
    """The numbers a record states (days, amounts, card digits), as written: in its request (instruction and
    input) and in its response."""
    return (
        frozenset(_NUMBER.findall(f"{record.instruction}\n{record.input}")),
        frozenset(_NUMBER.findall(record.output)),
    )


def same_facts(a: tuple[frozenset[str], ...], b: tuple[frozenset[str], ...]) -> bool:
    """Whether two records' numbers agree, request with request and response with response: one set holds the
    other (a dropped or added sentence may take a number with it; a changed day count, amount or window puts a
    number in each that the other lacks)."""
    return all(x <= y or y <= x for x, y in zip(a, b, strict=True))


def lsh_params(cfg: MinHashConfig) -> tuple[int, int]:
    """(bands, rows): the recipe's, or datasketch's optimum for the threshold (equal weight on misses and
    false alarms), the same parameters `datasketch.MinHashLSH(threshold, num_perm)` would pick."""
    if cfg.bands is not None and cfg.rows is not None:
        return cfg.bands, cfg.rows
    from datasketch.lsh import _optimal_param

    return _optimal_param(cfg.threshold, cfg.num_perm, 0.5, 0.5)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: spreads combined token hashes over all 64 bits."""
    x = x ^ (x >> _U64(30))
    x = x * _U64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> _U64(27))
    x = x * _U64(0x94D049BB133111EB)
    return x ^ (x >> _U64(31))


class MinHasher:
    """MinHash signatures of many texts at once: word k-shingles hashed with xxh64, then `num_perm`
    multiply-shift permutations (a·x + b mod 2^64, top 32 bits), the minimum per text and permutation."""

    def __init__(self, num_perm: int = 128, shingle_words: int = 3, seed: int = 1) -> None:
        rng = np.random.default_rng(seed)
        self.num_perm = num_perm
        self.k = shingle_words
        self.a = rng.integers(0, 2**63, size=num_perm, dtype=np.uint64) * _U64(2) + _U64(1)  # odd multipliers
        self.b = rng.integers(0, 2**63, size=num_perm, dtype=np.uint64)
        self._words: dict[str, int] = {}

    def _word_hashes(self, words: list[str]) -> list[int]:
        cache = self._words
        if len(cache) > 2_000_000:  # a pool with an unbounded vocabulary must not grow this without end
            cache.clear()
        out = []
        for w in words:
            h = cache.get(w)
            if h is None:
                h = cache[w] = xxhash.xxh64_intdigest(w.encode())
            out.append(h)
        return out

    def signatures(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(signatures as uint32 [n, num_perm], mask of texts with no words, whose signature is meaningless)."""
        n, k = len(texts), self.k
        token_lists = [self._word_hashes(normalised(t).split()) for t in texts]
        lengths = np.fromiter((len(t) for t in token_lists), dtype=np.int64, count=n)
        empty = lengths == 0
        sig = np.full((n, self.num_perm), np.iinfo(np.uint32).max, dtype=np.uint32)
        if empty.all():
            return sig, empty
        tokens = np.fromiter((h for t in token_lists for h in t), dtype=np.uint64, count=int(lengths.sum()))
        starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
        # A shingle at token i combines tokens i..i+k-1; texts shorter than k words get one shingle of all
        # their words. Shingles never cross into the next text.
        width = np.minimum(lengths, k)
        n_shingles = np.where(empty, 0, np.maximum(lengths - k + 1, 1))
        doc = np.repeat(np.arange(n), n_shingles)
        first = np.repeat(starts, n_shingles) + (
            np.arange(int(n_shingles.sum())) - np.repeat(np.cumsum(n_shingles) - n_shingles, n_shingles)
        )
        acc = np.zeros(len(first), dtype=np.uint64)
        padded = np.concatenate((tokens, np.zeros(k, dtype=np.uint64)))
        w = width[doc]
        for j in range(k):
            part = padded[first + j] * _U64(0x9E3779B97F4A7C15 + 2 * j)
            acc = np.where(j < w, acc * _U64(0x100000001B3) + part, acc)
        shingles = _mix64(acc)
        seg = (np.cumsum(n_shingles) - n_shingles)[~empty]
        buf = np.empty_like(shingles)
        rows = np.nonzero(~empty)[0]
        for p in range(self.num_perm):
            np.multiply(shingles, self.a[p], out=buf)
            np.add(buf, self.b[p], out=buf)
            np.right_shift(buf, _U64(32), out=buf)
            sig[rows, p] = np.minimum.reduceat(buf, seg)
        return sig, empty


class _GrowingRows:
    """A 2-D array that grows by appending rows (amortised doubling)."""

    def __init__(self, width: int, dtype: type) -> None:
        self.data = np.empty((1024, width), dtype=dtype)
        self.n = 0

    def extend(self, rows: np.ndarray) -> None:
        need = self.n + len(rows)
        if need > len(self.data):
            grown = np.empty((max(need, 2 * len(self.data)), self.data.shape[1]), dtype=self.data.dtype)
            grown[: self.n] = self.data[: self.n]
            self.data = grown
        self.data[self.n : need] = rows
        self.n = need


class MinHashDuplicate(Filter):
    """Near-duplicates of an earlier kept record: LSH bands propose candidates, the MinHash estimate of the
    Jaccard similarity of word shingles (over instruction, input and response) confirms them."""

    name = "minhash_duplicate"

    def __init__(self, cfg: MinHashConfig, seen: Sequence[Record] = ()) -> None:
        self.cfg = cfg
        self.bands, self.rows = lsh_params(cfg)
        self.hasher = MinHasher(cfg.num_perm, cfg.shingle_words, cfg.seed)
        rng = np.random.default_rng(cfg.seed + 1)
        self._band_mult = rng.integers(0, 2**63, size=self.rows, dtype=np.uint64) * _U64(2) + _U64(1)
        self._keys = [np.empty(0, dtype=np.uint64) for _ in range(self.bands)]  # sorted band keys of kept records
        self._pos = [np.empty(0, dtype=np.int64) for _ in range(self.bands)]  # their positions in _sigs
        self._sigs = _GrowingRows(cfg.num_perm, np.uint32)
        self._ids: list[str] = []
        if seen:
            sig, empty = self.hasher.signatures([record_text(r) for r in seen])
            keep = ~empty
            self._insert(sig[keep], self._band_keys(sig[keep]), [r.id for r, e in zip(seen, empty) if not e])

    def _band_keys(self, sig: np.ndarray) -> np.ndarray:
        keys = np.empty((len(sig), self.bands), dtype=np.uint64)
        wide = sig.astype(np.uint64)
        for b in range(self.bands):
            block = wide[:, b * self.rows : (b + 1) * self.rows]
            keys[:, b] = _mix64((block * self._band_mult).sum(axis=1, dtype=np.uint64) + _U64(b))
        return keys

    def _insert(self, sig: np.ndarray, keys: np.ndarray, ids: list[str]) -> None:
        pos = np.arange(self._sigs.n, self._sigs.n + len(sig), dtype=np.int64)
        self._sigs.extend(sig)
        self._ids.extend(ids)
        for b in range(self.bands):
            merged = np.concatenate((self._keys[b], keys[:, b]))
            order = np.argsort(merged, kind="stable")  # two sorted runs: a merge, earlier records first
            self._keys[b] = merged[order]
            self._pos[b] = np.concatenate((self._pos[b], pos))[order]

    def drop_batch(self, records: Sequence[Record]) -> list[Drop | None]:
        n = len(records)
        sig, empty = self.hasher.signatures([record_text(r) for r in records])
        keys = self._band_keys(sig)
        earlier: list[set[int] | None] = [None] * n  # positions of kept records from earlier batches
        before = np.full((self.bands, n), -1, dtype=np.int64)  # previous record in this batch with the same key
        for b in range(self.bands):
            kb = keys[:, b]
            stored = self._keys[b]
            if len(stored):
                at = np.minimum(np.searchsorted(stored, kb), len(stored) - 1)
                for i in np.nonzero((stored[at] == kb) & ~empty)[0]:
                    if earlier[i] is None:
                        earlier[i] = set()
                    earlier[i].add(int(self._pos[b][at[i]]))
            order = np.argsort(kb, kind="stable")
            same = np.nonzero(kb[order][1:] == kb[order][:-1])[0]
            before[b, order[same + 1]] = order[same]
        has_before = (before >= 0).any(axis=0) & ~empty
        verdicts: list[Drop | None] = [None] * n
        kept = ~empty
        threshold, stored_sigs = self.cfg.threshold, self._sigs.data
        for i in np.nonzero(has_before | np.array([e is not None for e in earlier], dtype=bool))[0]:
            best, best_id = -1.0, None
            for pos in earlier[i] or ():
                est = float(np.count_nonzero(stored_sigs[pos] == sig[i])) / self.cfg.num_perm
                if est > best:
                    best, best_id = est, self._ids[pos]
            for b in range(self.bands):
                j, steps = before[b, i], 0
                while j >= 0 and steps < 8:  # the nearest few earlier records in this bucket that were kept
                    if kept[j]:
                        est = float(np.count_nonzero(sig[j] == sig[i])) / self.cfg.num_perm
                        if est > best:
                            best, best_id = est, records[j].id
                    j, steps = before[b, j], steps + 1
            if best >= threshold:
                kept[i] = False
                verdicts[i] = Drop(
                    f"near-duplicate: MinHash Jaccard {best:.2f} >= {threshold:g} "
                    f"(word {self.cfg.shingle_words}-shingles)",
                    score=round(best, 4),
                    duplicate_of=best_id,
                )
        self._insert(sig[kept], keys[kept], [r.id for r, k in zip(records, kept) if k])
        return verdicts


class SemanticDuplicate(Filter):
    """Records whose embedding is within a cosine threshold of an earlier kept record's. A batch is added to a
    usearch HNSW index (int8, for speed) first, so one search proposes near neighbours in earlier batches and in
    the same batch; the exact cosine (from the float16 vectors kept beside the index) decides. Neighbours later
    in the batch are ignored, and the batch's drops are removed from the index afterwards."""

    name = "semantic_duplicate"
    concurrent = True  # embedding and index search leave the GIL: a chunked run overlaps this with other filters

    def __init__(self, cfg: SemanticConfig, seen: Sequence[Record] = (), embedder: object | None = None) -> None:
        from ballast.backends.static import StaticEmbedder

        self.cfg = cfg
        self.embedder = embedder or StaticEmbedder(pca_dims=cfg.pca_dims, max_tokens=cfg.max_tokens)
        self._index = None
        self._vectors: _GrowingRows | None = None
        self._ids: list[str] = []
        self._numbers: list[tuple[frozenset[str], frozenset[str]]] = []  # per record, if cfg.same_numbers
        if seen:
            self._add(self._embed(seen), [r.id for r in seen], seen)

    def _embed(self, records: Sequence[Record]) -> np.ndarray:
        return np.asarray(self.embedder.embed([record_text(r) for r in records]), dtype=np.float32)

    def _add(self, vectors: np.ndarray, ids: list[str], records: Sequence[Record]) -> None:
        """Add every vector (a zero one too: positions stay aligned with ids, and it matches nothing)."""
        if self._index is None:
            from usearch.index import Index

            # Static embeddings of one domain crowd into a narrow cone; a wide search keeps recall of near
            # neighbours high (98-99% of the exact ones on the benchmark pool) where a narrow one loses a sixth.
            self._index = Index(
                ndim=vectors.shape[1], metric="cos", dtype="i8", connectivity=16, expansion_add=64, expansion_search=128
            )
            self._vectors = _GrowingRows(vectors.shape[1], np.float16)
        if len(vectors):
            keys = np.arange(len(self._ids), len(self._ids) + len(vectors), dtype=np.uint64)
            self._index.add(keys, vectors, threads=2)
            self._vectors.extend(vectors.astype(np.float16))
        self._ids.extend(ids)
        if self.cfg.same_numbers:
            self._numbers.extend(numbers(r) for r in records)

    def drop_batch(self, records: Sequence[Record]) -> list[Drop | None]:
        n = len(records)
        vectors = self._embed(records)
        blank = np.linalg.norm(vectors, axis=1) < 1e-6  # a text with no known tokens has no direction
        first = len(self._ids)
        self._add(vectors, [r.id for r in records], records)
        found = self._index.search(vectors, min(self.cfg.neighbours, len(self._index)), threads=2)
        keys = np.asarray(found.keys).astype(np.int64).reshape(n, -1)
        # earlier records only (a missing neighbour comes back as a huge key, negative here)
        earlier = (keys >= 0) & (keys < first + np.arange(n)[:, None])
        sims = np.full(keys.shape, -1.0, dtype=np.float32)
        stored = self._vectors.data
        for start in range(0, n, 2048):
            rows = slice(start, start + 2048)
            near = stored[np.where(earlier[rows], keys[rows], 0)].astype(np.float32)
            exact = np.einsum("nkd,nd->nk", near, vectors[rows])
            sims[rows] = np.where(earlier[rows], exact, -1.0)
        threshold = self.cfg.threshold
        dropped = np.zeros(n, dtype=bool)
        verdicts: list[Drop | None] = [None] * n
        for i in np.nonzero((sims >= threshold).any(axis=1) & ~blank)[0]:
            score, other = -1.0, None
            for key, sim in zip(keys[i].tolist(), sims[i].tolist()):
                if sim >= threshold and sim > score and not (key >= first and dropped[key - first]):
                    if self.cfg.same_numbers and not same_facts(self._numbers[key], self._numbers[first + i]):
                        continue
                    score, other = sim, self._ids[key]
            if other is not None:
                dropped[i] = True
                verdicts[i] = Drop(
                    f"semantic duplicate: cosine {score:.3f} >= {threshold:g} ({self.embedder.model.name})",
                    score=round(score, 4),
                    duplicate_of=other,
                )
        gone = np.nonzero(dropped | blank)[0]
        if len(gone):
            self._index.remove((first + gone).astype(np.uint64))
        return verdicts
