"""Self-Instruct bootstrapping (Wang et al., 2023): grow a task pool from human seeds with the weak model.

Each request shows the model 8 tasks (6 human, 2 machine once the pool has them) and lets it continue the
numbered list; new tasks pass the paper's filters and the ROUGE-L novelty rule before joining the pool.
Rejected candidates are kept as records with the reason, so the funnel shows what the filters removed.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from rich.progress import Progress

from ballast.backends.base import Generator
from ballast.generate.responses import answer
from ballast.novelty import RougeNovelty
from ballast.recipe import DecodingConfig, SelfInstructConfig
from ballast.records import Record, Source
from ballast.templates import load_template

STAGE = "generate.self_instruct"
TASK_LINE = re.compile(r"(?:^|\n)\s*Task \d+:\s*")


def flatten_task(record: Record, max_words: int = 60) -> str:
    """A seed as one line: its instruction and the context it needs, cut to keep the prompt short."""
    words = f"{record.instruction} {record.input}".split()
    return " ".join(words[:max_words]) + (" ..." if len(words) > max_words else "")


def parse_tasks(completion: str) -> list[str]:
    """The completion continues `Task N:`; every `Task M:` line after it starts another task."""
    tasks = (" ".join(t.split()) for t in TASK_LINE.split(completion))
    # A completion cut off by the token limit can end in a bare "Task" label.
    return [t for t in (re.sub(r"\s*\bTask\s*\d*:?$", "", t) for t in tasks) if t]


def screen(task: str, cfg: SelfInstructConfig) -> str | None:
    """The paper's instruction filters; returns the reason to reject, or None."""
    words = task.split()
    if len(words) <= cfg.min_words:
        return f"too short ({len(words)} words)"
    if len(words) > cfg.max_words:
        return f"too long ({len(words)} words)"
    lowered = task.lower()
    hit = next((k for k in cfg.blacklist if re.search(rf"\b{re.escape(k)}\b", lowered)), None)
    if hit:
        return f"blacklisted keyword {hit!r}"
    if lowered.startswith("write a program"):
        return "asks for a program"
    if not task[0].isalnum():
        return "starts with punctuation"
    if not task[0].isascii():
        return "starts with a non-ASCII character"
    return None


@dataclass
class TaskCandidate:
    text: str
    parents: list[str]
    round: int
    rejected: str | None = None
    similar_to: str | None = None  # a seed's record id, or "machine:<candidate index>"
    rouge: float | None = None


def bootstrap(seeds: list[Record], generator: Generator, cfg: SelfInstructConfig, company: str,
              seed: int) -> list[TaskCandidate]:
    """Grow the pool until cfg.num_instructions machine tasks are accepted or cfg.max_requests are spent."""
    template = load_template("generate/self_instruct")
    rng = random.Random(seed)
    novelty = RougeNovelty(cfg.rouge_threshold)
    human = [(r.id, flatten_task(r)) for r in seeds]
    for rid, text in human:
        novelty.add(rid, text)
    machine: list[tuple[str, str]] = []
    candidates: list[TaskCandidate] = []
    decoding = cfg.decoding.to_decoding(seed, stop=("\n\n",))
    with Progress() as progress:
        bar = progress.add_task("self-instruct: new tasks", total=cfg.num_instructions)
        for request in range(cfg.max_requests):
            if len(machine) >= cfg.num_instructions:
                break
            n_machine = min(cfg.prompt_instructions - cfg.human_in_prompt, len(machine))
            shown = rng.sample(human, cfg.prompt_instructions - n_machine) + rng.sample(machine, n_machine)
            rng.shuffle(shown)
            lines = "\n".join(f"Task {i}: {text}" for i, (_, text) in enumerate(shown, start=1))
            prompt = template.text.format(company=company, tasks=lines) + f"\nTask {len(shown) + 1}:"
            (gen,) = generator.generate([prompt], decoding)
            if not gen.ok:
                candidates.append(TaskCandidate("", [], request, rejected=f"weak model failed: {gen.error}"))
                continue
            for text in parse_tasks(gen.text):
                cand = TaskCandidate(text, [pid for pid, _ in shown], request, rejected=screen(text, cfg))
                if cand.rejected is None:
                    novel, cand.similar_to, cand.rouge = novelty.is_novel(text)
                    if not novel:
                        cand.rejected = f"ROUGE-L {cand.rouge:.2f} > {cfg.rouge_threshold} against the pool"
                    elif len(machine) >= cfg.num_instructions:
                        cand.rejected = "pool already full"
                candidates.append(cand)
                if cand.rejected is None:
                    key = f"machine:{len(candidates) - 1}"
                    machine.append((key, text))
                    novelty.add(key, text)
                    progress.advance(bar)
    return candidates


def self_instruct(seeds: list[Record], generator: Generator, cfg: SelfInstructConfig,
                  response_decoding: DecodingConfig, company: str, policy_version: str, seed: int) -> list[Record]:
    """Records for every candidate: accepted tasks with the weak model's response, rejected ones with why."""
    template = load_template("generate/self_instruct")
    candidates = bootstrap(seeds, generator, cfg, company, seed)
    accepted = [c for c in candidates if c.rejected is None]
    answers = answer([c.text for c in accepted], generator, response_decoding.to_decoding(seed), company)
    answer_of = {c.text: a for c, a in zip(accepted, answers)}
    decoding = {**{f"task.{k}": v for k, v in cfg.decoding.model_dump().items()},
                **{f"response.{k}": v for k, v in response_decoding.model_dump().items()}}
    records: list[Record] = []
    for cand in candidates:
        gen = answer_of.get(cand.text) if cand.rejected is None else None
        record = Record(instruction=cand.text or "(no task parsed)", output=(gen.text or "") if gen else "",
                        source=Source.self_instruct, parent_ids=cand.parents, round=cand.round,
                        generator=generator.model, template_id=template.id, template_sha256=template.sha256,
                        decoding=decoding, policy_version=policy_version)
        similar = cand.similar_to
        if similar and similar.startswith("machine:"):
            similar = records[int(similar.split(":")[1])].id
        if cand.rejected is not None:
            record.decide(STAGE, False, cand.rejected, score=cand.rouge, duplicate_of=similar)
        elif not gen.ok:
            record.decide(STAGE, False, f"weak model failed to answer: {gen.error}")
        else:
            record.decide(STAGE, True, "new task answered by the weak model", score=cand.rouge)
        records.append(record)
    return records
