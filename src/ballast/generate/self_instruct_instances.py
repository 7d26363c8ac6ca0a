"""Self-Instruct's second half: is a task a classification task, and instances for it.

- Classification detection: a few-shot prompt that the model completes with Yes or No (greedy, 3 tokens).
  As in the paper's code, an answer that does not start with "yes" counts as No; an answer that is neither
  yes nor no is also counted as unparsable and kept on the record.
- Instance generation: output-first for classification tasks (each class label, then an input for it, so
  the labels do not all collapse onto the most likely one) and input-first otherwise (Example N / Input /
  Output), greedy, stopping at Example N+1.
- Instance filters (prepare_for_finetuning.py in the original code): the output repeats the input, an
  empty output, an input or output that ends with a colon (an unfinished generation), the same input with
  conflicting outputs (the whole task's instances go), exact duplicates merged, at most 5 per task; the
  last instance of a completion cut by the token limit is dropped.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

from ballast.backends.base import Generation, Generator
from ballast.backends.calls import CallLog, generate_all
from ballast.recipe import InstanceFilterConfig, SelfInstructConfig
from ballast.records import Record, Source
from ballast.stages import decision_stage
from ballast.templates import load_template
from ballast.templates.render import render

STAGE = decision_stage("generate", "self_instruct")
CLASSIFY = "generate/self_instruct_is_clf"
INPUT_FIRST = "generate/self_instruct_input_first"
OUTPUT_FIRST = "generate/self_instruct_output_first"

_EXAMPLE = re.compile(r"Example\s?\d*\.?:?")
_OUTPUT = re.compile(r"Output\s*\d*\s*:")
_INPUT = re.compile(r"Input\s*\d*\s*:")


@dataclass
class Classification:
    is_classification: bool
    answer: str | None  # the model's raw text, as the original is_clf_or_not file keeps it
    unparsable: bool = False
    error: str | None = None


def parse_classification(text: str) -> Classification:
    word = text.strip().lower()
    yes, no = word.startswith("yes"), word.startswith("no")
    return Classification(is_classification=yes, answer=text, unparsable=not (yes or no))


def classify(
    tasks: list[str], generator: Generator, cfg: SelfInstructConfig, seed: int, log: CallLog | None = None
) -> tuple[list[Classification], list[Generation]]:
    template = load_template(CLASSIFY)
    prompts = [render(template, task=t.strip()) for t in tasks]
    decoding = cfg.classify_decoding.to_decoding(seed, stop=("\n", "Task"))
    gens = generate_all(generator, prompts, decoding, label="self-instruct: classification?", log=log)
    out = [parse_classification(g.text or "") if g.ok else Classification(False, None, error=g.error) for g in gens]
    return out, gens


@dataclass
class Instance:
    input: str
    output: str
    rejected: str | None = None
    merged: int = 0  # exact duplicates folded into this one


def instance_prompt(task: str, is_classification: bool) -> tuple[str, str]:
    template = load_template(OUTPUT_FIRST if is_classification else INPUT_FIRST)
    return template.id, render(template, task=task.strip())


def write_instances(
    tasks: list[str],
    kinds: list[Classification],
    generator: Generator,
    cfg: SelfInstructConfig,
    seed: int,
    log: CallLog | None = None,
) -> list[Generation]:
    prompts = [instance_prompt(t, k.is_classification)[1] for t, k in zip(tasks, kinds)]
    decoding = cfg.instance_decoding.to_decoding(seed, stop=(f"Example {cfg.max_instances_to_generate + 1}", "Task:"))
    return generate_all(generator, prompts, decoding, label="self-instruct: instances", log=log)


def _input_output(text: str) -> tuple[str, str]:
    parts = _OUTPUT.split(text, maxsplit=1)
    inp, out = (parts[0], parts[1]) if len(parts) == 2 else ("", text)
    out = _INPUT.split(out, maxsplit=1)[0]  # a second Input: starts another pair the model ran on into
    inp = re.sub(r"^\s*Input\s*\d*\s*:", "", inp)
    return inp.strip(), out.strip()


def parse_input_first(raw: str) -> list[Instance]:
    raw = raw.strip()
    if _EXAMPLE.search(raw):
        chunks = [c.strip() for c in _EXAMPLE.split(raw) if c.strip()]
    elif _OUTPUT.search(raw):
        chunks = [raw]
    else:
        return []
    return [Instance(*_input_output(c)) for c in chunks]


def parse_output_first(raw: str) -> list[Instance]:
    if "Class label:" not in raw:
        return []
    instances = []
    for chunk in raw.split("Class label:")[1:]:
        label, _, rest = chunk.strip().partition("\n")
        instances.append(Instance(input=rest.strip(), output=label.strip()))
    return instances


def filter_instances(
    instances: list[Instance], cfg: InstanceFilterConfig, rng: random.Random, truncated: bool
) -> list[Instance]:
    """Sets `rejected` on the instances that go; returns them with exact duplicates folded into the first."""
    if truncated and instances:
        instances[-1].rejected = "cut off by the token limit"
    unique: dict[tuple[str, str], Instance] = {}
    for inst in instances:
        key = (inst.input, inst.output)
        if key in unique:
            unique[key].merged += 1
            continue
        unique[key] = inst
        if inst.rejected:
            continue
        if cfg.same_input_output and inst.input == inst.output:
            inst.rejected = "output repeats the input"
        elif cfg.empty_output and not inst.output:
            inst.rejected = "empty output"
        elif cfg.incomplete and (inst.input.endswith(":") or inst.output.endswith(":")):
            inst.rejected = "input or output ends with a colon (unfinished)"
    kept = [i for i in unique.values() if not i.rejected]
    if cfg.conflicting_outputs:
        outputs: dict[str, set[str]] = {}
        for inst in kept:
            if inst.input:
                outputs.setdefault(inst.input, set()).add(inst.output)
        conflict = next((inp for inp, outs in outputs.items() if len(outs) > 1), None)
        if conflict is not None:
            for inst in kept:
                inst.rejected = f"the task gave conflicting outputs for the same input {conflict[:60]!r}"
            kept = []
    if len(kept) > cfg.max_per_task:
        chosen = {id(i) for i in rng.sample(kept, cfg.max_per_task)}
        for inst in kept:
            if id(inst) not in chosen:
                inst.rejected = f"over the cap of {cfg.max_per_task} instances per task"
    return list(unique.values())


@dataclass
class TaskInstances:
    task: str
    kind: Classification
    template_id: str
    generation: Generation
    instances: list[Instance] = field(default_factory=list)
    failure: str | None = None  # why the task has no instance at all


def instances_for(
    tasks: list[str], generator: Generator, cfg: SelfInstructConfig, seed: int, log: CallLog | None = None
) -> tuple[list[TaskInstances], list[Generation]]:
    """Classify each task, write its instances, parse and filter them. Also returns the classification calls."""
    kinds, clf_gens = classify(tasks, generator, cfg, seed, log)
    gens = write_instances(tasks, kinds, generator, cfg, seed, log)
    rng = random.Random(seed)
    out = []
    for task, kind, gen in zip(tasks, kinds, gens):
        template_id = OUTPUT_FIRST if kind.is_classification else INPUT_FIRST
        result = TaskInstances(task, kind, template_id, gen)
        if not gen.ok:
            result.failure = f"weak model failed to write instances: {gen.error}"
        else:
            parsed = (parse_output_first if kind.is_classification else parse_input_first)(gen.text or "")
            if not parsed:
                result.failure = f"no instance parsed from the model's text {(gen.text or '')[:80]!r}"
            else:
                result.instances = filter_instances(
                    parsed, cfg.instance_filters, rng, truncated=gen.finish_reason == "length"
                )
        out.append(result)
    return out, clf_gens


def instance_records(
    accepted: list, generator: Generator, cfg: SelfInstructConfig, seed: int, base: dict, log: CallLog | None = None
) -> list[Record]:
    """Records for the instances of accepted tasks (TaskCandidate objects), each kept or with its reason."""
    results, _ = instances_for([c.text for c in accepted], generator, cfg, seed, log)
    return instance_records_from(accepted, results, cfg, base)


def instance_records_from(
    accepted: list, results: list[TaskInstances], cfg: SelfInstructConfig, base: dict
) -> list[Record]:
    decoding = {
        **{f"task.{k}": v for k, v in cfg.decoding.model_dump().items()},
        **{f"instance.{k}": v for k, v in cfg.instance_decoding.model_dump().items()},
    }
    records = []
    for cand, res in zip(accepted, results):
        template = load_template(res.template_id)
        common = {**base, "template_id": template.id, "template_sha256": template.sha256}
        meta = {
            "is_classification": "yes" if res.kind.is_classification else "no",
            "classification_answer": (res.kind.answer or "").strip(),
            "task_template": base.get("template_id") or "",
        }
        if res.kind.unparsable or res.kind.error:
            meta["classification_failure"] = res.kind.error or "answer was neither yes nor no"
        parents = cand.parents
        if res.failure:
            records.append(
                Record(
                    instruction=cand.text,
                    source=Source.self_instruct,
                    parent_ids=parents,
                    round=cand.round,
                    decoding=decoding,
                    meta=meta,
                    **common,
                ).decide(STAGE, False, res.failure, score=cand.rouge)
            )
            continue
        for inst in res.instances:
            record = Record(
                instruction=cand.text,
                input=inst.input,
                output=inst.output,
                source=Source.self_instruct,
                parent_ids=parents,
                round=cand.round,
                decoding=decoding,
                meta={**meta, **({"duplicates_merged": str(inst.merged)} if inst.merged else {})},
                **common,
            )
            if inst.rejected:
                record.decide(STAGE, False, f"instance filter: {inst.rejected}")
            else:
                record.decide(
                    STAGE,
                    True,
                    "new task with a "
                    + (
                        "class label written output-first"
                        if res.kind.is_classification
                        else "instance written input-first"
                    ),
                    score=cand.rouge,
                )
            records.append(record)
    return records
