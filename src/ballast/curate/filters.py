"""The curation filters: text checks, length and format, exact and near duplicates, ROUGE-L novelty, semantic
duplicates, policy rule checks, the learned conformance classifier."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from itertools import chain
from typing import TYPE_CHECKING

from ballast.curate.base import Drop, Filter
from ballast.curate.text import normalised
from ballast.records import Record
from ballast.rouge import RougeNoveltyIndex

if TYPE_CHECKING:  # annotations only: the classifier pulls in scikit-learn and an embedding model
    from ballast.curate.conformance import ConformanceClassifier
    from ballast.policy.checks import PolicyChecker
    from ballast.recipe import CurateConfig


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
    (ballast.rouge) gives the exhaustive comparison's decision without comparing every pair."""

    name = "rouge_novelty"

    def __init__(self, threshold: float, seen: list[Record] = ()) -> None:
        self.novelty = RougeNoveltyIndex(threshold)
        self._seen = list(seen)
        self._ready = False

    def prepare(self, instructions: Iterable[str]) -> None:
        """Count tokens over the instructions to come, so the index orders them rarest first (faster, not
        different); then index the seen records. Optional; only before the first `drop` has any effect."""
        if self._ready:
            return
        self.novelty.fit(chain(instructions, (r.instruction for r in self._seen)))
        self._index_seen()

    def _index_seen(self) -> None:
        if not self._ready:
            for r in self._seen:
                self.novelty.add(r.id, r.instruction)
            self._ready = True

    def drop(self, record: Record) -> Drop | None:
        self._index_seen()
        novel, similar, score = self.novelty.add_if_novel(record.id, record.instruction)
        if not novel:
            return Drop(
                f"ROUGE-L {score:.2f} > {self.novelty.threshold} against an earlier instruction",
                score=score,
                duplicate_of=similar,
            )
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


class Conformance(Filter):
    """The conformance classifier's violation probability, kept in `scores["p_violation"]` on every record it
    sees; at or above the threshold the record goes, under the most likely rule."""

    name = "conformance"
    batch_size = 512  # one embedding call per batch

    def __init__(self, classifier: ConformanceClassifier, threshold: float) -> None:
        self.classifier, self.threshold = classifier, threshold
        self.embedder = classifier.embedder  # the stream report records the model it names

    def drop_batch(self, records: Sequence[Record]) -> list[Drop | None]:
        verdicts = self.classifier.predict(records)
        out: list[Drop | None] = []
        for record, verdict in zip(records, verdicts, strict=True):
            record.scores["p_violation"] = verdict.p_violation
            if verdict.p_violation < self.threshold:
                out.append(None)
                continue
            likely = ", ".join(f"{rule_id} ({p:.2f})" for rule_id, p in verdict.rules)
            out.append(
                Drop(
                    f"classifier: p_violation={verdict.p_violation:.2f}, likely {likely}",
                    rule_id=verdict.top_rule,
                    score=verdict.p_violation,
                )
            )
        return out
