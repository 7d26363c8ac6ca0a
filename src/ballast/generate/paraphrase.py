"""Paraphrase: the same request in other words and other voices (personas), for wording the seeds lack.

The weak model rewrites a human training seed's instruction in a persona's voice; the rewrite keeps the
seed's input, and by default its human reply (the request means the same, so the policy-conformant answer
still fits). A rewrite that failed, came back unchanged or nearly so (ROUGE-L above a ceiling), ran far
longer than the original or echoed the prompt's labels is a record with the reason.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter

from ballast.backends.base import Generator
from ballast.backends.calls import CallLog, generate_all
from ballast.generate.responses import Responder
from ballast.recipe import ParaphraseConfig
from ballast.records import Record, Source
from ballast.rouge import rouge_l
from ballast.stages import decision_stage
from ballast.templates import load_template
from ballast.templates.render import render

STAGE = decision_stage("generate", "paraphrase")
TEMPLATE = "generate/paraphrase"
_LABEL = re.compile(
    r"^\s*(?:\*\*)?(?:rewritten|paraphrased|new)\s+(?:request|version|text)(?:\*\*)?\s*:\s*", re.IGNORECASE
)
_QUOTED = re.compile(r'^\s*["“](.*)["”]\s*$', re.DOTALL)
_ECHO = ("rewritten request", "rewrite the request", "request:")


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[\W_]+", " ", text.lower()).split())


def clean_paraphrase(text: str) -> str:
    text = _LABEL.sub("", text.strip())
    text = text.split("\n\n", 1)[0].strip()  # the model may go on to answer its own request
    quoted = _QUOTED.match(text)
    return (quoted.group(1) if quoted else text).strip()


def _rank(record: Record, seed: int) -> bytes:
    return hashlib.sha256(f"paraphrase:{seed}:{record.id}".encode()).digest()


def paraphrase(
    seeds: list[Record],
    generator: Generator,
    cfg: ParaphraseConfig,
    responder: Responder | None,
    policy_version: str,
    seed: int,
    log: CallLog | None = None,
) -> tuple[list[Record], Counter]:
    template = load_template(TEMPLATE)
    chosen = sorted((s for s in seeds if s.instruction.strip()), key=lambda r: _rank(r, seed))[: cfg.max_seeds]
    jobs = []
    for s in chosen:
        offset = _rank(s, seed)[0]
        jobs += [(s, cfg.personas[(offset + k) % len(cfg.personas)]) for k in range(cfg.per_seed)]
    prompts = [
        [{"role": "user", "content": render(template, persona=persona, instruction=s.instruction.strip())}]
        for s, persona in jobs
    ]
    gens = generate_all(generator, prompts, cfg.decoding.to_decoding(seed), label="paraphrase", log=log)
    verdicts: list[tuple[str, str | None, float | None]] = []
    for (s, _), gen in zip(jobs, gens):
        if not gen.ok:
            verdicts.append(("", f"weak model failed to paraphrase: {gen.error}", None))
            continue
        text = clean_paraphrase(gen.text or "")
        if not text:
            verdicts.append(("", "no rewrite in the model's text", None))
            continue
        rouge = rouge_l(s.instruction, text)
        n, n0 = len(text.split()), max(1, len(s.instruction.split()))
        if _norm(text) == _norm(s.instruction):
            verdicts.append((text, "the rewrite is the original instruction", rouge))
        elif rouge > cfg.max_rouge:
            verdicts.append((text, f"too close to the original (ROUGE-L {rouge:.2f} > {cfg.max_rouge})", rouge))
        elif n > cfg.max_length_ratio * n0 and n > n0 + 10:
            why = f"{n} words for an instruction of {n0}: more than {cfg.max_length_ratio:g} times as long"
            verdicts.append((text, why, rouge))
        elif any(e in text.lower() for e in _ECHO):
            verdicts.append((text, "it echoes the prompt's labels", rouge))
        else:
            verdicts.append((text, None, rouge))

    answers = {}
    if cfg.response == "weak" and responder is not None:
        todo = [k for k, (_, why, _) in enumerate(verdicts) if why is None]
        answers = dict(
            zip(
                todo,
                responder.answer([(verdicts[k][0], jobs[k][0].input) for k in todo], label="paraphrase: responses"),
            )
        )
    counts: Counter = Counter()
    records = []
    for k, ((s, persona), (text, why, rouge)) in enumerate(zip(jobs, verdicts)):
        ans = answers.get(k)
        if cfg.response == "parent":
            output, keep_labels = s.output, True
        else:
            output, keep_labels = (ans.generation.text or "") if ans and ans.generation.ok else "", False
            if why is None and ans is not None and not ans.generation.ok:
                why = f"weak model failed to answer: {ans.generation.error}"
        meta = {"persona": persona, "response": cfg.response, **({"ref": s.meta["ref"]} if "ref" in s.meta else {})}
        if ans is not None and responder is not None:
            meta |= responder.provenance(ans)
        record = Record(
            instruction=text or f"(no paraphrase of {s.id})",
            input=s.input,
            output=output,
            source=Source.paraphrase,
            parent_ids=[s.id],
            generator=generator.model,
            template_id=template.id,
            template_sha256=template.sha256,
            decoding={f"paraphrase.{k2}": v for k2, v in cfg.decoding.model_dump().items()},
            policy_version=policy_version,
            slice=s.slice,
            rules=list(s.rules) if keep_labels else [],
            audience=s.audience if keep_labels else None,
            meta=meta,
        )
        if why is None:
            record.decide(STAGE, True, f"paraphrased as {persona}", score=rouge)
            counts["kept"] += 1
        else:
            record.decide(STAGE, False, why, score=rouge)
            counts["dropped"] += 1
        records.append(record)
    return records, counts
