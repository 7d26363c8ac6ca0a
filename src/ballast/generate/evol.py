"""Evol-Instruct (Xu et al., 2023, WizardLM): rewrite instructions into harder ones, round after round.

Each round every instruction in the pool is evolved once by a method drawn at random: in depth (add a
constraint, deepen, concretize, ask for more reasoning steps) or in breadth (a new, rarer instruction in
the same domain). The paper's four elimination rules decide whether an evolution failed:

1. no information gain: the model itself compares the two instructions and answers Equal;
2. the response apologises or refuses ("sorry", ...) and is short (under 80 words);
3. the response holds only punctuation and stop words;
4. the evolved instruction copies words of the evolving prompt ("#Rewritten Prompt#", "given prompt", ...).

A failed evolution puts its parent back in the pool for the next round. Every evolution, failed or not, is
a record; a failed one keeps which rule removed it.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections import Counter
from dataclasses import dataclass

from ballast.backends.base import Generator
from ballast.backends.calls import CallLog, generate_all
from ballast.generate.responses import Responder
from ballast.policy.english import STOP_WORDS
from ballast.recipe import EvolConfig
from ballast.records import Record, Source
from ballast.stages import decision_stage
from ballast.templates import load_template
from ballast.templates.prompts import user_content
from ballast.templates.render import render

STAGE = decision_stage("generate", "evol")
JUDGE = "generate/evol_equal"

# A label the model echoes at the start of its rewrite is format, not content: removed before rule 4 looks.
_LEADING_LABEL = re.compile(
    r"^\s*(?:#+\s*)?(?:the\s+)?(?:rewritten|created|new|given)\s+prompt\s*#*\s*:?\s*", re.IGNORECASE
)
_QUOTED = re.compile(r'^\s*["“](.*)["”]\s*$', re.DOTALL)
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")

ELIMINATIONS = {
    1: "no information gain",
    2: "refusing response",
    3: "only punctuation and stop words",
    4: "copied prompt words",
}


def method_template(method: str) -> str:
    return f"generate/evol_{method}"


def clean_evolved(text: str) -> str:
    text = text.strip()
    for _ in range(2):
        text = _LEADING_LABEL.sub("", text).strip()
    quoted = _QUOTED.match(text)
    return (quoted.group(1) if quoted else text).strip()


def copied_phrase(text: str, phrases: list[str]) -> str | None:
    low = text.lower()
    return next((p for p in phrases if p.lower() in low), None)


def is_refusal(response: str, cfg: EvolConfig) -> bool:
    low = response.lower()
    return any(m in low for m in cfg.refusal_markers) and len(response.split()) < cfg.refusal_max_words


def only_stop_words(response: str) -> bool:
    return all(w in STOP_WORDS for w in _WORD.findall(response.lower()))


def parse_judgement(text: str) -> bool | None:
    """True for Equal, False for Not Equal, None when the answer is neither."""
    low = " ".join(text.lower().split())
    if re.search(r"\bnot\s+equal\b|\bunequal\b|\bdifferent\b", low):
        return False
    if re.search(r"\bequal\b|\bsame\b", low):
        return True
    return None


@dataclass
class _Node:
    record: Record  # the instruction as it stands in the pool (a seed or an earlier evolution)
    text: str  # what the evolving prompt shows: instruction and input together, as the paper's code
    root: Record


def _order(records: list[Record], seed: int) -> list[Record]:
    return sorted(records, key=lambda r: hashlib.sha256(f"evol:{seed}:{r.id}".encode()).digest())


def evolve(
    seeds: list[Record],
    generator: Generator,
    cfg: EvolConfig,
    responder: Responder,
    policy_version: str,
    seed: int,
    log: CallLog | None = None,
) -> tuple[list[Record], Counter]:
    """Every evolution as a record, and counts per outcome (evolved, eliminated per rule, failures)."""
    starts = _order([s for s in seeds if s.instruction.strip()], seed)[: cfg.max_seeds]
    pool = [_Node(s, user_content(s.instruction, s.input), s) for s in starts]
    rng = random.Random(f"evol:{seed}")
    judge = load_template(JUDGE)
    counts: Counter = Counter()
    records: list[Record] = []
    for rnd in range(1, cfg.rounds + 1):
        if not pool:
            break
        methods = [rng.choice(cfg.methods) for _ in pool]
        templates = [load_template(method_template(m)) for m in methods]
        prompts = [[{"role": "user", "content": render(t, prompt=node.text)}] for t, node in zip(templates, pool)]
        # A new decoding seed each round: a parent put back in the pool gets a fresh attempt.
        gens = generate_all(
            generator, prompts, cfg.decoding.to_decoding(seed + 7919 * rnd), label=f"evol: round {rnd}", log=log
        )
        outcome: list[tuple[str, str | None, int | None]] = []  # (evolved text, failure reason, elimination)
        for node, gen in zip(pool, gens):
            if not gen.ok:
                outcome.append(("", f"weak model failed to evolve: {gen.error}", None))
                continue
            text = clean_evolved(gen.text or "")
            if not text:
                outcome.append(("", "no evolved instruction in the model's text", None))
            elif (hit := copied_phrase(text, cfg.copied_phrases)) is not None:
                outcome.append((text, f"it contains {hit!r}", 4))
            elif " ".join(text.lower().split()) == " ".join(node.text.lower().split()):
                outcome.append((text, "the rewrite is the original instruction", 1))
            else:
                outcome.append((text, None, None))

        asking = [k for k, (_, why, _) in enumerate(outcome) if why is None]
        verdicts: dict[int, tuple[bool | None, str]] = {}
        if cfg.judge_equal and asking:
            judge_prompts = [
                [{"role": "user", "content": render(judge, first=pool[k].text, second=outcome[k][0])}] for k in asking
            ]
            for k, g in zip(
                asking,
                generate_all(
                    generator,
                    judge_prompts,
                    cfg.judge_decoding.to_decoding(seed),
                    label=f"evol: judge round {rnd}",
                    log=log,
                ),
            ):
                verdicts[k] = (
                    parse_judgement(g.text or "") if g.ok else None,
                    (g.text or "").strip()[:40] if g.ok else f"failed: {g.error}",
                )
        for k, (verdict, said) in verdicts.items():
            if verdict is True:
                outcome[k] = (outcome[k][0], f"the model judged the two instructions Equal ({said!r})", 1)

        answering = [k for k, (_, why, _) in enumerate(outcome) if why is None]
        answers = dict(
            zip(
                answering,
                responder.answer([(outcome[k][0], "") for k in answering], label=f"evol: responses round {rnd}"),
            )
        )
        next_pool = []
        for k, (node, template, method) in enumerate(zip(pool, templates, methods)):
            text, why, rule = outcome[k]
            ans = answers.get(k)
            output = (ans.generation.text or "") if ans and ans.generation.ok else ""
            if why is None and ans is not None:
                if not ans.generation.ok:
                    why = f"weak model failed to answer: {ans.generation.error}"
                elif is_refusal(output, cfg):
                    why, rule = f"the response apologises or refuses in {len(output.split())} words", 2
                elif only_stop_words(output):
                    why, rule = "the response holds only punctuation and stop words", 3
            meta = {
                "method": method,
                "root": node.root.id,
                **({"root_ref": node.root.meta["ref"]} if "ref" in node.root.meta else {}),
            }
            if ans is not None:
                meta |= responder.provenance(ans)
            if k in verdicts:
                meta["judge"] = {True: "equal", False: "not_equal", None: "unparsable"}[verdicts[k][0]]
            if rule is not None:
                meta["elimination"] = f"{rule}:{ELIMINATIONS[rule].replace(' ', '_')}"
            record = Record(
                instruction=text or f"(round {rnd}: no evolution of {node.record.id})",
                output=output,
                source=Source.evol,
                parent_ids=[node.record.id],
                round=rnd,
                generator=generator.model,
                template_id=template.id,
                template_sha256=template.sha256,
                decoding={
                    **{f"evol.{k2}": v for k2, v in cfg.decoding.model_dump().items()},
                    **responder.decoding_fields(),
                },
                policy_version=policy_version,
                slice=node.root.slice if method != "breadth" else None,
                meta=meta,
            )
            if why is None:
                note = (
                    ""
                    if meta.get("judge") != "unparsable"
                    else f"; the judge's answer was unparsable ({verdicts[k][1]!r}), so it counts as a gain"
                )
                record.decide(
                    STAGE,
                    True,
                    f"evolved in {'breadth' if method == 'breadth' else 'depth'} ({method}), round {rnd}{note}",
                )
                counts["evolved"] += 1
                counts["judge_unparsable"] += meta.get("judge") == "unparsable"
                next_pool.append(_Node(record, text, node.root))
            else:
                reason = f"elimination {rule} ({ELIMINATIONS[rule]}): {why}" if rule else why
                record.decide(STAGE, False, reason)
                counts[f"elimination_{rule}" if rule else "failed"] += 1
                next_pool.append(node)  # the parent goes back into the pool
            records.append(record)
        pool = next_pool
    return records, counts
