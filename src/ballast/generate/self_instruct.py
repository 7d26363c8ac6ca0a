"""Self-Instruct bootstrapping (Wang et al., 2023): grow a task pool from human seeds with the weak model.

Each request shows the model 8 tasks (6 human, 2 machine once the pool has them) and lets it continue the
numbered list; requests are sampled and sent in batches of 5, as in the paper's code. New tasks pass the
paper's filters (length, keyword blacklist, bad starts, non-ASCII start) and the ROUGE-L novelty rule
against the whole pool before joining it. Then either the weak model answers each new task (mode
"responses"), or, as in the paper (mode "instances"), each task is classified as classification or not and
gets instances written output-first or input-first (self_instruct_instances.py).
Rejected candidates are kept as records with the reason, so the funnel shows what the filters removed.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from rich.progress import Progress

from ballast.backends.base import Generation, Generator
from ballast.backends.calls import CallLog, generate_all
from ballast.errors import InputError
from ballast.generate.responses import Responder
from ballast.recipe import DecodingConfig, SelfInstructConfig
from ballast.records import Record, Source
from ballast.rouge import rouge_l
from ballast.stages import decision_stage
from ballast.templates import Template, load_template
from ballast.templates.render import render

STAGE = decision_stage("generate", "self_instruct")
TEMPLATE = "generate/self_instruct"
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
    hit = next((k for k in cfg.blacklist if re.search(rf"\b{re.escape(k.lower())}\b", lowered)), None)
    if hit:
        return f"blacklisted keyword {hit!r}"
    start = next((s for s in cfg.bad_starts if lowered.startswith(s.lower())), None)
    if start:
        return f"starts with {start!r}"
    if not task[0].isascii():
        return "starts with a non-ASCII character"
    if not task[0].isalnum():
        return "starts with punctuation"
    return None


class SimilarityPool:
    """ROUGE-L F (rouge-score, no stemming, as the paper's code) of a text against every text in the pool;
    the novelty decision and the most-similar list of the original output format come from one pass."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.texts: list[str] = []

    def add(self, text_id: str, text: str) -> None:
        self.ids.append(text_id)
        self.texts.append(text)

    def scores(self, text: str) -> np.ndarray:
        return np.array([rouge_l(text, other) for other in self.texts])


@dataclass
class TaskCandidate:
    text: str
    parents: list[str]
    round: int  # the request index
    rejected: str | None = None
    similar_to: str | None = None  # a seed's id, or "machine:<candidate index>"
    rouge: float | None = None
    most_similar: dict[str, float] = field(default_factory=dict)  # the 10 nearest pool texts
    avg_similarity: float | None = None
    prompt: str = ""
    generation: Generation | None = None


def _minimum_human(cfg: SelfInstructConfig) -> int:
    return cfg.prompt_instructions  # the first requests, with no machine task yet, show only human ones


def bootstrap_tasks(
    human: Sequence[tuple[str, str]],
    generator: Generator,
    cfg: SelfInstructConfig,
    template: Template,
    fields: dict[str, str],
    seed: int,
    log: CallLog | None = None,
) -> list[TaskCandidate]:
    """Grow the pool from (id, text) human tasks until cfg.num_instructions machine tasks are accepted or
    cfg.max_requests requests are spent. Every candidate comes back, accepted or with its reason."""
    if len(human) < _minimum_human(cfg):
        raise InputError(
            f"Self-Instruct shows {cfg.prompt_instructions} human tasks in its first requests, "
            f"but the seed set has {len(human)}" + (" (it is empty)" if not human else ""),
            field="generate.self_instruct.prompt_instructions",
        )
    rng = random.Random(seed)
    pool = SimilarityPool()
    for hid, text in human:
        pool.add(hid, text)
    machine: list[tuple[str, str]] = []
    candidates: list[TaskCandidate] = []
    decoding = cfg.decoding.to_decoding(seed, stop=("\n\n",))
    requests = 0
    with Progress() as progress:
        bar = progress.add_task("self-instruct: new tasks", total=cfg.num_instructions)
        while len(machine) < cfg.num_instructions and requests < cfg.max_requests:
            batch = []
            for _ in range(min(cfg.request_batch_size, cfg.max_requests - requests)):
                n_machine = min(cfg.prompt_instructions - cfg.human_in_prompt, len(machine))
                shown = rng.sample(list(human), cfg.prompt_instructions - n_machine) + rng.sample(machine, n_machine)
                rng.shuffle(shown)
                lines = "\n".join(f"Task {i}: {text}" for i, (_, text) in enumerate(shown, start=1))
                prompt = render(template, tasks=lines, **fields).rstrip("\n") + f"\nTask {len(shown) + 1}:"
                batch.append((shown, prompt))
            gens = generate_all(
                generator, [p for _, p in batch], decoding, label="self-instruct: requests", log=log, progress=False
            )
            for (shown, prompt), gen in zip(batch, gens):
                parents = [pid for pid, _ in shown]
                if not gen.ok:
                    candidates.append(
                        TaskCandidate(
                            "",
                            parents,
                            requests,
                            rejected=f"weak model failed: {gen.error}",
                            prompt=prompt,
                            generation=gen,
                        )
                    )
                    requests += 1
                    continue
                texts = parse_tasks(gen.text or "")
                if not texts:
                    candidates.append(
                        TaskCandidate(
                            "",
                            parents,
                            requests,
                            prompt=prompt,
                            generation=gen,
                            rejected=f"no task parsed from the model's text {(gen.text or '')[:80]!r}",
                        )
                    )
                for k, text in enumerate(texts):
                    cand = TaskCandidate(
                        text, parents, requests, rejected=screen(text, cfg), prompt=prompt, generation=gen
                    )
                    cut = gen.finish_reason == "length" and (
                        cfg.truncated == "drop_response" or (cfg.truncated == "drop_last" and k == len(texts) - 1)
                    )
                    if cut and cand.rejected is None:
                        cand.rejected = "cut off by the token limit"
                    if cand.rejected is None:
                        scores = pool.scores(text)
                        best = int(np.argmax(scores)) if len(scores) else None
                        cand.rouge = float(scores[best]) if best is not None else 0.0
                        cand.similar_to = pool.ids[best] if best is not None else None
                        cand.most_similar = {pool.texts[j]: float(scores[j]) for j in np.argsort(-scores)[:10]}
                        cand.avg_similarity = float(np.mean(scores)) if len(scores) else 0.0
                        if cand.rouge > cfg.rouge_threshold:
                            cand.rejected = f"ROUGE-L {cand.rouge:.2f} > {cfg.rouge_threshold} against the pool"
                        elif len(machine) >= cfg.num_instructions:
                            cand.rejected = "pool already full"
                    candidates.append(cand)
                    if cand.rejected is None:
                        key = f"machine:{len(candidates) - 1}"
                        machine.append((key, text))
                        pool.add(key, text)
                        progress.advance(bar)
                requests += 1
    return candidates


def bootstrap(
    seeds: list[Record],
    generator: Generator,
    cfg: SelfInstructConfig,
    company: str,
    seed: int,
    log: CallLog | None = None,
) -> list[TaskCandidate]:
    """Support-domain bootstrap: each human seed shows as its instruction plus the context it needs."""
    return bootstrap_tasks(
        [(r.id, flatten_task(r)) for r in seeds],
        generator,
        cfg,
        load_template(TEMPLATE),
        {"company": company},
        seed,
        log,
    )


def self_instruct(
    seeds: list[Record],
    generator: Generator,
    cfg: SelfInstructConfig,
    response_decoding: DecodingConfig,
    company: str,
    policy_version: str,
    seed: int,
    *,
    responder: Responder | None = None,
    log: CallLog | None = None,
) -> list[Record]:
    """Records for every candidate: accepted tasks with the weak model's response (or, in mode "instances",
    with the instances the paper's method writes), rejected ones with why."""
    template = load_template(TEMPLATE)
    candidates = bootstrap(seeds, generator, cfg, company, seed, log)
    base = {
        "generator": generator.model,
        "template_id": template.id,
        "template_sha256": template.sha256,
        "policy_version": policy_version,
    }
    if cfg.mode == "instances":
        from ballast.generate.self_instruct_instances import instance_records

        return task_records(candidates, base, cfg) + instance_records(
            [c for c in candidates if c.rejected is None], generator, cfg, seed, base, log=log
        )

    responder = responder or Responder(generator, response_decoding.to_decoding(seed), company, log=log)
    accepted = [c for c in candidates if c.rejected is None]
    answers = responder.answer([(c.text, "") for c in accepted])
    answer_of = {id(c): a for c, a in zip(accepted, answers)}
    decoding = {
        **{f"task.{k}": v for k, v in cfg.decoding.model_dump().items()},
        **{f"response.{k}": v for k, v in response_decoding.model_dump().items()},
        "response.mode": responder.mode,
    }
    records: list[Record] = []
    for cand in candidates:
        ans = answer_of.get(id(cand))
        gen = ans.generation if ans else None
        record = Record(
            instruction=cand.text or "(no task parsed)",
            output=(gen.text or "") if gen else "",
            source=Source.self_instruct,
            parent_ids=cand.parents,
            round=cand.round,
            decoding=decoding,
            meta=responder.provenance(ans) if ans else {},
            **base,
        )
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


def task_records(candidates: list[TaskCandidate], base: dict, cfg: SelfInstructConfig) -> list[Record]:
    """Rejected candidates as records (mode "instances": accepted tasks become instance records instead)."""
    decoding = {f"task.{k}": v for k, v in cfg.decoding.model_dump().items()}
    records: list[Record] = []
    index_of: dict[int, str] = {}
    for n, cand in enumerate(candidates):
        record = Record(
            instruction=cand.text or "(no task parsed)",
            source=Source.self_instruct,
            parent_ids=cand.parents,
            round=cand.round,
            decoding=decoding,
            **base,
        )
        index_of[n] = record.id
        if cand.rejected is None:
            continue
        similar = cand.similar_to
        if similar and similar.startswith("machine:"):
            similar = index_of.get(int(similar.split(":")[1]))
        records.append(record.decide(STAGE, False, cand.rejected, score=cand.rouge, duplicate_of=similar))
    return records
