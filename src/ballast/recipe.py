"""Recipes: one YAML file per run, validated up front, with `key=value` overrides from the command line."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ballast.backends.base import Decoding
from ballast.errors import InputError
from ballast.records import Source
from ballast.yamlio import line_of, load_yaml, validate


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DecodingConfig(_Section):
    temperature: float = Field(0.7, ge=0)
    top_p: float = Field(0.95, gt=0, le=1)
    max_tokens: int = Field(256, ge=1)
    repetition_penalty: float = Field(1.0, gt=0)

    def to_decoding(self, seed: int, stop: tuple[str, ...] = ()) -> Decoding:
        return Decoding(
            temperature=self.temperature,
            top_p=self.top_p,
            max_tokens=self.max_tokens,
            seed=seed,
            stop=stop,
            repetition_penalty=self.repetition_penalty,
        )


# Self-Instruct's keyword blacklist (tasks a text-only model cannot do), as in the original
# bootstrap_instructions.py; Alpaca later added video, audio, music, flowchart and diagram.
PAPER_BLACKLIST = [
    "image",
    "images",
    "graph",
    "graphs",
    "picture",
    "pictures",
    "file",
    "files",
    "map",
    "maps",
    "draw",
    "plot",
    "go to",
]


class InstanceFilterConfig(_Section):
    """Self-Instruct's instance filters (prepare_for_finetuning.py in the original code)."""

    same_input_output: bool = Field(True, description="drop an instance whose output repeats its input")
    empty_output: bool = Field(True, description="drop an instance with an empty output")
    incomplete: bool = Field(True, description="drop an instance whose input or output ends with a colon")
    conflicting_outputs: bool = Field(True, description="drop a task's instances when one input has two outputs")
    max_per_task: int = Field(5, ge=1, description="keep at most this many instances per task")


class SelfInstructConfig(_Section):
    enabled: bool = True
    num_instructions: int = Field(100, ge=1, description="machine instructions to add to the pool")
    prompt_instructions: int = Field(8, ge=2, description="in-context tasks per request")
    human_in_prompt: int = Field(6, ge=1, description="of which taken from the human seeds")
    rouge_threshold: float = Field(0.7, gt=0, le=1, description="reject a new task this similar to the pool")
    min_words: int = Field(3, ge=0, description="reject a task of at most this many words")
    max_words: int = Field(150, ge=1, description="reject a task of more words")
    blacklist: list[str] = PAPER_BLACKLIST
    max_requests: int = Field(200, ge=1, description="stop even if the pool has not grown enough")
    decoding: DecodingConfig = DecodingConfig(temperature=0.7, top_p=0.5, max_tokens=320)
    bad_starts: list[str] = Field(["Write a program"], description="reject a task starting with one of these")
    request_batch_size: int = Field(5, ge=1, description="requests sampled and sent together, as the paper's code")
    truncated: Literal["drop_last", "drop_response", "keep"] = Field(
        "drop_last",
        description="a completion cut by max_tokens: reject its last task, all its tasks (the "
        "original code), or neither",
    )
    # "responses": the weak model answers each new task (ballast's default); "instances": the paper's
    # classification detection and input-first / output-first instance generation.
    mode: Literal["responses", "instances"] = "responses"
    # Self-Instruct's paper wrote instructions with a base model (GPT-3); "strong" lets the strong base write
    # them (a plain-text continuation needs no chat tuning) while the weak model still answers.
    writer: Literal["weak", "strong"] = Field("weak", description="model that writes new instructions")
    classify_decoding: DecodingConfig = DecodingConfig(temperature=0.0, top_p=1.0, max_tokens=3)
    instance_decoding: DecodingConfig = DecodingConfig(temperature=0.0, top_p=1.0, max_tokens=350)
    max_instances_to_generate: int = Field(5, ge=1, description="the prompt stops at Example N+1")
    instance_filters: InstanceFilterConfig = InstanceFilterConfig()


class GroundingConfig(_Section):
    max_rules: int = Field(4, ge=0, description="policy rules in the prompt: triggered ones first, then nearest")
    min_rule_similarity: float = Field(0.25, ge=-1, le=1, description="cosine floor for a rule found by embedding")
    examples: int = Field(2, ge=0, description="nearest human training seeds shown as worked examples")
    max_example_words: int = Field(500, ge=1, description="word budget for all examples together")


class ResponsesConfig(_Section):
    decoding: DecodingConfig = DecodingConfig(temperature=0.7, top_p=0.9, max_tokens=220)
    # "plain": the prompt the strong model is trained on; "grounded": the prompt also carries the policy
    # rules relevant to the instruction and the nearest human seeds as examples.
    mode: Literal["plain", "grounded"] = "plain"
    grounding: GroundingConfig = GroundingConfig()


EVOL_METHODS = ("constraints", "deepen", "concretize", "reasoning", "breadth")
# Words of the evolving prompt that must not show up in an evolved instruction (elimination rule 4).
EVOL_COPIED = [
    "#The Given Prompt#",
    "#Given Prompt#",
    "#Rewritten Prompt#",
    "#Created Prompt#",
    "given prompt",
    "rewritten prompt",
    "created prompt",
]


class EvolConfig(_Section):
    enabled: bool = False
    rounds: int = Field(4, ge=1, description="evolution rounds (the paper's M = 4)")
    methods: list[Literal[EVOL_METHODS]] = list(EVOL_METHODS)  # type: ignore[valid-type]
    max_seeds: int | None = Field(20, ge=1, description="human training seeds to start from (None: all)")
    judge_equal: bool = Field(True, description="elimination 1: the model judges whether the rewrite gains anything")
    refusal_max_words: int = Field(80, ge=1, description="elimination 2: a 'sorry' response under this many words")
    refusal_markers: list[str] = ["sorry", "i cannot", "i can't", "i am unable", "i'm unable", "as an ai"]
    copied_phrases: list[str] = EVOL_COPIED
    decoding: DecodingConfig = DecodingConfig(temperature=0.7, top_p=0.95, max_tokens=200)
    judge_decoding: DecodingConfig = DecodingConfig(temperature=0.0, top_p=1.0, max_tokens=4)


DEFAULT_PERSONAS = [
    "a new support agent in their first week",
    "a senior agent who writes tersely",
    "an agent typing quickly on a phone between calls",
    "a team lead reviewing a colleague's ticket",
    "an agent whose first language is not English",
]


class ParaphraseConfig(_Section):
    enabled: bool = False
    personas: list[str] = Field(DEFAULT_PERSONAS, min_length=1)
    per_seed: int = Field(1, ge=1, description="paraphrases per seed, each in another persona's voice")
    max_seeds: int | None = Field(40, ge=1, description="human training seeds to rewrite (None: all)")
    max_rouge: float = Field(0.9, gt=0, le=1, description="drop a rewrite this close to the original (ROUGE-L)")
    max_length_ratio: float = Field(3.0, gt=1, description="drop a rewrite this many times longer than the original")
    # "parent": keep the human reply (the request means the same); "weak": the weak model answers anew.
    response: Literal["parent", "weak"] = "parent"
    decoding: DecodingConfig = DecodingConfig(temperature=0.9, top_p=0.95, max_tokens=80)


_SLOT = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


class SlotTemplate(_Section):
    id: str = Field(pattern=r"^[A-Za-z0-9._-]+$")
    instruction: str = Field(min_length=1)
    input: str = ""
    slice: str | None = None
    rules: list[str] = []
    audience: Literal["customer", "agent"] | None = None

    @property
    def slots(self) -> list[str]:
        return list(dict.fromkeys(_SLOT.findall(self.instruction + "\n" + self.input)))


class TemplateSlotsConfig(_Section):
    enabled: bool = False
    slots: dict[str, list[str]] = Field({}, description="slot name -> values, e.g. channel: [chat, email]")
    templates: list[SlotTemplate] = []
    total: int = Field(20, ge=1, description="filled templates to make, more of them for thin slices")

    @model_validator(mode="after")
    def _every_slot_declared(self) -> TemplateSlotsConfig:
        for t in self.templates:
            for slot in t.slots:
                if not self.slots.get(slot):
                    raise ValueError(
                        f"template {t.id!r} uses slot {slot!r}, which has no values in "
                        f"generate.template_slots.slots (declared: {sorted(self.slots)})"
                    )
        return self


# The first seven are edits the rule checks can see; the rest teach the conformance classifier what they cannot.
CONTRASTIVE_EDITS = (
    "changed_number",
    "dropped_escalation",
    "casual_rewrite",
    "promised_date",
    "over_limit_approval",
    "skipped_identity_check",
    "dropped_sign_off",
    "instructions_first",
    "wrong_team",
    "claimed_done",
    "blame_sentence",
    "invented_fact",
    "alternative_refund",
    "accepted_final_sale",
    "accepted_late_return",
    "outside_advice",
    "competitor_mention",
    "waived_condition",
    "price_difference",
    "early_lost",
    "credential_request",
)


class ContrastiveConfig(_Section):
    enabled: bool = False
    edits: list[Literal[CONTRASTIVE_EDITS]] = list(CONTRASTIVE_EDITS)  # type: ignore[valid-type]
    max_seeds: int | None = Field(None, ge=1, description="human training seeds to build negatives from")
    # Default: the policy's contrastive data (policy.yaml's `contrastive` file) names them.
    promise_rule: str | None = Field(None, description="rule a promised delivery date breaks")
    identity_rule: str | None = Field(None, description="rule a skipped identity check breaks")


class ServerConfig(_Section):
    """Generate through an OpenAI-compatible server instead of llama.cpp in process."""

    base_url: str
    model: str
    concurrency: int = Field(4, ge=1)
    requests_per_second: float | None = Field(None, gt=0)
    max_retries: int = Field(3, ge=0)
    timeout_s: float = Field(120.0, gt=0)
    api_key_env: str | None = None
    model_sha256: str | None = None


class GenerateConfig(_Section):
    self_instruct: SelfInstructConfig = SelfInstructConfig()
    responses: ResponsesConfig = ResponsesConfig()
    evol: EvolConfig = EvolConfig()
    paraphrase: ParaphraseConfig = ParaphraseConfig()
    template_slots: TemplateSlotsConfig = TemplateSlotsConfig()
    contrastive: ContrastiveConfig = ContrastiveConfig()
    server: ServerConfig | None = None
    batch_size: int = Field(8, ge=1, description="prompts per backend call when results cannot stream")
    # Sampling and ordering seed of the generators; the held-out split keeps the recipe's seed, so shards of a
    # pool (each its own generate.seed) draw new data from the same training seeds.
    seed: int | None = Field(None, description="generation seed (None: the recipe's seed)")


class MinHashConfig(_Section):
    enabled: bool = True
    num_perm: int = Field(128, ge=8, le=1024, description="MinHash permutations per record")
    threshold: float = Field(
        0.7, gt=0, lt=1, description="estimated Jaccard of word shingles that makes a near-duplicate"
    )
    bands: int | None = Field(
        None, ge=1, description="LSH bands (with rows); default: datasketch's optimum for threshold"
    )
    rows: int | None = Field(None, ge=1, description="MinHash values per band")
    shingle_words: int = Field(3, ge=1, description="words per shingle")
    seed: int = 1

    @model_validator(mode="after")
    def _bands_rows(self) -> MinHashConfig:
        if (self.bands is None) != (self.rows is None):
            raise ValueError("give both bands and rows, or neither")
        if self.bands is not None and self.bands * self.rows > self.num_perm:
            raise ValueError(f"bands * rows = {self.bands * self.rows} is more than num_perm = {self.num_perm}")
        return self


class SemanticConfig(_Section):
    enabled: bool = False  # distils a static model from MiniLM on first use (about a minute, then cached)
    threshold: float = Field(0.96, gt=0, le=1, description="cosine similarity that makes a semantic duplicate")
    pca_dims: int = Field(256, ge=8, description="dimensions of the distilled static model")
    max_tokens: int = Field(256, ge=8, description="tokens embedded per record")
    neighbours: int = Field(16, ge=1, description="nearest records checked per record")
    # A reworded copy states the same facts; a look-alike with another day count, amount or window does not,
    # and embeddings barely see a changed number. benchmarks/bench_paraphrase.py measures it.
    same_numbers: bool = Field(
        False,
        description="a duplicate's numbers (request, response) must each be a "
        "subset of the earlier record's, or the reverse",
    )


class ClassifierConfig(_Section):
    """The learned conformance classifier (ballast.curate.conformance), run after the rule checks on what they kept."""

    enabled: bool = False  # fits on the training seeds and their contrastive negatives (about a minute on CPU)
    # 0.9: in benchmarks/bench_devset.py's devset sweep (rules OR classifier) 0.8 and 0.9 both keep precision
    # above 0.9 at about the same recall, and 0.9 false-alarms on 1 clean record instead of 7.
    threshold: float = Field(0.9, gt=0, lt=1, description="violation probability at which a record is dropped")
    rule_features: bool = Field(True, description="add the rule checker's findings to the embedding features")


class CurateConfig(_Section):
    min_instruction_words: int = 3
    max_instruction_words: int = 150
    min_output_words: int = 5
    max_output_words: int = 400
    rouge_threshold: float = Field(0.7, gt=0, le=1, description="Self-Instruct's novelty rule")
    policy_checks: bool = True
    max_record_chars: int = Field(20_000, ge=1, description="drop records longer than this (all fields together)")
    english_only: bool = True
    minhash: MinHashConfig = MinHashConfig()
    semantic: SemanticConfig = SemanticConfig()
    classifier: ClassifierConfig = ClassifierConfig()
    chunk_size: int = Field(20_000, ge=1, description="records per chunk when curating a Parquet pool")


SCORE_KEYS = ("ifd", "conformance", "judge")


class JudgeConfig(_Section):
    """The LLM judge (ballast.score.judge): the weak model in process unless a server is given."""

    server: ServerConfig | None = None
    decoding: DecodingConfig = DecodingConfig(temperature=0.0, top_p=1.0, max_tokens=128)
    max_rules: int = Field(6, ge=1, description="policy rules in the rubric, those concerning the record first")
    min_score: int | None = Field(None, ge=1, le=5, description="drop records judged below this; None: score only")


class ScoreConfig(_Section):
    """Quality scores (ballast.score.ifd): IFD and perplexity from the weak model, and the optional judge."""

    enabled: bool = True
    batch_size: int = Field(16, ge=1, description="sequences per forward pass, grouped by length")
    max_len: int = Field(1024, ge=8, description="tokens per sequence; longer responses are scored on their start")
    judge: JudgeConfig | None = None


class SelectConfig(_Section):
    """DEITA-style selection: synthetic records in order of a combined score, each accepted only if it is far
    enough (embedding cosine distance) from everything already in, human seeds included; slice quotas first."""

    budget: int = Field(200, ge=0, description="synthetic records to keep at most")
    human_weight: float = Field(2.0, gt=0, description="loss weight of human seeds")
    synthetic_weight: float = Field(1.0, gt=0, description="loss weight of a selected synthetic record")
    # Combined score: the weighted mean of the parts present, each in [0, 1]: ifd (Record.scores["ifd"]),
    # conformance (1 - scores["p_violation"]), judge ((scores["judge"] - 1) / 4, a 1-5 rubric score).
    score_weights: dict[Literal[SCORE_KEYS], float] = Field(  # type: ignore[valid-type]
        {"ifd": 1.0, "conformance": 2.0, "judge": 1.0}, description="weight of each part of the combined score"
    )
    neutral_score: float = Field(0.5, ge=0, le=1, description="value of a part the record has no score for")
    # Cherry LLM and Superfiltering rank by IFD descending (a response the instruction helps only a little is
    # a harder, more informative example) and drop IFD >= 1, where the instruction does not help at all.
    ifd_prefer: Literal["high", "low"] = Field("high", description="which end of IFD below max_ifd scores best")
    max_ifd: float | None = Field(1.0, gt=0, description="drop a record with IFD at or above this (None: keep)")
    min_distance: float = Field(
        0.05, ge=0, le=2, description="cosine distance a record must exceed to every record already selected"
    )
    embedder: Literal["static", "minilm"] = Field(
        "static", description="static: distilled MiniLM, fast at pool scale; minilm: the transformer"
    )
    source_mix: dict[Source, float] = Field({}, description="source -> largest share of the synthetic budget")
    slice_min_share: dict[str, float] | float = Field(
        {}, description="slice -> smallest share of the synthetic budget, filled first; one number: every slice"
    )
    coverage_clusters: int | None = Field(
        None, ge=2, description="k-means clusters of the coverage report (None: sqrt of the records compared)"
    )
    seed: int | None = Field(None, description="tie-break seed for equal scores (None: the recipe's seed)")

    @model_validator(mode="after")
    def _shares(self) -> SelectConfig:
        if not any(w > 0 for w in self.score_weights.values()) or any(w < 0 for w in self.score_weights.values()):
            raise ValueError(f"score_weights must be >= 0 with one > 0, got {self.score_weights}")
        for src, share in self.source_mix.items():
            if src in (Source.human, Source.contrastive):
                raise ValueError(f"source_mix: {src.value} records are not drawn from the synthetic budget")
            if not 0 <= share <= 1:
                raise ValueError(f"source_mix.{src.value} = {share} is not a share between 0 and 1")
        shares = self.slice_min_share
        values = list(shares.values()) if isinstance(shares, dict) else [shares]
        if any(not 0 <= v <= 1 for v in values):
            raise ValueError(f"slice_min_share values must be shares between 0 and 1, got {shares}")
        if isinstance(shares, dict) and sum(values) > 1:
            raise ValueError(f"slice_min_share adds up to {sum(values):g}, more than the whole budget")
        return self


class EvaluateConfig(_Section):
    # base: untuned; seeds: human training seeds only; pilot: seeds + all weak-model data; curated: the selection.
    models: list[Literal["base", "weak", "seeds", "pilot", "curated"]] = ["base", "pilot", "curated"]
    max_examples: int | None = Field(None, ge=1, description="cap on held-out examples (stratified by slice)")
    probes: Path | None = Field(None, description="paraphrase/adversarial probes JSONL, scored as their own slices")
    max_probes: int | None = Field(None, ge=1, description="cap on probes (stratified by probe type)")
    batch_size: int = Field(16, ge=1)
    decoding: DecodingConfig = DecodingConfig(temperature=0.0, top_p=1.0, max_tokens=200)
    judge: JudgeConfig | None = Field(None, description="grade every output with the policy judge (1-5)")


class GateConfig(_Section):
    """Release thresholds on the gated model's held-out results; None switches a check off."""

    model: Literal["base", "seeds", "pilot", "curated"] = "curated"
    max_violation_rate: float | None = Field(None, ge=0, le=1)
    max_area_violation: dict[str, float] = {}
    max_benign_refusal: float | None = Field(None, ge=0, le=1)
    min_escalation_recall: float | None = Field(None, ge=0, le=1)
    min_signoff: float | None = Field(None, ge=0, le=1)


# The train stage's settings live here, not in ballast.train: loading a recipe must not import torch or TRL.
class AuxConfidence(_Section):
    """Burns et al. (2023)'s auxiliary confidence loss for weak-to-strong training: at each response token the
    target is mixed with the student's own hardened (argmax, detached) prediction, so a strong student can overrule
    weak labels it is confident are wrong. The mixing weight ramps linearly from 0 over the warm-up steps, as in
    the paper, because early predictions are those of the untuned base."""

    weight: float = Field(0.0, ge=0, lt=1, description="mixing weight after warm-up; 0 switches the term off")
    warmup_fraction: float = Field(0.2, ge=0, le=1, description="share of the optimiser steps the ramp takes")

    def at(self, step: int, total_steps: int) -> float:
        """The mixing weight at optimiser step `step` of `total_steps`."""
        ramp = self.warmup_fraction * total_steps
        return self.weight if ramp <= 0 else self.weight * min(1.0, step / ramp)


class TrainConfig(_Section):
    """Defaults sized for a laptop CPU: a small adapter, short sequences, one pass over the data."""

    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    target_modules: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    learning_rate: float = 2e-4
    epochs: float = 1.0
    max_steps: int | None = None  # caps the steps that epochs imply
    batch_size: int = 4
    grad_accumulation: int = 4
    max_seq_len: int = 512
    seed: int | None = Field(None, description="training seed (None: the recipe's seed)")
    logging_steps: int = 10
    aux_confidence: AuxConfidence = AuxConfidence()

    def seed_or(self, default: int) -> int:
        return self.seed if self.seed is not None else default


class ModelsConfig(_Section):
    weak: str = "smollm2-135m-instruct"
    strong: str = "gemma3-270m"
    # Two one-thread processes (e.g. pool shards side by side) outrun one two-thread process on a small model.
    threads: int | None = Field(None, ge=1, description="llama.cpp threads per process (None: every core)")
    # Prompts llama.cpp decodes at once in process (continuous batching); a prompt's text does not depend on it.
    parallel: int | None = Field(
        None,
        ge=1,
        description="sequences llama.cpp decodes at once in process (None: the backend's measured default; "
        "1: one prompt at a time)",
    )


class PoolConfig(_Section):
    """A pool recipe (`ballast pool`): generation only, in shards that each finish into their own file."""

    shards: int = Field(1, ge=1, description="generate runs, shard k with generate.seed = seed + k")
    out: Path = Field(Path("pool"), description="dataset folder, relative to the recipe")


class Recipe(_Section):
    name: str = Field(pattern=r"^[A-Za-z0-9._-]+$")
    seed: int = 0
    policy: Path
    seeds: Path
    heldout_fraction: float = Field(0.25, gt=0, lt=1)
    run_dir: Path | None = None
    models: ModelsConfig = ModelsConfig()
    generate: GenerateConfig = GenerateConfig()
    curate: CurateConfig = CurateConfig()
    score: ScoreConfig = ScoreConfig()
    select: SelectConfig = SelectConfig()
    train: TrainConfig = TrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    gate: GateConfig = GateConfig()
    pool: PoolConfig | None = None

    def resolved_run_dir(self) -> Path:
        return self.run_dir or Path("runs") / self.name


def _apply_override(data: dict[str, Any], override: str) -> None:
    key, sep, raw = override.partition("=")
    if not sep or not key:
        raise InputError(f"override {override!r} is not KEY=VALUE (e.g. select.budget=50)")
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise InputError(f"override {override!r}: {part!r} is not a section", field=key)
    node[parts[-1]] = yaml.safe_load(raw)


def load_recipe(path: str | Path, overrides: list[str] = ()) -> Recipe:
    """Validate a recipe; paths inside it are taken relative to the recipe file."""
    path = Path(path)
    if not path.is_file():
        raise InputError("no such recipe file", file=path)
    data, node = load_yaml(path)
    if not isinstance(data, dict):
        raise InputError("a recipe is a YAML mapping", file=path, line=1)
    for override in overrides:
        _apply_override(data, override)
    try:
        recipe = validate(Recipe, data, file=path, node=node)
    except InputError as exc:
        # A bad value given as KEY=VALUE has no line in the file: point at the command line instead.
        overridden = [o.partition("=")[0] for o in overrides]
        if exc.field and any(exc.field == k or exc.field.startswith(f"{k}.") for k in overridden):
            raise InputError(exc.message, file="<command line>", field=exc.field) from None
        raise
    base = path.parent
    fixed = {k: base / getattr(recipe, k) for k in ("policy", "seeds") if not getattr(recipe, k).is_absolute()}
    for key, value in fixed.items():
        if not value.is_file():
            raise InputError(f"{key} file {value} does not exist", file=path, line=line_of(node, (key,)), field=key)
    probes = recipe.evaluate.probes
    if probes is not None:
        probes = probes if probes.is_absolute() else base / probes
        if not probes.is_file():
            raise InputError(
                f"probes file {probes} does not exist",
                file=path,
                line=line_of(node, ("evaluate", "probes")),
                field="evaluate.probes",
            )
        fixed["evaluate"] = recipe.evaluate.model_copy(update={"probes": probes})
    return recipe.model_copy(update=fixed)
