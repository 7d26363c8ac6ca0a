"""llama.cpp in process: the embedded default for the weak model and the strong base GGUF files."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from functools import cached_property

import numpy as np

from ballast.backends.base import Decoding, Generation, Prompt, TokenScores, call_seed
from ballast.backends.models import chat_template, resolve


class LlamaCppBackend:
    """Renders chat prompts with the model's own template, so training, generation and scoring agree."""

    def __init__(self, model: str, *, n_ctx: int = 2048, n_threads: int | None = None) -> None:
        self.path, self.model = resolve(model)
        self._template = chat_template(model)
        self.n_ctx = n_ctx
        self.n_threads = n_threads or os.cpu_count() or 1

    def _load(self, logits_all: bool):  # noqa: ANN202 - llama_cpp types are optional at import time
        from llama_cpp import Llama

        return Llama(
            model_path=str(self.path), n_ctx=self.n_ctx, n_threads=self.n_threads, logits_all=logits_all, verbose=False
        )

    @cached_property
    def llm(self):  # noqa: ANN201
        return self._load(logits_all=False)

    @cached_property
    def _scorer(self):  # noqa: ANN202
        # Scoring needs logits at every position; a separate context keeps generation lean.
        return self._load(logits_all=True)

    @cached_property
    def chat_template(self) -> str:
        template = self.llm.metadata.get("tokenizer.chat_template") or self._template
        if not template:
            raise ValueError(f"{self.model.name} has no chat template in its GGUF metadata; pass raw text prompts")
        return template

    def render(self, prompt: Prompt, *, add_generation_prompt: bool = True) -> str:
        """The exact text the model sees for a prompt (chat messages through the model's template)."""
        if isinstance(prompt, str):
            return prompt
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        vocab = self.llm
        formatter = Jinja2ChatFormatter(
            template=self.chat_template,
            eos_token=vocab.detokenize([vocab.token_eos()]).decode("utf-8", "replace"),
            bos_token=vocab.detokenize([vocab.token_bos()]).decode("utf-8", "replace"),
            add_generation_prompt=add_generation_prompt,
        )
        return formatter(messages=list(prompt)).prompt

    def generate(
        self, prompts: Sequence[Prompt], decoding: Decoding, on_result: Callable[[int, Generation], None] | None = None
    ) -> list[Generation]:
        """`on_result(i, generation)` is called as each prompt finishes, so callers can stream results."""
        results = []
        for i, prompt in enumerate(prompts):
            results.append(self._generate_one(prompt, decoding))
            if on_result is not None:
                on_result(i, results[-1])
        return results

    def _generate_one(self, prompt: Prompt, decoding: Decoding) -> Generation:
        text = self.render(prompt)
        try:
            out = self.llm.create_completion(
                text,
                max_tokens=decoding.max_tokens,
                temperature=decoding.temperature,
                top_p=decoding.top_p,
                stop=list(decoding.stop) or None,
                repeat_penalty=decoding.repetition_penalty,
                seed=call_seed(text, decoding.seed),
            )
        except (ValueError, RuntimeError) as exc:  # e.g. prompt longer than the context
            return Generation(text=None, error=f"{type(exc).__name__}: {exc}")
        choice, usage = out["choices"][0], out["usage"]
        return Generation(
            text=choice["text"],
            prompt_tokens=usage["prompt_tokens"],
            completion_tokens=usage["completion_tokens"],
            finish_reason=choice["finish_reason"],
        )

    def score(self, prompts: Sequence[Prompt], continuations: Sequence[str]) -> list[TokenScores]:
        llm = self._scorer
        results = []
        for prompt, continuation in zip(prompts, continuations, strict=True):
            head = llm.tokenize(self.render(prompt).encode("utf-8"), add_bos=True, special=True)
            full = llm.tokenize((self.render(prompt) + continuation).encode("utf-8"), add_bos=True, special=True)
            # Tokenisation can merge across the boundary; score from the first position that differs.
            start = next((i for i, (a, b) in enumerate(zip(head, full)) if a != b), len(head))
            if len(full) > self.n_ctx:
                raise ValueError(f"prompt + continuation is {len(full)} tokens, over n_ctx={self.n_ctx}")
            llm.reset()
            llm.eval(full)
            logits = np.asarray(llm.scores[start - 1 : len(full) - 1], dtype=np.float64)
            logz = np.logaddexp.reduce(logits, axis=1)
            picked = logits[np.arange(len(logits)), full[start:]]
            results.append(TokenScores(logprobs=(picked - logz).tolist()))
        return results
