"""Paired comparisons of two models on the same held-out examples.

Both models answer the same prompts, so each example gives a pair of scores and the difference between the models is
measured per example: the noise of which prompts happen to be held out cancels, and differences far smaller than the
two models' separate intervals show. A numeric metric (reference NLL, ROUGE-L, judge grade) gets the mean difference
with a paired bootstrap interval (the same resampled examples for both models); a yes/no metric (violation, sign-off,
escalation) gets that too, plus the exact McNemar test on the discordant pairs. An example that one model lacks, or
where the metric does not apply (None: sign-off only on customer drafts), is left out of that metric's comparison,
and `n` says how many pairs were left.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import binomtest

N_BOOT = 2000
SEED = 0

Scores = Mapping[str, float | bool | None]  # example id -> a model's score on it (None: not applicable)


@dataclass(frozen=True)
class Comparison:
    """Model `a` against model `b` on one metric; `difference` is mean(a) - mean(b) over the `n` shared examples.

    `ci95` is the paired bootstrap interval of that difference. For yes/no metrics, `a_only` counts the examples
    where only `a` scores 1, `b_only` those where only `b` does, and `mcnemar_p` is the exact two-sided McNemar p
    (a binomial test of `a_only` among the discordant pairs); all three are None for numeric metrics. Means,
    difference and interval are None when no example is shared."""

    a: str
    b: str
    metric: str
    n: int
    missing_a: int  # examples b has and a does not (or where it does not apply to a)
    missing_b: int
    mean_a: float | None
    mean_b: float | None
    difference: float | None
    ci95: tuple[float, float] | None
    binary: bool
    a_only: int | None = None
    b_only: int | None = None
    mcnemar_p: float | None = None
    slice: str | None = None  # None: all examples

    @property
    def beyond_noise(self) -> bool:
        """Whether the 95% interval of the difference excludes 0."""
        return self.ci95 is not None and (self.ci95[0] > 0 or self.ci95[1] < 0)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["ci95"] = list(self.ci95) if self.ci95 is not None else None
        out["beyond_noise"] = self.beyond_noise
        return out


def _shared(a: Scores, b: Scores) -> tuple[list[str], int, int]:
    """Ids both have a score for, in a's order (so results do not depend on dict order of b), and the counts
    missing from each side."""
    has_a = {k for k, v in a.items() if v is not None}
    has_b = {k for k, v in b.items() if v is not None}
    ids = [k for k in a if k in has_a and k in has_b]
    return ids, len(has_b - has_a), len(has_a - has_b)


def paired_bootstrap_ci(
    diffs: Sequence[float] | np.ndarray, *, n_boot: int = N_BOOT, seed: int = SEED
) -> tuple[float, float]:
    """95% percentile interval of the mean of per-example differences, resampling examples (so each resample draws
    the same examples for both models)."""
    d = np.asarray(diffs, dtype=float)
    if d.size == 0:
        raise ValueError("no paired examples")
    idx = np.random.default_rng(seed).integers(0, d.size, size=(n_boot, d.size))
    means = d[idx].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def mcnemar_exact(a_only: int, b_only: int) -> float:
    """Exact two-sided McNemar p-value: under no difference, each discordant pair is a fair coin."""
    discordant = a_only + b_only
    return 1.0 if discordant == 0 else float(binomtest(a_only, discordant, 0.5).pvalue)


def compare(
    a: Scores,
    b: Scores,
    *,
    metric: str,
    names: tuple[str, str] = ("A", "B"),
    binary: bool | None = None,
    n_boot: int = N_BOOT,
    seed: int = SEED,
    slice: str | None = None,
) -> Comparison:
    """Compare two models' per-example scores (keyed by example id) on the examples both have.

    `binary` defaults to whether every shared score is a bool or 0/1."""
    ids, missing_a, missing_b = _shared(a, b)
    va = np.array([float(a[k]) for k in ids])
    vb = np.array([float(b[k]) for k in ids])
    if binary is None:
        binary = bool(ids) and all(isinstance(s[k], bool | np.bool_) for s in (a, b) for k in ids)
    common = {
        "a": names[0],
        "b": names[1],
        "metric": metric,
        "n": len(ids),
        "missing_a": missing_a,
        "missing_b": missing_b,
        "binary": binary,
        "slice": slice,
    }
    if not ids:
        return Comparison(
            **common,
            mean_a=None,
            mean_b=None,
            difference=None,
            ci95=None,
            **({"a_only": 0, "b_only": 0, "mcnemar_p": 1.0} if binary else {}),
        )
    extra = {}
    if binary:
        if not np.isin(np.concatenate([va, vb]), (0.0, 1.0)).all():
            raise ValueError(f"{metric}: a binary metric takes 0/1 or bools only")
        a_only, b_only = int(((va == 1) & (vb == 0)).sum()), int(((va == 0) & (vb == 1)).sum())
        extra = {"a_only": a_only, "b_only": b_only, "mcnemar_p": mcnemar_exact(a_only, b_only)}
    return Comparison(
        **common,
        mean_a=float(va.mean()),
        mean_b=float(vb.mean()),
        difference=float((va - vb).mean()),
        ci95=paired_bootstrap_ci(va - vb, n_boot=n_boot, seed=seed),
        **extra,
    )


def scores_by_id(rows: Iterable[Mapping], metric: str, *, id_key: str = "ref", slice: str | None = None) -> dict:
    """One model's per-example rows (as `metrics.score_output` or `nll.reference_nll` give them) as {id: score};
    with `slice`, that slice's rows only."""
    out = {}
    for r in rows:
        if slice is not None and r.get("slice") != slice:
            continue
        if r[id_key] in out:
            raise ValueError(f"example {r[id_key]!r} appears twice")
        out[r[id_key]] = r.get(metric)
    return out


def compare_rows(
    rows_a: Sequence[Mapping],
    rows_b: Sequence[Mapping],
    metrics: Sequence[str],
    *,
    names: tuple[str, str] = ("A", "B"),
    by_slice: bool = False,
    id_key: str = "ref",
    n_boot: int = N_BOOT,
    seed: int = SEED,
) -> list[Comparison]:
    """Each metric compared over all examples, then (with `by_slice`) within each slice present in either model's
    rows. A metric is binary when its scores are bools."""
    slices = [None]
    if by_slice:
        slices += sorted({r.get("slice") for r in (*rows_a, *rows_b)} - {None})
    out = []
    for s in slices:
        for m in metrics:
            out.append(
                compare(
                    scores_by_id(rows_a, m, id_key=id_key, slice=s),
                    scores_by_id(rows_b, m, id_key=id_key, slice=s),
                    metric=m,
                    names=names,
                    n_boot=n_boot,
                    seed=seed,
                    slice=s,
                )
            )
    return out


def compare_models(
    rows: Mapping[str, Sequence[Mapping]], pairs: Sequence[tuple[str, str]], metrics: Sequence[str], **kwargs
) -> list[Comparison]:
    """`compare_rows` for each (a, b) pair of model names in `rows` ({model: its per-example rows})."""
    return [c for a, b in pairs for c in compare_rows(rows[a], rows[b], metrics, names=(a, b), **kwargs)]


def _num(x: float | None, digits: int = 3) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _p(p: float | None) -> str:
    if p is None:
        return "–"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def markdown_table(comparisons: Sequence[Comparison], *, digits: int = 3) -> str:
    """The comparisons as a Markdown table; the difference is A − B, and "beyond the noise" means its 95% interval
    excludes 0."""
    lines = [
        "| A vs B | metric | n | A | B | difference [95% CI] | McNemar p | beyond the noise? |",
        "|---|---|---:|---:|---:|---|---:|---|",
    ]
    for c in comparisons:
        metric = c.metric if c.slice is None else f"{c.metric} ({c.slice})"
        diff = (
            "–"
            if c.difference is None
            else (f"{c.difference:+.{digits}f} [{c.ci95[0]:+.{digits}f}, {c.ci95[1]:+.{digits}f}]")
        )
        p = _p(c.mcnemar_p) + (f" ({c.a_only}:{c.b_only})" if c.binary and c.n else "")
        lines.append(
            f"| {c.a} vs {c.b} | {metric} | {c.n} | {_num(c.mean_a, digits)} | {_num(c.mean_b, digits)} "
            f"| {diff} | {p if c.binary else '–'} | {'yes' if c.beyond_noise else 'no'} |"
        )
    return "\n".join(lines) + "\n"
