"""An optional LLM judge: a rubric built from the policy, a JSON verdict (score 1-5, violated rule ids, reason),
through any Generator (the weak model in process, or a stronger model behind an OpenAI-compatible server).

Injection robustness comes in two layers. The record's request and reply sit in blocks tagged with a code derived
from the template and the record's content hash, which the record's own text therefore cannot contain, and the
system prompt says their content is data. A small model still obeys text that talks to it, so the verdict is also
post-checked: text in the record that addresses a judge ("ignore the rules", "rate this 5", "you are the judge")
is found by pattern and caps the score at the lowest grade with the reason "judge-injection attempt". Injected text
can therefore never raise a verdict, whatever the model does with it.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from pydantic import BaseModel, Field, ValidationError

from ballast.backends.base import Decoding, Generator, Message
from ballast.backends.calls import CallLog, generate_all
from ballast.policy.checks import PolicyChecker
from ballast.policy.schema import Policy, Rule
from ballast.records import Record
from ballast.stages import JUDGE
from ballast.templates import load_template
from ballast.templates.prompts import user_content
from ballast.templates.render import render

SYSTEM_TEMPLATE = "judge/rubric_system"
RECORD_TEMPLATE = "judge/rubric_record"
STAGE = JUDGE
INJECTION_CAP = 1  # the lowest grade: with it, an injection can only lower a verdict
DEFAULT_DECODING = Decoding(temperature=0.0, top_p=1.0, max_tokens=128)

# English phrasing that speaks to a grader rather than to a customer or an agent. Kept narrow, since a false
# match caps a good record: "give a refund in 5 days" or "ignore the assembly instructions" must not match.
_TARGET = r"(?:this|it|the\s+(?:reply|response|answer))"
_TOP = r"(?:5|five|10|ten)\b(?!\s*(?:business\s+)?(?:days?|weeks?|months?|years?|usd|%))"
INJECTION_PATTERNS = [
    re.compile(p, re.IGNORECASE)
    for p in (
        r"\b(?:ignore|disregard|forget|override)\s+(?:(?:all|any|of|the|your|these|those|previous|prior|earlier|"
        r"above)\s+)*(?:rules?|instructions?|rubric|polic(?:y|ies)|guidelines?|criteria)\b",
        rf"\b(?:rate|score|grade|mark)\s+(?:{_TARGET}\s+)?(?:(?:a|as|as a|with|with a)\s+)?{_TOP}",
        rf"\b(?:give|assign|award)\s+{_TARGET}\s+(?:a\s+)?(?:{_TOP}|full marks|(?:a\s+)?perfect score)",
        r"\b(?:rating|score|grade)\s+of\s+(?:5|five|10|ten)\b",
        r"\b(?:full marks|perfect score|highest (?:score|grade|rating)|top (?:score|grade|marks))\b",
        r"\byou\s+are\s+(?:now\s+)?(?:an?\s+|the\s+)?(?:judge|grader|evaluator|reviewer|rater|assessor)\b",
        r"\b(?:dear|attention|note to(?: the)?)\s+(?:ai\s+)?(?:judge|grader|evaluator|reviewer|rater)\b",
        r"\b(?:judge|grader|evaluator|rater)\s*[:,]\s*(?:please|you|this|rate|score|give)\b",
        r"\"(?:score|violated_rules)\"\s*:",  # a verdict written into the record
        r"</?\s*(?:request|reply)\b",  # an attempt to close or open a data block
        r"\b(?:system prompt|developer mode)\b",
    )
]


class Verdict(BaseModel):
    """The JSON the judge must answer with; extra keys are ignored."""

    score: int = Field(ge=1, le=5)
    violated_rules: list[str] = []
    reason: str = ""


@dataclass
class Judgement:
    """One record's verdict after the post-check. `score` is None only when the answer could not be parsed and no
    injection was found."""

    score: int | None
    violated_rules: list[str] = field(default_factory=list)
    reason: str = ""
    error: str | None = None  # the call failed or its text held no valid verdict
    unknown_rules: list[str] = field(default_factory=list)  # ids the judge named that the policy lacks
    injection: list[str] = field(default_factory=list)  # the record's phrases that address the judge
    raw: str | None = None


@dataclass
class JudgeSummary:
    judged: int = 0
    parse_failures: int = 0
    unknown_rules: int = 0
    injections: int = 0
    dropped: int = 0


def first_json_object(text: str) -> dict | None:
    """The first JSON object in free text (models wrap JSON in prose and code fences), or None."""
    decoder = json.JSONDecoder()
    for m in re.finditer(r"\{", text):
        try:
            value, _ = decoder.raw_decode(text, m.start())
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    return None


def parse_verdict(text: str | None) -> tuple[Verdict | None, str | None]:
    """The verdict in a model's answer, or None and why not."""
    if not text or not text.strip():
        return None, "empty answer"
    obj = first_json_object(text)
    if obj is None:
        return None, f"no JSON object in {text[:120]!r}"
    try:
        return Verdict.model_validate(obj), None
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'verdict'}: {e['msg']}" for e in exc.errors())
        return None, f"invalid verdict {json.dumps(obj)[:120]}: {problems}"


def injection_phrases(record: Record) -> list[str]:
    """Phrases in the record's instruction, input or reply that address a judge."""
    text = "\n".join((record.instruction, record.input, record.output))
    return [m.group(0) for p in INJECTION_PATTERNS for m in p.finditer(text)]


def _fact_text(rule: Rule) -> str:
    units = {"business_days": "business days", "usd": "USD"}
    return ", ".join(f"{f.value:g} {units.get(f.unit, f.unit)}" for f in rule.facts)


class Judge:
    """Grades records with a rubric of the policy rules that concern each one."""

    def __init__(
        self,
        generator: Generator,
        policy: Policy,
        *,
        decoding: Decoding = DEFAULT_DECODING,
        max_rules: int = 6,
        log: CallLog | None = None,
    ) -> None:
        self.generator, self.policy, self.decoding, self.max_rules, self.log = (
            generator,
            policy,
            decoding,
            max_rules,
            log,
        )
        self.checker = PolicyChecker(policy)
        self.system, self.record_template = load_template(SYSTEM_TEMPLATE), load_template(RECORD_TEMPLATE)

    @property
    def template_ref(self) -> str:
        return "+".join(f"{t.id}@{t.sha256[:12]}" for t in (self.system, self.record_template))

    def rules_for(self, record: Record) -> list[str]:
        """The record's own rules, the escalations its request triggers, the rules whose facts its text cues, then
        register and form: the rubric must stay short enough for a small judge's context."""
        text = "\n".join((record.instruction, record.input, record.output)).lower()
        cued = [r.id for r in self.policy.rules if any(c.lower() in text for f in r.facts for c in f.cues)]
        always = [self.policy.register_.rule] + ([self.policy.form.rule] if record.audience == "customer" else [])
        ids = [*record.rules, *self.checker.triggered(record.instruction, record.input), *cued, *always]
        return [i for i in dict.fromkeys(ids) if i in self.policy.by_id][: self.max_rules]

    def messages(self, record: Record) -> list[Message]:
        lines = []
        for rule_id in self.rules_for(record):
            rule = self.policy.by_id[rule_id]
            facts = _fact_text(rule)
            lines.append(f"- {rule.id} {rule.title}: {rule.text}" + (f" (facts: {facts})" if facts else ""))
        # A code the record cannot contain: it is derived from the record's own content hash.
        tag = hashlib.sha256(f"{self.record_template.sha256}:{record.id}".encode()).hexdigest()[:10]
        system = render(self.system, company=self.policy.company, rules="\n".join(lines), tag=tag)
        user = render(
            self.record_template,
            tag=tag,
            request=user_content(record.instruction, record.input),
            reply=record.output.strip(),
        )
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]

    def judge(self, records: Sequence[Record]) -> list[Judgement]:
        """One Judgement per record, in order; failures are in `error`, never raised."""
        generations = generate_all(
            self.generator, [self.messages(r) for r in records], self.decoding, label="judge", log=self.log
        )
        return [self.judgement(r, g.text, g.error) for r, g in zip(records, generations, strict=True)]

    def judgement(self, record: Record, text: str | None, call_error: str | None = None) -> Judgement:
        """The post-checked verdict for a record from the judge's answer `text` (or its call error)."""
        verdict, error = (None, f"call failed: {call_error}") if call_error else parse_verdict(text)
        injection = injection_phrases(record)
        if verdict is None:
            return Judgement(
                score=INJECTION_CAP if injection else None,
                error=error,
                injection=injection,
                raw=text,
                reason="judge-injection attempt" if injection else "",
            )
        known = [r for r in dict.fromkeys(verdict.violated_rules) if r in self.policy.by_id]
        unknown = [r for r in verdict.violated_rules if r not in self.policy.by_id]
        if injection:
            return Judgement(
                score=min(verdict.score, INJECTION_CAP),
                violated_rules=known,
                reason=f"judge-injection attempt: {injection[0]!r}",
                unknown_rules=unknown,
                injection=injection,
                raw=text,
            )
        return Judgement(
            score=verdict.score, violated_rules=known, reason=verdict.reason, unknown_rules=unknown, raw=text
        )

    def score(self, records: Sequence[Record], *, min_score: int | None = None) -> JudgeSummary:
        """Writes `record.scores["judge"]` (AlpaGasus-style, 1-5) and the judge's decisions; with `min_score`, a
        record graded below it is dropped."""
        summary = JudgeSummary()
        for record, j in zip(records, self.judge(records), strict=True):
            summary.judged += 1
            summary.parse_failures += j.error is not None
            summary.unknown_rules += len(j.unknown_rules)
            summary.injections += bool(j.injection)
            record.meta["judge_template"] = self.template_ref
            if j.score is None:
                record.decide(STAGE, True, f"judge parse failure: {j.error}")
                continue
            record.scores["judge"] = float(j.score)
            kept = min_score is None or j.score >= min_score
            summary.dropped += not kept
            reason = f"judge {j.score}/5: {j.reason}".strip()
            for rule_id in j.violated_rules or [None]:
                record.decide(STAGE, kept, reason, rule_id=rule_id, score=float(j.score))
        return summary
