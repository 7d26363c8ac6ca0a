"""The `ballast` command line."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from ballast.errors import InputError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Build policy-anchored instruction-tuning data and prove it with held-out evaluations.")
policy_app = typer.Typer(no_args_is_help=True, help="Check a policy file.")
seeds_app = typer.Typer(no_args_is_help=True, help="Check a human seed set and its held-out split.")
models_app = typer.Typer(no_args_is_help=True, help="The embedded models and backends.")
app.add_typer(policy_app, name="policy")
app.add_typer(seeds_app, name="seeds")
app.add_typer(models_app, name="models")

console = Console()
err_console = Console(stderr=True)


def _fail(exc: Exception) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
    return typer.Exit(code=2)


@policy_app.command("check")
def policy_check(
    policy: Annotated[Path, typer.Argument(help="policy YAML")],
    against: Annotated[Optional[Path], typer.Option(help="prose policy (Markdown) whose rule ids must all be present")] = None,
) -> None:
    """Validate a policy YAML and list its rules."""
    from ballast.policy import load_policy, rule_ids_in_markdown

    try:
        pol = load_policy(policy)
    except InputError as exc:
        raise _fail(exc) from None
    table = Table(title=f"{pol.policy_id} ({len(pol.rules)} rules)")
    for col in ("id", "area", "title", "facts", "triggers", "escalate to"):
        table.add_column(col)
    for r in pol.rules:
        table.add_row(r.id, r.area, r.title, ", ".join(f"{f.value:g} {f.unit}" for f in r.facts),
                      str(len(r.triggers) or ""), r.escalate_to or "")
    console.print(table)
    if against is not None:
        missing = [i for i in rule_ids_in_markdown(against.read_text(encoding="utf-8")) if i not in pol.by_id]
        if missing:
            raise _fail(InputError(f"rule ids in {against} missing from the YAML: {missing}", file=policy))
        console.print(f"every rule id in {against} is in the YAML")
    console.print(f"[green]ok[/] {policy} sha256 {pol.sha256[:16]}")


@seeds_app.command("check")
def seeds_check(
    seeds: Annotated[Path, typer.Argument(help="seed JSONL")],
    policy: Annotated[Path, typer.Option(help="policy YAML")],
    heldout_fraction: Annotated[float, typer.Option(help="share of each slice held out for evaluation")] = 0.25,
) -> None:
    """Validate a seed set; print counts per rule and slice and the held-out split."""
    from ballast.policy import load_policy
    from ballast.seeds import load_seeds, split_heldout

    try:
        pol = load_policy(policy)
        records = load_seeds(seeds, pol)
    except InputError as exc:
        raise _fail(exc) from None
    split = split_heldout(records, heldout_fraction)
    per_rule = Counter(rule for r in records for rule in r.rules)
    table = Table(title=f"{seeds}: {len(records)} examples, {len(split.heldout)} held out")
    table.add_column("rule")
    table.add_column("examples", justify="right")
    for rule_id in pol.rule_ids:
        table.add_row(rule_id, str(per_rule.get(rule_id, 0)))
    console.print(table)
    slices = Table(title="slices")
    for col in ("slice", "train", "held out"):
        slices.add_column(col)
    train, held = Counter(r.slice for r in split.train), Counter(r.slice for r in split.heldout)
    for name in sorted(set(train) | set(held)):
        slices.add_row(name, str(train[name]), str(held[name]))
    console.print(slices)


def _parse_mapping(pairs: list[str]) -> dict[str, str]:
    mapping = {}
    for pair in pairs:
        field, sep, column = pair.partition("=")
        if not sep or not field or not column:
            raise InputError(f"--map expects FIELD=COLUMN (e.g. instruction=prompt), got {pair!r}")
        mapping[field] = column
    return mapping


@app.command("import")
def import_cmd(
    pool: Annotated[Path, typer.Argument(help="pool file: .jsonl, .csv, .tsv or .parquet")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Parquet file of records to write")],
    map_: Annotated[list[str], typer.Option("--map", help="FIELD=COLUMN, e.g. output=response (repeatable)")] = [],
    skip_invalid: Annotated[bool, typer.Option(help="quarantine bad rows instead of stopping at the first")] = False,
    quarantine: Annotated[Optional[Path], typer.Option(help="where bad rows go (default OUT.quarantine.jsonl)")] = None,
) -> None:
    """Import a user's instruction pool into records (source=imported)."""
    from ballast.pool_import import import_pool

    try:
        report = import_pool(pool, out, mapping=_parse_mapping(map_), skip_invalid=skip_invalid,
                             quarantine=quarantine)
    except InputError as exc:
        raise _fail(exc) from None
    console.print(f"read {report.read} rows, imported {report.imported} records to {out}")
    if report.quarantined:
        console.print(f"[yellow]quarantined {report.quarantined} bad rows[/] to {report.quarantine_path}")
        for line in report.errors[:5]:
            console.print(f"  {line}", highlight=False)


@models_app.command("check")
def models_check() -> None:
    """Find every embedded model in its package and check its sha256."""
    from ballast.models import EMBEDDED, ModelFileError, resolve

    table = Table(title="embedded models")
    for col in ("name", "package", "sha256", "path"):
        table.add_column(col)
    failed = False
    for name, spec in EMBEDDED.items():
        try:
            path, ref = resolve(name)
            table.add_row(name, spec.package, f"[green]{ref.sha256[:16]}[/]", str(path))
        except ModelFileError as exc:
            failed = True
            table.add_row(name, spec.package, "[red]failed[/]", str(exc))
    console.print(table)
    if failed:
        raise typer.Exit(code=1)


@models_app.command("smoke")
def models_smoke(
    model: Annotated[str, typer.Option(help="embedded model name or GGUF path (llamacpp), or served model name")] = "smollm2-135m-instruct",
    base_url: Annotated[Optional[str], typer.Option(help="OpenAI-compatible server, e.g. http://127.0.0.1:8080/v1")] = None,
    prompt: Annotated[str, typer.Option(help="user message")] = "A customer asks how long refunds take. Reply in one sentence.",
    max_tokens: Annotated[int, typer.Option()] = 48,
) -> None:
    """Generate once through a backend and print the text, token counts and speed."""
    from ballast.backends.base import Decoding

    if base_url:
        from ballast.backends.openai_http import OpenAIBackend

        backend = OpenAIBackend(base_url, model)
    else:
        from ballast.backends.llamacpp import LlamaCppBackend

        backend = LlamaCppBackend(model)
    start = time.perf_counter()
    gen = backend.generate([[{"role": "user", "content": prompt}]], Decoding(temperature=0.0, max_tokens=max_tokens))[0]
    seconds = time.perf_counter() - start
    if not gen.ok:
        raise _fail(RuntimeError(f"{backend.model.name}: {gen.error}"))
    console.print(gen.text, highlight=False)
    console.print(f"[dim]{backend.model.name} sha256 {str(backend.model.sha256)[:16]}: {gen.prompt_tokens} prompt + "
                  f"{gen.completion_tokens} completion tokens in {seconds:.2f}s "
                  f"({gen.completion_tokens / seconds:.1f} tok/s incl. prompt)[/]")


@app.command("run")
def run_cmd(
    recipe: Annotated[Path, typer.Argument(help="recipe YAML")],
    overrides: Annotated[Optional[list[str]], typer.Argument(help="KEY=VALUE overrides, e.g. select.budget=50")] = None,
    until: Annotated[str, typer.Option(help="stop after this stage: generate, curate, select, train, evaluate, report")] = "report",
) -> None:
    """Run the pipeline; finished stages of an earlier run with the same inputs are reused."""
    from ballast.pipeline import STAGES, run_recipe
    from ballast.recipe import load_recipe

    if until not in STAGES:
        raise _fail(InputError(f"--until {until!r}: expected one of {', '.join(STAGES)}"))
    try:
        loaded = load_recipe(recipe, overrides or [])
    except InputError as exc:
        raise _fail(exc) from None
    run_recipe(loaded, until)


def _find_record(run: Path, record_id: str):  # noqa: ANN202
    from ballast.store import read_records

    for stage in ("select", "curate", "generate"):
        path = run / "stages" / stage / "records.parquet"
        if path.is_file():
            records = read_records(path)
            by_id = {r.id: r for r in records}
            matches = [r for r in records if r.id.startswith(record_id)]
            if len(matches) > 1:
                raise InputError(f"{record_id!r} matches {len(matches)} records; give more characters")
            if matches:
                return matches[0], by_id
    raise InputError(f"no record {record_id!r} in {run}")


@app.command("explain")
def explain_cmd(
    run: Annotated[Path, typer.Argument(help="run folder")],
    record_id: Annotated[str, typer.Argument(help="record id (a unique prefix is enough)")],
) -> None:
    """Print a record, its provenance and every decision on it, with the record it duplicated."""
    try:
        record, by_id = _find_record(run, record_id)
    except InputError as exc:
        raise _fail(exc) from None
    verdict = "[green]kept[/]" if record.kept else "[red]dropped[/]"
    console.print(f"[bold]{record.id}[/] {verdict}  source={record.source.value} round={record.round} "
                  f"weight={record.weight:g}", highlight=False)
    console.print(f"[bold]instruction[/] {record.instruction}", highlight=False)
    if record.input:
        console.print(f"[bold]input[/] {record.input}", highlight=False)
    console.print(f"[bold]output[/] {record.output}", highlight=False)
    gen = record.generator
    console.print(f"[dim]generator={gen.name if gen else '-'} sha256={gen.sha256 if gen else '-'} "
                  f"template={record.template_id} ({(record.template_sha256 or '-')[:12]}) "
                  f"policy={record.policy_version} parents={len(record.parent_ids)} decoding={record.decoding} "
                  f"meta={record.meta}[/]", highlight=False)
    console.print("[bold]decisions[/]")
    # One line per decision (not a table) so nothing is cut at the terminal's width and grep finds it.
    for d in record.decisions:
        details = ", ".join(x for x in (d.rule_id and f"rule {d.rule_id}",
                                         d.score is not None and f"score {d.score:.3g}",
                                         d.duplicate_of and f"duplicate of {d.duplicate_of}") if x)
        mark = "[green]kept[/]" if d.kept else "[red]dropped[/]"
        console.print(f"  {d.stage}: {mark} {d.reason}" + (f" ({details})" if details else ""), highlight=False,
                      soft_wrap=True)
    for d in record.decisions:
        if d.duplicate_of:
            other = by_id.get(d.duplicate_of)
            text = other.instruction if other else "(not in this run's records)"
            console.print(f"[bold]{d.duplicate_of}[/] (duplicated by this record): {text}", highlight=False)


@app.command("report")
def report_cmd(run: Annotated[Path, typer.Argument(help="run folder")]) -> None:
    """Re-render a finished run's HTML report and data card."""
    from ballast.report import render_data_card, render_report

    render_data_card(run)
    console.print(f"report: {render_report(run)}")


if __name__ == "__main__":
    app()
