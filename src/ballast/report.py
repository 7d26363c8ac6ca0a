"""One self-contained HTML report (tables and inline SVG plots) and a Markdown data card for a run."""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

import duckdb

from ballast.stages import stage_order_sql

PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1"]
STAGE_ORDER = stage_order_sql()


def funnel(decisions: Path) -> list[dict]:
    """Per stage, in pipeline order: records decided, kept, dropped, and the drop reasons with counts."""
    con = duckdb.connect()
    con.execute(f"create view d as select *, row_number() over () as pos from read_parquet('{decisions}')")
    stages = con.execute(f"""select stage, count(*) filter (where kept), count(*) filter (where not kept)
                             from d group by stage order by min({STAGE_ORDER}), min(pos)""").fetchall()
    rows = []
    for stage, kept, dropped in stages:
        # Numbers inside reasons (word counts, scores) would split one reason into many; fold them (not the
        # digits of rule ids such as T4).
        reasons = con.execute(
            """select (case when starts_with(reason, rule_id || ':') then ''
                                       else coalesce(rule_id || ': ', '') end)
                                 || regexp_replace(split_part(reason, ';', 1),
                                 '\\b[0-9]+([.][0-9]+)?\\b', 'N', 'g') as why, count(*) as n
                                 from d where stage = ? and not kept group by why order by n desc, why""",
            [stage],
        ).fetchall()
        rows.append({"stage": stage, "kept": kept, "dropped": dropped, "reasons": reasons})
    return rows


def rule_counts(decisions: Path) -> list[tuple[str, int]]:
    query = f"""select rule_id, count(*) n from read_parquet('{decisions}')
                where not kept and rule_id is not null group by rule_id order by n desc, rule_id"""
    return duckdb.sql(query).fetchall()


def bar_chart(
    title: str,
    categories: list[str],
    series: dict[str, list[float]],
    *,
    percent: bool = True,
    stacked: bool = False,
    intervals: dict[str, list[tuple[float, float] | None]] | None = None,
) -> str:
    """Grouped (or stacked) horizontal bars as inline SVG: no plotting library, crisp at any size.
    `intervals` draws each grouped bar's confidence interval as a whisker."""
    row_h = 14 * (1 if stacked else len(series)) + 10
    label_w, plot_w = 190, 420
    height = 40 + row_h * len(categories) + 20 * len(series)
    top = max([sum(v) for v in zip(*series.values())] if stacked else [x for v in series.values() for x in v] + [0])
    if intervals:
        top = max([top] + [ci[1] for v in intervals.values() for ci in v if ci])
    top = top or 1.0
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_w + plot_w + 80}" height="{height}" '
        f'font-family="sans-serif" font-size="11" role="img"><title>{html.escape(title)}</title>',
        f'<text x="0" y="14" font-size="13" font-weight="bold">{html.escape(title)}</text>',
    ]
    for i, cat in enumerate(categories):
        y = 30 + i * row_h
        parts.append(f'<text x="{label_w - 6}" y="{y + row_h / 2}" text-anchor="end">{html.escape(cat)}</text>')
        x = label_w
        for j, (name, values) in enumerate(series.items()):
            v = values[i] or 0.0
            w = plot_w * v / top
            yy = y if stacked else y + j * 14
            label = f"{v:.0%}" if percent else f"{v:g}"
            parts.append(
                f'<rect x="{x:.1f}" y="{yy}" width="{w:.1f}" height="12" fill="{PALETTE[j % len(PALETTE)]}">'
                f"<title>{html.escape(name)}: {label}</title></rect>"
            )
            ci = (intervals or {}).get(name, [None] * len(categories))[i]
            if ci:
                lo, hi = (x + plot_w * b / top for b in ci)
                parts.append(
                    f'<path d="M{lo:.1f},{yy + 6}H{hi:.1f}M{lo:.1f},{yy + 2}V{yy + 10}M{hi:.1f},{yy + 2}'
                    f'V{yy + 10}" stroke="#333" fill="none"/>'
                )
            if not stacked:
                right = max(w, plot_w * ci[1] / top) if ci else w  # the label clears the whisker
                parts.append(f'<text x="{x + right + 4:.1f}" y="{yy + 10}">{label}</text>')
            x = x + w if stacked else x
    legend_y = 30 + row_h * len(categories) + 6
    for j, name in enumerate(series):
        parts.append(
            f'<rect x="{label_w + j * 110}" y="{legend_y}" width="10" height="10" '
            f'fill="{PALETTE[j % len(PALETTE)]}"/><text x="{label_w + j * 110 + 14}" y="{legend_y + 9}">'
            f"{html.escape(name)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _fmt(stat: dict | None) -> str:
    if not stat or stat.get("mean") is None:
        return "–"
    lo, hi = stat["ci95"]
    return f"{stat['mean']:.2f} <small>[{lo:.2f}, {hi:.2f}]</small> <small>n={stat['n']}</small>"


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


METRIC_LABELS = {
    "violation": "policy violation rate",
    "escalation_recall": "escalation recall",
    "escalation_precision": "escalation precision",
    "false_escalation": "false escalation rate",
    "signoff": "sign-off rate (customer drafts)",
    "register_violation": "register ({rule}) violation rate",
    "benign_refusal": "benign refusal rate",
    "reference_rougeL": "ROUGE-L vs reference",
    "judge": "judge grade (1-5)",
}


def metric_label(key: str, register_rule: str | None = None) -> str:
    """The report's name for a metric; the register rule's id comes from the policy (via results.json)."""
    return METRIC_LABELS[key].format(rule=register_rule or "register rule")


def pgr_section(pgr: dict | None, register_rule: str | None = None) -> str:
    if not pgr:
        return ""
    students = pgr["students"]
    rows = [
        [metric_label(k, register_rule), "–" if m["gap"] is None else f"{m['gap']:+.2f}"]
        + ["–" if m["pgr"][s] is None else f"{m['pgr'][s]:.2f}" for s in students]
        for k, m in pgr["metrics"].items()
    ]
    return (
        f"<h3>Performance gap recovered</h3><p>{html.escape(pgr['note'])}. Gap: {html.escape(pgr['ceiling'])} "
        f"minus {html.escape(pgr['weak'])}, oriented so that positive means the ceiling is better.</p>"
        + _table(["metric", "gap"] + [f"PGR {html.escape(s)}" for s in students], rows)
    )


def training_rows(run_dir: Path) -> list[list[str]]:
    """One row per trained model, from the train_meta.json each training stage writes beside its adapter."""
    rows = []
    for meta_path in sorted((run_dir / "stages").glob("train.*/adapter/train_meta.json")):
        meta = json.loads(meta_path.read_text())
        aux = meta["config"].get("aux_confidence") or {}
        rows.append(
            [
                html.escape(meta_path.parent.parent.name.removeprefix("train.")),
                str(meta["examples"]),
                str(meta["steps"]),
                str(meta["tokens_seen"]),
                f"{meta['tokens_per_second']:.0f}",
                f"{meta['final_loss']:.3f}",
                f"{aux.get('weight', 0):g}",
            ]
        )
    return rows


def coverage_section(run_dir: Path) -> str:
    """The selection's coverage beside the pilot's (stages/select/coverage.json), or nothing without one."""
    path = run_dir / "stages" / "select" / "coverage.json"
    if not path.is_file():
        return ""
    cov = json.loads(path.read_text())
    names, sets = list(cov["sets"]), cov["sets"]
    k = cov["clusters"]
    slices = sorted({sl for s in sets.values() for sl in s["slices"]})
    rows = [
        ["records"] + [str(sets[n]["records"]) for n in names],
        ["slices covered"] + [str(sets[n]["distinct_slices"]) for n in names],
        ["rule ids covered"] + [str(sets[n]["distinct_rules"]) for n in names],
        [f"clusters occupied (of {k})"] + [str(sets[n]["distinct_clusters"]) for n in names],
        [f"cluster entropy, bits (max {math.log2(k) if k else 0:.2f})"]
        + [f"{sets[n]['cluster_entropy_bits']:.2f}" for n in names],
    ]
    rows += [[f"slice {html.escape(sl)}"] + [str(sets[n]["slices"].get(sl, 0)) for n in names] for sl in slices]
    chart = bar_chart(
        "Share of records per slice",
        slices,
        {n: [sets[n]["slices"].get(sl, 0) / (sets[n]["records"] or 1) for sl in slices] for n in names},
    )
    return (
        f"<h2>Selection coverage</h2><p>{' and '.join(html.escape(n) for n in names)} on {k} k-means clusters "
        f"of {html.escape(cov['embedder'])} embeddings fitted to both ({cov['records']} distinct records); "
        f"a record without a slice counts in its nearest human seed's.</p>"
        + _table(["coverage"] + [html.escape(n) for n in names], rows)
        + chart
    )


def render_report(run_dir: Path) -> Path:
    manifest = json.loads((run_dir / "manifest.json").read_text())
    results = json.loads((run_dir / "stages" / "evaluate" / "results.json").read_text())
    samples = json.loads((run_dir / "stages" / "evaluate" / "samples.json").read_text())
    steps = funnel(run_dir / "decisions.parquet")
    models = list(results["models"])

    funnel_svg = bar_chart(
        "Per-stage funnel: records kept and dropped",
        [s["stage"] for s in steps],
        {"kept": [s["kept"] for s in steps], "dropped": [s["dropped"] for s in steps]},
        percent=False,
        stacked=True,
    )
    funnel_rows = [
        [
            html.escape(s["stage"]),
            str(s["kept"]),
            str(s["dropped"]),
            "<br>".join(f"{n} × {html.escape(why)}" for why, n in s["reasons"][:8]),
        ]
        for s in steps
    ]
    slices = sorted({sl for m in models for sl in results["models"][m]["slices"]})
    per_slice = {
        m: [results["models"][m]["slices"].get(sl, {}).get("violation") or {} for sl in slices] for m in models
    }
    violation_svg = bar_chart(
        "Policy violation rate per slice, by model (whiskers: 95% CI)",
        slices,
        {m: [v.get("mean") or 0 for v in stats] for m, stats in per_slice.items()},
        intervals={m: [v.get("ci95") for v in stats] for m, stats in per_slice.items()},
    )
    graded = any((results["models"][m]["overall"].get("judge") or {}).get("mean") is not None for m in models)
    comparison = [
        [metric_label(k, results.get("register_rule"))] + [_fmt(results["models"][m]["overall"].get(k)) for m in models]
        for k in METRIC_LABELS
        if k != "judge" or graded
    ]
    area_rows = [
        [a] + [_fmt(results["models"][m]["areas"][a]) for m in models] for a in results["models"][models[0]]["areas"]
    ]
    sample_rows = [
        [html.escape(s["slice"]), f"<pre>{html.escape(s['prompt'])}</pre>"]
        + [f"<pre>{html.escape(s['outputs'][m])}</pre>" for m in models]
        + [f"<pre>{html.escape(s['reference'])}</pre>"]
        for s in samples
    ]
    stage_rows = [
        [
            s["name"],
            str(s["records_in"]),
            str(s["records_out"]),
            str(s["kept"]),
            str(s["dropped"]),
            f"{s['seconds']:.1f}",
            "reused" if s["reused"] else "",
        ]
        for s in manifest["stages"]
    ]
    gate_path = run_dir / "gate.json"
    gate_html = "<p>No gate was evaluated.</p>"
    if gate_path.is_file():
        gate = json.loads(gate_path.read_text())
        verdict = "PASSED" if gate["passed"] else "FAILED"
        gate_html = (
            f"<p><b>{verdict}</b> for the {html.escape(gate['model'])} model"
            f"{' against ' + html.escape(gate['against']) if gate['against'] else ''}.</p>"
            + _table(
                ["check", "value", "limit", "result"],
                [
                    [
                        html.escape(c["name"]),
                        "–" if c["value"] is None else f"{c['value']:.3f}",
                        html.escape(c["limit"]),
                        "pass" if c["passed"] else "<b>FAIL</b>",
                    ]
                    for c in gate["checks"]
                ],
            )
        )
    pgr_html = pgr_section(results.get("pgr"), results.get("register_rule"))
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>ballast report: {
        html.escape(manifest["run"])
    }</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1200px}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:4px 8px;vertical-align:top;text-align:left}}pre{{white-space:pre-wrap;margin:0;
max-width:380px;font-size:11px}}small{{color:#666}}</style></head><body>
<h1>ballast report: {html.escape(manifest["run"])}</h1>
<p>policy {html.escape(manifest["policy"].get("policy_id", ""))} (sha256 {manifest["policy"].get("sha256", "")[:12]}),
created {manifest["created"]}, code {manifest["code_sha256"][:12]}, seed {manifest["seed"]}.
Held-out set: {results["n_heldout"]} human examples never shown to generation, curation or selection,
plus {results.get("n_probes", 0)} paraphrase and adversarial probes scored as their own slices.
Decoding for every model: {html.escape(json.dumps(results["decoding"]))} on {results["device"]} in {results["dtype"]}.
Models: {html.escape(", ".join(f"{m} = {ref}" for m, ref in results.get("model_refs", {}).items()))}.</p>
<h2>Release gate</h2>
{gate_html}
<h2>Models side by side</h2>
<p>Means with 95% bootstrap intervals over held-out examples.</p>
{_table(["metric"] + models, comparison)}
{pgr_html}<h3>Violation rate per policy area</h3>
{_table(["area"] + models, area_rows)}
{violation_svg}
<h2>Curation funnel</h2>
{funnel_svg}
{_table(["stage", "kept", "dropped", "top drop reasons"], funnel_rows)}
{coverage_section(run_dir)}
<h2>Samples</h2>
{_table(["slice", "prompt"] + models + ["reference"], sample_rows)}
<h2>Training</h2>
<p>LoRA on the strong base, loss on response tokens only, per-record weights.</p>
{
        _table(
            ["model", "records", "steps", "tokens", "tokens/s", "final loss", "aux confidence weight"],
            training_rows(run_dir),
        )
    }
<h2>Stages</h2>
{_table(["stage", "in", "out", "kept", "dropped", "seconds", ""], stage_rows)}
</body></html>"""
    out = run_dir / "report.html"
    out.write_text(page, encoding="utf-8")
    return out


def render_data_card(run_dir: Path) -> Path:
    manifest = json.loads((run_dir / "manifest.json").read_text())
    decisions = run_dir / "decisions.parquet"
    sources = duckdb.sql(f"""select source, count(distinct record_id) filter (where stage = 'select' and kept),
                             count(distinct record_id) from read_parquet('{decisions}') group by source
                             order by source""").fetchall()
    lines = [
        f"# Data card: {manifest['run']}",
        "",
        f"- policy: {manifest['policy'].get('policy_id')} (sha256 {manifest['policy'].get('sha256')})",
        f"- created: {manifest['created']}; ballast {manifest['ballast_version']}, code {manifest['code_sha256'][:16]}",
        f"- seed: {manifest['seed']}",
        "",
        "## Sources",
        "",
        "| source | in the training set | records seen |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {s} | {k} | {n} |" for s, k, n in sources]
    lines += [
        "",
        "## Filters and their drops",
        "",
        "| stage | kept | dropped | top reasons |",
        "| --- | --- | --- | --- |",
    ]
    for s in funnel(decisions):
        reasons = "; ".join(f"{n} × {why}" for why, n in s["reasons"][:5])
        lines.append(f"| {s['stage']} | {s['kept']} | {s['dropped']} | {reasons} |")
    lines += ["", "## Drops by policy rule", "", "| rule | dropped |", "| --- | --- |"]
    lines += [f"| {rule} | {n} |" for rule, n in rule_counts(decisions)]
    lines += ["", "## Models", "", "| role | file | sha256 |", "| --- | --- | --- |"]
    lines += [
        f"| {role} | {m.get('name') or Path(m['path']).name} | {m['sha256']} |"
        for role, m in manifest["models"].items()
    ]
    lines += ["", "## Data", "", "| input | sha256 |", "| --- | --- |"]
    lines += [f"| {name} | {d['sha256']} |" for name, d in manifest["data"].items()]
    out = run_dir / "data_card.md"
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out
