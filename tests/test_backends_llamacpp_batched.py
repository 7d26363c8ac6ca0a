"""Continuous batching in LlamaCppBackend: several prompts per llama_decode.

Bit-identity with a prompt run alone is not guaranteed in general (llama.cpp's kernels depend on the batch shape;
about 1 in 10 weak-model texts of 128 tokens differ, benchmarks/RESULTS.md), but for these short completions it
holds, and any slip in sequence ids, positions, seeds or sampling would break it. Determinism for a given prompt
list is guaranteed and checked."""

from __future__ import annotations

import pytest

from ballast.backends.base import Decoding
from ballast.backends.llamacpp import LlamaCppBackend

CHAT = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
PROMPTS = [
    "Once upon a time",
    CHAT,
    [{"role": "user", "content": "Write a short note about returning a lamp."}],
    "The three primary colours are",
    [{"role": "system", "content": "You are a support agent."}, {"role": "user", "content": "My order is late."}],
    "def fibonacci(n):",
    [{"role": "user", "content": "List two fruits."}],
    "In 1969, the first",
]
SAMPLED = Decoding(temperature=0.8, top_p=0.95, max_tokens=16, seed=11, repetition_penalty=1.1)


@pytest.fixture(scope="module")
def serial():
    return LlamaCppBackend("smollm2-135m-instruct", parallel=1)


@pytest.fixture(scope="module")
def batched():
    return LlamaCppBackend("smollm2-135m-instruct", parallel=8)


def fields(gen):
    return (gen.text, gen.error, gen.prompt_tokens, gen.completion_tokens, gen.finish_reason)


def test_a_prompt_alone_and_inside_a_batch_of_8_gives_the_same_text(batched):
    together = batched.generate(PROMPTS, SAMPLED)
    assert all(g.ok and g.completion_tokens > 0 for g in together)
    assert len({g.text for g in together}) == len(PROMPTS)
    for i in (0, 1, 4, 7):
        assert fields(batched.generate([PROMPTS[i]], SAMPLED)[0]) == fields(together[i])
    # The same list again (slots start empty every call) and in reverse order: the same text per prompt.
    assert [fields(g) for g in batched.generate(PROMPTS, SAMPLED)] == [fields(g) for g in together]
    assert [fields(g) for g in batched.generate(PROMPTS[::-1], SAMPLED)[::-1]] == [fields(g) for g in together]


def test_batched_equals_the_one_at_a_time_path_with_more_prompts_than_slots(serial):
    two_slots = LlamaCppBackend("smollm2-135m-instruct", parallel=2)
    decoding = Decoding(temperature=0.7, max_tokens=12, seed=5, stop=("\n",))
    one = serial.generate(PROMPTS[:5], decoding)
    assert [fields(g) for g in two_slots.generate(PROMPTS[:5], decoding)] == [fields(g) for g in one]
    greedy = Decoding(temperature=0.0, max_tokens=12, stop=(".",), repetition_penalty=1.1)
    one = serial.generate(PROMPTS[:5], greedy)
    assert any(g.finish_reason == "stop" for g in one) and any(g.finish_reason == "length" for g in one)
    assert [fields(g) for g in two_slots.generate(PROMPTS[:5], greedy)] == [fields(g) for g in one]


def test_parallel_1_is_the_create_completion_path(serial, monkeypatch):
    calls = []
    original = serial.llm.create_completion
    monkeypatch.setattr(serial.llm, "create_completion", lambda *a, **k: calls.append(1) or original(*a, **k))
    serial.generate(PROMPTS[:2], Decoding(max_tokens=2))
    assert len(calls) == 2
    with pytest.raises(ValueError):
        LlamaCppBackend("smollm2-135m-instruct", parallel=0)


def test_results_stream_once_each_in_finishing_order(batched):
    finished = []
    greedy = Decoding(temperature=0.0, max_tokens=16)
    # The capital answer ends on its end-of-turn token (7 tokens) before the story reaches max_tokens.
    gens = batched.generate(
        ["Once upon a time", CHAT, "In 1969, the first"], greedy, on_result=lambda i, g: finished.append((i, g))
    )
    assert [i for i, _ in finished][0] == 1 and sorted(i for i, _ in finished) == [0, 1, 2]
    assert [g for _, g in sorted(finished, key=lambda x: x[0])] == gens
    assert gens[1].finish_reason == "stop" and gens[1].completion_tokens < greedy.max_tokens
    assert gens[0].finish_reason == "length" and gens[0].completion_tokens == greedy.max_tokens


def test_an_over_long_prompt_fails_alone_and_the_others_succeed(batched, serial):
    prompts = [PROMPTS[0], "word " * 5000, CHAT]
    seen = []
    gens = batched.generate(prompts, SAMPLED, on_result=lambda i, g: seen.append(i))
    assert sorted(seen) == [0, 1, 2]
    assert not gens[1].ok and gens[1].text is None and "context" in gens[1].error.lower()
    assert gens[0].ok and gens[2].ok
    assert gens[1].error == serial.generate([prompts[1]], SAMPLED)[0].error
