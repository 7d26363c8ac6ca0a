from __future__ import annotations

from ballast.backends.base import Decoding, Generator, Scorer

CHAT = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]


def test_weak_model_generates_deterministically(weak):
    assert isinstance(weak, Generator) and isinstance(weak, Scorer)
    assert weak.model.sha256 == "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    decoding = Decoding(temperature=0.8, max_tokens=24, seed=7)
    first = weak.generate([CHAT, "Once upon a time"], decoding)
    again = weak.generate(["Once upon a time", CHAT], decoding)
    assert all(g.ok and g.completion_tokens > 0 for g in first)
    assert "paris" in first[0].text.lower()
    # A prompt's output depends on (prompt, seed), not on its position in the batch.
    assert first[0].text == again[1].text and first[1].text == again[0].text
    other_seed = weak.generate(["Once upon a time"] * 1, Decoding(temperature=0.8, max_tokens=24, seed=8))
    assert other_seed[0].text != first[1].text


def test_weak_model_renders_its_own_chat_template(weak):
    text = weak.render(CHAT)
    assert text.startswith("<|im_start|>") and text.endswith("<|im_start|>assistant\n")


def test_scores_prefer_the_sensible_continuation(weak):
    good, bad = weak.score([CHAT, CHAT], ["The capital of France is Paris.", "Banana purple seventeen the of."])
    assert len(good.logprobs) >= 5 and all(lp <= 0 for lp in good.logprobs + bad.logprobs)
    assert good.mean_nll < 1.5 < 5 < bad.mean_nll


def test_an_over_long_prompt_is_a_recorded_failure_not_a_crash(weak):
    gen = weak.generate(["word " * 5000], Decoding(max_tokens=4))[0]
    assert not gen.ok and gen.text is None and "context" in gen.error.lower()


def test_strong_base_uses_ballast_gemma_template(strong_base):
    assert strong_base.model.sha256 == "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
    text = strong_base.render([{"role": "system", "content": "Be brief."}, *CHAT])
    assert text.endswith("<start_of_turn>model\n")
    assert "<start_of_turn>user\nBe brief.\n\nWhat is the capital" in text
    gen = strong_base.generate(["The capital of France is"], Decoding(temperature=0.0, max_tokens=8))[0]
    assert gen.ok and gen.completion_tokens > 0
    good, bad = strong_base.score([CHAT, CHAT], ["Paris.", "Banana seventeen."])
    assert good.mean_nll < bad.mean_nll
