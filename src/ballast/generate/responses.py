"""Weak-model responses. The plain mode answers each instruction with the prompt the strong model is trained
on; the grounded mode adds the policy rules relevant to the instruction and the nearest human seeds as
worked examples (see grounding.py). Either way the record stores the plain instruction and input, so the
strong model learns to answer without the grounding in its prompt."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ballast.backends.base import Decoding, Generation, Generator
from ballast.backends.calls import CallLog, generate_all
from ballast.records import Record, Source
from ballast.templates.prompts import record_messages

if TYPE_CHECKING:  # the stage hands a grounding over; answering only calls it
    from ballast.generate.grounding import Grounding, PolicyGrounding


def answer(
    instructions: list[str], generator: Generator, decoding: Decoding, company: str, log: CallLog | None = None
) -> list[Generation]:
    prompts = [
        record_messages(Record(instruction=text, source=Source.self_instruct), company, with_response=False)
        for text in instructions
    ]
    return generate_all(generator, prompts, decoding, label="weak model: responses", log=log)


@dataclass
class Answer:
    generation: Generation
    grounding: Grounding | None = None


@dataclass
class Responder:
    """Answers (instruction, input) pairs with the weak model, plain or grounded."""

    generator: Generator
    decoding: Decoding
    company: str
    grounding: PolicyGrounding | None = None
    log: CallLog | None = None
    chunk: int = 8

    @property
    def mode(self) -> str:
        return "grounded" if self.grounding else "plain"

    def prompts(self, pairs: Sequence[tuple[str, str]]) -> tuple[list, list[Grounding | None]]:
        if self.grounding is None:
            return (
                [
                    record_messages(
                        Record(instruction=i, input=x, source=Source.self_instruct), self.company, with_response=False
                    )
                    for i, x in pairs
                ],
                [None] * len(pairs),
            )
        plans = self.grounding.plan(pairs)
        return [self.grounding.messages(i, x, p) for (i, x), p in zip(pairs, plans)], list(plans)

    def answer(self, pairs: Sequence[tuple[str, str]], label: str = "weak model: responses") -> list[Answer]:
        prompts, plans = self.prompts(pairs)
        gens = generate_all(
            self.generator, prompts, self.decoding, label=f"{label} ({self.mode})", chunk=self.chunk, log=self.log
        )
        return [Answer(g, p) for g, p in zip(gens, plans)]

    def provenance(self, ans: Answer) -> dict[str, str]:
        """What a record keeps about how its response was written."""
        meta = {"response_mode": self.mode}
        if ans.grounding is not None and self.grounding is not None:
            meta["response_template"] = f"{self.grounding.template.id}@{self.grounding.template.sha256[:12]}"
            meta["grounding_rules"] = ",".join(ans.grounding.rules)
            meta["grounding_examples"] = ",".join(s.meta.get("ref", s.id) for s in ans.grounding.examples)
        return meta

    def decoding_fields(self, prefix: str = "response") -> dict[str, float | int | str | None]:
        fields = {f"{prefix}.{k}": v for k, v in self.decoding.as_dict().items() if k != "seed"}
        fields[f"{prefix}.mode"] = self.mode
        return fields
