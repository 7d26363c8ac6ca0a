"""The score stage: IFD and perplexity from the weak model (and the judge's grade when one is configured) on the
records curation kept; selection ranks by them."""

from __future__ import annotations

from rich.console import Console

from ballast.backends.calls import CallLog
from ballast.policy.schema import Policy
from ballast.recipe import JudgeConfig, ScoreConfig
from ballast.records import Record

console = Console()
# What the stage reads (recipe keys and shared values), from which Run builds its cache key.
READS = ("score", "models.weak", "seed", "policy")


def make_judge(cfg: JudgeConfig, weak: str, seed: int, policy: Policy, log: CallLog | None = None):  # noqa: ANN201
    """The policy judge the recipe configures: the weak model in process unless `cfg.server` names a server."""
    from ballast.backends.factory import backend_for
    from ballast.score.judge import Judge

    return Judge(
        backend_for(cfg.server, weak), policy, decoding=cfg.decoding.to_decoding(seed), max_rules=cfg.max_rules, log=log
    )


def score(
    records: list[Record], cfg: ScoreConfig, weak: str, seed: int, policy: Policy, log: CallLog | None = None
) -> list[Record]:
    """Copies of `records` with scores on the kept ones; `weak` names the weak model, `seed` the recipe's seed."""
    records = [r.model_copy(deep=True) for r in records]
    kept = [r for r in records if r.kept]
    if cfg.enabled and kept:
        from ballast.score.ifd import QualityScorer

        summary = QualityScorer(policy.company, weak, batch_size=cfg.batch_size, max_len=cfg.max_len).score(kept)
        console.print(
            f"score: IFD of {summary.scored} records ({summary.truncated} truncated, {summary.unscorable} unscorable)"
        )
    if cfg.judge is not None and kept:
        make_judge(cfg.judge, weak, seed, policy, log).score(kept, min_score=cfg.judge.min_score)
    return records
