"""Rule checks compiled from the policy: wrong facts, missing escalation, form, register and forbidden
phrasing in a reply. Curation drops synthetic records with findings; evaluation counts them per rule.

Everything policy-specific comes from the Policy; what is written here is English: how numbers and
durations are spelled, how a sentence negates or reports a phrase instead of asserting it."""

from __future__ import annotations

import bisect
import itertools
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from functools import cached_property
from itertools import combinations
from typing import TYPE_CHECKING, Iterator

from ballast.policy.english import UNIT_SCALE

if TYPE_CHECKING:  # the checker reads a loaded policy; it never loads one
    from ballast.policy.schema import Elapsed, Policy


@dataclass(frozen=True)
class Finding:
    rule_id: str
    message: str
    span: tuple[int, int] | None  # into the output text


# --- text ------------------------------------------------------------------------------------------

_SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+|\n+")


def split_sentences(text: str) -> list[str]:
    """Sentences and lines of a text, stripped, empty ones left out."""
    return [s.strip() for s in _SENTENCE_BREAK.split(text) if s.strip()]


@dataclass(frozen=True)
class _Text:
    raw: str
    low: str  # same length as raw, so a span found in one indexes the other

    @cached_property
    def claims(self) -> list[_Claim]:
        """Every number with a unit, as the context reads them (see _claims)."""
        return list(_claims(self.low, context=True))

    @cached_property
    def stated(self) -> list[_Claim]:
        """The numbers a reply states as values, not the ones that date an event."""
        return list(_claims(self.low))

    @classmethod
    def of(cls, raw: str) -> _Text:
        low = raw.lower()
        if len(low) != len(raw):  # a rare letter such as "İ" lowercases to two characters
            low = "".join(c.lower() if len(c.lower()) == 1 else c for c in raw)
        return cls(raw, low)


# Only a pattern that spells out one of these can match the expanded text where it missed the raw one.
_EXPANSION_WORDS = re.compile(r"(?:\\b|(?<![a-z]))(?:will|cannot|have|are|am|not)(?![a-z])")  # "\bwill" too


@dataclass(frozen=True)
class _Pattern:
    """A policy regex, searched case-insensitively: lowercased, on the lowercased text, which runs about
    three times faster than IGNORECASE; a pattern whose escapes lowercasing would change (\\W, \\x4A) keeps
    IGNORECASE on the raw text."""

    regex: re.Pattern[str]
    on_raw: bool
    expandable: bool  # whether it can match a contraction-expanded reply where it missed the reply itself

    @classmethod
    def compile(cls, pattern: str) -> _Pattern:
        on_raw = bool(re.search(r"\\(?:[A-Z]|[xuN])", pattern))
        regex = re.compile(pattern, re.IGNORECASE) if on_raw else re.compile(pattern.lower())
        return cls(regex, on_raw, bool(_EXPANSION_WORDS.search(regex.pattern)))

    def finditer(self, text: _Text) -> Iterator[re.Match[str]]:
        return self.regex.finditer(text.raw if self.on_raw else text.low)


# --- numeric claims ---------------------------------------------------------------------------------

_SMALL = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen"
).split()
_TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()
_WORD_VALUE = {w: i for i, w in enumerate(_SMALL)} | {w: 20 + 10 * i for i, w in enumerate(_TENS)}
_NUM_WORD = rf"(?:(?:{'|'.join(_TENS)})(?:[- ](?:{'|'.join(_SMALL[1:10])}))?|{'|'.join(_SMALL)})"
_NUM = rf"(?:\d{{1,3}}(?:,\d{{3}})+(?:\.\d+)?|\d+(?:\.\d+)?|{_NUM_WORD})"
_CLAIM = re.compile(
    rf"(?:\b(?P<a>{_NUM})(?:\s*(?:-|–|—|to|and|or)\s*(?P<b>{_NUM}))?[\s-]*"
    rf"(?P<unit>(?:business|working)[\s-]days?|days?|weeks?|months?|years?)\b"
    rf"|\bday\s+(?P<point>\d+)\b"
    rf"|(?:\busd|\bus\$|\$)\s?(?P<usd>{_NUM})|\b(?P<usd2>{_NUM})\s?(?:usd|dollars)\b)"
)
# A duration that dates an event of this order ("delivered 41 days ago", "at 14 months", "3 days late")
# rather than stating a policy value.
_EVENT_AFTER = re.compile(
    r"[\s-]+(?:and\s+\d+\s+\w+\s+)?(?:ago|old|late|early|overdue|left|remaining|later|"
    r"earlier|past|since|outside|beyond|over|short|from (?:today|now))\b"
)
_EVENT_BEFORE = re.compile(r"\bat\s+$")
# What is left of a policy value: "within the next 1–6 business days", "two more days"; amounts always may be.
_REMAINDER_BEFORE = re.compile(r"\b(?:next|another|further)\s+$")
_REMAINDER_AFTER = re.compile(r"[\s-]+more\b")
_MAX_SUBSET = 10  # context numbers whose every subset sum is tried; beyond that, pairs only


def _number(text: str) -> float:
    text = text.replace(",", "")
    if text[0].isdigit():
        return float(text)
    return float(sum(_WORD_VALUE[w] for w in re.split(r"[- ]", text)))


def _dates_event(text: str, m: re.Match[str]) -> bool:
    return bool(_EVENT_AFTER.match(text, m.end()) or _EVENT_BEFORE.search(text, max(0, m.start() - 8), m.start()))


def _unit(raw: str) -> tuple[str, int]:
    return UNIT_SCALE["business_days" if raw.startswith(("business", "working")) else raw.rstrip("s") + "s"]


@dataclass(frozen=True)
class _Claim:
    value: float
    unit: str  # canonical
    span: tuple[int, int]
    remainder: bool = False  # may be a policy value less a number from the context


def _claims(text: str, *, context: bool = False) -> Iterator[_Claim]:
    """Numbers with a unit in lowercased text. In a reply, durations that date an event are skipped; in
    the context (instruction and input) every number counts, since the reply may quote it in other words."""
    for m in _CLAIM.finditer(text):
        if m["unit"]:
            if not context and _dates_event(text, m):
                continue
            unit, scale = _unit(m["unit"])
            remainder = bool(
                _REMAINDER_BEFORE.search(text, max(0, m.start() - 12), m.start())
                or _REMAINDER_AFTER.match(text, m.end())
            )
            for g in ("a", "b"):
                if m[g]:
                    yield _Claim(_number(m[g]) * scale, unit, m.span(g), remainder)
        elif m["point"]:
            if context:  # "day 4 after delivery"
                yield _Claim(float(m["point"]), "days", m.span("point"))
        else:
            g = "usd" if m["usd"] else "usd2"
            yield _Claim(_number(m[g]), "usd", m.span(g), remainder=True)


def _derivable(value: float, context: list[float], policy_values: set[float]) -> bool:
    """True when value is arithmetic on the given numbers: a total or difference of context amounts, or
    a policy value less a context number, such as the credit left under a limit."""
    operands = set(context) | policy_values
    if any(abs(a - b) == value for a in context for b in operands):
        return True
    if len(context) > _MAX_SUBSET:
        return any(a + b == value for a, b in combinations(context, 2))
    sums = {0.0}
    for c in context:
        sums |= {s + c for s in sums}
    return value in sums


# --- negated, conditional and reported phrases, in lowercased text -------------------------------

_DENIAL = r"\b(?:not|no|never|nor|cannot|without)\b|n't\b"
_DENIED = re.compile(_DENIAL)
# A forbidden phrase also stands excused when its clause makes it a condition, a question or a report of what a
# draft says.
_CONDITIONAL = re.compile(
    r"\b(?:unable|avoid|refuse[sd]?|whether|if|unless|until|once|before|when|says|said|claims?|"
    r"instead of)\b"
)
# A stance is what the reply does; "once the warehouse receives it, your refund will..." still promises.
_STANCE_CONDITIONAL = re.compile(
    r"\b(?:unable|avoid|refuse[sd]?|whether|if|unless|until|would|says|said|claims?|"
    r"instead of)\b"
)
# ... unless the clause goes on to make it conditional: "counts as lost only 10 business days after the scan".
_STANCE_EXCUSED_AFTER = re.compile(
    r"[^.;\n]{0,30}?\b(?:only (?:after|when|if|once)|once|until|yet|provided|as long as|"
    r"(?:business |working )?days after)\b"
)
# A leading subordinate clause keeps its denial to itself: "As there has been no movement, it is now lost."
_SUBORDINATE = re.compile(r"\s*(?:as|since|because|where|while|although|though|given|to)\b")
_WORDS = re.compile(r"\S+")
_QUOTES = re.compile(r"[\"“”]")
_CLAUSE_END = re.compile(r"[.;\n]|\Z")


def _clause_before(text: str, start: int, max_words: int) -> str:
    window = text[max(0, start - 12 * max_words) : start]
    return window[max(window.rfind(c) for c in ".;:!?\n") + 1 :]


def _preceded_by(cue: re.Pattern[str], text: str, start: int, max_words: int) -> bool:
    """cue in the last max_words words of the clause that runs up to start."""
    return bool(cue.search(" ".join(_WORDS.findall(_clause_before(text, start, max_words))[-max_words:])))


def _denied_in_main_clause(text: str, start: int, max_words: int) -> bool:
    """A denial before start in its clause, leaving out a leading subordinate clause ("As ..., ")."""
    window = _clause_before(text, start, max_words)
    if _SUBORDINATE.match(window) and "," in window:
        window = window.split(",", 1)[1]
    return bool(_DENIED.search(" ".join(_WORDS.findall(window)[-max_words:])))


def _quoted(text: str, start: int) -> bool:
    """Inside a quotation: an odd number of quote marks between the line start and start."""
    return len(_QUOTES.findall(text, text.rfind("\n", 0, start) + 1, start)) % 2 == 1


def _quoted_and_rejected(text: str, start: int, end: int) -> bool:
    """Inside a quotation that the rest of the sentence rejects: '"refund today" is not allowed'."""
    if not _quoted(text, start):
        return False
    close = _QUOTES.search(text, end)
    if not close:
        return False
    return bool(_DENIED.search(text, close.end(), _CLAUSE_END.search(text, close.end()).start()))


# Policy patterns are written out in full ("I have processed"); a reply says "I've processed".
_CONTRACTION = re.compile(r"\b(?:won|can)['’]t\b|(?<=[a-z])(?:['’](?:ve|ll|re|m)|n['’]t)\b", re.IGNORECASE)
_EXPANSION = {
    "won't": "will not",
    "can't": "cannot",
    "'ve": " have",
    "'ll": " will",
    "'re": " are",
    "'m": " am",
    "n't": " not",
}


def _expanded(raw: str) -> tuple[str, list[tuple[int, int]]]:
    """raw with contractions written out, and (offset in the result, offset in raw) after each expansion, so a
    span found in the result maps back to raw."""
    parts, marks, last, length = [], [(0, 0)], 0, 0
    for m in _CONTRACTION.finditer(raw):
        piece = raw[last : m.start()] + _EXPANSION[m.group(0).lower().replace("’", "'")]
        parts.append(piece)
        last, length = m.end(), length + len(piece)
        marks.append((length, last))
    return "".join(parts) + raw[last:], marks


def _raw_offset(marks: list[tuple[int, int]], at: int) -> int:
    expanded_at, raw_at = marks[bisect.bisect_right(marks, (at, float("inf"))) - 1]
    return raw_at + (at - expanded_at)


# A completed state ("has been issued", "I approved") restated from the input is not an invention.
_STATE_CLAIM = re.compile(
    r"\b(?:has|have|had|is|was|were|are|been)\s+(?:already\s+)?(?:been\s+)?\w+ed\b"
    r"|\bi\s+\w+ed\b"
)
_IDENTIFIER = re.compile(r"[\d@]")  # a number or address is disclosed, not restated
_STOPWORDS = frozenset("have has had been already your their this that with from will what they them".split())


def _content_words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z]{4,}", text) if w not in _STOPWORDS}


def _restated(phrase: str, context: str) -> bool:
    """A completed state that a sentence of the input itself records, e.g. "the refund has been issued"."""
    if not _STATE_CLAIM.search(phrase) or _IDENTIFIER.search(phrase):
        return False
    words = _content_words(phrase)
    return bool(words) and any(words <= _content_words(s) for s in _SENTENCE_BREAK.split(context))


# --- the case: what the input says about the order -------------------------------------------------

_AGO = re.compile(
    rf"\b(?P<n>{_NUM})[\s-]*(?P<unit>(?:business|working)[\s-]days?|days?|weeks?|months?|years?)"
    r"\s+ago\b"
)
_CALENDAR_DAYS = {"days": 1.0, "business_days": 7 / 5, "months": 30.44}  # per canonical unit
_GREETING = re.compile(r"(?:^|:)[ \t]*(?:dear|hi|hello|good (?:morning|afternoon|evening))\b[^\n]*\n", re.MULTILINE)
# An instruction to the customer: a request, or a sentence that opens with a verb of action.
_INSTRUCTION = re.compile(
    r"\b(?:please|could you|can you|you (?:will |'ll )?need to|make sure|be sure to)\b"
    r"|(?:^|[.!?]\s+)(?:send|reply|keep|use|try|vacuum|avoid|check|contact|call|return|pack|take|"
    r"follow|remove|unplug|stop|wait|go|click|visit|open|attach|include|share|tighten|wash)\b"
)
# A paragraph for the agent before the draft ("Note for you: ...", "Agent note: ...") is not its opening.
_LABELLED = re.compile(r"\A[a-z][a-z ]{1,20}:")
# Tokens that hold a digit, joined by single spaces or hyphens: "7qh 4402 1189 5gb", "hh-6604438".
_IDENTIFIER_RUN = re.compile(r"\b[a-z]*\d[a-z0-9]*(?:[ -][a-z]*\d[a-z0-9]*)*\b")
# "more than 30 days ago" compares with a limit; it dates nothing.
_COMPARED = re.compile(r"\b(?:more than|less than|over|under|within|at least|up to)\s+$")
_MONTHS = "january|february|march|april|may|june|july|august|september|october|november|december"
# The day an order event happened or will happen: "received on Monday", "dispatched on 14 November".
_EVENT_DAY = re.compile(
    r"\b(?:received|delivered|dispatched|shipped|arrived|scanned|collected|refunded|issued)\b"
    r"[^.\n]{0,30}?\b(?:on|by) (?:the )?(?P<day>monday|tuesday|wednesday|thursday|friday|"
    rf"saturday|sunday|\d{{1,2}}(?:st|nd|rd|th)?(?: of)? (?:{_MONTHS})"
    rf"|(?:{_MONTHS}) \d{{1,2}}(?:st|nd|rd|th)?)\b"
)


def _elapsed_days(text: str, event: re.Pattern[str]) -> float | None:
    """Calendar days since the event: the first "N units ago" after a mention of it, in the same clause."""
    for m in event.finditer(text):
        ago = _AGO.search(text, m.end(), _CLAUSE_END.search(text, m.end()).start())
        if ago:
            unit, scale = _unit(ago["unit"])
            return _number(ago["n"]) * scale * _CALENDAR_DAYS[unit]
    return None


def _identifiers(text: str) -> Iterator[tuple[str, tuple[int, int]]]:
    """Runs of letters and digits with six digits or more and a letter (tracking and order numbers; digits
    alone are card and phone numbers, a privacy matter), spaces and hyphens removed, in lowercased text."""
    for m in _IDENTIFIER_RUN.finditer(text):
        if sum(c.isdigit() for c in m.group(0)) >= 6 and re.search(r"[a-z]", m.group(0)):
            yield re.sub(r"[ -]", "", m.group(0)), m.span()


# --- audience ----------------------------------------------------------------------------------

_DRAFT_REQUEST = re.compile(
    r"\b(?:draft|write|compose|rewrite|rework|redo|fix|tidy|clean up|proofread|correct|reword|prepare)\b"
    r"[^.?!]{0,60}\b(?:reply|response|email|e-mail|message|letter|draft|follow-up|answer|something)\b"
    r"|\b(?:reply|respond|write back|answer)\s+to\s+(?:this|the|her|him|them|customer)\b"
    r"|\bdraft\s+(?:please|included|one)\b",
    re.IGNORECASE,
)
_INTERNAL_RECIPIENT = re.compile(
    r"\b(?:to|for|of)\s+(?:the\s+|my\s+|our\s+|a\s+)?(?:\w+\s+)?(?:team|colleague|supervisor|manager|lead|"
    r"(?-i:IT)|warehouse|channel|handover|shift|intranet|newsletter)\b|\binternal\b",
    re.IGNORECASE,
)
_LETTER_OPENING = re.compile(r"\A\s*Dear\b")


@dataclass(frozen=True)
class _PhraseCheck:
    """A phrase a reply may not use, with what excuses it (a denial or condition before or after it)."""

    rule_id: str
    pattern: _Pattern
    negation_inside_excuses: bool
    excused_before: re.Pattern[str]  # besides a denial
    excused_after: re.Pattern[str] | None
    message: str  # before the matched phrase


def _asserted(matches: Iterator[re.Match[str]], low: str, window: int = 3) -> re.Match[str] | None:
    """The first match that no denial in the `window` words before negates ("No fault reported" asserts no fault)."""
    return next((m for m in matches if not _preceded_by(_DENIED, low, m.start(), window)), None)


def _any(patterns: list[str]) -> _Pattern | None:
    return _Pattern.compile("|".join(f"(?:{p})" for p in patterns)) if patterns else None


def _negation_excuses(pattern: str) -> bool:
    """A negation inside a match excuses it ("refund ..., not cash"), except in a pattern that negates by
    itself ("no need to verify")."""
    return not _DENIED.search(pattern.lower().replace("\\b", " "))


# --- the checker -------------------------------------------------------------------------------

# Triggers match at a word start and may take an inflection, so "injur" finds "injured" and "fraud"
# "fraudulent" while "hospital" stays out of "hospitality" and "spark" out of "sparkling".
_SUFFIX = r"(?:s|es|d|ed|ing|y|ies|ied|e|al|ulent|ised|ized)?"
_INFLECTION = _SUFFIX + r"\b"
_FIRST_WORD = re.compile(r"^([a-z]{3,})(?= )")


def _inflect_first(trigger: str) -> str:
    """A trigger phrase whose first word may be inflected too: "hurt myself" also finds "hurting myself"."""
    return _FIRST_WORD.sub(lambda m: m[1] + _SUFFIX, trigger)


# Pictographs and emoticons; ballot boxes, check marks and crosses (☐ ✓ ✗) are list typography, not emoji.
_EMOJI = re.compile(
    "[\U0001f000-\U0001faff\u2600-\u260f\u2613-\u26ff\u2700-\u2712\u2714-\u2716\u2718-\u27bf"
    "\u2b50\u2b55]\ufe0f?|(?:(?<=\\s)|^)[:;]-?[)(DP](?!\\w)"
)
_TRIGGER_WINDOW, _FORBIDDEN_WINDOW = 5, 20  # words before a match that can negate it


def _stem(cue: str) -> str:
    """A cue without the inflection of its last word, kept at four letters or more."""
    stem = re.sub(r"(?:ed|ing|es|(?<!s)s)$", "", cue)
    return stem if len(stem.rsplit(" ", 1)[-1]) >= 4 else cue


def _phrase(text: str) -> str:
    """Regex for a lowercased phrase matched whole, any run of whitespace or hyphens between its words."""
    return r"[\s-]+".join(re.escape(w) for w in re.split(r"[\s-]+", text.strip().lower()))


def _whole(alternatives: list[str]) -> re.Pattern[str]:
    # One boundary check around the alternation, not one per phrase: several times faster.
    return re.compile(r"(?<!\w)(?:" + "|".join(alternatives) + r")(?!\w)")


def _required(term: str) -> re.Pattern[str]:
    """A required term, and for "stop <verb>ing" the plain ways to say it: "do not use", "out of use"."""
    alternatives = [_phrase(term)]
    gerund = re.fullmatch(r"stop (\w+?)ing", term.strip().lower())
    if gerund:
        verb = re.escape(gerund.group(1)) + "e?"
        alternatives += [rf"(?:not|n't|never|no longer)\s+(?:to\s+)?{verb}", rf"out of {verb}"]
    return _whole(alternatives)


class PolicyChecker:
    """Compiles a policy's checks once; `check` is then regex work on one record."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        # fact id -> (rule id, canonical unit, canonical value); cue stem -> fact ids
        self._facts: dict[str, tuple[str, str, float]] = {}
        self._cue_facts: dict[str, list[str]] = defaultdict(list)
        for rule in policy.rules:
            for fact in rule.facts:
                unit, scale = UNIT_SCALE[fact.unit]
                self._facts[fact.id] = (rule.id, unit, fact.value * scale)
                for cue in fact.cues:
                    self._cue_facts[_stem(cue.lower())].append(fact.id)
        self._values_by_unit: dict[str, set[float]] = defaultdict(set)
        for _, unit, value in self._facts.values():
            self._values_by_unit[unit].add(value)
        # Facts that share a cue with another fact of their unit ("warranty": furniture and kitchenware years).
        self._contested = {
            fid
            for fids in self._cue_facts.values()
            for fid in fids
            if sum(self._facts[f][1] == self._facts[fid][1] for f in fids) > 1
        }
        # Cues match by stem at a word start ("arrived" finds "arrival"), a short one as a whole word
        # ("fee" and "fees", not "feel"); the longest wins an overlap.
        cues = sorted(self._cue_facts, key=len, reverse=True)
        alternatives = [re.escape(c) + ("" if len(c.rsplit(" ", 1)[-1]) >= 4 else r"(?=s?\b)") for c in cues]
        self._cues = re.compile(r"\b(?:" + "|".join(alternatives) + ")") if cues else None

        self._triggers = [
            (r.id, _Pattern.compile("|".join(rf"\b(?:{_inflect_first(t)}){_INFLECTION}" for t in r.triggers)))
            for r in policy.rules
            if r.triggers
        ]
        # "Payments Risk" names the team as well as "Payments Risk team" does.
        self._teams = {
            r.id: _whole([_phrase(re.sub(r"\s+team$", "", r.escalate_to))])
            for r in policy.rules
            if r.escalate_to and r.triggers
        }
        # A rule is in play, and its required terms are due, when its triggers fire; without triggers
        # ("photo" for R4) a term would be demanded of every reply.
        self._required = {
            r.id: [(t, _required(t)) for t in r.required_terms] for r in policy.rules if r.triggers and r.required_terms
        }
        self._forbidden = [
            _PhraseCheck(r.id, _Pattern.compile(p), _negation_excuses(p), _CONDITIONAL, None, "forbidden phrasing")
            for r in policy.rules
            for p in r.forbidden_patterns
        ]
        self._stances = {
            name: [(_Pattern.compile(p), _negation_excuses(p)) for p in patterns]
            for name, patterns in policy.stances.items()
        }
        self._cases = [
            (
                rule,
                case,
                _any(case.input_patterns),
                _any(case.unless_input),
                re.compile(_phrase(rule.escalate_to)) if case.unless_escalated and rule.escalate_to else None,
                re.compile(case.elapsed.event.lower()) if case.elapsed else None,
            )
            for rule in policy.rules
            for case in rule.cases
        ]
        self._member = _whole([_phrase(policy.member_marker)]) if policy.member_marker else None
        self._opening = {
            r.id: re.compile(r"\b(?:" + "|".join(re.escape(t.lower()) for t in r.opening_terms) + ")")
            for r in policy.rules
            if r.opening_terms
        }
        self._grounded = [r.id for r in policy.rules if r.grounded]

        register = policy.register_
        casual = register.banned_phrases + register.casual_markers
        self._casual = _whole([_phrase(c) for c in casual]) if casual else None
        self._emoji = None if register.emojis_allowed else _EMOJI
        self._sign_off = re.compile(r"\s+".join(map(re.escape, policy.sign_off.split())) + r"\s*\Z")

    # --- public API ---

    def check(self, instruction: str, input: str, output: str, audience: str | None = None) -> list[Finding]:
        """Every finding on one reply; `audience` is inferred when not given."""
        audience = audience or self.infer_audience(instruction, output, self.policy.sign_off)
        context, reply = _Text.of(instruction + "\n" + input), _Text.of(output)
        triggered = self._triggered(context)
        findings = self._fact_findings(context, reply)
        findings += self._escalation_findings(triggered, reply)
        findings += self._phrase_findings(
            context, reply, self._forbidden + self._case_checks(triggered, context, reply)
        )
        findings += self._register_findings(reply)
        findings += self._grounding_findings(context, reply, {f.span for f in findings if f.span})
        if audience == "customer":
            findings += self._opening_findings(reply)
            if not self._sign_off.search(output):
                findings.append(
                    Finding(
                        self.policy.form.rule,
                        "a customer reply must end with the sign-off " + " / ".join(self.policy.form.sign_off),
                        None,
                    )
                )
        return findings

    def triggered(self, instruction: str, input: str) -> list[str]:
        """Rules whose escalation triggers fire, not negated, in the customer's or agent's text."""
        return self._triggered(_Text.of(instruction + "\n" + input))

    @staticmethod
    def infer_audience(instruction: str, output: str, sign_off: str) -> str:
        """ "customer" for a letter to send (signed off, or opened like a letter, or asked for as a draft
        reply that is not addressed to a colleague), else "agent"."""
        first_line = sign_off.strip().split("\n", 1)[0]
        if first_line and first_line in output:
            return "customer"
        if _INTERNAL_RECIPIENT.search(instruction):
            return "agent"
        return "customer" if _DRAFT_REQUEST.search(instruction) or _LETTER_OPENING.match(output) else "agent"

    # --- checks ---

    def _triggered(self, context: _Text) -> list[str]:
        return [
            rule_id
            for rule_id, pattern in self._triggers
            if _asserted(pattern.finditer(context), context.low, _TRIGGER_WINDOW)
        ]

    def _fact_findings(self, context: _Text, reply: _Text) -> list[Finding]:
        claims = reply.stated
        if not claims or self._cues is None:
            return []
        starts = [0] + [m.end() for m in _SENTENCE_BREAK.finditer(reply.low)]
        cues_by_sentence: dict[int, list[tuple[int, str]]] = defaultdict(list)
        for m in self._cues.finditer(reply.low):
            cues_by_sentence[bisect.bisect_right(starts, m.start())].append((m.start(), m.group(0)))
        # Any fact cued anywhere in the reply may be what a number states; the sentence only decides
        # whether a number is a claim about a fact at all.
        cued = {fid for cues in cues_by_sentence.values() for _, cue in cues for fid in self._cue_facts[cue]}
        findings = []
        for claim in claims:
            near = [
                (abs(pos - claim.span[0]), fid)
                for pos, cue in cues_by_sentence.get(bisect.bisect_right(starts, claim.span[0]), [])
                for fid in self._cue_facts[cue]
                if self._facts[fid][1] == claim.unit
            ]
            if not near:
                continue
            allowed = {self._facts[fid][2] for fid in cued if self._facts[fid][1] == claim.unit}
            subject = self._subject_fact(
                reply.low, claim, cues_by_sentence.get(bisect.bisect_right(starts, claim.span[0]), [])
            )
            if claim.value in allowed and (subject is None or claim.value == self._facts[subject][2]):
                continue
            quoted = [c.value for c in context.claims if c.unit == claim.unit]
            if claim.value in quoted or _derivable(claim.value, quoted, allowed if claim.remainder else set()):
                continue
            # The subject's fact, else the fact most cued in the sentence, then the one cued nearest the number.
            hits = Counter(fid for _, fid in near)
            fact_id = subject or min(near, key=lambda n: (-hits[n[1]], n[0]))[1]
            findings.append(
                Finding(
                    self._facts[fact_id][0],
                    f"{reply.raw[slice(*claim.span)]!r} ({claim.unit}) contradicts {fact_id}: "
                    f"the policy allows {', '.join(f'{v:g}' for v in sorted(allowed))}",
                    claim.span,
                )
            )
        return findings

    def _subject_fact(self, text: str, claim: _Claim, cues: list[tuple[int, str]]) -> str | None:
        """The one fact of the claim's unit that a cue just before the number names ("our furniture carries a
        1-year warranty"), when the cue belongs to that fact alone; shared cues ("warranty") leave it open."""
        for pos, cue in sorted(cues, reverse=True):
            facts = [f for f in self._cue_facts[cue] if self._facts[f][1] == claim.unit]
            between = text[pos + len(cue) : claim.span[0]]
            if (
                pos >= claim.span[0]
                or len(facts) != 1
                or len(between) > 40
                or text[max(0, pos - 4) : pos] == "non-"
                or re.search(r"[,;:()]|\b(?:and|or)\b", between)
            ):
                continue
            if facts[0] in self._contested and not _preceded_by(_DENIED, text, pos, 3):
                return facts[0]
        return None

    def _escalation_findings(self, triggered: list[str], reply: _Text) -> list[Finding]:
        findings = []
        for rule_id in triggered:
            team = self._teams.get(rule_id)
            if team and not team.search(reply.low):
                findings.append(
                    Finding(rule_id, f"escalation to {self.policy.by_id[rule_id].escalate_to} is not stated", None)
                )
            findings += [
                Finding(rule_id, f"required {term!r} is missing", None)
                for term, pattern in self._required.get(rule_id, [])
                if not pattern.search(reply.low)
            ]
        return findings

    def _case_checks(self, triggered: list[str], context: _Text, reply: _Text) -> list[_PhraseCheck]:
        """The stances each case that holds forbids, as phrase checks whose message says why."""
        checks: list[_PhraseCheck] = []
        for rule, case, input_pattern, exception, escalation, event in self._cases:
            if exception and _asserted(exception.finditer(context), context.low):
                continue
            reasons = []
            if case.triggered:
                reasons.append(f"the input triggers {rule.id}" if rule.id in triggered else None)
            if input_pattern:
                m = _asserted(input_pattern.finditer(context), context.low)
                reasons.append(f"the input says {context.raw[slice(*m.span())]!r}" if m else None)
            if case.elapsed and event:
                reasons.append(self._elapsed_reason(case.elapsed, event, context))
            if case.amount_over:
                amounts = [c.value for c in context.claims + reply.claims if c.unit == "usd"]
                limit = self._facts[case.amount_over][2]
                reasons.append(
                    f"USD {max(amounts):g} is over {case.amount_over} ({limit:g})"
                    if amounts and max(amounts) > limit
                    else None
                )
            if None in reasons or (escalation and _asserted(escalation.finditer(reply.low), reply.low)):
                continue
            why = "; ".join(r for r in reasons if r)
            checks += [
                _PhraseCheck(
                    rule.id,
                    pattern,
                    excuses,
                    _STANCE_CONDITIONAL,
                    _STANCE_EXCUSED_AFTER,
                    f"{stance.replace('_', ' ')}, although {why}:",
                )
                for stance in case.forbids
                for pattern, excuses in self._stances[stance]
            ]
        return checks

    def _elapsed_reason(self, elapsed: Elapsed, event: re.Pattern[str], context: _Text) -> str | None:
        days = _elapsed_days(context.low, event)
        if days is None:
            return None
        fact_id = elapsed.fact
        if elapsed.member_fact and self._member and _asserted(self._member.finditer(context.low), context.low):
            fact_id = elapsed.member_fact
        _, unit, value = self._facts[fact_id]
        limit = value * _CALENDAR_DAYS[unit]
        if (days > limit) if elapsed.past else (days < limit):
            return f"{days:.0f} days since {event.pattern!r}, {'past' if elapsed.past else 'within'} {fact_id}"
        return None

    def _opening_findings(self, reply: _Text) -> list[Finding]:
        findings = []
        greeting = _GREETING.search(reply.low)
        body = reply.low[greeting.end() :] if greeting else reply.low
        if not greeting:
            paragraphs = re.split(r"\n\s*\n", body.strip())
            body = "\n\n".join(itertools.dropwhile(lambda p: _LABELLED.match(p), paragraphs))
        # A line that introduces the draft ("Here's a shorter version:") is not its opening either.
        sentences = list(itertools.dropwhile(lambda x: x.endswith(":"), split_sentences(body)))
        text = " ".join(sentences)
        for rule_id, terms in self._opening.items():
            first = terms.search(text)
            instruction = _INSTRUCTION.search(text, 0, first.start()) if first else None
            if instruction:
                findings.append(
                    Finding(
                        rule_id,
                        "gives instructions before acknowledging the customer: "
                        f"{text[instruction.start() : instruction.start() + 60]!r}",
                        None,
                    )
                )
        return findings

    def _grounding_findings(self, context: _Text, reply: _Text, found: set[tuple[int, int]]) -> list[Finding]:
        """Dates, durations, amounts and identifiers stated about the order that the input does not give; an
        amount already `found` to contradict a policy fact is that rule's finding, not an invention."""
        if not self._grounded:
            return []
        quoted: dict[str, list[float]] = defaultdict(list)
        for c in context.claims:
            quoted[c.unit].append(c.value)
        known = {ident for ident, _ in _identifiers(context.low)}
        invented = []
        for m in _AGO.finditer(reply.low):
            unit, scale = _unit(m["unit"])
            value = _number(m["n"]) * scale
            policy_values = self._values_by_unit[unit]
            if (
                _COMPARED.search(reply.low, max(0, m.start() - 12), m.start())
                or _quoted(reply.low, m.start())
                or _preceded_by(_CONDITIONAL, reply.low, m.start(), _FORBIDDEN_WINDOW)
                or value in quoted[unit]
                or _derivable(value, quoted[unit], policy_values)
            ):
                continue
            invented.append((f"{reply.raw[slice(*m.span())]!r} is not in the input", m.span()))
        policy_usd = self._values_by_unit["usd"]
        invented += [
            (f"amount USD {c.value:g} is not in the input", c.span)
            for c in reply.claims
            if c.unit == "usd"
            and c.span not in found
            and c.value not in quoted["usd"]
            and c.value not in policy_usd
            and not _derivable(c.value, quoted["usd"], policy_usd)
        ]
        invented += [
            (f"identifier {reply.raw[slice(*span)]!r} is not in the input", span)
            for ident, span in _identifiers(reply.low)
            if ident not in known
        ]
        invented += [
            (f"{reply.raw[slice(*m.span())]!r}: the input names no such day", m.span())
            for m in _EVENT_DAY.finditer(reply.low)
            if m["day"] not in context.low
        ]
        return [Finding(rule_id, message, span) for rule_id in self._grounded for message, span in invented]

    def _phrase_findings(self, context: _Text, reply: _Text, checks: list[_PhraseCheck]) -> list[Finding]:
        """Matches of the checks that nothing excuses."""
        views = [(reply, None)]
        if _CONTRACTION.search(reply.raw):
            expanded, marks = _expanded(reply.raw)
            views.append((_Text.of(expanded), marks))
        findings: dict[tuple[str, int, int], Finding] = {}
        for text, marks in views:
            for check in checks:
                if marks and not check.pattern.expandable:
                    continue
                for m in check.pattern.finditer(text):
                    start, end = m.span()
                    phrase = text.low[start:end]
                    if (
                        _denied_in_main_clause(text.low, start, _FORBIDDEN_WINDOW)
                        or _preceded_by(check.excused_before, text.low, start, _FORBIDDEN_WINDOW)
                        or (check.excused_after and check.excused_after.match(text.low, end))
                        or (check.negation_inside_excuses and _DENIED.search(phrase))
                        or _quoted_and_rejected(text.low, start, end)
                        or _restated(phrase, context.low)
                    ):
                        continue
                    if marks:
                        start, end = _raw_offset(marks, start), _raw_offset(marks, end)
                    findings.setdefault(
                        (check.rule_id, start, end),
                        Finding(check.rule_id, f"{check.message} {reply.raw[start:end]!r}", (start, end)),
                    )
        return list(findings.values())

    def _register_findings(self, reply: _Text) -> list[Finding]:
        rule = self.policy.register_.rule
        findings = []
        if self._casual:
            findings += [
                Finding(rule, f"casual phrase {reply.raw[slice(*m.span())]!r}", m.span())
                for m in self._casual.finditer(reply.low)
            ]
        if self._emoji:
            findings += [Finding(rule, f"emoji {m.group(0)!r}", m.span()) for m in self._emoji.finditer(reply.raw)]
        limit, count = self.policy.register_.max_exclamation_marks, reply.raw.count("!")
        if count > limit:
            over = [i for i, ch in enumerate(reply.raw) if ch == "!"][limit]
            findings.append(Finding(rule, f"{count} exclamation marks, at most {limit} allowed", (over, over + 1)))
        return findings
