"""Quality scores from the weak model: perplexity and Instruction-Following Difficulty (IFD).

IFD (Li et al., Cherry LLM; Superfiltering) is PPL(response | instruction) / PPL(response alone): near or above 1
the instruction does not help the model predict the response (a reply unrelated to its request, or boilerplate),
well below 1 the response follows from the instruction. Perplexity of the response given the instruction says how
fluent and expected the reply is to the weak model.

Prompt format: the conditioned prompt is the record's chat prompt (system + user turn, prompts.record_messages)
rendered with the weak model's chat template, generation header included -- the text the weak model answered in
plain response mode and the prompt the strong model is trained on. "Alone" is the same chat template with no turns
before the assistant header (for SmolLM2 `<|im_start|>assistant\\n`), so both losses cover exactly the same response
tokens, the first included (Superfiltering scores raw GPT-2 text and so never scores the response's first token).
The response is tokenised once, on its own, and appended to both prefixes, so a merge across the boundary cannot
make the two losses read different tokens.

Speed: sequences (conditioned and alone, of all records) are sorted by length and run in padded batches, and the
output layer runs only at response positions (ballast.backends.transformers_hf.label_logprobs): the full-vocabulary
logits of every prompt token, which the reference computes and throws away, are never made.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.nn.utils.rnn import pad_sequence
from transformers import PreTrainedTokenizerBase

from ballast.backends.transformers_hf import label_logprobs, load_causal_lm
from ballast.records import Record
from ballast.templates.prompts import record_messages


def generation_header(tokenizer: PreTrainedTokenizerBase) -> str:
    """The text the chat template puts before an assistant reply, with no turn before it: the prefix of the
    instruction-free pass (transformers will not render an empty conversation, so it is the difference between
    a conversation rendered with and without the generation prompt)."""
    probe = [{"role": "user", "content": "x"}]
    bare = tokenizer.apply_chat_template(probe, tokenize=False)
    with_header = tokenizer.apply_chat_template(probe, tokenize=False, add_generation_prompt=True)
    if with_header == bare or not with_header.startswith(bare):
        raise ValueError("the chat template writes no generation prompt after the last turn; IFD needs one")
    return with_header[len(bare) :]


@dataclass(frozen=True)
class ScoringInput:
    """One record's token ids: the conditioned prefix, the instruction-free prefix, and the response."""

    prompt: list[int]
    alone: list[int]
    response: list[int]


@dataclass
class ScoreSummary:
    scored: int = 0
    truncated: int = 0  # response cut to fit max_len; the scores cover its first tokens
    unscorable: int = 0  # empty response, or a prompt that fills max_len: no scores written


class QualityScorer:
    """Writes `ifd`, `ppl`, `loss_cond` and `loss_uncond` into `record.scores`."""

    def __init__(
        self, company: str, model: str = "smollm2-135m-instruct", *, batch_size: int = 16, max_len: int = 1024
    ) -> None:
        self.company, self.batch_size, self.max_len = company, batch_size, max_len
        # float32 everywhere: scores must not depend on whether the device has bf16
        self.lm, self.tokenizer, self.model = load_causal_lm(model, dtype=torch.float32)
        self.lm.eval()
        self.alone_text = generation_header(self.tokenizer)
        self._alone = self._encode(self.alone_text)

    def _encode(self, text: str) -> list[int]:
        # The chat template writes every special token itself; llama.cpp adds none to SmolLM2's prompt either.
        return self.tokenizer(text, add_special_tokens=False).input_ids

    def prepare(self, record: Record) -> ScoringInput:
        prompt = self.tokenizer.apply_chat_template(
            record_messages(record, self.company, with_response=False), tokenize=False, add_generation_prompt=True
        )
        return ScoringInput(self._encode(prompt), self._alone, self._encode(record.output))

    def mean_nll(self, sequences: Sequence[tuple[list[int], int]]) -> list[float]:
        """Mean negative log-likelihood of the tokens from `start` on, for each (ids, start), in order."""
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i][0]))
        out = [math.nan] * len(sequences)
        device = self.lm.device
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        for b in range(0, len(order), self.batch_size):
            batch = order[b : b + self.batch_size]
            rows = [torch.tensor(sequences[i][0]) for i in batch]
            ids = pad_sequence(rows, batch_first=True, padding_value=pad).to(device)
            mask = pad_sequence([torch.ones(len(r), dtype=torch.long) for r in rows], batch_first=True).to(device)
            labels = pad_sequence(
                [torch.tensor([-100] * sequences[i][1] + sequences[i][0][sequences[i][1] :]) for i in batch],
                batch_first=True,
                padding_value=-100,
            ).to(device)
            with torch.inference_mode():
                logprobs = label_logprobs(self.lm, ids, mask, labels)
            counts = (labels[:, 1:] != -100).sum(1)
            for row, i in enumerate(batch):
                out[i] = float(-logprobs[row].sum() / counts[row])
        return out

    def score(self, records: Sequence[Record]) -> ScoreSummary:
        summary = ScoreSummary()
        sequences: list[tuple[list[int], int]] = []
        scored: list[Record] = []
        for record in records:
            item = self.prepare(record)
            room = self.max_len - len(item.prompt)
            if not item.response or room < 1:
                summary.unscorable += 1
                continue
            response = item.response[:room]
            summary.truncated += len(response) < len(item.response)
            sequences += [(item.prompt + response, len(item.prompt)), (item.alone + response, len(item.alone))]
            scored.append(record)
        losses = self.mean_nll(sequences)
        for k, record in enumerate(scored):
            cond, uncond = losses[2 * k], losses[2 * k + 1]
            record.scores.update(loss_cond=cond, loss_uncond=uncond, ppl=math.exp(cond), ifd=math.exp(cond - uncond))
        summary.scored = len(scored)
        return summary
