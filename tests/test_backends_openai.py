from __future__ import annotations

import time

from ballast.backends.base import Decoding, Generator
from ballast.backends.openai_http import OpenAIBackend

CHAT = [{"role": "user", "content": "Name one colour. One word."}]


def test_real_server_chat_and_completion_concurrently(llama_server):
    backend = OpenAIBackend(
        llama_server["base_url"], llama_server["model"], concurrency=4, model_sha256=llama_server["sha256"]
    )
    assert isinstance(backend, Generator)
    prompts = [CHAT, "The capital of France is", CHAT, "One, two, three,"] * 2
    gens = backend.generate(prompts, Decoding(temperature=0.0, max_tokens=8, seed=3))
    assert len(gens) == len(prompts)
    assert all(g.ok and g.text and g.completion_tokens > 0 and g.attempts == 1 for g in gens), gens
    # Results come back in prompt order: identical prompts at temperature 0 give identical text.
    assert gens[0].text == gens[2].text == gens[4].text
    assert gens[1].text == gens[5].text
    assert backend.model.sha256 == llama_server["sha256"]


def test_unreachable_server_is_retried_then_recorded(llama_server):
    dead = OpenAIBackend("http://127.0.0.1:9/v1", "x", max_retries=2, backoff_s=0.01, timeout_s=2)
    gens = dead.generate([CHAT, CHAT], Decoding(max_tokens=4))
    assert all(not g.ok and g.text is None and g.attempts == 3 for g in gens)
    assert all("ConnectError" in g.error for g in gens)


def test_client_error_is_not_retried(llama_server):
    wrong_path = OpenAIBackend(llama_server["base_url"].replace("/v1", "/nope"), "x", max_retries=3, backoff_s=0.01)
    gen = wrong_path.generate([CHAT], Decoding(max_tokens=4))[0]
    assert not gen.ok and gen.attempts == 1 and gen.error.startswith("HTTP 404")


def test_timeout_is_a_recorded_failure(llama_server):
    slow = OpenAIBackend(
        llama_server["base_url"], llama_server["model"], timeout_s=0.001, max_retries=1, backoff_s=0.01
    )
    start = time.monotonic()
    gen = slow.generate(["Write a long story about the sea."], Decoding(max_tokens=200))[0]
    assert not gen.ok and gen.attempts == 2 and "Timeout" in gen.error
    assert time.monotonic() - start < 30
