"""The `ballast` command line."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Annotated, Optional

import typer
import yaml
from rich.console import Console
from rich.table import Table

from ballast.errors import InputError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Build policy-anchored instruction-tuning data and prove it with held-out evaluations.",
)
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
    against: Annotated[
        Optional[Path], typer.Option(help="prose policy (Markdown) whose rule ids must all be present")
    ] = None,
) -> None:
    """Validate a policy YAML and list its rules."""
    from ballast.policy.schema import load_policy, rule_ids_in_markdown

    try:
        pol = load_policy(policy)
    except InputError as exc:
        raise _fail(exc) from None
    table = Table(title=f"{pol.policy_id} ({len(pol.rules)} rules)")
    for col in ("id", "area", "title", "facts", "triggers", "escalate to"):
        table.add_column(col)
    for r in pol.rules:
        table.add_row(
            r.id,
            r.area,
            r.title,
            ", ".join(f"{f.value:g} {f.unit}" for f in r.facts),
            str(len(r.triggers) or ""),
            r.escalate_to or "",
        )
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
    from ballast.policy.schema import load_policy
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
        report = import_pool(pool, out, mapping=_parse_mapping(map_), skip_invalid=skip_invalid, quarantine=quarantine)
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
    from ballast.backends.models import EMBEDDED, ModelFileError, resolve

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
    model: Annotated[
        str, typer.Option(help="embedded model name or GGUF path (llamacpp), or served model name")
    ] = "smollm2-135m-instruct",
    base_url: Annotated[
        Optional[str], typer.Option(help="OpenAI-compatible server, e.g. http://127.0.0.1:8080/v1")
    ] = None,
    prompt: Annotated[
        str, typer.Option(help="user message")
    ] = "A customer asks how long refunds take. Reply in one sentence.",
    max_tokens: Annotated[int, typer.Option()] = 48,
) -> None:
    """Generate once through a backend and print the text, token counts and speed."""
    from ballast.backends.base import Decoding
    from ballast.backends.factory import backend_for
    from ballast.recipe import ServerConfig

    server = ServerConfig(base_url=base_url, model=model, timeout_s=60.0) if base_url else None
    backend = backend_for(server, model)
    start = time.perf_counter()
    gen = backend.generate([[{"role": "user", "content": prompt}]], Decoding(temperature=0.0, max_tokens=max_tokens))[0]
    seconds = time.perf_counter() - start
    if not gen.ok:
        raise _fail(RuntimeError(f"{backend.model.name}: {gen.error}"))
    console.print(gen.text, highlight=False)
    console.print(
        f"[dim]{backend.model.name} sha256 {str(backend.model.sha256)[:16]}: {gen.prompt_tokens} prompt + "
        f"{gen.completion_tokens} completion tokens in {seconds:.2f}s "
        f"({gen.completion_tokens / seconds:.1f} tok/s incl. prompt)[/]"
    )


@app.command("self-instruct")
def self_instruct_cmd(
    seed_tasks: Annotated[Path, typer.Argument(help="seed tasks in the original format (seed_tasks.jsonl)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="folder for the original-format JSONL files")],
    num_instructions: Annotated[int, typer.Option(help="machine instructions to generate")] = 20,
    max_requests: Annotated[int, typer.Option(help="stop after this many requests")] = 50,
    model: Annotated[
        str, typer.Option(help="embedded model or GGUF path (llamacpp), or served model name")
    ] = "smollm2-135m-instruct",
    base_url: Annotated[
        Optional[str], typer.Option(help="OpenAI-compatible server, e.g. http://127.0.0.1:8080/v1")
    ] = None,
    concurrency: Annotated[int, typer.Option(help="requests in flight against a server")] = 4,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Self-Instruct on the paper's seed tasks, writing the original repository's file formats."""
    from ballast.generate.self_instruct_compat import load_seed_tasks, run_self_instruct
    from ballast.recipe import SelfInstructConfig

    try:
        tasks = load_seed_tasks(seed_tasks)
    except InputError as exc:
        raise _fail(exc) from None
    from ballast.backends.factory import backend_for
    from ballast.recipe import ServerConfig

    server = ServerConfig(base_url=base_url, model=model, concurrency=concurrency, timeout_s=60.0) if base_url else None
    backend = backend_for(server, model)
    cfg = SelfInstructConfig(num_instructions=num_instructions, max_requests=max_requests)
    result = run_self_instruct(tasks, backend, cfg, out, seed=seed)
    for name, path in result.files.items():
        console.print(f"{name}: {path}")
    console.print(", ".join(f"{k} {v}" for k, v in result.counts.items()))


@app.command("run")
def run_cmd(
    recipe: Annotated[Path, typer.Argument(help="recipe YAML")],
    overrides: Annotated[Optional[list[str]], typer.Argument(help="KEY=VALUE overrides, e.g. select.budget=50")] = None,
    until: Annotated[
        str, typer.Option(help="stop after this stage: generate, curate, select, train, evaluate, report")
    ] = "report",
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


def _shard_range(text: str) -> list[int]:
    """'3' -> [3]; '0-4' -> [0, 1, 2, 3, 4]; '1,5' -> [1, 5]."""
    out: list[int] = []
    for part in text.split(","):
        lo, sep, hi = part.partition("-")
        if not lo.strip().isdigit() or (sep and not hi.strip().isdigit()):
            raise InputError(f"--shards {text!r}: expected numbers and ranges such as 0-4 or 1,5")
        out += list(range(int(lo), int(hi) + 1)) if sep else [int(lo)]
    return out


@app.command("pool")
def pool_cmd(
    recipe: Annotated[Path, typer.Argument(help="pool recipe YAML (with a `pool:` section)")],
    overrides: Annotated[Optional[list[str]], typer.Argument(help="KEY=VALUE overrides")] = None,
    shards: Annotated[Optional[str], typer.Option(help="shards to make, e.g. 0-4 or 1,5 (default: all)")] = None,
) -> None:
    """Generate a synthetic pool shard by shard into a versioned dataset folder; finished shards are kept."""
    from ballast.pipeline import run_recipe
    from ballast.pool_build import build_pool

    try:
        folder = build_pool(recipe, run_recipe, overrides or [], _shard_range(shards) if shards else None)
    except InputError as exc:
        raise _fail(exc) from None
    console.print(f"[green]pool[/] {folder}")


class _StageRecords:
    """Records of a run's stage files, read by id without loading a whole 300,000-record file."""

    STAGES = ("select", "curate", "generate")

    def __init__(self, run: Path) -> None:
        import pyarrow.parquet as pq

        self.files = [
            (stage, pq.ParquetFile(p))
            for stage in self.STAGES
            if (p := run / "stages" / stage / "records.parquet").is_file()
        ]
        self._ids: dict[str, object] = {}

    def _id_column(self, stage: str, pf):  # noqa: ANN001, ANN202
        if stage not in self._ids:
            self._ids[stage] = pf.read(columns=["id"]).column("id")
        return self._ids[stage]

    def _rows(self, pf, positions: list[int]) -> list:  # noqa: ANN001
        from ballast.store import RECORD_SCHEMA, from_table

        out, start = [], 0
        for rg in range(pf.metadata.num_row_groups):
            n = pf.metadata.row_group(rg).num_rows
            inside = [p - start for p in positions if start <= p < start + n]
            if inside:
                group = pf.read_row_group(rg).select(RECORD_SCHEMA.names).cast(RECORD_SCHEMA)
                out.extend(from_table(group.take(inside)))
            start += n
        return out

    def find(self, prefix: str) -> list:
        """Every row whose id starts with `prefix`, from the latest stage that has one (a pool can hold the same
        content, hence the same id, more than once); an InputError when the prefix names several ids."""
        import pyarrow.compute as pc

        for stage, pf in self.files:
            ids = self._id_column(stage, pf)
            mask = pc.starts_with(ids, prefix)
            positions = pc.indices_nonzero(mask).to_pylist()
            if not positions:
                continue
            distinct = set(ids.filter(mask).to_pylist())
            if len(distinct) > 1:
                raise InputError(f"{prefix!r} matches {len(distinct)} records; give more characters")
            return self._rows(pf, positions)
        return []

    def get(self, record_id: str):  # noqa: ANN202
        rows = self.find(record_id) if record_id else []
        return rows[0] if rows and rows[0].id == record_id else None


def _find_record(run: Path, record_id: str):  # noqa: ANN202
    records = _StageRecords(run)
    matches = records.find(record_id)
    if not matches:
        raise InputError(f"no record {record_id!r} in {run}")
    return matches, records


def _clip(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + f"… ({len(text)} characters)"


@app.command("explain")
def explain_cmd(
    run: Annotated[Path, typer.Argument(help="run folder")],
    record_id: Annotated[str, typer.Argument(help="record id (a unique prefix is enough)")],
) -> None:
    """Print a record, its provenance and every decision on it, with the record it duplicated."""
    try:
        occurrences, by_id = _find_record(run, record_id)
    except InputError as exc:
        raise _fail(exc) from None
    record = occurrences[0]
    verdict = "[green]kept[/]" if record.kept else "[red]dropped[/]"
    console.print(
        f"[bold]{record.id}[/] {verdict}  source={record.source.value} round={record.round} weight={record.weight:g}",
        highlight=False,
    )
    console.print(f"[bold]instruction[/] {record.instruction}", highlight=False)
    if record.input:
        console.print(f"[bold]input[/] {record.input}", highlight=False)
    console.print(f"[bold]output[/] {record.output}", highlight=False)
    gen = record.generator
    console.print(
        f"[dim]generator={gen.name if gen else '-'} sha256={gen.sha256 if gen else '-'} "
        f"template={record.template_id} ({(record.template_sha256 or '-')[:12]}) "
        f"policy={record.policy_version} parents={len(record.parent_ids)} decoding={record.decoding} "
        f"meta={record.meta}[/]",
        highlight=False,
    )
    shown: set[str] = set()
    for n, occurrence in enumerate(occurrences, start=1):
        if len(occurrences) > 1:
            mark = "[green]kept[/]" if occurrence.kept else "[red]dropped[/]"
            console.print(f"[bold]decisions[/] (occurrence {n} of {len(occurrences)} of this exact content: {mark})")
        else:
            console.print("[bold]decisions[/]")
        # One line per decision (not a table) so nothing is cut at the terminal's width and grep finds it.
        for d in occurrence.decisions:
            details = ", ".join(
                x
                for x in (
                    d.rule_id and f"rule {d.rule_id}",
                    d.score is not None and f"score {d.score:.3g}",
                    d.duplicate_of and f"duplicate of {d.duplicate_of}",
                )
                if x
            )
            mark = "[green]kept[/]" if d.kept else "[red]dropped[/]"
            console.print(
                f"  {d.stage}: {mark} {d.reason}" + (f" ({details})" if details else ""),
                highlight=False,
                soft_wrap=True,
            )
        for d in occurrence.decisions:
            if d.duplicate_of and d.duplicate_of not in shown:
                shown.add(d.duplicate_of)
                other = by_id.get(d.duplicate_of)
                if other is None:
                    console.print(
                        f"[bold]{d.duplicate_of}[/] (duplicated by this record, {d.stage}): "
                        "(not in this run's records)",
                        highlight=False,
                    )
                    continue
                console.print(
                    f"[bold]{d.duplicate_of}[/] (duplicated by this record, {d.stage}): {other.instruction}",
                    highlight=False,
                    soft_wrap=True,
                )
                if other.input:
                    console.print(f"  [dim]input[/] {_clip(other.input)}", highlight=False, soft_wrap=True)
                console.print(f"  [dim]output[/] {_clip(other.output)}", highlight=False, soft_wrap=True)


@app.command("stats")
def stats_cmd(run: Annotated[Path, typer.Argument(help="run folder (or a decisions.parquet file)")]) -> None:
    """The funnel of a run's decision log: per stage, and per stage and source (DuckDB over decisions.parquet)."""
    import duckdb

    from ballast.report import STAGE_ORDER, funnel

    decisions = run if run.suffix == ".parquet" else run / "decisions.parquet"
    if not decisions.is_file():
        raise _fail(InputError("no decision log here; run `ballast run` or `ballast curate` first", file=decisions))
    steps = funnel(decisions)
    table = Table(title=f"funnel: {decisions}")
    for col, justify in (
        ("stage", "left"),
        ("decided", "right"),
        ("kept", "right"),
        ("dropped", "right"),
        ("top drop reasons", "left"),
    ):
        table.add_column(col, justify=justify, no_wrap=col != "top drop reasons")
    for s in steps:
        table.add_row(
            s["stage"],
            str(s["kept"] + s["dropped"]),
            str(s["kept"]),
            str(s["dropped"]),
            "\n".join(f"{n} × {why}" for why, n in s["reasons"][:3]),
        )
    console.print(table)
    rows = duckdb.sql(f"""select stage, source, count(*), count(*) filter (where kept),
                          count(*) filter (where not kept), min({STAGE_ORDER}) o, min(pos) p
                          from (select *, row_number() over () as pos from read_parquet('{decisions}'))
                          group by stage, source order by o, p, source""").fetchall()
    by_source = Table(title="per stage and source")
    for col in ("stage", "source", "decided", "kept", "dropped"):
        by_source.add_column(col, justify="left" if col in ("stage", "source") else "right", no_wrap=True)
    for stage, source, decided, kept, dropped, _, _ in rows:
        by_source.add_row(stage, source, str(decided), str(kept), str(dropped))
    console.print(by_source)
    if steps:
        console.print(f"kept after {steps[-1]['stage']}: {steps[-1]['kept']}")


@app.command("curate")
def curate_cmd(
    pool: Annotated[Path, typer.Argument(help="Parquet file of records (from `ballast import`)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="run folder to write")],
    overrides: Annotated[
        Optional[list[str]],
        typer.Argument(help="KEY=VALUE overrides of the curate section, e.g. curate.semantic.enabled=true"),
    ] = None,
    recipe: Annotated[
        Optional[Path],
        typer.Option(
            help="recipe whose curate section, policy and training seeds to use (default: built-in settings, "
            "no policy checks)"
        ),
    ] = None,
) -> None:
    """Curate a large pool in chunks: OUT/stages/curate/records.parquet (every record with its decisions) and
    OUT/decisions.parquet (the decision log), for `ballast explain` and `ballast stats`."""
    from ballast.curate.stream import curate_parquet
    from ballast.recipe import CurateConfig, _apply_override
    from ballast.store import write_json

    try:
        seen, policy, negatives = [], None, None
        if recipe is not None:
            from ballast.policy.schema import load_policy
            from ballast.recipe import load_recipe
            from ballast.seeds import load_seeds, split_heldout

            loaded = load_recipe(recipe, overrides or [])
            cfg = loaded.curate
            policy = load_policy(loaded.policy)
            seen = split_heldout(
                load_seeds(loaded.seeds, policy), loaded.heldout_fraction, salt=f"heldout:{loaded.seed}"
            ).train
            if cfg.classifier.enabled:  # the classifier learns from the seeds' contrastive negatives
                from ballast.generate.contrastive import contrastive_negatives

                negatives = contrastive_negatives(seen, policy, loaded.generate.contrastive)[0]
        else:
            data: dict = {"curate": {}}
            for override in overrides or []:
                _apply_override(data, override if override.startswith("curate.") else f"curate.{override}")
            from ballast.yamlio import validate

            cfg = validate(CurateConfig, data["curate"], file="<command line>")
        report = curate_parquet(
            pool,
            out / "stages" / "curate" / "records.parquet",
            out / "decisions.parquet",
            cfg,
            seen=seen,
            policy=policy,
            negatives=negatives,
        )
    except InputError as exc:
        raise _fail(exc) from None
    write_json(
        {"pool": str(pool), "config": cfg.model_dump(mode="json"), **report.as_dict()},
        out / "stages" / "curate" / "stats.json",
    )
    table = Table(
        title=f"curated {report.records_in} records in {report.seconds:.1f}s, peak RSS {report.peak_rss_mb:.0f} MB"
    )
    for col in ("stage", "decided", "kept", "dropped", "seconds"):
        table.add_column(col, justify="left" if col == "stage" else "right", no_wrap=True)
    for name, c in report.stages.items():
        table.add_row(name, str(c.decided), str(c.kept), str(c.dropped), f"{c.seconds:.1f}")
    console.print(table)
    console.print(f"kept {report.kept}, dropped {report.dropped}; decisions in {out / 'decisions.parquet'}")


@app.command("report")
def report_cmd(run: Annotated[Path, typer.Argument(help="run folder")]) -> None:
    """Re-render a finished run's HTML report and data card."""
    from ballast.report import render_data_card, render_report

    render_data_card(run)
    console.print(f"report: {render_report(run)}")


@app.command("gate")
def gate_cmd(
    run: Annotated[Path, typer.Argument(help="run folder")],
    against: Annotated[
        Optional[Path], typer.Option(help="run to compare slices with (default: the last released run)")
    ] = None,
    release: Annotated[bool, typer.Option(help="if every check passes, mark this run as the released one")] = False,
) -> None:
    """Check a finished run against the recipe's release thresholds; exits 1 when any check fails."""
    from ballast.evaluate.gate import mark_released, run_gate
    from ballast.recipe import Recipe

    recipe = Recipe.model_validate(yaml.safe_load((run / "recipe.yaml").read_text()))
    checks = run_gate(run, recipe.gate, against)
    table = Table(title=f"release gate: {recipe.gate.model} model of {run}")
    for col in ("check", "value", "limit", "result"):
        table.add_column(col)
    for c in checks:
        table.add_row(
            c.name,
            "–" if c.value is None else f"{c.value:.3f}",
            c.limit,
            "[green]pass[/]" if c.passed else "[red]FAIL[/]",
        )
    console.print(table)
    failed = [c.name for c in checks if not c.passed]
    if failed:
        err_console.print(f"[bold red]gate failed:[/] {', '.join(failed)}")
        raise typer.Exit(code=1)
    if release:
        console.print(f"released: {mark_released(run)}")


if __name__ == "__main__":  # after every command is registered, so `python -m ballast.cli` knows them all
    app()
