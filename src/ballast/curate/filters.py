"""The curation filters: text checks, length and format, exact and near duplicates, ROUGE-L novelty, semantic
duplicates, policy rule checks."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from functools import lru_cache
from itertools import chain

from ballast.curate.base import Drop, Filter
from ballast.novelty_index import RougeNoveltyIndex
from ballast.policy_checks import PolicyChecker
from ballast.records import Record
from ballast.recipe import CurateConfig

_NORMALISE = re.compile(r"[\W_]+", re.UNICODE)


@lru_cache(maxsize=1 << 17)  # several filters normalise the same texts of a chunk one after another
def normalised(text: str) -> str:
    return _NORMALISE.sub(" ", text.lower()).strip()


class LengthFormat(Filter):
    name = "length_format"

    def __init__(self, cfg: CurateConfig) -> None:
        self.cfg = cfg

    def drop(self, record: Record) -> Drop | None:
        n_inst, n_out = len(record.instruction.split()), len(record.output.split())
        if n_inst < self.cfg.min_instruction_words:
            return Drop(f"instruction has {n_inst} words, under {self.cfg.min_instruction_words}")
        if n_inst > self.cfg.max_instruction_words:
            return Drop(f"instruction has {n_inst} words, over {self.cfg.max_instruction_words}")
        if n_out < self.cfg.min_output_words:
            return Drop(f"response has {n_out} words, under {self.cfg.min_output_words}")
        if n_out > self.cfg.max_output_words:
            return Drop(f"response has {n_out} words, over {self.cfg.max_output_words}")
        if normalised(record.output).startswith(normalised(record.instruction)[:200]):
            return Drop("response repeats the instruction")
        words = normalised(record.output).split()
        if len(words) >= 20 and len(set(words)) / len(words) < 0.3:
            return Drop(f"response is repetitive ({len(set(words))} distinct of {len(words)} words)")
        return None


class ExactDuplicate(Filter):
    """Same instruction and response after normalising case, punctuation and spacing."""

    name = "exact_duplicate"

    def __init__(self, seen: list[Record] = ()) -> None:
        self.first: dict[str, str] = {}
        for r in seen:
            self.first.setdefault(self.key(r), r.id)

    @staticmethod
    def key(record: Record) -> str:
        text = normalised(record.instruction) + "\x00" + normalised(record.input) + "\x00" + normalised(record.output)
        return hashlib.sha256(text.encode()).hexdigest()

    def drop(self, record: Record) -> Drop | None:
        # By key, not by id: a verbatim copy has the same content id as its first occurrence.
        key = self.key(record)
        first = self.first.get(key)
        if first is None:
            self.first[key] = record.id
            return None
        return Drop("exact duplicate", duplicate_of=first, score=1.0)


class Novelty(Filter):
    """Self-Instruct's rule on instructions: ROUGE-L F above the threshold against any earlier one. The index
    (ballast.novelty_index) gives the exhaustive comparison's decision without comparing every pair."""

    name = "rouge_novelty"

    def __init__(self, threshold: float, seen: list[Record] = ()) -> None:
        self.novelty = RougeNoveltyIndex(threshold)
        self._seen = list(seen)
        self._ready = False

    def prepare(self, instructions: Iterable[str]) -> None:
        """Count tokens over the instructions to come, so the index orders them rarest first (faster, not
        different); then index the seen records. Optional; must come before the first `drop`."""
        self.novelty.fit(chain(instructions, (r.instruction for r in self._seen)))
        self._index_seen()

    def _index_seen(self) -> None:
        if not self._ready:
            for r in self._seen:
                self.novelty.add(r.id, r.instruction)
            self._ready = True

    def run(self, records: Iterable[Record]) -> None:
        records = list(records)
        if not self._ready:
            self.prepare(r.instruction for r in records if r.kept)
        super().run(records)

    def drop(self, record: Record) -> Drop | None:
        self._index_seen()
        novel, similar, score = self.novelty.add_if_novel(record.id, record.instruction)
        if not novel:
            return Drop(f"ROUGE-L {score:.2f} > {self.novelty.threshold} against an earlier instruction",
                        score=score, duplicate_of=similar)
        return None


class PolicyRules(Filter):
    """Rule checks read from policy.yaml; the first finding names the rule, the reason lists them all."""

    name = "policy_rules"

    def __init__(self, checker: PolicyChecker) -> None:
        self.checker = checker

    def drop(self, record: Record) -> Drop | None:
        findings = self.checker.check(record.instruction, record.input, record.output, record.audience)
        if not findings:
            return None
        reason = "; ".join(f"{f.rule_id}: {f.message}" for f in findings)
        return Drop(reason, rule_id=findings[0].rule_id, score=float(len(findings)))


def curation_filters(cfg: CurateConfig, seen: list[Record], checker: PolicyChecker | None) -> list[Filter]:
    """The filters in order; `seen` (the human training seeds) counts as earlier for duplicates."""
    from ballast.curate.dedup import MinHashDuplicate, SemanticDuplicate
    from ballast.curate.text import TextCheck

    filters: list[Filter] = [TextCheck(cfg), LengthFormat(cfg), ExactDuplicate(seen)]
    if cfg.minhash.enabled:
        filters.append(MinHashDuplicate(cfg.minhash, seen))
    filters.append(Novelty(cfg.rouge_threshold, seen))
    if cfg.semantic.enabled:
        filters.append(SemanticDuplicate(cfg.semantic, seen))
    if cfg.policy_checks and checker is not None:
        filters.append(PolicyRules(checker))
    return filters
