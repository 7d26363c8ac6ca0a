"""Self-Instruct on the original seed tasks, writing the original repository's file formats.

Reads seed_tasks.jsonl as published with the paper (id, name, instruction, instances, is_classification)
and writes, into one folder:

- machine_generated_instructions.jsonl: instruction, most_similar (the 10 nearest pool instructions with
  their ROUGE-L), avg_similarity_score, metadata (the request and the model's response), request_idx
- is_clf_or_not_<model>_template_1.jsonl: instruction, is_classification (the model's raw answer)
- machine_generated_instances.jsonl: instruction, raw_instances, instance_metadata, instruction_metadata,
  most_similar, avg_similarity_score
- finetuning/all_generated_instances.jsonl: instruction, input, output (the instances that passed)
- finetuning/finetuning_data_<n>.jsonl: prompt, completion

The same run also comes back as ballast records, with every rejected task and instance and its reason.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from ballast.backends.base import Decoding, Generation, Generator
from ballast.backends.calls import CallLog
from ballast.errors import InputError
from ballast.generate.self_instruct import TaskCandidate, bootstrap_tasks, task_records
from ballast.generate.self_instruct_instances import instance_prompt, instances_for
from ballast.jsonl import read_jsonl
from ballast.recipe import SelfInstructConfig
from ballast.records import Record
from ballast.store import write_records
from ballast.templates import load_template

TEMPLATE = "generate/self_instruct_general"
END_OF_TEXT = "<|endoftext|>"


class SeedInstance(BaseModel):
    model_config = ConfigDict(extra="ignore")
    input: str = ""
    output: str


class SeedTask(BaseModel):
    """One line of the original seed_tasks.jsonl."""

    model_config = ConfigDict(extra="ignore")
    id: str = Field(min_length=1)
    name: str = ""
    instruction: str = Field(min_length=1)
    instances: list[SeedInstance] = []
    is_classification: bool = False


def load_seed_tasks(path: str | Path) -> list[SeedTask]:
    path = Path(path)
    if not path.is_file():
        raise InputError("no such seed task file", file=path)
    tasks = [task for _, task in read_jsonl(SeedTask, path)]
    if not tasks:
        raise InputError("the seed task file holds no tasks", file=path)
    return tasks


def _metadata(prompt: str, gen: Generation | None, generator: Generator, decoding: Decoding, template_id: str) -> dict:
    template = load_template(template_id)
    response = (
        None
        if gen is None
        else {
            "choices": [{"text": gen.text, "finish_reason": gen.finish_reason}],
            "error": gen.error,
            "usage": {"prompt_tokens": gen.prompt_tokens, "completion_tokens": gen.completion_tokens},
            "attempts": gen.attempts,
        }
    )
    return {
        "prompt": prompt,
        "response": response,
        "model": generator.model.name,
        "model_sha256": generator.model.sha256,
        "decoding": decoding.as_dict(),
        "template_id": template.id,
        "template_sha256": template.sha256,
    }


def _encode(instruction: str, input: str, output: str) -> dict[str, str]:
    prompt = f"{instruction.strip()}\n\n{input.strip()}\n\n" if input.strip() else f"{instruction.strip()}\n\n"
    return {"prompt": prompt, "completion": output.strip() + END_OF_TEXT}


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    tmp.replace(path)
    return path


@dataclass
class OriginalFormatRun:
    out_dir: Path
    files: dict[str, Path]
    candidates: list[TaskCandidate]
    records: list[Record]
    counts: dict[str, int] = field(default_factory=dict)


def run_self_instruct(
    seed_tasks: list[SeedTask],
    generator: Generator,
    cfg: SelfInstructConfig,
    out_dir: str | Path,
    *,
    seed: int = 0,
    include_seed_tasks: bool = False,
    log: CallLog | None = None,
) -> OriginalFormatRun:
    """The paper's pipeline on general-domain seed tasks, written in the original formats."""
    out_dir = Path(out_dir)
    template = load_template(TEMPLATE)
    candidates = bootstrap_tasks([(t.id, t.instruction) for t in seed_tasks], generator, cfg, template, {}, seed, log)
    accepted = [c for c in candidates if c.rejected is None]
    task_decoding = cfg.decoding.to_decoding(seed, stop=("\n\n",))
    files: dict[str, Path] = {}

    instruction_rows = []
    for cand in accepted:
        instruction_rows.append(
            {
                "instruction": cand.text,
                "most_similar": cand.most_similar,
                "avg_similarity_score": cand.avg_similarity,
                "metadata": _metadata(cand.prompt, cand.generation, generator, task_decoding, TEMPLATE),
                "request_idx": cand.round,
            }
        )
    files["instructions"] = _write_jsonl(out_dir / "machine_generated_instructions.jsonl", instruction_rows)

    results, clf_gens = instances_for([c.text for c in accepted], generator, cfg, seed, log)
    model = re.sub(r"[^A-Za-z0-9._-]+", "_", generator.model.name)
    files["is_clf_or_not"] = _write_jsonl(
        out_dir / f"is_clf_or_not_{model}_template_1.jsonl",
        [
            {"instruction": r.task, "is_classification": (g.text if g.ok else "") or ""}
            for r, g in zip(results, clf_gens)
        ],
    )

    instance_decoding = cfg.instance_decoding.to_decoding(
        seed, stop=(f"Example {cfg.max_instances_to_generate + 1}", "Task:")
    )
    instance_rows = []
    for cand, row, res in zip(accepted, instruction_rows, results):
        template_id, prompt = instance_prompt(cand.text, res.kind.is_classification)
        instance_rows.append(
            {
                "instruction": cand.text,
                "raw_instances": res.generation.text or "",
                "instance_metadata": _metadata(prompt, res.generation, generator, instance_decoding, template_id),
                "instruction_metadata": row["metadata"],
                "most_similar": cand.most_similar,
                "avg_similarity_score": cand.avg_similarity,
            }
        )
    files["instances"] = _write_jsonl(out_dir / "machine_generated_instances.jsonl", instance_rows)

    passed = [(r.task, i.input, i.output) for r in results for i in r.instances if not i.rejected]
    training = list(passed)
    if include_seed_tasks:
        training += [(t.instruction, i.input, i.output) for t in seed_tasks for i in t.instances]
    files["all_instances"] = _write_jsonl(
        out_dir / "finetuning" / "all_generated_instances.jsonl",
        [{"instruction": a, "input": b, "output": c} for a, b, c in passed],
    )
    encoded = list({json.dumps(_encode(*t), sort_keys=True): _encode(*t) for t in training}.values())
    files["finetuning"] = _write_jsonl(out_dir / "finetuning" / f"finetuning_data_{len(encoded)}.jsonl", encoded)

    from ballast.generate.self_instruct_instances import instance_records_from

    base = {
        "generator": generator.model,
        "template_id": template.id,
        "template_sha256": template.sha256,
        "policy_version": None,
    }
    records = task_records(candidates, base, cfg) + instance_records_from(accepted, results, cfg, base)
    files["records"] = write_records(records, out_dir / "records.parquet")
    counts = {
        "requests": len({c.round for c in candidates}),
        "candidates": len(candidates),
        "instructions": len(accepted),
        "classification": sum(r.kind.is_classification for r in results),
        "classification_unparsable": sum(r.kind.unparsable or bool(r.kind.error) for r in results),
        "instances_kept": len(passed),
        "instances_dropped": sum(1 for r in results for i in r.instances if i.rejected),
        "tasks_without_instances": sum(1 for r in results if r.failure),
    }
    return OriginalFormatRun(out_dir, files, candidates, records, counts)
