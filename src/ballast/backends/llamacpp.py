"""llama.cpp in process: the embedded default for the weak model and the strong base GGUF files.

Generation decodes up to `parallel` prompts at once (continuous batching): one llama_batch holds the tokens
of every running sequence under its own seq_id, one llama_decode per step advances them all in a KV cache
split into one stream per sequence, and each sequence samples from its own logits with its own sampler chain,
seeded from `call_seed(rendered prompt, decoding.seed)`. When a sequence finishes its result is handed to
`on_result` at once and the next pending prompt starts in its slot.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from ballast.backends.base import Decoding, Generation, Prompt, TokenScores, call_seed
from ballast.backends.models import chat_template, resolve

# One at a time unless the recipe asks (models.parallel): on the 2-core CPU batching gains nothing for the weak
# model and 1.2-1.8x for the strong base, and a prompt's text can change with its batch (3/32 weak, 28/32 strong
# texts of 128 tokens; benchmarks/RESULTS.md, "Batched in-process generation").
DEFAULT_PARALLEL = 1


class LlamaCppBackend:
    """Renders chat prompts with the model's own template, so training, generation and scoring agree."""

    def __init__(
        self, model: str, *, n_ctx: int = 2048, n_threads: int | None = None, parallel: int = DEFAULT_PARALLEL
    ) -> None:
        """`n_ctx` is each sequence's context (prompt + completion); `parallel` how many prompts decode at once
        (1: one at a time through `Llama.create_completion`, the path before batching)."""
        if parallel < 1:
            raise ValueError(f"parallel must be at least 1, got {parallel}")
        self.path, self.model = resolve(model)
        self._template = chat_template(model)
        self.n_ctx = n_ctx
        self.n_threads = n_threads or os.cpu_count() or 1
        self.parallel = parallel

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
        """One Generation per prompt, in order. `on_result(i, generation)` is called as each prompt finishes
        (in finishing order, which with `parallel` > 1 is not prompt order), so callers can stream results.

        With `parallel` > 1 each prompt samples with its own chain seeded from `call_seed(rendered prompt,
        decoding.seed)`, in its own KV stream, so the other prompts of its batch never enter its sampling or its
        attention. Its text is still not guaranteed bit-identical to the prompt run alone (or through the
        parallel=1 path): llama.cpp's CPU matrix kernels depend on the batch shape (one column or many, how a
        prefill is cut into micro-batches), the logits move in the last bits, and at temperature > 0 a near-tie
        can flip a token. Measured over 32 support prompts x 128 tokens at temperature 0.7 (benchmarks/RESULTS.md):
        29/32 texts of the weak model equal alone and in a batch of 8; the strong base, a base model with flat
        distributions, diverges far more often. What is guaranteed: the output for a given prompt list is
        deterministic. Slots fill in prompt order, every call starts from empty slots, so which prompts share
        each step and every batch shape is a function of the list. Within a call, like create_completion, a slot
        keeps its last sequence's cells and the next prompt in it decodes only what differs (the shared system
        prompt is not decoded again).
        """
        if self.parallel == 1:
            return self._generate_serial(prompts, decoding, on_result)
        return self._generate_batched(prompts, decoding, on_result)

    def _generate_serial(
        self, prompts: Sequence[Prompt], decoding: Decoding, on_result: Callable[[int, Generation], None] | None
    ) -> list[Generation]:
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

    # --- continuous batching -------------------------------------------------------------------------------

    @cached_property
    def _batched(self) -> _BatchedContext:
        return _BatchedContext(self.llm, n_ctx=self.n_ctx, parallel=self.parallel, n_threads=self.n_threads)

    def _prompt_tokens(self, text: str) -> list[int]:
        """The tokens `Llama.create_completion` feeds for a text prompt (BOS/CLS and EOS/SEP as it adds them)."""
        llm = self.llm
        model = llm._model
        cls_id, sep_id = model.token_cls(), model.token_sep()
        bos = [cls_id if cls_id != -1 else llm.token_bos()]
        if not model.add_bos_token() or bos[:1] == [-1]:
            bos = []
        eos = [sep_id if sep_id != -1 else llm.token_eos()]
        if not model.add_eos_token() and sep_id == -1:
            eos = []
        body = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True) if text != "" else []
        return bos + body + eos

    def _generate_batched(
        self, prompts: Sequence[Prompt], decoding: Decoding, on_result: Callable[[int, Generation], None] | None
    ) -> list[Generation]:
        import llama_cpp

        bc = self._batched
        llm = self.llm
        vocab = llm._model.vocab
        results: list[Generation | None] = [None] * len(prompts)
        stops = [s.encode("utf-8") for s in decoding.stop]

        def finish(i: int, gen: Generation) -> None:
            results[i] = gen
            if on_result is not None:
                on_result(i, gen)

        for slot in range(bc.parallel):  # what a slot holds must not depend on earlier calls (see generate)
            bc.clear(slot)
        pending = deque(range(len(prompts)))
        free = list(range(bc.parallel))  # lowest slot first: slot assignment is a function of the prompt list
        running: dict[int, _Sequence] = {}
        try:
            while pending or running:
                budget = bc.n_batch - len(running)  # one token per running sequence this step
                while pending and free:
                    i = pending[0]
                    text = self.render(prompts[i])
                    tokens = self._prompt_tokens(text)
                    if len(tokens) >= self.n_ctx:  # the message create_completion raises
                        pending.popleft()
                        finish(
                            i,
                            Generation(
                                text=None,
                                error=f"ValueError: Requested tokens ({len(tokens)}) exceed "
                                f"context window of {self.n_ctx}",
                            ),
                        )
                        continue
                    if len(tokens) > budget and running:
                        break  # waits for the next step; an empty step takes any prompt that fits the context
                    pending.popleft()
                    slot = free.pop(0)
                    # Like create_completion's prefix match: the slot keeps its last sequence's cells, and a
                    # prompt that starts the same way (the system prompt) decodes only what differs.
                    reuse = bc.reuse(slot, tokens)
                    max_tokens = (
                        decoding.max_tokens
                        if decoding.max_tokens and decoding.max_tokens > 0
                        else self.n_ctx - len(tokens)
                    )
                    max_tokens = min(max_tokens, self.n_ctx - len(tokens))
                    running[slot] = _Sequence(
                        index=i,
                        slot=slot,
                        prompt_tokens=tokens,
                        feed=tokens[reuse:],
                        pos=reuse,
                        max_tokens=max_tokens,
                        sampler=bc.sampler(decoding, call_seed(text, decoding.seed)),
                    )
                    budget -= len(tokens) - reuse
                if not running:
                    continue
                bc.decode(running.values())
                for slot in sorted(running):
                    seq = running[slot]
                    token = seq.sampler.sample(bc._ctx, seq.logits_at)  # samples and accepts (penalty history)
                    gen = seq.step(token, llm, vocab, stops, llama_cpp)
                    if gen is None:
                        continue
                    del running[slot]
                    seq.sampler.close()
                    free.append(slot)
                    free.sort()
                    finish(seq.index, gen)
        finally:
            for seq in running.values():
                seq.sampler.close()
            if running:  # interrupted: what the slots hold is no longer known for sure
                for slot in range(bc.parallel):
                    bc.clear(slot)
        return results  # type: ignore[return-value]

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


@dataclass
class _Sequence:
    """One prompt in flight: the tokens still to decode, what it has generated, and its own sampler chain.
    `step` mirrors the token loop of `Llama._create_completion` (EOG, UTF-8 hold-back, stop strings, length)."""

    index: int
    slot: int
    prompt_tokens: list[int]
    feed: list[int]
    max_tokens: int
    sampler: object
    pos: int = 0
    logits_at: int = -1
    completion: list[int] = field(default_factory=list)
    multibyte_fix: int = 0

    def step(self, token: int, llm, vocab, stops: list[bytes], llama_cpp) -> Generation | None:
        self.feed = [token]
        if llama_cpp.llama_vocab_is_eog(vocab, token):
            return self._done(llm.detokenize(self.completion, prev_tokens=self.prompt_tokens), "stop")
        self.completion.append(token)
        all_text = llm.detokenize(self.completion, prev_tokens=self.prompt_tokens)
        for k, char in enumerate(all_text[-3:]):
            k = 3 - k
            for num, pattern in [(2, 192), (3, 224), (4, 240)]:
                if num > k and pattern & char == pattern:
                    self.multibyte_fix = num - k
        if self.multibyte_fix > 0:
            self.multibyte_fix -= 1
            return None
        hit = [s for s in stops if s in all_text]
        if hit:
            return self._done(all_text[: all_text.index(hit[0])], "stop")
        if len(self.completion) >= self.max_tokens:
            return self._done(all_text, "length")
        return None

    def _done(self, text: bytes, reason: str) -> Generation:
        return Generation(
            text=text.decode("utf-8", errors="ignore"),
            prompt_tokens=len(self.prompt_tokens),
            completion_tokens=len(self.completion),
            finish_reason=reason,
        )


class _BatchedContext:
    """A llama_context beside the Llama object's (same weights), with `parallel` sequences of `n_ctx` each in
    separate KV streams (kv_unified off), so a sequence attends over its own cells only."""

    def __init__(self, llm, *, n_ctx: int, parallel: int, n_threads: int) -> None:
        import llama_cpp
        from llama_cpp import _internals

        self.llm, self.parallel, self.n_ctx = llm, parallel, n_ctx
        self.n_batch = max(n_ctx, 512) + parallel
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = n_ctx * parallel
        params.n_seq_max = parallel
        params.kv_unified = False
        params.n_batch = self.n_batch
        params.n_ubatch = min(self.n_batch, 512)
        params.n_threads = params.n_threads_batch = n_threads
        params.no_perf = True
        # As the Llama object sets it, so one sequence's arithmetic matches the one-at-a-time path.
        params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        self._ctx = _internals.LlamaContext(model=llm._model, params=params, verbose=False)
        self.ctx = self._ctx.ctx
        self.memory = llama_cpp.llama_get_memory(self.ctx)
        self.batch = llama_cpp.llama_batch_init(self.n_batch, 0, 1)
        self._llama_cpp = llama_cpp
        self.cells: dict[int, list[int]] = {}  # slot -> the tokens whose keys and values it holds, in order

    def __del__(self) -> None:
        batch = getattr(self, "batch", None)
        if batch is not None:
            self._llama_cpp.llama_batch_free(batch)
            self.batch = None

    def clear(self, slot: int) -> None:
        self._llama_cpp.llama_memory_seq_rm(self.memory, slot, -1, -1)
        self.cells[slot] = []

    def reuse(self, slot: int, tokens: list[int]) -> int:
        """Keep the slot's cells for the longest prefix it shares with `tokens` (at least one token is left
        to decode, for the logits), drop the rest; the number of tokens kept."""
        held = self.cells.get(slot, [])
        keep = 0
        for a, b in zip(held, tokens):
            if a != b:
                break
            keep += 1
        keep = min(keep, len(tokens) - 1)
        if keep == 0 or not self._llama_cpp.llama_memory_seq_rm(self.memory, slot, keep, -1):
            self.clear(slot)
            return 0
        del held[keep:]
        return keep

    def sampler(self, decoding: Decoding, seed: int):
        """The chain `Llama._init_sampler` builds for `create_completion`'s defaults (top_k 40, typical 1,
        min_p 0.05, last 64 tokens penalised), seeded per prompt."""
        from llama_cpp import _internals

        llm, temp = self.llm, decoding.temperature
        chain = _internals.LlamaSampler()
        chain.add_penalties(
            n_vocab=llm._n_vocab,
            penalty_last_n=llm.last_n_tokens_size,
            penalty_repeat=decoding.repetition_penalty,
            penalty_freq=0.0,
            penalty_present=0.0,
        )
        if temp < 0.0:
            chain.add_dist(seed)
        elif temp == 0.0:
            chain.add_greedy()
        else:
            chain.add_top_k(40)
            chain.add_typical(1.0, 1)
            chain.add_top_p(decoding.top_p, 1)
            chain.add_min_p(0.05, 1)
            chain.add_temp(temp)
            chain.add_dist(seed)
        return chain

    def decode(self, sequences) -> None:
        """One llama_decode over every sequence's pending tokens; logits only at each one's last token."""
        b, n = self.batch, 0
        for seq in sorted(sequences, key=lambda s: s.slot):
            self.cells.setdefault(seq.slot, []).extend(seq.feed)
            for t in seq.feed:
                b.token[n], b.pos[n] = t, seq.pos
                b.n_seq_id[n] = 1
                b.seq_id[n][0] = seq.slot
                b.logits[n] = False
                seq.pos += 1
                n += 1
            b.logits[n - 1] = True
            seq.logits_at = n - 1
            seq.feed = []
        b.n_tokens = n
        rc = self._llama_cpp.llama_decode(self.ctx, b)
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc} for a batch of {n} tokens")
