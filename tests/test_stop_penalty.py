"""Generation's repetition penalty must not lower the stop token: every chat prompt holds <end_of_turn> (it closes
the user's turn), so transformers' plain penalty lowers the logit of the token a reply ends on at every step."""

from __future__ import annotations

import pytest
import torch
from transformers import RepetitionPenaltyLogitsProcessor

from ballast.backends.base import Decoding
from ballast.backends.transformers_hf import TransformersBackend
from ballast.templates.prompts import record_messages

COMPANY = "Harbor Home Goods"
PENALTY = 1.15  # the demo's evaluate.decoding
pytestmark = pytest.mark.slow  # the real model, one forward and one generated token


@pytest.fixture(scope="module")
def backend():
    return TransformersBackend(batch_size=1)


def test_the_penalty_spares_the_stop_tokens_and_still_penalises_the_rest(backend, seeds, monkeypatch):
    record = seeds[0]
    # A finished reply: the next token should be the end of turn.
    text = (
        backend.tokenizer.apply_chat_template(
            record_messages(record, COMPANY, with_response=False), tokenize=False, add_generation_prompt=True
        )
        + record.output
    )
    text = text.removeprefix(backend.tokenizer.bos_token)  # a plain-text prompt gets its BOS from render()
    ids = backend.encode(backend.render(text))
    end = backend.tokenizer.convert_tokens_to_ids("<end_of_turn>")
    assert end in ids and end in backend.stop_ids  # the prompt holds the stop token
    with torch.inference_mode():
        raw = backend.lm(input_ids=torch.tensor([ids], device=backend.lm.device)).logits[0, -1].float()

    scores = []
    generate = backend.lm.generate

    def spy(**kwargs):  # the scores generation picked its first token from, after every logits processor
        out = generate(**kwargs, output_scores=True, return_dict_in_generate=True)
        scores.append(out.scores[0][0].float())
        return out.sequences

    monkeypatch.setattr(backend.lm, "generate", spy)
    backend.generate([text], Decoding(temperature=0.0, max_tokens=1, repetition_penalty=PENALTY))
    processed = scores[0]

    tolerance = 0.05 + 0.01 * raw.abs().max().item()  # the cached first step against a plain forward, in bf16
    # The stop tokens keep their logits; transformers' plain penalty would have lowered <end_of_turn>'s.
    for stop in backend.stop_ids:
        assert processed[stop].item() == pytest.approx(raw[stop].item(), abs=tolerance)
    plain = RepetitionPenaltyLogitsProcessor(PENALTY)(torch.tensor([ids]), raw[None].clone())[0]
    assert plain[end] < raw[end] - 2 * tolerance
    # Every other token of the context is still penalised, and unseen tokens are untouched.
    seen = [t for t in set(ids) if t not in backend.stop_ids]
    assert torch.allclose(processed[seen], plain[seen], atol=tolerance)
    unseen = torch.ones_like(raw, dtype=torch.bool)
    unseen[list(set(ids))] = False
    assert torch.allclose(processed[unseen][:1000], raw[unseen][:1000], atol=tolerance)
