"""Selection, DEITA's "score-first, diversity-aware" recipe: human training seeds always in and up-weighted;
kept synthetic records taken in order of a combined score, each only if its embedding is farther than a
threshold from every record already in (seeds included). Thin slices get a minimum share of the budget first,
sources a maximum share, and the budget caps the synthetic records. Every candidate gets a decision saying why."""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ballast.backends.base import Embedder
from ballast.recipe import SelectConfig
from ballast.records import Record, Source, record_text
from ballast.select.coverage import compare_coverage, slice_labels
from ballast.stages import decision_stage
from ballast.store import write_json

STAGE = decision_stage("select")
# What the stage reads (recipe keys and shared values), from which Run builds its cache key.
READS = ("select", "seed")
BLOCK = 1024  # candidates measured against the selection in one matrix product


def make_embedder(name: str) -> Embedder:
    if name == "minilm":
        from ballast.backends.minilm import MiniLMEmbedder

        return MiniLMEmbedder()
    from ballast.backends.static import StaticEmbedder

    return StaticEmbedder()


def _finite(scores: dict[str, float], key: str) -> float | None:
    value = scores.get(key)
    return value if value is not None and math.isfinite(value) else None


def score_parts(record: Record, cfg: SelectConfig) -> dict[str, float | None]:
    """Each part of the combined score in [0, 1], None where the record has no such score."""
    ifd, p_violation, judge = (_finite(record.scores, k) for k in ("ifd", "p_violation", "judge"))
    if ifd is not None:
        ifd = min(max(ifd, 0.0), 1.0)
        ifd = ifd if cfg.ifd_prefer == "high" else 1.0 - ifd
    return {
        "ifd": ifd,
        "conformance": None if p_violation is None else 1.0 - min(max(p_violation, 0.0), 1.0),
        "judge": None if judge is None else (min(max(judge, 1.0), 5.0) - 1.0) / 4.0,
    }


def combined_score(parts: dict[str, float | None], cfg: SelectConfig) -> float:
    """Weighted mean of the parts; a missing part counts as `neutral_score`, so it neither helps nor sinks."""
    weights = cfg.score_weights
    total = sum(weights.values())
    return sum(w * (cfg.neutral_score if parts[k] is None else parts[k]) for k, w in weights.items()) / total


def _describe(score: float, rank: int, parts: dict[str, float | None]) -> str:
    shown = ", ".join(f"{k} {'-' if v is None else f'{v:.2f}'}" for k, v in parts.items())
    return f"score {score:.2f} rank {rank} ({shown})"


class _Chosen:
    """Unit vectors of everything selected so far, in selection order, for the nearest-neighbour test."""

    def __init__(self, vectors: np.ndarray, ids: list[str], capacity: int) -> None:
        self.rows = np.zeros((len(ids) + capacity, vectors.shape[1]), dtype=np.float32)
        self.rows[: len(ids)] = vectors
        self.ids = list(ids)

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, vector: np.ndarray, record_id: str) -> None:
        self.rows[len(self.ids)] = vector
        self.ids.append(record_id)

    def nearest(self, queries: np.ndarray, start: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Highest cosine and its row for each query among rows[start:]; -1 and -1 when there are none."""
        rows = self.rows[start : len(self.ids)]
        if not len(rows):
            return np.full(len(queries), -1.0, dtype=np.float32), np.full(len(queries), -1)
        sims = queries @ rows.T
        best = sims.argmax(axis=1)
        return sims[np.arange(len(queries)), best], best + start


class _Selector:
    """The greedy walk over candidates in score order: a quota pass for slices below their minimum share, then
    a pass by score for the rest of the budget. A record too close to the selection, or from a source at its
    cap, stays out for good: the selection only grows, so a later pass cannot change that verdict."""

    def __init__(
        self,
        candidates: list[Record],
        vectors: np.ndarray,
        slices: list[str],
        parts: list[dict[str, float | None]],
        scores: list[float],
        order: list[int],
        chosen: _Chosen,
        cfg: SelectConfig,
    ) -> None:
        self.candidates, self.vectors, self.slices, self.order = candidates, vectors, slices, order
        self.chosen, self.cfg = chosen, cfg
        rank = {i: pos + 1 for pos, i in enumerate(order)}
        self.described = [_describe(scores[i], rank[i], parts[i]) for i in range(len(candidates))]
        base = min(cfg.budget, len(candidates))  # shares are of what can actually be selected
        self.source_cap = {src: math.floor(share * base) for src, share in cfg.source_mix.items()}
        shares = cfg.slice_min_share
        per_slice = shares if isinstance(shares, dict) else dict.fromkeys(sorted(set(slices)), shares)
        self.quota = {sl: math.ceil(share * base) for sl, share in per_slice.items() if share > 0}
        self.taken_source: Counter[Source] = Counter()
        self.taken_slice: Counter[str] = Counter()
        self.verdicts: dict[int, tuple[bool, str, str | None]] = {}  # candidate -> (kept, reason, duplicate_of)

    def run(self) -> dict[int, tuple[bool, str, str | None]]:
        self._pass(quota=True)
        self._pass(quota=False)
        for i in self.order:
            if i not in self.verdicts:
                self.verdicts[i] = (False, f"over budget of {self.cfg.budget}; {self.described[i]}", None)
        return self.verdicts

    @property
    def taken(self) -> int:
        return sum(self.taken_source.values())

    def _short_of_quota(self, i: int) -> bool:
        sl = self.slices[i]
        return sl in self.quota and self.taken_slice[sl] < self.quota[sl]

    def _pass(self, *, quota: bool) -> None:
        pending = [i for i in self.order if i not in self.verdicts and (not quota or self._short_of_quota(i))]
        threshold = self.cfg.min_distance
        for start in range(0, len(pending), BLOCK):
            if self.taken >= self.cfg.budget:
                return
            block = pending[start : start + BLOCK]
            measured = len(self.chosen)
            sims, near = self.chosen.nearest(self.vectors[block])
            for sim, row, i in zip(sims.tolist(), near.tolist(), block):
                if self.taken >= self.cfg.budget:
                    return
                if quota and not self._short_of_quota(i):
                    continue  # the slice filled up earlier in this pass; the score pass decides it
                record = self.candidates[i]
                cap = self.source_cap.get(record.source)
                if cap is not None and self.taken_source[record.source] >= cap:
                    share = self.cfg.source_mix[record.source]
                    self.verdicts[i] = (
                        False,
                        f"source {record.source.value} at its cap of {cap} (share {share:g}); {self.described[i]}",
                        None,
                    )
                    continue
                if len(self.chosen) > measured:  # records taken since this block was measured
                    late_sim, late_row = self.chosen.nearest(self.vectors[i : i + 1], start=measured)
                    if late_sim[0] > sim:
                        sim, row = float(late_sim[0]), int(late_row[0])
                distance = 1.0 - sim
                if row >= 0 and distance <= threshold:
                    other = self.chosen.ids[row]
                    self.verdicts[i] = (
                        False,
                        f"too close to a selected record; {other} at distance "
                        f"{distance:.3f} <= {threshold:g}; {self.described[i]}",
                        other,
                    )
                    continue
                sl = self.slices[i]
                self.chosen.add(self.vectors[i], record.id)
                self.taken_source[record.source] += 1
                self.taken_slice[sl] += 1
                why = (
                    f"selected for slice quota {sl} ({self.taken_slice[sl]}/{self.quota[sl]})"
                    if quota
                    else "selected by score"
                )
                nearest = f"nearest selected {distance:.3f} > {threshold:g}" if row >= 0 else "first selected"
                self.verdicts[i] = (True, f"{why}; {self.described[i]}; {nearest}; slice {sl}", None)


def select(
    human: list[Record], curated: list[Record], cfg: SelectConfig, seed: int, embedder: Embedder | None = None
) -> list[Record]:
    """Every record that reaches selection comes back with a select decision; the training set is the kept
    ones. `seed` breaks score ties (cfg.seed overrides it); `embedder` defaults to the one cfg names."""
    seed = cfg.seed if cfg.seed is not None else seed
    out = []
    for r in human:
        chosen = r.model_copy(deep=True, update={"weight": cfg.human_weight})
        out.append(chosen.decide(STAGE, True, f"human seed: always in, weight {cfg.human_weight:g}"))

    curated = [r.model_copy(deep=True) for r in curated]
    candidates: list[Record] = []
    for r in curated:
        if not r.kept:
            continue  # dropped upstream; its reason is already recorded
        if r.source is Source.contrastive:
            r.decide(
                STAGE,
                False,
                "contrastive negative: never a positive training example",
                rule_id=r.rules[0] if r.rules else None,
            )
        elif cfg.max_ifd is not None and (ifd := _finite(r.scores, "ifd")) is not None and ifd >= cfg.max_ifd:
            r.decide(
                STAGE,
                False,
                f"IFD at or above {cfg.max_ifd:g}: the instruction does not help the response; IFD {ifd:.3f}",
                score=ifd,
            )
        else:
            candidates.append(r)

    if candidates:
        embedder = embedder or make_embedder(cfg.embedder)
        vectors = np.asarray(embedder.embed([record_text(r) for r in [*human, *candidates]]), dtype=np.float32)
        labels = slice_labels([*human, *candidates], vectors)
        human_vectors, vectors, slices = vectors[: len(human)], vectors[len(human) :], labels[len(human) :]
        parts = [score_parts(r, cfg) for r in candidates]
        scores = [combined_score(p, cfg) for p in parts]
        # Best score first; equal scores in a seeded hash order, unrelated to generation order.
        order = sorted(range(len(candidates)), key=lambda i: (-scores[i], _tiebreak(seed, candidates[i].id)))
        chosen = _Chosen(human_vectors, [r.id for r in human], min(cfg.budget, len(candidates)))
        verdicts = _Selector(candidates, vectors, slices, parts, scores, order, chosen, cfg).run()
        for i, r in enumerate(candidates):
            kept, reason, other = verdicts[i]
            if kept:
                r.weight = cfg.synthetic_weight
            r.decide(STAGE, kept, reason, score=round(scores[i], 4), duplicate_of=other)
    return out + curated


def _tiebreak(seed: int, record_id: str) -> bytes:
    return hashlib.sha256(f"{seed}:{record_id}".encode()).digest()


def training_set(records: Sequence[Record]) -> list[Record]:
    return [r for r in records if r.kept and r.source is not Source.contrastive]


def select_stage(
    train: list[Record], curated: list[Record], pilot: list[Record], cfg: SelectConfig, seed: int, folder: Path
) -> list[Record]:
    """Selection, plus its coverage beside the pilot's (slices, rules, embedding clusters) in coverage.json."""
    embedder = make_embedder(cfg.embedder)
    selected = select(train, curated, cfg, seed, embedder)
    coverage = compare_coverage(
        {"pilot": pilot, "curated": training_set(selected)},
        embedder,
        clusters=cfg.coverage_clusters,
        seed=cfg.seed if cfg.seed is not None else seed,
    )
    write_json(coverage, folder / "coverage.json")
    return selected
