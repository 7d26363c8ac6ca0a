"""Self-Instruct as in the paper: the filters, classification detection, output-first / input-first instances,
the instance filters, bad input, and the original repository's file formats on its own seed tasks."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from ballast.backends.base import Generation
from ballast.errors import InputError
from ballast.generate.self_instruct import bootstrap, screen, self_instruct
from ballast.generate.self_instruct_compat import load_seed_tasks, run_self_instruct
from ballast.generate.self_instruct_instances import (
    Instance,
    filter_instances,
    parse_classification,
    parse_input_first,
    parse_output_first,
)
from ballast.recipe import DecodingConfig, InstanceFilterConfig, SelfInstructConfig
from ballast.records import ModelRef

SEED_TASKS = Path(__file__).resolve().parents[2] / "shared" / "data" / "self-instruct" / "seed_tasks.jsonl"


class Scripted:
    """Answers by the kind of prompt, so each branch of the method runs deterministically."""

    model = ModelRef(name="scripted")

    def __init__(self, tasks: str, clf: str = " No", instances: str = "Example 1\nInput: a\nOutput: b") -> None:
        self.tasks, self.clf, self.instances = tasks, clf, instances

    def generate(self, prompts, decoding):
        out = []
        for p in prompts:
            text = p if isinstance(p, str) else p[-1]["content"]
            if "Is it classification?" in text:
                out.append(Generation(text=self.clf))
            elif text.rstrip().endswith(":") and "\nTask " in text and "Come up with" in text:
                out.append(Generation(text=self.tasks, finish_reason="stop"))
            elif "Task:" in text:
                out.append(Generation(text=self.instances, finish_reason="stop"))
            else:
                out.append(Generation(text="A reply.", completion_tokens=2))
        return out


def test_instruction_filters_match_the_paper():
    cfg = SelfInstructConfig()
    assert screen("Write a poem", cfg) == "too short (3 words)"
    assert screen(" ".join(["word"] * 151), cfg) == "too long (151 words)"
    assert screen("Describe the image of a cat in detail", cfg) == "blacklisted keyword 'image'"
    assert screen("Write a program that sorts numbers quickly", cfg) == "starts with 'Write a program'"
    assert screen("- List three fruits that are red", cfg) == "starts with punctuation"
    assert screen("Écris un poème sur la mer", cfg) == "starts with a non-ASCII character"
    assert screen("Summarise the customer's complaint in one sentence.", cfg) is None
    assert cfg.rouge_threshold == 0.7 and cfg.prompt_instructions == 8 and cfg.human_in_prompt == 6


def test_classification_answers_and_instance_parsing():
    assert parse_classification(" Yes").is_classification
    no = parse_classification(" No")
    assert not no.is_classification and not no.unparsable
    odd = parse_classification(" Maybe")
    assert not odd.is_classification and odd.unparsable
    gen = parse_input_first("Example 1\nInput: 3 + 4\nOutput: 7\nExample 2\nInput: 2 + 2\nOutput: 4")
    assert [(i.input, i.output) for i in gen] == [("3 + 4", "7"), ("2 + 2", "4")]
    assert [(i.input, i.output) for i in parse_input_first("Output: Rise and Crust")] == [("", "Rise and Crust")]
    assert parse_input_first("I am not sure what you mean.") == []
    clf = parse_output_first("Class label: Positive\nReview: Great lamp.\nClass label: Negative\nReview: Broke.")
    assert [(i.input, i.output) for i in clf] == [("Review: Great lamp.", "Positive"), ("Review: Broke.", "Negative")]


def test_instance_filters():
    cfg, rng = InstanceFilterConfig(), random.Random(0)

    def kept(xs):
        return [(i.input, i.output) for i in xs if not i.rejected]

    def reasons(xs):
        return [i.rejected for i in xs if i.rejected]

    out = filter_instances(
        [Instance("x", "x"), Instance("y", ""), Instance("z", "Answer:"), Instance("q", "ok")],
        cfg,
        rng,
        truncated=False,
    )
    assert kept(out) == [("q", "ok")]
    assert reasons(out) == [
        "output repeats the input",
        "empty output",
        "input or output ends with a colon (unfinished)",
    ]
    out = filter_instances([Instance("same", "a"), Instance("same", "b"), Instance("other", "c")], cfg, rng, False)
    assert kept(out) == [] and all("conflicting outputs" in r for r in reasons(out))
    out = filter_instances(
        [Instance(str(i), f"out {i}") for i in range(6)]
        + [Instance("0", "out 0"), Instance("7", "out 7, and then the")],
        cfg,
        rng,
        truncated=True,
    )
    assert len(kept(out)) == 5 and out[0].merged == 1  # the duplicate folded in, then the cap of 5
    assert reasons(out).count("over the cap of 5 instances per task") == 1
    assert "cut off by the token limit" in reasons(out)


def test_too_few_seeds_is_a_clear_error(seeds):
    with pytest.raises(InputError, match="shows 8 human tasks .* has 3"):
        bootstrap(seeds[:3], Scripted(""), SelfInstructConfig(), "Harbor", 0)
    with pytest.raises(InputError, match="it is empty"):
        bootstrap([], Scripted(""), SelfInstructConfig(), "Harbor", 0)


def test_empty_or_bad_seed_task_file_is_a_clear_error(tmp_path):
    empty = tmp_path / "seed_tasks.jsonl"
    empty.write_text("\n")
    with pytest.raises(InputError, match="holds no tasks"):
        load_seed_tasks(empty)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "t1", "instruction": ""}\n')
    with pytest.raises(InputError, match="bad.jsonl:1: instruction"):
        load_seed_tasks(bad)


def test_unparsable_model_text_is_a_recorded_failure(seeds):
    cfg = SelfInstructConfig(num_instructions=2, max_requests=2, request_batch_size=1, mode="instances")
    records = self_instruct(seeds[:20], Scripted(" \n"), cfg, DecodingConfig(), "Harbor", "p", 0)
    assert len(records) == 2 and not any(r.kept for r in records)
    assert all(r.decisions[0].reason.startswith("no task parsed from the model's text") for r in records)
    # Tasks parse, but the instance text does not: each task is a record saying so.
    tasks = (
        "Tell the customer when the sofa will be delivered to their home.\n"
        "Task 10: Summarise this ticket for a colleague in one line."
    )
    records = self_instruct(seeds[:20], Scripted(tasks, instances="no idea"), cfg, DecodingConfig(), "Harbor", "p", 0)
    assert [r.decisions[0].reason[:27] for r in records] == ["no instance parsed from the"] * 2
    assert all(r.meta["is_classification"] == "no" for r in records)


def test_output_first_for_classification_tasks(seeds):
    cfg = SelfInstructConfig(num_instructions=1, max_requests=1, mode="instances", request_batch_size=1)
    tasks = "Is the customer's message a complaint, a question or a compliment?"
    scripted = Scripted(
        tasks,
        clf=" Yes",
        instances="Class label: Complaint\nMessage: The lamp broke.\n"
        "Class label: Question\nMessage: Do you ship to Canada?",
    )
    records = self_instruct(seeds[:20], scripted, cfg, DecodingConfig(), "Harbor", "p", 0)
    kept = [r for r in records if r.kept]
    assert [(r.input, r.output) for r in kept] == [
        ("Message: The lamp broke.", "Complaint"),
        ("Message: Do you ship to Canada?", "Question"),
    ]
    assert all(r.template_id == "generate/self_instruct_output_first" and r.template_sha256 for r in kept)
    assert all(r.meta["is_classification"] == "yes" and len(r.parent_ids) == 8 for r in kept)


@pytest.mark.skipif(not SEED_TASKS.is_file(), reason=f"the original Self-Instruct seed tasks are not at {SEED_TASKS}")
def test_original_seed_tasks_give_the_original_file_formats(weak, tmp_path):
    tasks = load_seed_tasks(SEED_TASKS)
    assert len(tasks) == 175 and sum(t.is_classification for t in tasks) == 26
    cfg = SelfInstructConfig(
        num_instructions=2,
        max_requests=4,
        request_batch_size=2,
        decoding=DecodingConfig(temperature=0.7, top_p=0.95, max_tokens=96),
        instance_decoding=DecodingConfig(temperature=0.0, top_p=1.0, max_tokens=96),
    )
    result = run_self_instruct(tasks, weak, cfg, tmp_path, seed=1)
    names = {p.name for p in tmp_path.rglob("*.jsonl")}
    assert {
        "machine_generated_instructions.jsonl",
        "is_clf_or_not_smollm2-135m-instruct_template_1.jsonl",
        "machine_generated_instances.jsonl",
        "all_generated_instances.jsonl",
    } <= names
    assert any(n.startswith("finetuning_data_") for n in names)

    def rows(path: Path) -> list[dict]:
        return [json.loads(line) for line in path.read_text().splitlines()]

    instructions = rows(result.files["instructions"])
    assert instructions, f"no instruction accepted in 4 requests: {result.counts}"
    for row in instructions:
        assert list(row) == ["instruction", "most_similar", "avg_similarity_score", "metadata", "request_idx"]
        assert 0 < len(row["most_similar"]) <= 10 and max(row["most_similar"].values()) <= 0.7
        assert row["metadata"]["response"]["choices"][0]["text"] and row["metadata"]["model_sha256"]
    for row in rows(result.files["is_clf_or_not"]):
        assert list(row) == ["instruction", "is_classification"]
    instances = rows(result.files["instances"])
    assert [r["instruction"] for r in instances] == [r["instruction"] for r in instructions]
    for row in instances:
        assert list(row) == [
            "instruction",
            "raw_instances",
            "instance_metadata",
            "instruction_metadata",
            "most_similar",
            "avg_similarity_score",
        ]
    for row in rows(result.files["all_instances"]):
        assert list(row) == ["instruction", "input", "output"]
    for row in rows(result.files["finetuning"]):
        assert list(row) == ["prompt", "completion"] and row["completion"].endswith("<|endoftext|>")
    # The same run as records: every candidate accounted for, with the template that made it.
    assert all(r.template_id and r.template_sha256 and r.decisions for r in result.records)
    assert result.counts["instructions"] == len(instructions)


def test_cli_reports_an_empty_seed_task_file(tmp_path):
    from typer.testing import CliRunner

    from ballast.cli import app

    empty = tmp_path / "seed_tasks.jsonl"
    empty.write_text("")
    out = CliRunner().invoke(app, ["self-instruct", str(empty), "--out", str(tmp_path / "out")])
    assert out.exit_code == 2 and "holds no tasks" in out.output
