"""The curate stage: the filters built once from the recipe's curate section, run in memory over the generated
records (`curate`), or chunk by chunk over a Parquet pool (`ballast.curate.stream.curate_parquet`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ballast.curate.base import Filter, run_filters
from ballast.curate.dedup import MinHashDuplicate, SemanticDuplicate
from ballast.curate.filters import Conformance, ExactDuplicate, LengthFormat, Novelty, PolicyRules
from ballast.curate.text import TextCheck
from ballast.policy.checks import PolicyChecker
from ballast.policy.schema import Policy
from ballast.recipe import CurateConfig
from ballast.records import Record

if TYPE_CHECKING:  # the classifier pulls in scikit-learn and an embedding model; only when it is used
    from ballast.curate.conformance import ConformanceClassifier

# What the stage reads (recipe keys and shared values), from which Run builds its cache key; the contrastive
# settings make the negatives the classifier is fitted on.
READS = ("curate", "policy", "seeds", "generate.contrastive")


def curation_filters(
    cfg: CurateConfig,
    seen: list[Record],
    checker: PolicyChecker | None,
    classifier: ConformanceClassifier | None = None,
) -> list[Filter]:
    """The filters in order; `seen` (the human training seeds) counts as earlier for duplicates. The classifier,
    required when enabled, comes after the rule checks and sees only what they kept."""
    filters: list[Filter] = [TextCheck(cfg), LengthFormat(cfg), ExactDuplicate(seen)]
    if cfg.minhash.enabled:
        filters.append(MinHashDuplicate(cfg.minhash, seen))
    filters.append(Novelty(cfg.rouge_threshold, seen))
    if cfg.semantic.enabled:
        filters.append(SemanticDuplicate(cfg.semantic, seen))
    if cfg.policy_checks and checker is not None:
        filters.append(PolicyRules(checker))
    if cfg.classifier.enabled:
        if classifier is None:  # a switched-on stage must not vanish silently
            raise ValueError("curate.classifier.enabled is set but no fitted conformance classifier was given")
        filters.append(Conformance(classifier, cfg.classifier.threshold))
    return filters


def build_filters(
    cfg: CurateConfig,
    seen: list[Record],
    policy: Policy | None,
    negatives: Sequence[Record] = (),
    checker: PolicyChecker | None = None,
) -> list[Filter]:
    """The filters in order. With `cfg.classifier.enabled`, the conformance classifier is fitted on `seen` (the
    human training seeds) and `negatives` (their contrastive negatives)."""
    if checker is None and policy is not None:
        checker = PolicyChecker(policy)
    classifier = None
    if cfg.classifier.enabled:
        from ballast.curate.conformance import fit_from_seeds

        if policy is None or not negatives:
            raise ValueError("curate.classifier.enabled needs the policy and contrastive negatives to fit on")
        classifier = fit_from_seeds(policy, seen, negatives, cfg.classifier)
    return curation_filters(cfg, seen, checker if cfg.policy_checks else None, classifier)


def curate(
    records: list[Record], seen: list[Record], cfg: CurateConfig, policy: Policy, negatives: Sequence[Record] = ()
) -> list[Record]:
    """Copies of `records` with curate's decisions on them; `seen` (the human training seeds) counts as earlier
    for duplicates, and the classifier, when enabled, is fitted on `seen` and `negatives`."""
    records = [r.model_copy(deep=True) for r in records]
    checker = PolicyChecker(policy)
    for r in records:
        if r.audience is None:
            r.audience = checker.infer_audience(r.instruction, r.output, policy.sign_off)
    run_filters(build_filters(cfg, seen, policy, negatives, checker=checker), records)
    return records
