"""Snapshot what the demo decides and what the policy checker finds, and compare two snapshots.

A restructuring must not change behaviour. This script records the behaviour once before and once after:

- the demo recipe (examples/harbor-support/recipe.yaml) run up to `--until select` into a fresh run folder:
  every row of the decision log (record id, source, stage, kept, reason, rule id, score, duplicate of) and the
  selected training set (ids and weights);
- optionally (`--classifier`) the same recipe with contrastive negatives and the conformance classifier switched
  on, in a second run folder seeded with the first run's model-call cache (same prompts, so no new generation);
- the policy checker's findings on every seed, both devsets and the training seeds' contrastive negatives.

    python benchmarks/compare_outputs.py snapshot OUT.json --run-dir RUN_DIR [--classifier] [--cache-from RUN]
                                          [--override KEY=VALUE ...]
    python benchmarks/compare_outputs.py compare BEFORE.json AFTER.json

Stage keys include a hash of the code, so give each snapshot a fresh run folder (the call cache lives there too;
generation is seeded, so a fresh run regenerates the same data). About 5-10 minutes on 2 CPU cores, most of it
the weak model generating. `--cache-from RUN` copies an earlier run's model-call cache into the fresh folder
first: calls whose prompt is unchanged are replayed, and the snapshot prints the cache misses, so 0 misses also
shows that every prompt was the same as in that run.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "harbor-support"
RECIPE = EXAMPLE / "recipe.yaml"
CLASSIFIER_OVERRIDES = ["generate.contrastive.enabled=true", "curate.classifier.enabled=true"]
EXTRA_OVERRIDES: list[str] = []  # --override: applied to every run (recorded in the snapshot)


def _run_demo(run_dir: Path, overrides: list[str]) -> None:
    overrides = [*EXTRA_OVERRIDES, *overrides]
    cmd = [
        sys.executable,
        "-m",
        "ballast.cli",
        "run",
        str(RECIPE),
        f"run_dir={run_dir}",
        *overrides,
        "--until",
        "select",
    ]
    subprocess.run(cmd, check=True)


def _cache_counts(run_dir: Path) -> str:
    done = json.loads((run_dir / "stages" / "generate" / "done.json").read_text(encoding="utf-8"))
    return f"generate: {done.get('cache_hits')} cache hits, {done.get('cache_misses')} misses"


def _seed_cache(source: Path | None, run_dir: Path) -> None:
    """Copy a run's call cache through SQLite's backup API: the cache runs in WAL mode, so the file alone may
    not hold the latest calls."""
    if source is not None:
        (run_dir / "cache").mkdir(parents=True)
        src = sqlite3.connect(source / "cache" / "calls.sqlite")
        dst = sqlite3.connect(run_dir / "cache" / "calls.sqlite")
        with dst:
            src.backup(dst)
        src.close()
        dst.close()


def _run_outputs(run_dir: Path) -> dict:
    import pyarrow.parquet as pq

    decisions = pq.read_table(run_dir / "decisions.parquet").to_pylist()
    rows = [
        [
            d["record_id"],
            d["source"],
            d["stage"],
            d["kept"],
            d["reason"],
            d["rule_id"],
            None if d["score"] is None else round(d["score"], 6),
            d["duplicate_of"],
        ]
        for d in decisions
    ]
    selected = pq.read_table(
        run_dir / "stages" / "select" / "records.parquet", columns=["id", "source", "weight", "decisions", "scores"]
    ).to_pylist()
    chosen = [
        [r["id"], round(r["weight"], 6)]
        for r in selected
        if r["source"] != "contrastive" and all(d["kept"] for d in r["decisions"])
    ]
    scores = {r["id"]: {k: round(v, 6) for k, v in sorted(r["scores"] or [])} for r in selected}
    return {"decisions": rows, "selected": chosen, "scores": scores}


def _findings() -> dict:
    from bench_devset import load_devset

    from ballast.generate.contrastive import contrastive_negatives
    from ballast.policy.checks import PolicyChecker
    from ballast.policy.schema import load_policy
    from ballast.recipe import ContrastiveConfig
    from ballast.records import Record
    from ballast.seeds import load_seeds, split_heldout

    policy = load_policy(EXAMPLE / "policy.yaml")
    checker = PolicyChecker(policy)
    seeds = load_seeds(EXAMPLE / "seeds.jsonl", policy)
    train = split_heldout(seeds, 0.25, salt="heldout:13").train
    negatives, _ = contrastive_negatives(train, policy, ContrastiveConfig())
    sets: dict[str, list[Record]] = {"seeds": seeds, "negatives": negatives}
    for name in ("devset", "devset_blind"):
        sets[name] = load_devset(EXAMPLE / f"{name}.jsonl")  # findings read instruction, input, output, audience
    out = {}
    for name, records in sets.items():
        out[name] = [
            [
                r.id,
                r.rules if name == "negatives" else None,
                [
                    [f.rule_id, f.message, list(f.span) if f.span else None]
                    for f in checker.check(r.instruction, r.input, r.output, r.audience)
                ],
            ]
            for r in records
        ]
    return out


def snapshot(out: Path, run_dir: Path, classifier: bool, cache_from: Path | None = None) -> None:
    if run_dir.exists():
        raise SystemExit(f"{run_dir} exists: stage keys include the code hash, give each snapshot a fresh folder")
    snap = {"findings": _findings(), "overrides": list(EXTRA_OVERRIDES)}
    _seed_cache(cache_from, run_dir)
    _run_demo(run_dir, [])
    snap["demo"] = _run_outputs(run_dir)
    print(_cache_counts(run_dir))
    if classifier:
        second = run_dir.with_name(run_dir.name + "-classifier")
        _seed_cache(run_dir, second)
        _run_demo(second, CLASSIFIER_OVERRIDES)
        snap["demo_classifier"] = _run_outputs(second)
        print(_cache_counts(second))
    out.write_text(json.dumps(snap, indent=0, sort_keys=True), encoding="utf-8")
    counts = {k: len(v) for k, v in snap["findings"].items()}
    n_findings = sum(len(row[2]) for rows in snap["findings"].values() for row in rows)
    print(
        f"wrote {out}: findings on {counts} ({n_findings} findings); "
        + "; ".join(
            f"{k}: {len(v['decisions'])} decisions, {len(v['selected'])} selected"
            for k, v in snap.items()
            if k.startswith("demo")
        )
    )


def _first_differences(a: object, b: object, where: str, found: list[str], limit: int = 10) -> None:
    if len(found) >= limit or a == b:
        return
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if key not in a or key not in b:
                found.append(f"{where}.{key}: only in {'after' if key not in a else 'before'}")
            else:
                _first_differences(a[key], b[key], f"{where}.{key}", found, limit)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            found.append(f"{where}: {len(a)} items before, {len(b)} after")
        for i, (x, y) in enumerate(zip(a, b)):
            _first_differences(x, y, f"{where}[{i}]", found, limit)
    else:
        found.append(f"{where}: {json.dumps(a)[:200]} != {json.dumps(b)[:200]}")


def compare(before: Path, after: Path) -> bool:
    a, b = (json.loads(p.read_text(encoding="utf-8")) for p in (before, after))
    found: list[str] = []
    _first_differences(a, b, "$", found)
    for section in sorted(set(a) | set(b)):
        print(f"{section}: {'identical' if a.get(section) == b.get(section) else 'DIFFERENT'}")
    if found:
        print("first differences:\n  " + "\n  ".join(found))
        return False
    print("identical")
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    snap = sub.add_parser("snapshot")
    snap.add_argument("out", type=Path)
    snap.add_argument("--run-dir", type=Path, required=True)
    snap.add_argument("--classifier", action="store_true", help="also run with contrastive data and the classifier")
    snap.add_argument("--cache-from", type=Path, help="an earlier run folder whose model-call cache to start from")
    snap.add_argument(
        "--override",
        action="append",
        default=[],
        help="KEY=VALUE for every demo run, e.g. generate.self_instruct.num_instructions=12 on a busy machine",
    )
    cmp = sub.add_parser("compare")
    cmp.add_argument("before", type=Path)
    cmp.add_argument("after", type=Path)
    args = parser.parse_args()
    if args.command == "snapshot":
        EXTRA_OVERRIDES.extend(args.override)
        snapshot(
            args.out, args.run_dir.resolve(), args.classifier, args.cache_from.resolve() if args.cache_from else None
        )
    else:
        raise SystemExit(0 if compare(args.before, args.after) else 1)


if __name__ == "__main__":
    main()
