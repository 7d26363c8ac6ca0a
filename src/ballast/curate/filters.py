"""The first curation filters: length and format, exact duplicates, ROUGE-L novelty, policy rule checks."""

from __future__ import annotations

import hashlib
import re

from ballast.curate.base import Drop, Filter
from ballast.novelty import RougeNovelty
from ballast.policy_checks import PolicyChecker
from ballast.records import Record
from ballast.recipe import CurateConfig

_NORMALISE = re.compile(r"[\W_]+", re.UNICODE)


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
        first = self.first.setdefault(self.key(record), record.id)
        return None if first == record.id else Drop("exact duplicate", duplicate_of=first, score=1.0)


class Novelty(Filter):
    """Self-Instruct's rule on instructions: ROUGE-L F above the threshold against any earlier one."""

    name = "rouge_novelty"

    def __init__(self, threshold: float, seen: list[Record] = ()) -> None:
        self.novelty = RougeNovelty(threshold)
        for r in seen:
            self.novelty.add(r.id, r.instruction)

    def drop(self, record: Record) -> Drop | None:
        novel, similar, score = self.novelty.is_novel(record.instruction)
        if not novel:
            return Drop(f"ROUGE-L {score:.2f} > {self.novelty.threshold} against an earlier instruction",
                        score=score, duplicate_of=similar)
        self.novelty.add(record.id, record.instruction)
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


def curation_filters(cfg: CurateConfig, seen: list[Record], checker: PolicyChecker) -> list[Filter]:
    """The filters in order; `seen` (the human training seeds) counts as earlier for duplicates."""
    filters: list[Filter] = [LengthFormat(cfg), ExactDuplicate(seen), Novelty(cfg.rouge_threshold, seen)]
    if cfg.policy_checks:
        filters.append(PolicyRules(checker))
    return filters
