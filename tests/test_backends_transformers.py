from __future__ import annotations

import json

import pytest

from ballast.backends.base import Decoding, Generator, Scorer
from ballast.backends.transformers_hf import TransformersBackend, hf_folder

pytestmark = pytest.mark.slow  # real generation on CPU: about a minute on 2 cores
GEMMA_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is the capital of France? Answer in one word."},
]
CONVERSATION = [
    *CHAT,
    {"role": "assistant", "content": "Paris."},
    {"role": "user", "content": "  And of Italy?  "},
    {"role": "assistant", "content": "Rome."},
]


@pytest.fixture(scope="module")
def hf():
    return TransformersBackend(batch_size=2)


def test_the_gguf_is_converted_once_into_a_plain_transformers_folder():
    folder, ref = hf_folder("gemma3-270m")
    assert folder.name == f"gemma3-270m-{GEMMA_SHA256[:12]}" and ref.sha256 == GEMMA_SHA256
    assert hf_folder("gemma3-270m")[0] == folder
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "gemma3_text"
    assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()


@pytest.mark.parametrize(
    "messages, add_generation_prompt", [(CHAT, True), (CONVERSATION, False), (CONVERSATION[:4], True)]
)
def test_renders_and_tokenises_exactly_as_llama_cpp(hf, strong_base, messages, add_generation_prompt):
    text = hf.render(messages, add_generation_prompt=add_generation_prompt)
    llama_text = strong_base.render(messages, add_generation_prompt=add_generation_prompt)
    # llama.cpp adds BOS at tokenisation; transformers renders it as text.
    assert text == hf.tokenizer.bos_token + llama_text
    assert hf.encode(text) == strong_base.llm.tokenize(llama_text.encode("utf-8"), add_bos=True, special=True)


def test_raw_prompts_get_the_same_tokens_as_llama_cpp(hf, strong_base):
    prompt = "Once upon a time"
    assert hf.encode(hf.render(prompt)) == strong_base.llm.tokenize(prompt.encode("utf-8"), add_bos=True)


def test_generates_in_batches_as_it_would_one_by_one(hf):
    assert isinstance(hf, Generator) and isinstance(hf, Scorer)
    assert hf.model.name == "gemma3-270m" and hf.model.sha256 == GEMMA_SHA256
    prompts = ["The capital of France is", CHAT, "Once upon a time, in a small village by the sea,"]
    greedy = Decoding(temperature=0.0, max_tokens=8)
    together = hf.generate(prompts, greedy)
    assert all(g.ok and g.completion_tokens == 8 and g.finish_reason == "length" for g in together)
    assert together[1].prompt_tokens == len(hf.encode(hf.render(CHAT)))
    # Left padding beside longer prompts changes nothing.
    assert [hf.generate([p], greedy)[0].text for p in prompts] == [g.text for g in together]


def test_samples_depend_on_prompt_and_seed_not_on_the_batch(hf):
    sampled = Decoding(temperature=1.0, max_tokens=8, seed=7)
    first = hf.generate(["Once upon a time", CHAT], sampled)
    again = hf.generate([CHAT, "The weather today", "Once upon a time"], sampled)
    assert first[0].text == again[2].text and first[1].text == again[0].text
    other_seed = hf.generate(["Once upon a time"], Decoding(temperature=1.0, max_tokens=8, seed=8))[0]
    assert other_seed.text != first[0].text


def test_stop_strings_end_the_text(hf):
    gen = hf.generate(
        ["The capital of France is Paris. The capital of Italy is"],
        Decoding(temperature=0.0, max_tokens=24, stop=(".",)),
    )[0]
    assert gen.ok and gen.finish_reason == "stop" and "." not in gen.text and gen.text.strip()


def test_an_over_long_prompt_is_a_recorded_failure_not_a_crash(hf):
    long, short = hf.generate(["word " * 5000, "Hello"], Decoding(temperature=0.0, max_tokens=4))
    assert not long.ok and long.text is None and "context" in long.error
    assert short.ok


def test_scores_agree_with_llama_cpp(hf, strong_base):
    continuations = ["Paris.", "Banana seventeen.", " Paris is the capital of France."]
    prompts = [CHAT, CHAT, "Tell me:"]
    ours, theirs = hf.score(prompts, continuations), strong_base.score(prompts, continuations)
    assert ours[0].mean_nll < ours[1].mean_nll
    for a, b in zip(ours, theirs, strict=True):
        # Same model and tokens; llama.cpp computes on the quantised weights, we on their dequantised copy.
        assert len(a.logprobs) == len(b.logprobs) and all(lp <= 0 for lp in a.logprobs)
        assert a.mean_nll == pytest.approx(b.mean_nll, abs=0.25)
