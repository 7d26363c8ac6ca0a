"""The policy as data: schema, loading and the compiled patterns every check reads."""

from __future__ import annotations

import hashlib
import re
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ballast.errors import InputError
from ballast.yamlio import line_of, load_model, load_yaml, validate

RULE_ID = r"^[A-Z][0-9]+$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_patterns(patterns: list[str]) -> list[str]:
    for p in patterns:
        try:
            re.compile(p)
        except re.error as exc:
            raise ValueError(f"pattern {p!r} is not a valid regular expression: {exc}") from None
    return patterns


class Fact(_Strict):
    """A number a reply must state correctly, with the words that mark a sentence as about it."""

    id: str
    value: float
    unit: Literal["days", "business_days", "usd", "months", "years"]
    cues: list[str] = Field(min_length=1)


class Elapsed(_Strict):
    """How long ago the input dates an event ("Delivered 33 days ago"), held against a fact's value."""

    event: str  # regex naming the event in the input
    fact: str
    member_fact: str | None = None  # the fact that applies when the input marks a member (Policy.member_marker)
    past: bool = True  # the case holds once the time is past the value (False: while it is not yet)

    @field_validator("event")
    @classmethod
    def _event(cls, v: str) -> str:
        return _check_patterns([v])[0]


class Case(_Strict):
    """A situation, read from the input, in which a reply may not take some stances (Policy.stances): a
    refund promised on a final-sale item, a parcel called lost before the wait is over. Every condition given
    must hold."""

    forbids: list[str] = Field(min_length=1)
    triggered: bool = False  # the rule's own triggers fire in the instruction or input
    input_patterns: list[str] = []  # any of them in the input
    unless_input: list[str] = []  # an exception the rule names: the case does not hold when any is in the input
    elapsed: Elapsed | None = None
    amount_over: str | None = None  # fact id: the largest amount in the input or reply exceeds it
    unless_escalated: bool = False  # a reply that names the rule's escalate_to is out of the case

    _patterns = field_validator("input_patterns", "unless_input")(_check_patterns)

    @model_validator(mode="after")
    def _has_condition(self) -> Case:
        if not (self.triggered or self.input_patterns or self.elapsed or self.amount_over):
            raise ValueError("a case needs a condition: triggered, input_patterns, elapsed or amount_over")
        return self


class Rule(_Strict):
    id: str = Field(pattern=RULE_ID)
    area: str
    title: str
    text: str
    facts: list[Fact] = []
    triggers: list[str] = []
    forbidden_patterns: list[str] = []
    required_terms: list[str] = []
    escalate_to: str | None = None
    cases: list[Case] = []
    # A customer reply that uses any of these words must use one in its first sentence (acknowledge first).
    opening_terms: list[str] = []
    # Dates, durations and identifiers that a reply states about the order must come from the input.
    grounded: bool = False

    _patterns = field_validator("triggers", "forbidden_patterns")(_check_patterns)


class Form(_Strict):
    rule: str = Field(pattern=RULE_ID)
    sign_off: list[str] = Field(min_length=1)


class Register(_Strict):
    rule: str = Field(pattern=RULE_ID)
    banned_phrases: list[str]
    casual_markers: list[str] = []
    max_exclamation_marks: int = Field(ge=0)
    emojis_allowed: bool


class ContrastiveBank(_Strict):
    """One kind of off-policy sentence for the contrastive edits, in (customer-facing, agent-facing) wordings."""

    rule: str | None = Field(None, pattern=RULE_ID)  # the rule the sentence breaks
    customer: list[str] = Field(min_length=1)
    agent: list[str] = Field(min_length=1)
    seed_rules: list[str] = []  # a seed exercising one of these (besides `rule`) invites the mistake
    seed_slices: list[str] = []  # so does a seed in one of these slices
    reply_words: list[str] = []  # and, when given, its reply must contain one of these words


class ContrastiveData(_Strict):
    """What the contrastive edits need to know about a policy beyond its rules: phrase banks, rival names and the
    rules some edits break. Usually its own file, named in policy.yaml (`contrastive: phrase_banks.yaml`)."""

    rivals: list[str] = []
    instructions_first_rule: str | None = None  # acknowledgement moved after the instructions
    promise_rule: str | None = None  # a promised delivery date
    identity_rule: str | None = None  # a skipped identity check
    banks: dict[str, ContrastiveBank] = {}


class Policy(_Strict):
    policy_id: str
    version: str
    company: str
    audience: str
    areas: dict[str, str]
    lookup_tools: list[str]
    forms: list[str]
    teams: list[str]
    form: Form
    # `register` would shadow ABCMeta.register on the model class, hence the alias.
    register_: Register = Field(alias="register")
    rules: list[Rule] = Field(min_length=1)
    # What a reply does, by its phrasing (regexes): "accept_return", "refund_promise"; rules' cases forbid them.
    stances: dict[str, list[str]] = {}
    member_marker: str | None = None  # marks a member in the input, e.g. "Harbor Plus"
    contrastive: ContrastiveData = ContrastiveData()
    # The slices seeds are stratified and evaluated by (empty: any name), and the one of benign requests the
    # model must answer rather than refuse (its refusal rate is a metric and a gate).
    slices: list[str] = []
    benign_slice: str | None = None
    sha256: str = ""  # of the policy file (and of the contrastive file it names); filled by load_policy

    @model_validator(mode="after")
    def _consistent(self) -> Policy:
        seen: set[str] = set()
        for i, rule in enumerate(self.rules):
            if rule.id in seen:
                raise ValueError(f"rules[{i}]: duplicate rule id {rule.id}")
            seen.add(rule.id)
            if self.areas.get(rule.id[0]) != rule.area:
                raise ValueError(
                    f"rules[{i}] ({rule.id}): area {rule.area!r} does not match the area "
                    f"of prefix {rule.id[0]!r}, expected {self.areas.get(rule.id[0])!r}"
                )
            if rule.escalate_to and rule.escalate_to not in (*self.teams, "supervisor"):
                raise ValueError(
                    f"rules[{i}] ({rule.id}): escalate_to {rule.escalate_to!r} is not one of "
                    f"the teams {self.teams} or 'supervisor'"
                )
        facts = {f.id for r in self.rules for f in r.facts}
        for name, patterns in self.stances.items():
            try:
                _check_patterns(patterns)
            except ValueError as exc:
                raise ValueError(f"stances.{name}: {exc}") from None
        for i, rule in enumerate(self.rules):
            for j, case in enumerate(rule.cases):
                where = f"rules[{i}] ({rule.id}).cases[{j}]"
                unknown = [s for s in case.forbids if s not in self.stances]
                if unknown:
                    raise ValueError(
                        f"{where}: stances {unknown} are not defined in stances ({', '.join(self.stances) or 'none'})"
                    )
                refs = [case.amount_over] + ([case.elapsed.fact, case.elapsed.member_fact] if case.elapsed else [])
                missing = [f for f in refs if f and f not in facts]
                if missing:
                    raise ValueError(f"{where}: fact ids {missing} are not facts of any rule")
                if case.triggered and not rule.triggers:
                    raise ValueError(f"{where}: triggered is set but the rule has no triggers")
                if case.unless_escalated and not rule.escalate_to:
                    raise ValueError(f"{where}: unless_escalated is set but the rule has no escalate_to")
                if case.elapsed and case.elapsed.member_fact and not self.member_marker:
                    raise ValueError(f"{where}: member_fact needs member_marker at the top of the policy")
        if self.benign_slice is not None and self.slices and self.benign_slice not in self.slices:
            raise ValueError(f"benign_slice: {self.benign_slice!r} is not one of the slices {self.slices}")
        for name, ref in (("form.rule", self.form.rule), ("register.rule", self.register_.rule)):
            if ref not in seen:
                raise ValueError(f"{name}: {ref} is not a rule id in rules")
        return self

    @cached_property
    def by_id(self) -> dict[str, Rule]:
        return {r.id: r for r in self.rules}

    @property
    def rule_ids(self) -> list[str]:
        return [r.id for r in self.rules]

    @property
    def sign_off(self) -> str:
        return "\n".join(self.form.sign_off)

    def rule(self, rule_id: str) -> Rule:
        try:
            return self.by_id[rule_id]
        except KeyError:
            raise KeyError(f"unknown rule id {rule_id!r}; the policy has {', '.join(self.rule_ids)}") from None


def load_policy(path: str | Path) -> Policy:
    """Load and validate a policy YAML; a malformed file raises InputError naming file, line and field."""
    path = Path(path)
    data, node = load_yaml(path)
    digest = hashlib.sha256(path.read_bytes())
    if isinstance(data, dict) and isinstance(data.get("contrastive"), str):  # a file beside the policy
        extra = path.parent / data["contrastive"]
        if not extra.is_file():
            raise InputError(
                f"contrastive file {extra} does not exist",
                file=path,
                line=line_of(node, ("contrastive",)),
                field="contrastive",
            )
        data["contrastive"] = load_model(ContrastiveData, extra).model_dump()
        digest.update(b"\0" + extra.read_bytes())
    policy = validate(Policy, data, file=path, node=node)
    return policy.model_copy(update={"sha256": digest.hexdigest()})


def rule_ids_in_markdown(text: str) -> list[str]:
    """Rule ids declared in a prose policy as bold headings such as `**R1 Return window.**`."""
    return re.findall(r"\*\*([A-Z][0-9]+)\s+[^*]+\*\*", text)
