"""Recipes: one YAML file per run, validated up front, with `key=value` overrides from the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from ballast.backends.base import Decoding
from ballast.errors import InputError
from ballast.train import TrainConfig
from ballast.yamlio import load_yaml, validate


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DecodingConfig(_Section):
    temperature: float = Field(0.7, ge=0)
    top_p: float = Field(0.95, gt=0, le=1)
    max_tokens: int = Field(256, ge=1)

    def to_decoding(self, seed: int, stop: tuple[str, ...] = ()) -> Decoding:
        return Decoding(temperature=self.temperature, top_p=self.top_p, max_tokens=self.max_tokens, seed=seed,
                        stop=stop)


# Self-Instruct's keyword blacklist (tasks a text-only model cannot do).
PAPER_BLACKLIST = ["image", "images", "graph", "graphs", "picture", "pictures", "file", "files", "map", "maps",
                   "draw", "plot", "go to", "video", "audio", "music", "flowchart", "diagram"]


class SelfInstructConfig(_Section):
    num_instructions: int = Field(100, ge=1, description="machine instructions to add to the pool")
    prompt_instructions: int = Field(8, ge=2, description="in-context tasks per request")
    human_in_prompt: int = Field(6, ge=1, description="of which taken from the human seeds")
    rouge_threshold: float = Field(0.7, gt=0, le=1, description="reject a new task this similar to the pool")
    min_words: int = Field(3, ge=0, description="reject a task of at most this many words")
    max_words: int = Field(150, ge=1, description="reject a task of more words")
    blacklist: list[str] = PAPER_BLACKLIST
    max_requests: int = Field(200, ge=1, description="stop even if the pool has not grown enough")
    decoding: DecodingConfig = DecodingConfig(temperature=0.7, top_p=0.5, max_tokens=320)


class ResponsesConfig(_Section):
    decoding: DecodingConfig = DecodingConfig(temperature=0.7, top_p=0.9, max_tokens=220)


class GenerateConfig(_Section):
    self_instruct: SelfInstructConfig = SelfInstructConfig()
    responses: ResponsesConfig = ResponsesConfig()


class CurateConfig(_Section):
    min_instruction_words: int = 3
    max_instruction_words: int = 150
    min_output_words: int = 5
    max_output_words: int = 400
    rouge_threshold: float = Field(0.7, gt=0, le=1, description="Self-Instruct's novelty rule")
    policy_checks: bool = True


class SelectConfig(_Section):
    budget: int = Field(200, ge=0, description="synthetic records to keep at most")
    human_weight: float = Field(2.0, gt=0, description="loss weight of human seeds")


class EvaluateConfig(_Section):
    models: list[Literal["base", "pilot", "curated"]] = ["base", "pilot", "curated"]
    max_examples: int | None = Field(None, ge=1, description="cap on held-out examples (stratified by slice)")
    batch_size: int = Field(16, ge=1)
    decoding: DecodingConfig = DecodingConfig(temperature=0.0, top_p=1.0, max_tokens=200)


class ModelsConfig(_Section):
    weak: str = "smollm2-135m-instruct"
    strong: str = "gemma3-270m"


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
    select: SelectConfig = SelectConfig()
    train: TrainConfig = TrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()

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
        raise InputError("a recipe is a YAML mapping", file=path)
    for override in overrides:
        _apply_override(data, override)
    recipe = validate(Recipe, data, file=path, node=node)
    base = path.parent
    fixed = {k: base / getattr(recipe, k) for k in ("policy", "seeds") if not getattr(recipe, k).is_absolute()}
    for key, value in fixed.items():
        if not value.is_file():
            raise InputError(f"{key} file {value} does not exist", file=path, field=key)
    return recipe.model_copy(update=fixed)
