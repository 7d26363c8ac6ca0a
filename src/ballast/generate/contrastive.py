"""Contrastive examples: a conformant human reply edited, deterministically, to break one named rule.

The edits are driven by the policy file: its facts (a number or window changed to one the policy does not
allow), its escalation teams (the sentences naming the team removed when a trigger fires), its register
(banned phrases and casual markers), its sign-off, the approval limits of rules that escalate to a
supervisor, and the required terms of the identity rule. Which rule a promised delivery date and a skipped
identity check break is policy data (policy.yaml's `contrastive` file), which the recipe may override
(contrastive.promise_rule, contrastive.identity_rule).

The edits the rule checks cannot see (a blame sentence, instructions before the acknowledgement, an invented
tracking number, outside advice, a competitor, a request for a password or code, a claim that something was
already done, the wrong team, an exception to a return rule) insert one sentence from a phrase bank (the
policy's contrastive file, e.g. examples/harbor-support/phrase_banks.yaml), picked by a hash of the seed, or move
or rename what the seed already says; they exist to teach the conformance classifier.

Each negative is a record with source `contrastive`, the violated rule id in `rules`, and a decision that
names the rule; the decision drops it from the positives, and selection excludes the source outright, so
a negative never trains the model as an example to follow. Curation can use them as labelled violations.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ballast.policy.checks import PolicyChecker
from ballast.policy.english import UNIT_SCALE
from ballast.policy.schema import Fact, Policy, Rule
from ballast.recipe import ContrastiveConfig
from ballast.records import Record, Source
from ballast.stages import decision_stage

STAGE = decision_stage("generate", "contrastive")
_UNIT_WORDS = {
    "days": r"(?:calendar[\s-]+)?days?\b",
    "business_days": r"(?:business|working)[\s-]+days?\b",
    "months": r"months?\b",
    "years": r"years?\b",
}
_RANGE = r"(?:\s*(?:-|–|—|to)\s*\d+)?"
_EVENT = re.compile(r"\s*(?:ago|old|late|early|overdue|left|remaining|later|earlier|past|since)\b")
_REMAINDER = re.compile(r"\b(?:next|another|further)\s+$")
_NUMBER = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?")
_SENTENCE = re.compile(r"[^\n.!?]+(?:[.!?]+|(?=\n)|$)")
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday")


# Sentences that state what an exception edit overrides: a refusal, or the item being outside the window.
_REFUSAL = re.compile(
    r"\b(?:not (?:be )?(?:able|returnable|eligible)|unable|can(?:no|')t|outside|past the|"
    r"final sale|no longer|isn't|aren't|unfortunately)\b",
    re.IGNORECASE,
)
_OUTSIDE_WINDOW = re.compile(r"\b(?:outside|past|beyond)\b[^.\n]{0,30}\bwindow", re.IGNORECASE)
_FUTURE_ACTION = re.compile(
    r"\bI(?:'ll| will) (arrange|send|set up|issue|escalate|pass|process|raise|open|"
    r"refund|cancel|book|update)\b"
)
_PAST = {
    "arrange": "arranged",
    "send": "sent",
    "set up": "set up",
    "issue": "issued",
    "escalate": "escalated",
    "pass": "passed",
    "process": "processed",
    "raise": "raised",
    "open": "opened",
    "refund": "refunded",
    "cancel": "cancelled",
    "book": "booked",
    "update": "updated",
}
_OPENING = re.compile(r"(?:Dear |Hi |Hello |Agent note|Draft reply)", re.IGNORECASE)
_USD = re.compile(r"USD\s?(\d[\d,]*(?:\.\d+)?)")


@dataclass(frozen=True)
class Edit:
    kind: str
    rule_id: str
    output: str
    detail: str


def _h(record: Record, salt: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{salt}:{record.id}".encode()).digest()[:4], "little")


def _sentences(text: str) -> list[tuple[int, int]]:
    return [m.span() for m in _SENTENCE.finditer(text) if m.group().strip()]


def _tidy(text: str) -> str:
    text = re.sub(r"[ \t]+\n", "\n", text)
    text = re.sub(r"\n[ \t]+", "\n", text)
    text = re.sub(r"[ \t]{2,}", " ", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _drop_sentences(text: str, hit: Callable[[str], bool]) -> tuple[str, int]:
    spans = [s for s in _sentences(text) if hit(text[s[0] : s[1]])]
    for start, end in reversed(spans):
        text = text[:start] + text[end:]
    return _tidy(text), len(spans)


def _before_sign_off(text: str, sentence: str, policy: Policy) -> str:
    at = text.rfind(policy.form.sign_off[0])
    if at < 0:
        return text.rstrip() + "\n\n" + sentence
    return text[:at].rstrip() + "\n\n" + sentence + "\n\n" + text[at:]


def _paragraphs(text: str) -> list[str]:
    return [p for p in re.split(r"\n\s*\n", text.strip()) if p.strip()]


def _body_start(paragraphs: list[str]) -> int:
    """Index of the first paragraph after a salutation or an agent's note."""
    i = 0
    while i < len(paragraphs) - 1 and _OPENING.match(paragraphs[i].strip()) and len(paragraphs[i]) < 400:
        i += 1
    return i


def _after_opening(text: str, sentence: str) -> str:
    """`sentence` appended to the reply's first real paragraph (usually the acknowledgement)."""
    paragraphs = _paragraphs(text)
    i = _body_start(paragraphs)
    paragraphs[i] = paragraphs[i].rstrip() + " " + sentence
    return "\n\n".join(paragraphs)


def _team_pattern(team: str) -> re.Pattern[str]:
    """A team's name as replies write it, with or without the word "team", in lower case."""
    name = re.sub(r"\s+team$", "", team, flags=re.IGNORECASE).lower()
    return re.compile(r"(?<!\w)" + r"[\s-]+".join(map(re.escape, name.split())) + r"(?:\s+team)?(?!\w)")


def _lower_first(text: str) -> str:
    first = text.split(" ", 1)[0]
    if len(first) > 1 and first[1:2].islower() and first not in ("I", "I'm", "I'll", "I've", "I'd"):
        return text[0].lower() + text[1:]
    return text


def _numbers(text: str) -> list[float]:
    return [float(n.replace(",", "")) for n in _NUMBER.findall(text)]


def _forbidden_values(context: str, policy: Policy, unit: str) -> set[float]:
    """Values an edit must not use: allowed by the policy in this unit, quoted in the context, or arithmetic on
    them (a total, a difference, a limit less an amount), since a reply may state any of those correctly."""
    canon = UNIT_SCALE[unit][0]
    allowed = {f.value * UNIT_SCALE[f.unit][1] for r in policy.rules for f in r.facts if UNIT_SCALE[f.unit][0] == canon}
    quoted = set(_numbers(context))
    operands = quoted | allowed
    derived = {a + b for a in quoted for b in operands} | {abs(a - b) for a in quoted for b in operands}
    return allowed | quoted | derived


def _new_value(value: float, unit: str, context: str, policy: Policy) -> float | None:
    scale = UNIT_SCALE[unit][1]
    forbidden = _forbidden_values(context, policy, unit)
    step = 5 if unit == "usd" and value >= 20 else 1
    for factor in (1.5, 2, 3, 1.2, 4):
        candidate = max(step, round(value * factor / step) * step)
        if candidate != value and candidate * scale not in forbidden and candidate not in forbidden:
            return float(candidate)
    return None


def _fact_spans(text: str, fact: Fact) -> list[tuple[int, int]]:
    v = f"{fact.value:g}"
    if fact.unit == "usd":
        patterns = [
            rf"(?:(?<=USD )|(?<=USD\xa0)|(?<=\$)){re.escape(v)}(?![\d,]*\d|\.\d)",
            rf"(?<![\d.,]){re.escape(v)}(?=\s?(?:USD|dollars)\b)",
        ]
    else:
        patterns = [rf"(?<![\d.,]){re.escape(v)}(?={_RANGE}[\s-]*{_UNIT_WORDS[fact.unit]})"]
    return sorted({m.span() for p in patterns for m in re.finditer(p, text, re.IGNORECASE)})


def _cued(sentence: str, fact: Fact) -> bool:
    low = sentence.lower()
    return any(
        re.search(r"\b" + re.escape(re.sub(r"(?:s|ed)$", "", c.lower()) if len(c) > 4 else c.lower()), low)
        for c in fact.cues
    )


class ContrastiveBuilder:
    def __init__(self, policy: Policy, cfg: ContrastiveConfig) -> None:
        self.policy, self.cfg = policy, cfg
        self.checker = PolicyChecker(policy)
        data = policy.contrastive  # phrase banks, rivals and the rules some edits break (policy data)
        self.banks = data.banks
        self.rivals = data.rivals
        self.instructions_first_rule = data.instructions_first_rule
        self.promise_rule = self._rule(cfg.promise_rule or data.promise_rule)
        self.identity_rule = self._rule(cfg.identity_rule or data.identity_rule)
        self.facts = [(r.id, f) for r in policy.rules for f in r.facts]
        # Approval limits: amounts in USD on rules that escalate to a supervisor above them.
        self.limits = [
            (r, f) for r in policy.rules if r.escalate_to == "supervisor" for f in r.facts if f.unit == "usd"
        ]
        self._makers: dict[str, Callable[[Record], Edit | None]] = {
            "changed_number": self.changed_number,
            "dropped_escalation": self.dropped_escalation,
            "casual_rewrite": self.casual_rewrite,
            "promised_date": self.promised_date,
            "over_limit_approval": self.over_limit_approval,
            "skipped_identity_check": self.skipped_identity_check,
            "dropped_sign_off": self.dropped_sign_off,
            "instructions_first": self.instructions_first,
            "wrong_team": self.wrong_team,
            "claimed_done": self.claimed_done,
        }
        self._makers |= {
            kind: lambda s, k=kind: self.inserted(k, s)
            for kind, bank in self.banks.items()
            if bank.rule is not None and kind not in self._makers
        }

    def _rule(self, rule_id: str | None) -> Rule | None:
        return self.policy.rule(rule_id) if rule_id is not None else None

    @property
    def kinds(self) -> list[str]:
        return sorted(self._makers)

    def edit(self, kind: str, seed: Record) -> Edit | None:
        """The seed edited to break one rule, or None when this kind of edit does not fit it or changes nothing (or
        the policy's contrastive data has no bank for it)."""
        maker = self._makers.get(kind)
        edit = maker(seed) if maker is not None else None
        return edit if edit is not None and _tidy(edit.output) != _tidy(seed.output) else None

    def edits(self, seed: Record) -> list[Edit]:
        return [e for e in (self.edit(kind, seed) for kind in self.cfg.edits) if e is not None]

    def _context(self, seed: Record) -> str:
        return f"{seed.instruction}\n{seed.input}"

    def changed_number(self, seed: Record) -> Edit | None:
        text = seed.output
        for start, end in _sentences(text):
            sentence = text[start:end]
            for rule_id, fact in self.facts:
                if not _cued(sentence, fact):
                    continue
                for a, b in _fact_spans(sentence, fact):
                    # "30 days ago" dates an event and "another 5 days" is a remainder: not statements of the fact.
                    unit = re.compile(rf"{_RANGE}[\s-]*{_UNIT_WORDS.get(fact.unit, '')}", re.IGNORECASE).match(
                        sentence, b
                    )
                    if (unit and fact.unit != "usd" and _EVENT.match(sentence, unit.end())) or _REMAINDER.search(
                        sentence[:a].lower()
                    ):
                        continue
                    new = _new_value(fact.value, fact.unit, self._context(seed), self.policy)
                    if new is None:
                        continue
                    out = text[: start + a] + f"{new:g}" + text[start + b :]
                    return Edit(
                        "changed_number",
                        rule_id,
                        out,
                        f"{fact.id} {fact.value:g} -> {new:g} {fact.unit.replace('_', ' ')}",
                    )
        return None

    def _stated_escalations(self, seed: Record) -> Iterator[tuple[str, str, re.Pattern]]:
        """(rule id, team, the team's pattern) for each escalation the request triggers and the reply names."""
        for rule_id in self.checker.triggered(seed.instruction, seed.input):
            team = self.policy.by_id[rule_id].escalate_to
            if team:
                pattern = _team_pattern(team)
                if pattern.search(seed.output.lower()):
                    yield rule_id, team, pattern

    def dropped_escalation(self, seed: Record) -> Edit | None:
        for rule_id, team, pattern in self._stated_escalations(seed):
            out, n = _drop_sentences(seed.output, lambda s, p=pattern: bool(p.search(s.lower())))
            if pattern.search(out.lower()) or len(out.split()) < 5:
                continue
            return Edit("dropped_escalation", rule_id, out, f"removed {n} sentence(s) naming the {team}")
        return None

    def casual_rewrite(self, seed: Record) -> Edit | None:
        reg = self.policy.register_
        if not reg.banned_phrases:
            return None
        h = _h(seed, "casual")
        opener = reg.banned_phrases[h % len(reg.banned_phrases)]
        markers = reg.casual_markers or reg.banned_phrases
        closer = markers[(h >> 8) % len(markers)].rstrip("!")
        out = _before_sign_off(
            f"{opener[0].upper()}{opener[1:]}, {_lower_first(seed.output)}",
            f"{closer[0].upper()}{closer[1:]}!",
            self.policy,
        )
        return Edit("casual_rewrite", reg.rule, out, f"added {opener!r} and {closer!r}")

    def promised_date(self, seed: Record) -> Edit | None:
        rule = self.promise_rule
        if rule is None or (seed.slice != rule.area and rule.id not in seed.rules):
            return None
        day = _WEEKDAYS[_h(seed, "date") % len(_WEEKDAYS)]
        sentence = (
            f"Your order will arrive by {day}."
            if seed.audience == "customer"
            else f"Tell the customer the order will arrive by {day}."
        )
        return Edit(
            "promised_date",
            rule.id,
            _before_sign_off(seed.output, sentence, self.policy),
            f"promised delivery by {day}",
        )

    def over_limit_approval(self, seed: Record) -> Edit | None:
        fitting = [(r, f) for r, f in self.limits if r.id in seed.rules] or [
            (r, f) for r, f in self.limits if r.area == seed.slice
        ]
        for rule, fact in fitting:
            amount = _new_value(fact.value, "usd", self._context(seed), self.policy)
            if amount is None or amount <= fact.value:
                continue
            noun = next((c for c in fact.cues if "credit" in c.lower()), fact.cues[0]).lower()
            sentence = (
                f"I have approved a {noun} of USD {amount:g} for you myself."
                if seed.audience == "customer"
                else f"You can approve a {noun} of USD {amount:g} yourself, without a supervisor."
            )
            return Edit(
                "over_limit_approval",
                rule.id,
                _before_sign_off(seed.output, sentence, self.policy),
                f"approved USD {amount:g}, over the {fact.id} of USD {fact.value:g}",
            )
        return None

    def skipped_identity_check(self, seed: Record) -> Edit | None:
        rule = self.identity_rule
        if rule is None or "skipped_identity_check" not in self.banks:
            return None
        if rule.id not in seed.rules and rule.id not in self.checker.triggered(seed.instruction, seed.input):
            return None
        terms = [t.lower() for t in rule.required_terms]
        out, n = _drop_sentences(seed.output, lambda s: any(t in s.lower() for t in terms))
        sentence = self._bank_sentence("skipped_identity_check", seed)
        return Edit(
            "skipped_identity_check",
            rule.id,
            _before_sign_off(out, sentence, self.policy),
            f"removed {n} sentence(s) with {', '.join(rule.required_terms) or 'the check'}; said {sentence!r}",
        )

    def _bank_sentence(self, kind: str, seed: Record) -> str | None:
        """A sentence from the kind's bank for the seed's audience, its slots filled from the seed; None when
        every wording needs an amount and the seed quotes none."""
        h = _h(seed, kind)
        bank = self.banks[kind].customer if seed.audience == "customer" else self.banks[kind].agent
        amounts = _USD.findall(self._context(seed) + "\n" + seed.output)
        usable = [s for s in bank if amounts or "{amount}" not in s]
        if not usable:
            return None
        return usable[h % len(usable)].format(
            day=_WEEKDAYS[(h >> 8) % len(_WEEKDAYS)],
            rival=self.rivals[(h >> 12) % len(self.rivals)] if self.rivals else "",
            tracking=f"HX{(h >> 4) % 10**9:09d}GB",
            amount=amounts[0] if amounts else "",
        )

    def _applies(self, kind: str, seed: Record, rule_id: str) -> bool:
        """Whether the seed is a natural place for this kind of mistake: it exercises the rule, or its topic
        invites it; advice, competitor talk and credential requests can go anywhere, so a quarter of the
        seeds get each."""
        rules, low, bank = set(seed.rules), seed.output.lower(), self.banks[kind]
        if bank.reply_words and not any(w in low for w in bank.reply_words):
            return False
        # The bank's rule, or another rule or slice the policy data names for it (seed_rules, seed_slices).
        invited = bool(rules & {rule_id, *bank.seed_rules}) or seed.slice in bank.seed_slices
        triggered = rule_id in self.checker.triggered(seed.instruction, seed.input)
        return {
            "accepted_final_sale": invited or triggered,
            "accepted_late_return": invited and bool(_OUTSIDE_WINDOW.search(low)),
            "outside_advice": invited or _h(seed, "advice") % 4 == 0,
            "competitor_mention": invited or _h(seed, "rival") % 4 == 1,
            "claimed_done": invited or _h(seed, "done") % 4 == 2,
            "price_difference": invited or triggered,
            "credential_request": invited or _h(seed, "credential") % 4 == 3,
        }.get(kind, invited)

    def inserted(self, kind: str, seed: Record) -> Edit | None:
        """One sentence from the kind's phrase bank, after the acknowledgement or before the sign-off (by hash);
        an exception to a return rule first removes the sentences that refuse."""
        rule_id = self.banks[kind].rule
        if rule_id not in self.policy.by_id or not self._applies(kind, seed, rule_id):
            return None
        sentence = self._bank_sentence(kind, seed)
        if sentence is None:
            return None
        text = seed.output
        if kind in ("accepted_final_sale", "accepted_late_return"):
            refuses = _OUTSIDE_WINDOW if kind == "accepted_late_return" else _REFUSAL
            text, _ = _drop_sentences(text, lambda s: bool(refuses.search(s) or _REFUSAL.search(s)))
        place = (
            _after_opening
            if kind == "blame_sentence" or _h(seed, f"{kind}:at") % 2
            else (lambda t, s: _before_sign_off(t, s, self.policy))
        )
        return Edit(kind, rule_id, place(text, sentence), f"inserted {sentence!r}")

    def instructions_first(self, seed: Record) -> Edit | None:
        """The acknowledgement paragraph moved after the instructions that followed it."""
        rule_id = self.instructions_first_rule
        if rule_id not in self.policy.by_id or seed.audience != "customer" or rule_id not in seed.rules:
            return None
        paragraphs = _paragraphs(seed.output)
        i = _body_start(paragraphs)
        end = next((j for j, p in enumerate(paragraphs) if p.startswith(self.policy.form.sign_off[0])), len(paragraphs))
        if end - i < 2:
            return None
        paragraphs[i], paragraphs[i + 1] = paragraphs[i + 1], paragraphs[i]
        return Edit(
            "instructions_first", rule_id, "\n\n".join(paragraphs), "moved the acknowledgement after the instructions"
        )

    def wrong_team(self, seed: Record) -> Edit | None:
        """The escalation a trigger requires, sent to another of the policy's teams."""
        for rule_id, team, pattern in self._stated_escalations(seed):
            if team == "supervisor":
                continue
            others = [t for t in self.policy.teams if not pattern.fullmatch(t.lower())]
            if not others:
                continue
            other = others[_h(seed, "team") % len(others)]
            out = re.sub(pattern.pattern, other, seed.output, flags=re.IGNORECASE)
            return Edit("wrong_team", rule_id, out, f"escalated to {other} instead of {team}")
        return None

    def claimed_done(self, seed: Record) -> Edit | None:
        """A promised action ("I'll arrange ...") claimed as already done, or a bank sentence claiming a review
        or an action that did not happen."""
        bank = self.banks.get("claimed_done")
        rule_id = bank.rule if bank is not None else None
        if rule_id not in self.policy.by_id:
            return None
        m = _FUTURE_ACTION.search(seed.output)
        if m is not None:
            out = seed.output[: m.start()] + f"I have already {_PAST[m.group(1)]}" + seed.output[m.end() :]
            return Edit("claimed_done", rule_id, out, f"{m.group()!r} -> already done")
        return self.inserted("claimed_done", seed)

    def dropped_sign_off(self, seed: Record) -> Edit | None:
        first = self.policy.form.sign_off[0]
        at = seed.output.rfind(first)
        if seed.audience != "customer" or at < 0:
            return None
        return Edit("dropped_sign_off", self.policy.form.rule, seed.output[:at].rstrip(), "removed the sign-off")


def contrastive_negatives(seeds: list[Record], policy: Policy, cfg: ContrastiveConfig) -> tuple[list[Record], Counter]:
    builder = ContrastiveBuilder(policy, cfg)
    ordered = sorted(seeds, key=lambda r: hashlib.sha256(f"contrastive:{r.id}".encode()).digest())
    records, counts, seen = [], Counter(), set()
    for seed in ordered[: cfg.max_seeds]:
        for edit in builder.edits(seed):
            record = Record(
                instruction=seed.instruction,
                input=seed.input,
                output=edit.output,
                source=Source.contrastive,
                parent_ids=[seed.id],
                policy_version=policy.policy_id,
                slice=seed.slice,
                rules=[edit.rule_id],
                audience=seed.audience,
                meta={
                    "edit": edit.kind,
                    "violates": edit.rule_id,
                    "detail": edit.detail,
                    **({"ref": seed.meta["ref"]} if "ref" in seed.meta else {}),
                },
            )
            if record.id in seen:
                continue
            seen.add(record.id)
            record.decide(
                STAGE,
                False,
                f"contrastive negative ({edit.kind}): violates {edit.rule_id}, "
                f"{edit.detail}; never a positive training example",
                rule_id=edit.rule_id,
            )
            records.append(record)
            counts[edit.kind] += 1
    return records, counts


def check_negatives(negatives: list[Record], seeds: list[Record], policy: Policy) -> dict:
    """How many negatives the policy checker catches: a finding with the violated rule id (caught), any finding
    at all (flagged); and how many parent seeds already had a finding for that rule (not a clean contrast)."""
    checker = PolicyChecker(policy)
    parents = {s.id: s for s in seeds}
    by_edit: dict[str, Counter] = defaultdict(Counter)
    for r in negatives:
        violated = r.rules[0]
        found = {f.rule_id for f in checker.check(r.instruction, r.input, r.output, r.audience)}
        parent = parents.get(r.parent_ids[0])
        before = (
            {f.rule_id for f in checker.check(parent.instruction, parent.input, parent.output, parent.audience)}
            if parent
            else set()
        )
        c = by_edit[r.meta.get("edit", "?")]
        c["n"] += 1
        c["caught"] += violated in found
        c["flagged"] += bool(found)
        c["seed_already_flagged"] += violated in before
    total = Counter()
    for c in by_edit.values():
        total.update(c)
    rate = total["caught"] / total["n"] if total["n"] else float("nan")
    return {
        "n": total["n"],
        "caught": total["caught"],
        "flagged": total["flagged"],
        "seed_already_flagged": total["seed_already_flagged"],
        "catch_rate": rate,
        "by_edit": {k: dict(v) | {"catch_rate": v["caught"] / v["n"]} for k, v in sorted(by_edit.items())},
    }
