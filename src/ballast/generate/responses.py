"""Weak-model responses: the plain mode answers each instruction with the same prompt the strong model sees."""

from __future__ import annotations

from ballast.backends.base import Decoding, Generation, Generator
from ballast.generate.calls import generate_all
from ballast.prompts import record_messages
from ballast.records import Record, Source


def answer(instructions: list[str], generator: Generator, decoding: Decoding, company: str) -> list[Generation]:
    prompts = [record_messages(Record(instruction=text, source=Source.self_instruct), company, with_response=False)
               for text in instructions]
    return generate_all(generator, prompts, decoding, label="weak model: responses")
