"""What curation keeps of what the weak model really wrote, measured on the spot-check labels.

The labels (examples/harbor-support/labels/pool_labels.jsonl) were made by reading pool records, never by running
ballast's checks (labels/GUIDE.md). The whole shipped pool is curated as the demo recipe configures it (with the
conformance classifier on), so duplicates are judged in the pool's context; then, for each classifier threshold,
a labelled record counts as kept when every other filter passed it and its violation probability is below the
threshold. Printed apart for the `tune` and `blind` splits (thresholds and checks may be tuned on `tune` only):

- yield: usable records kept / usable records;
- contamination: bad records among the kept;
- per problem kind and per rule: the share of records with it that curation drops;

each with a Wilson 95% interval.

    python benchmarks/bench_spotcheck.py [--recipe examples/harbor-support/recipe.yaml] [--split tune|blind|both]
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from pathlib import Path

from scipy.stats import binomtest

from ballast.curate.stage import curate
from ballast.generate.contrastive import contrastive_negatives
from ballast.labels import Label, load_labels
from ballast.policy.schema import load_policy
from ballast.pool_build import load_pool
from ballast.recipe import load_recipe
from ballast.records import Record
from ballast.seeds import load_seeds, split_heldout

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "harbor-support"
LABELS = EXAMPLE / "labels" / "pool_labels.jsonl"
THRESHOLDS = (0.5, 0.7, 0.8, 0.9, 0.95, 0.99, None)  # None: the classifier switched off


def wilson(k: int, n: int) -> str:
    if not n:
        return "n/a"
    ci = binomtest(k, n).proportion_ci(method="wilson")
    return f"{k / n:.3f} [{ci.low:.2f}, {ci.high:.2f}] ({k}/{n})"


def kept_without_classifier(record: Record) -> bool:
    return all(d.kept for d in record.decisions if d.stage != "curate.conformance")


def report(split: str, records: list[Record], labels: dict[str, Label]) -> list[str]:
    usable = [r for r in records if labels[r.id].usable]
    bad = [r for r in records if not labels[r.id].usable]
    out = [
        f"### {split}: {len(records)} labelled records, {len(usable)} usable",
        "",
        "| classifier threshold | kept | yield (usable kept) | contamination (bad among kept) |",
        "| ---: | ---: | --- | --- |",
    ]
    for t in THRESHOLDS:

        def kept(r: Record, t: float | None = t) -> bool:
            p = r.scores.get("p_violation")
            return kept_without_classifier(r) and (t is None or p is None or p < t)

        k = [r for r in records if kept(r)]
        out.append(
            f"| {'off' if t is None else t} | {len(k)} | {wilson(sum(kept(r) for r in usable), len(usable))} "
            f"| {wilson(sum(1 for r in k if r in bad), len(k))} |"
        )
    out += [
        "",
        "Dropped by curation without the classifier, per labelled problem and rule:",
        "",
        "| problem or rule | records | dropped |",
        "| --- | ---: | --- |",
    ]
    groups: dict[str, list[Record]] = defaultdict(list)
    for r in bad:
        for kind in labels[r.id].problems:
            groups[kind].append(r)
        for rule in labels[r.id].rules:
            groups[f"rule {rule}"].append(r)
    for name in sorted(groups, key=lambda g: (g.startswith("rule"), g)):
        members = groups[name]
        dropped = sum(not kept_without_classifier(r) for r in members)
        out.append(f"| {name} | {len(members)} | {wilson(dropped, len(members))} |")
    return out + [""]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", type=Path, default=EXAMPLE / "recipe.yaml")
    ap.add_argument("--labels", type=Path, default=LABELS)
    ap.add_argument("--split", choices=("tune", "blind", "both"), default="both")
    args = ap.parse_args()
    recipe = load_recipe(args.recipe, ["curate.classifier.enabled=true", "curate.classifier.threshold=0.999"])
    policy = load_policy(recipe.policy)
    split = split_heldout(load_seeds(recipe.seeds, policy), recipe.heldout_fraction, salt=f"heldout:{recipe.seed}")
    labels = load_labels(args.labels)
    pool = load_pool(EXAMPLE / "pool")
    missing = set(labels) - {r.id for r in pool}
    if missing:
        raise SystemExit(f"{len(missing)} labelled ids are not in the shipped pool, e.g. {sorted(missing)[:3]}")
    start = time.perf_counter()
    negatives = contrastive_negatives(split.train, policy, recipe.generate.contrastive)[0]
    curated = curate(pool, split.train, recipe.curate, policy, negatives)
    print(
        f"curated {len(pool)} pool records in {time.perf_counter() - start:.0f} s; "
        f"{sum(r.kept for r in curated)} kept at threshold 0.999\n"
    )
    labelled = [r for r in curated if r.id in labels]
    for name in ("tune", "blind") if args.split == "both" else (args.split,):
        print("\n".join(report(name, [r for r in labelled if labels[r.id].split == name], labels)))


if __name__ == "__main__":
    main()
