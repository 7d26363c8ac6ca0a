"""transformers in process: the strong base for training, and generation and scoring with or without a LoRA adapter.

The model comes from the same checked GGUF as the llama.cpp backend, dequantised once into a safetensors folder, and
prompts go through ballast's chat template, so training, evaluation and the llama.cpp backend see the same text.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.nn.utils.rnn import pad_sequence
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopPLogitsWarper,
)

from ballast.backends.base import Decoding, Generation, Prompt, TokenScores, call_seed
from ballast.backends.models import cache_dir, chat_template, file_sha256, resolve
from ballast.records import ModelRef

ADAPTER_WEIGHTS = "adapter_model.safetensors"
END_OF_TURN = "<end_of_turn>"  # Gemma ends a chat turn here, not at <eos>; llama.cpp stops on both


def stop_token_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The tokens generation stops on: <eos>, and the end of a chat turn where the vocabulary has one."""
    vocab = tokenizer.get_vocab()
    return [tokenizer.eos_token_id] + ([vocab[END_OF_TURN]] if END_OF_TURN in vocab else [])


def device_and_dtype(*, training: bool = False) -> tuple[torch.device, torch.dtype]:
    """bf16 on a GPU; on a CPU, bf16 for inference only where the CPU has native bf16 dot products
    (AVX512-BF16 or AMX), which measured twice float32's generation speed, and float32 for training."""
    if torch.cuda.is_available():
        return torch.device("cuda"), torch.bfloat16
    native_bf16 = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return torch.device("cpu"), torch.bfloat16 if native_bf16 and not training else torch.float32


def hf_folder(name: str = "gemma3-270m") -> tuple[Path, ModelRef]:
    """The model as a transformers folder (safetensors + tokenizer), converted from its checked GGUF on first use."""
    gguf, ref = resolve(name)
    folder = cache_dir() / "hf" / f"{ref.name}-{ref.sha256[:12]}"
    if (folder / "config.json").is_file():
        return folder, ref
    # Dequantising the GGUF and converting its vocabulary takes about a minute on a laptop; reloading takes seconds.
    tmp = folder.with_name(f"{folder.name}.tmp{os.getpid()}")
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The weights are plain tensors now; without the GGUF quantizer transformers saves them like any model.
    model.hf_quantizer = None
    del model.config.quantization_config
    model.save_pretrained(tmp)
    AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(tmp)
    try:
        tmp.rename(folder)
    except OSError:  # another process finished first; its folder holds the same weights
        shutil.rmtree(tmp)
    return folder, ref


def load_causal_lm(
    name: str = "gemma3-270m", *, training: bool = False, dtype: torch.dtype | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, ModelRef]:
    """Model on the device and dtype of `device_and_dtype` (or `dtype`), tokenizer with ballast's chat template,
    ref."""
    folder, ref = hf_folder(name)
    torch.set_num_threads(os.cpu_count() or 1)
    device, default_dtype = device_and_dtype(training=training)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype or default_dtype).to(device)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.chat_template = chat_template(name) or tokenizer.chat_template
    tokenizer.padding_side = "left"  # generation appends on the right
    return model, tokenizer, ref


def response_logits(
    model: torch.nn.Module, inputs: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Float32 logits at the labelled positions only, their target tokens, and the index in the batch of the record
    each position belongs to. Only labelled positions go through the LM head, whose vocabulary-wide output (262k for
    Gemma) dominates the cost of a step. Takes a padded batch (one record per row, `attention_mask`) or a
    padding-free one (one row, `position_ids` restarting at 0 for each record: transformers then keeps attention
    inside each record)."""
    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model  # a PEFT model wraps the LM
    input_ids = inputs["input_ids"]
    if "position_ids" in inputs:
        context = {"position_ids": inputs["position_ids"]}
        example = (inputs["position_ids"] == 0).cumsum(-1) - 1
    else:
        context = {"attention_mask": inputs["attention_mask"]}
        example = torch.arange(input_ids.shape[0], device=input_ids.device)[:, None].expand_as(input_ids)
    hidden = causal_lm.get_decoder()(input_ids=input_ids, **context, use_cache=False).last_hidden_state
    targets = inputs["labels"][:, 1:]
    keep = targets != -100
    logits = causal_lm.get_output_embeddings()(hidden[:, :-1][keep]).float()
    cap = getattr(causal_lm.config.get_text_config(), "final_logit_softcapping", None)  # Gemma has it, Llama not
    if cap:
        logits = cap * torch.tanh(logits / cap)
    return logits, targets[keep], example[:, :-1][keep]


def label_logprobs(
    model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """Log-probability of each label token given the tokens before it: shape (batch, seq - 1), 0 where the label is
    -100."""
    logits, targets, _ = response_logits(
        model, {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
    )
    picked = -torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    keep = labels[:, 1:] != -100
    return torch.zeros(keep.shape, dtype=picked.dtype, device=picked.device).masked_scatter(keep, picked)


class _GumbelNoise(LogitsProcessor):
    """argmax(scores + Gumbel noise) is a sample from softmax(scores); one generator per row keeps each row's draws
    independent of the rest of the batch, which torch's one global sampling generator would not."""

    def __init__(self, seeds: Sequence[int]) -> None:
        self.generators = [torch.Generator().manual_seed(s) for s in seeds]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        uniform = torch.stack([torch.rand(scores.shape[-1], generator=g) for g in self.generators])
        return scores - torch.log(-torch.log(uniform)).to(scores.device)


class StopExemptRepetitionPenalty(RepetitionPenaltyLogitsProcessor):
    """transformers' repetition penalty (CTRL's: a seen token's logit divided by the penalty, or multiplied when
    negative), except on the stop tokens. Every chat prompt holds the end-of-turn token (it closes the user's turn),
    so the plain penalty always lowers the logit of the token a reply ends on and pushes the model to run on past
    its sign-off; a stop token is never repeated inside a reply anyway, since generation ends at it."""

    def __init__(self, penalty: float, stop_ids: Sequence[int]) -> None:
        super().__init__(penalty=float(penalty))
        self.stop_ids = torch.tensor(sorted(set(stop_ids)), dtype=torch.long)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        stop_ids = self.stop_ids.to(scores.device)
        kept = scores[:, stop_ids].clone()
        scores = super().__call__(input_ids, scores)
        scores[:, stop_ids] = kept
        return scores


class TransformersBackend:
    """Generator and Scorer over the strong base, optionally with a LoRA adapter merged in."""

    def __init__(
        self, model: str = "gemma3-270m", *, adapter: Path | None = None, batch_size: int = 8, n_ctx: int = 2048
    ) -> None:
        lm, self.tokenizer, ref = load_causal_lm(model)
        if adapter is not None:
            from peft import PeftModel

            # Merged into the base weights, the adapter costs nothing at inference.
            lm = PeftModel.from_pretrained(lm, adapter).merge_and_unload()
            ref = ModelRef(
                name=f"{ref.name}+lora:{file_sha256(Path(adapter) / ADAPTER_WEIGHTS)[:12]}", sha256=ref.sha256
            )
        self.lm = lm.eval()
        self.model = ref
        self.batch_size = batch_size
        self.n_ctx = n_ctx
        self.stop_ids = stop_token_ids(self.tokenizer)

    def render(self, prompt: Prompt, *, add_generation_prompt: bool = True) -> str:
        """The exact text the model sees, BOS included (llama.cpp adds its BOS at tokenisation instead)."""
        if isinstance(prompt, str):
            return self.tokenizer.bos_token + prompt
        return self.tokenizer.apply_chat_template(
            list(prompt), tokenize=False, add_generation_prompt=add_generation_prompt
        )

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False).input_ids

    def _batches(self, items: list[int], key: Sequence[int]) -> list[list[int]]:
        # Similar lengths together: less padding.
        ordered = sorted(items, key=lambda i: key[i])
        return [ordered[i : i + self.batch_size] for i in range(0, len(ordered), self.batch_size)]

    def generate(self, prompts: Sequence[Prompt], decoding: Decoding) -> list[Generation]:
        texts = [self.render(p) for p in prompts]
        encoded = [self.encode(t) for t in texts]
        results: list[Generation | None] = [None] * len(prompts)
        fits = []
        for i, ids in enumerate(encoded):
            if len(ids) + decoding.max_tokens > self.n_ctx:
                results[i] = Generation(
                    text=None,
                    error=f"ValueError: prompt of {len(ids)} tokens + max_tokens "
                    f"{decoding.max_tokens} exceeds the context of {self.n_ctx}",
                )
            else:
                fits.append(i)
        for batch in self._batches(fits, [len(ids) for ids in encoded]):
            try:
                generations = self._generate_batch(
                    [encoded[i] for i in batch], [call_seed(texts[i], decoding.seed) for i in batch], decoding
                )
            except RuntimeError as exc:  # e.g. out of GPU memory: the batch fails, the run goes on
                generations = [Generation(text=None, error=f"{type(exc).__name__}: {exc}") for _ in batch]
            for i, generation in zip(batch, generations, strict=True):
                results[i] = generation
        return results

    @torch.inference_mode()
    def _generate_batch(self, encoded: list[list[int]], seeds: list[int], decoding: Decoding) -> list[Generation]:
        inputs = self.tokenizer.pad({"input_ids": encoded}, return_tensors="pt").to(self.lm.device)
        processors = LogitsProcessorList()
        if decoding.repetition_penalty != 1.0:  # first: it reshapes the logits the warpers below then read
            processors.append(StopExemptRepetitionPenalty(decoding.repetition_penalty, self.stop_ids))
        if decoding.temperature > 0:
            processors.extend(
                [TemperatureLogitsWarper(decoding.temperature), TopPLogitsWarper(decoding.top_p), _GumbelNoise(seeds)]
            )
        config = GenerationConfig(
            max_new_tokens=decoding.max_tokens,
            do_sample=False,
            eos_token_id=self.stop_ids,
            pad_token_id=self.tokenizer.pad_token_id,
            stop_strings=list(decoding.stop) or None,
        )
        out = self.lm.generate(
            **inputs, generation_config=config, logits_processor=processors, tokenizer=self.tokenizer
        )
        results = []
        # A row that ends before the others is filled with padding after its last token.
        ends = {*self.stop_ids, self.tokenizer.pad_token_id}
        for prompt, row in zip(encoded, out[:, inputs["input_ids"].shape[1] :].tolist(), strict=True):
            stop_at = next((j for j, t in enumerate(row) if t in ends), None)
            tokens = row if stop_at is None else row[:stop_at]
            text = self.tokenizer.decode(tokens, skip_special_tokens=True)
            cut = min((k for k in (text.find(s) for s in decoding.stop) if k >= 0), default=None)
            finish = "length" if stop_at is None and cut is None else "stop"
            results.append(
                Generation(
                    text=text if cut is None else text[:cut],
                    prompt_tokens=len(prompt),
                    completion_tokens=len(tokens),
                    finish_reason=finish,
                )
            )
        return results

    def score(self, prompts: Sequence[Prompt], continuations: Sequence[str]) -> list[TokenScores]:
        rows = []
        for prompt, continuation in zip(prompts, continuations, strict=True):
            text = self.render(prompt)
            head, full = self.encode(text), self.encode(text + continuation)
            if len(full) > self.n_ctx:
                raise ValueError(f"prompt + continuation is {len(full)} tokens, over n_ctx={self.n_ctx}")
            # Tokenisation can merge across the boundary; score from the first position that differs.
            start = next((i for i, (a, b) in enumerate(zip(head, full, strict=False)) if a != b), len(head))
            rows.append((full, start))
        results: list[TokenScores | None] = [None] * len(rows)
        for batch in self._batches(list(range(len(rows))), [len(full) for full, _ in rows]):
            device, pairs = self.lm.device, [rows[i] for i in batch]
            inputs = self.tokenizer.pad(
                {"input_ids": [full for full, _ in pairs]}, padding_side="right", return_tensors="pt"
            ).to(device)
            labels = pad_sequence(
                [torch.tensor([-100] * start + full[start:]) for full, start in pairs],
                batch_first=True,
                padding_value=-100,
            ).to(device)
            with torch.inference_mode():
                logprobs = label_logprobs(self.lm, inputs["input_ids"], inputs["attention_mask"], labels)
            for b, i in enumerate(batch):
                results[i] = TokenScores(logprobs=logprobs[b][labels[b, 1:] != -100].tolist())
        return results
