"""What a training set covers: records per slice, per policy rule and per embedding cluster, so the curated
selection can be set beside the pilot (every seed plus everything the weak model wrote) on the same clusters."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np

from ballast.backends.base import Embedder
from ballast.records import Record, Source, record_text

NONE = "(none)"  # a record with no slice (and no seed to borrow one from), or no rule labels


def slice_labels(records: Sequence[Record], vectors: np.ndarray) -> list[str]:
    """Each record's slice. A record without one (a Self-Instruct task has none) takes the slice of its
    nearest human seed, so quotas and coverage count it where it belongs instead of nowhere."""
    out = [r.slice or NONE for r in records]
    labelled = [i for i, r in enumerate(records) if r.source is Source.human and r.slice]
    missing = [i for i, r in enumerate(records) if not r.slice and np.any(vectors[i])]
    if labelled and missing:
        seeds = vectors[labelled]
        for start in range(0, len(missing), 4096):
            block = missing[start : start + 4096]
            for i, j in zip(block, (vectors[block] @ seeds.T).argmax(axis=1).tolist()):
                out[i] = records[labelled[j]].slice
    return out


def entropy_bits(counts: Sequence[int]) -> float:
    """Shannon entropy of a count distribution, in bits: log2(k) when k clusters are equally full."""
    total = sum(counts)
    return float(-sum(c / total * math.log2(c / total) for c in counts if c)) if total else 0.0


def _kmeans(vectors: np.ndarray, k: int, seed: int) -> np.ndarray:
    from sklearn.cluster import KMeans

    if k <= 1:
        return np.zeros(len(vectors), dtype=np.int64)
    return KMeans(n_clusters=k, n_init=3, random_state=seed).fit_predict(vectors.astype(np.float64))


def compare_coverage(
    sets: Mapping[str, Sequence[Record]], embedder: Embedder, *, clusters: int | None = None, seed: int = 0
) -> dict:
    """Coverage of each named set, on k-means clusters fitted once to the union of all of them (k: `clusters`,
    else the square root of the union's size), so a cluster means the same thing in every column."""
    union: dict[str, Record] = {}
    for records in sets.values():
        for r in records:
            union.setdefault(r.id, r)
    records = list(union.values())
    if not records:
        return {
            "embedder": embedder.model.name,
            "records": 0,
            "clusters": 0,
            "seed": seed,
            "sets": {name: _summary([], [], [], 0) for name in sets},
        }
    vectors = np.asarray(embedder.embed([record_text(r) for r in records]), dtype=np.float32)
    k = min(len(records), clusters or max(1, round(math.sqrt(len(records)))))
    labels = _kmeans(vectors, k, seed).tolist()
    slices = slice_labels(records, vectors)
    pos = {r.id: i for i, r in enumerate(records)}
    summaries = {}
    for name, members in sets.items():
        idx = [pos[rid] for rid in dict.fromkeys(r.id for r in members)]  # a record counts once per set
        summaries[name] = _summary(
            [slices[i] for i in idx], [records[i].rules for i in idx], [labels[i] for i in idx], k
        )
    return {"embedder": embedder.model.name, "records": len(records), "clusters": k, "seed": seed, "sets": summaries}


def _summary(slices: list[str], rules: list[list[str]], clusters: list[int], k: int) -> dict:
    per_cluster = Counter(clusters)
    rule_counts = Counter(rule for rs in rules for rule in rs) + Counter(NONE for rs in rules if not rs)
    return {
        "records": len(slices),
        "slices": dict(sorted(Counter(slices).items())),
        "rules": dict(sorted(rule_counts.items())),
        "clusters": [per_cluster.get(c, 0) for c in range(k)],
        "distinct_slices": len(set(slices) - {NONE}),
        "distinct_rules": len(set(rule_counts) - {NONE}),
        "distinct_clusters": len(per_cluster),
        "cluster_entropy_bits": round(entropy_bits(list(per_cluster.values())), 4),
    }
