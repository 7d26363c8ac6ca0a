"""Label-mask audit: what the trainer will learn from, checked on the tokenised dataset it trains on, before any step.

For every row of TRL's prepared dataset (input_ids and labels, after its truncation to max_seq_len) the audit
re-renders the record's prompt and prompt + reply with the tokenizer's chat template and checks that

- the row is that rendering, token for token (training sees the context evaluation renders), cut at most at its end;
- no prompt token has a label, and every label is its own input token (the collator shifts, not the dataset);
- the labelled tokens decode to exactly the reply plus what the template closes the assistant turn with (Gemma:
  `<end_of_turn>` and a newline), so the model learns to stop on a token generation stops on;
- at least one token keeps a label.

A row cut by max_seq_len lost its end of turn: learning it would teach the model to run on past the end of a reply.
Such rows are dropped and counted, as TRL drops the rows whose prompt alone fills max_seq_len. Anything else that
fails raises an InputError naming the records and what was expected; the audit is written first, either way.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from datasets import Dataset
from pydantic import BaseModel
from transformers import PreTrainedTokenizerBase

from ballast.errors import InputError
from ballast.records import Record

MASK_AUDIT = "mask_audit.json"
IGNORE = -100
_SENTINEL = "ballast-mask-audit-reply"


class RowAudit(BaseModel):
    id: str
    tokens: int  # the row's length as trained
    prompt_tokens: int
    supervised: int  # tokens with a label
    expected: int  # tokens of reply + turn close, untruncated
    truncated: bool  # max_seq_len cut the row
    exact: bool  # the labelled tokens decode to exactly reply + turn close
    problems: list[str] = []


class MaskAudit(BaseModel):
    template_sha256: str
    turn_close: str  # what the template writes after an assistant reply, e.g. "<end_of_turn>\n"
    end_of_turn: str  # the turn close's stop token, e.g. "<end_of_turn>"
    max_seq_len: int | None
    records: int  # given to the trainer
    prepared: int  # rows in TRL's dataset
    trained: int  # rows left to train on
    exact: int  # rows whose labelled text is exactly reply + turn close
    truncated: int
    truncated_share: float
    dropped_no_label: list[str]  # dropped by TRL: the prompt alone fills max_seq_len
    dropped_truncated: list[str]  # dropped here: the reply and its end of turn did not fit
    failures: dict[str, list[str]]  # problem -> record ids
    samples: list[dict[str, Any]]  # a few records' labelled text, decoded, for a reader
    ok: bool
    rows: list[RowAudit]


def turn_close(tokenizer: PreTrainedTokenizerBase) -> str:
    """What the chat template writes after an assistant reply: the end of turn and any whitespace after it."""
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "x"}, {"role": "assistant", "content": _SENTINEL}], tokenize=False
    )
    return text[text.rindex(_SENTINEL) + len(_SENTINEL) :]


def _content(message: dict[str, Any]) -> str:
    content = message["content"]
    return content if isinstance(content, str) else "".join(part.get("text", "") for part in content)


def _audit_row(row: dict[str, Any], record_id: str, tokenizer: PreTrainedTokenizerBase, close: str) -> RowAudit:
    ids, labels = list(row["input_ids"]), list(row["labels"])
    prompt_text = tokenizer.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True)
    full_text = tokenizer.apply_chat_template(row["prompt"] + row["completion"], tokenize=False)
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False).input_ids
    full_ids = tokenizer(full_text, add_special_tokens=False).input_ids
    supervised = [i for i, label in enumerate(labels) if label != IGNORE]
    expected_text = _content(row["completion"][-1]).strip() + close
    text = tokenizer.decode([ids[i] for i in supervised], skip_special_tokens=False)
    truncated = len(ids) < len(full_ids)
    problems = []
    if len(labels) != len(ids):
        problems.append("labels and input_ids differ in length")
    if not full_text.startswith(prompt_text) or full_ids[: len(prompt_ids)] != prompt_ids:
        problems.append("the chat template renders the prompt differently with the reply after it")
    if ids != full_ids[: len(ids)]:
        problems.append("the row is not the chat template's rendering of prompt + reply")
    if any(labels[i] != ids[i] for i in supervised):
        problems.append("a label differs from its input token")
    if any(labels[i] != IGNORE for i in range(min(len(prompt_ids), len(labels)))):
        problems.append("prompt tokens are supervised")
    if not supervised:
        problems.append("no supervised token left")
    elif not truncated and text != expected_text:
        problems.append("the supervised text is not the reply plus the end of turn")
    elif truncated and supervised != list(range(len(prompt_ids), len(ids))):
        problems.append("the supervised tokens of a truncated row are not all the tokens after its prompt")
    return RowAudit(
        id=record_id,
        tokens=len(ids),
        prompt_tokens=len(prompt_ids),
        supervised=len(supervised),
        expected=len(full_ids) - len(prompt_ids),
        truncated=truncated,
        exact=text == expected_text,
        problems=problems,
    )


def audit_masks(
    dataset: Dataset,
    tokenizer: PreTrainedTokenizerBase,
    records: Sequence[Record],
    *,
    max_seq_len: int | None,
    stop_ids: Sequence[int],
    out: Path | None = None,
    samples: int = 5,
    seed: int = 0,
) -> tuple[Dataset, MaskAudit]:
    """Audit TRL's prepared dataset (columns id, prompt, completion, input_ids, labels); returns it less the rows
    that max_seq_len cut, and the audit, which is written to `out` when given. Raises InputError when a prompt token
    is supervised, an untruncated row's supervised text is not reply + end of turn, a row has no supervised token,
    the template closes the assistant turn on no token generation stops on, or no row is left to train on."""
    close = turn_close(tokenizer)
    end = close.strip()
    end_ids = tokenizer(end, add_special_tokens=False).input_ids if end else []
    failures: dict[str, list[str]] = {}
    if len(end_ids) != 1 or end_ids[0] not in stop_ids:
        stops = [tokenizer.convert_ids_to_tokens(i) for i in stop_ids]
        failures[
            f"the chat template closes the assistant turn with {close!r}, not one of the tokens generation "
            f"stops on ({', '.join(stops)}): the model would not learn to stop"
        ] = ["<template>"]
    rows = [_audit_row(row, row["id"], tokenizer, close) for row in dataset]
    for row in rows:
        for problem in row.problems:
            failures.setdefault(problem, []).append(row.id)
    cut = [i for i, row in enumerate(rows) if row.truncated]
    kept_ids = {row.id for row in rows}
    dropped_no_label = [r.id for r in records if r.id not in kept_ids]
    if not failures and len(cut) == len(rows):
        failures[f"no record keeps its whole reply within max_seq_len={max_seq_len}; raise it"] = [
            rows[i].id for i in cut
        ]
    picked = sorted(random.Random(seed).sample(range(len(rows)), min(samples, len(rows))))
    sample_rows = []
    for i in picked:
        ids, labels = dataset[i]["input_ids"], dataset[i]["labels"]
        sample_rows.append(
            {
                "id": rows[i].id,
                "supervised_text": tokenizer.decode(
                    [t for t, label in zip(ids, labels, strict=True) if label != IGNORE], skip_special_tokens=False
                ),
            }
        )
    template = (
        tokenizer.chat_template
        if isinstance(tokenizer.chat_template, str)
        else json.dumps(tokenizer.chat_template, sort_keys=True)
    )
    audit = MaskAudit(
        template_sha256=hashlib.sha256((template or "").encode()).hexdigest(),
        turn_close=close,
        end_of_turn=end,
        max_seq_len=max_seq_len,
        records=len(records),
        prepared=len(rows),
        trained=len(rows) - len(cut),
        exact=sum(row.exact for row in rows),
        truncated=len(cut),
        truncated_share=round(len(cut) / len(rows), 4) if rows else 0.0,
        dropped_no_label=dropped_no_label,
        dropped_truncated=[rows[i].id for i in cut],
        failures=failures,
        samples=sample_rows,
        ok=not failures,
        rows=rows,
    )
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(audit.model_dump(mode="json"), indent=1, ensure_ascii=False) + "\n")
    if failures:
        raise InputError(_message(audit, rows, tokenizer, dataset), file=out)
    if cut:
        dataset = dataset.select([i for i, row in enumerate(rows) if not row.truncated])
    return dataset, audit


def _message(audit: MaskAudit, rows: list[RowAudit], tokenizer: PreTrainedTokenizerBase, dataset: Dataset) -> str:
    head = (
        f"label-mask audit failed on {sum(len(v) for v in audit.failures.values())} finding(s); each trained "
        f"record must supervise exactly its reply plus {audit.turn_close!r} and nothing of its prompt:"
    )
    lines = [head]
    for problem, ids in audit.failures.items():
        shown = ", ".join(ids[:8]) + (f" and {len(ids) - 8} more" if len(ids) > 8 else "")
        lines.append(f"- {problem}: {shown}")
    first = next((i for i, row in enumerate(rows) if row.problems), None)
    if first is not None:
        row = dataset[first]
        got = tokenizer.decode(
            [t for t, label in zip(row["input_ids"], row["labels"], strict=False) if label != IGNORE],
            skip_special_tokens=False,
        )
        want = _content(row["completion"][-1]).strip() + audit.turn_close
        lines.append(f"  e.g. {rows[first].id}: supervised {_clip(got)}, expected {_clip(want)}")
    return "\n".join(lines)


def _clip(text: str, n: int = 120) -> str:
    return repr(text) if len(text) <= n else repr(text[: n // 2]) + " ... " + repr(text[-n // 2 :])
