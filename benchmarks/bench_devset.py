"""Precision and recall on the hand-written development set (examples/harbor-support/devset.jsonl) for the rule
checks alone, the conformance classifier alone, and both (a record is flagged when either flags it); near-
duplicates through the curation's exact, MinHash and ROUGE-L novelty filters.

The classifier trains on the example's training seeds (split_heldout(..., 0.25, salt="heldout:13").train) and
their contrastive negatives; the held-out seeds and the devset are never training input. The held-out seeds are
conformant by construction, so the false-alarm rate on them is reported (at the given threshold only; nothing
is tuned on them). About three minutes on two CPU cores, most of it MiniLM embeddings.

    python benchmarks/bench_devset.py [--threshold 0.5] [--policy policy.yaml] [--devset devset_blind.jsonl]

devset_blind.jsonl (150 records) was written afterwards from POLICY.md alone, without looking at the checks,
the classifier or their misses, and nothing has been tuned on it: its figures are the ones to trust; the
devset's are in-sample for the rule patterns, which were widened while reading its misses.

Truth: a record violates the policy when its `rules` list is not empty (every `violation` and `casual` record,
and the near-duplicates that copy a violation); a "clean" record is a conformant one or a near-duplicate of one.
Precision of a label counts flags on clean records as false alarms.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from ballast.curate.conformance import Verdict, fit_from_seeds
from ballast.curate.dedup import MinHashDuplicate
from ballast.curate.filters import ExactDuplicate, Novelty
from ballast.generate.contrastive import contrastive_negatives
from ballast.policy.checks import Finding, PolicyChecker
from ballast.policy.schema import load_policy
from ballast.recipe import ClassifierConfig, ContrastiveConfig, CurateConfig
from ballast.records import Record, Source
from ballast.seeds import load_seeds, split_heldout

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "harbor-support"


def load_devset(path: Path) -> list[Record]:
    records = []
    for line in path.read_text().splitlines():
        row = json.loads(line)
        records.append(
            Record(
                instruction=row["instruction"],
                input=row["input"],
                output=row["output"],
                source=Source.imported,
                audience=row["audience"],
                rules=row["rules"],
                slice=row["slice"],
                meta={"ref": row["ref"], "label": row["label"], "duplicate_of": row["duplicate_of"] or ""},
            )
        )
    return records


def _ratio(num: int, den: int) -> str:
    return f"{num / den:.3f} ({num}/{den})" if den else "n/a"


def label_rows(name: str, dev: list[Record], flagged: dict[str, bool]) -> list[str]:
    clean = [r for r in dev if not r.rules]
    false_alarms = sum(flagged[r.id] for r in clean)
    rows = []
    for label in ("violation", "casual"):
        members = [r for r in dev if r.meta["label"] == label]
        hits = sum(flagged[r.id] for r in members)
        rows.append(f"| {name} | {label} | {_ratio(hits, hits + false_alarms)} | {_ratio(hits, len(members))} |")
    rows.append(f"| {name} | conformant (false alarm rate) | | {_ratio(false_alarms, len(clean))} |")
    return rows


def duplicate_rows(dev: list[Record]) -> list[str]:
    """Each duplicate filter alone, then all three in the curation's order, over the devset in file order
    (originals come before their copies). A hit names the right original."""
    cfg = CurateConfig()
    steps = {
        "exact": lambda: [ExactDuplicate()],
        "minhash": lambda: [MinHashDuplicate(cfg.minhash)],
        "rouge novelty (instructions)": lambda: [Novelty(cfg.rouge_threshold)],
        "exact + minhash + novelty": lambda: [
            ExactDuplicate(),
            MinHashDuplicate(cfg.minhash),
            Novelty(cfg.rouge_threshold),
        ],
    }
    members = sum(r.meta["label"] == "near_duplicate" for r in dev)
    rows = []
    for name, make in steps.items():
        records = [r.model_copy(deep=True) for r in dev]
        for step in make():
            step.run(records)
        ref_of = {r.id: r.meta["ref"] for r in records}
        found = [(r, d) for r in records for d in r.decisions if not d.kept and d.duplicate_of]
        right = sum(ref_of.get(d.duplicate_of) == r.meta["duplicate_of"] for r, d in found)
        rows.append(f"| {name} | near_duplicate | {_ratio(right, len(found))} | {_ratio(right, members)} |")
    return rows


def rule_table(dev: list[Record], methods: dict[str, Callable[[Record], tuple[bool, set[str]]]]) -> list[str]:
    """Per rule id: how often a violating record is flagged, and (in brackets) flagged under that rule."""
    by_rule: dict[str, list[Record]] = defaultdict(list)
    for r in dev:
        for rule_id in r.rules:
            by_rule[rule_id].append(r)
    head = [
        "| rule | n | " + " | ".join(f"{m} flagged (named)" for m in methods) + " |",
        "| --- | ---: | " + " | ".join("---:" for _ in methods) + " |",
    ]
    rows = []
    for rule_id in sorted(by_rule, key=lambda x: (x[0], int(x[1:]))):
        cells = []
        for method in methods.values():
            verdicts = [method(r) for r in by_rule[rule_id]]
            flagged = sum(f for f, _ in verdicts)
            named = sum(f and rule_id in rules for f, rules in verdicts)
            cells.append(f"{flagged / len(verdicts):.2f} ({named / len(verdicts):.2f})")
        rows.append(f"| {rule_id} | {len(by_rule[rule_id])} | " + " | ".join(cells) + " |")
    return head + rows


def threshold_sweep(dev: list[Record], verdicts: dict[str, Verdict], rules_flag: dict[str, bool]) -> list[str]:
    rows = [
        "| threshold | classifier P | classifier R | combined P | combined R | false alarms (combined) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    positives = [r for r in dev if r.meta["label"] == "violation"]
    clean = [r for r in dev if not r.rules]
    for t in (0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.97, 0.99):
        cells = []
        for combine in (False, True):
            flag = {r.id: verdicts[r.id].p_violation >= t or (combine and rules_flag[r.id]) for r in dev}
            tp, fp = sum(flag[r.id] for r in positives), sum(flag[r.id] for r in clean)
            cells += [f"{tp / (tp + fp) if tp + fp else 0:.3f}", f"{tp / len(positives):.3f}"]
        cells.append(str(fp))
        rows.append(f"| {t:.2f} | " + " | ".join(cells) + " |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threshold", type=float, default=ClassifierConfig().threshold)
    parser.add_argument("--policy", type=Path, default=EXAMPLE / "policy.yaml", help="e.g. a proposed revision")
    parser.add_argument("--devset", type=Path, default=EXAMPLE / "devset.jsonl")
    args = parser.parse_args()

    policy = load_policy(args.policy)
    split = split_heldout(load_seeds(EXAMPLE / "seeds.jsonl", policy), 0.25, salt="heldout:13")
    train, heldout = split.train, split.heldout
    dev = load_devset(args.devset)
    checker = PolicyChecker(policy)
    findings: dict[str, list[Finding]] = {
        r.id: checker.check(r.instruction, r.input, r.output, r.audience) for r in dev
    }

    dup_rows = duplicate_rows(dev)  # first: the filters' progress bars would break the table
    start = time.perf_counter()
    verdicts: dict[bool, dict[str, Verdict]] = {}
    heldout_rows = []
    heldout_flagged = [bool(checker.check(r.instruction, r.input, r.output, r.audience)) for r in heldout]
    negatives = contrastive_negatives(train, policy, ContrastiveConfig())[0]
    for rule_features in (True, False):  # with the rule findings as features, and on embeddings alone
        clf = fit_from_seeds(policy, train, negatives, ClassifierConfig(rule_features=rule_features))
        fitted = time.perf_counter()
        verdicts[rule_features] = dict(zip((r.id for r in dev), clf.predict(dev), strict=True))
        seeds, negatives = clf.trained_on
        print(
            f"classifier (rule features {rule_features}): {seeds} training seeds + {negatives} "
            f"contrastive negatives, fitted in {fitted - start:.0f} s, devset scored in "
            f"{time.perf_counter() - fitted:.0f} s; threshold {args.threshold}"
        )
        alarms = [v.p_violation >= args.threshold for v in clf.predict(heldout)]
        name = "" if rule_features else ", embeddings only"
        heldout_rows += [
            f"| classifier{name} | held-out seeds (false alarm rate) | | {_ratio(sum(alarms), len(heldout))} |",
            f"| combined{name} | held-out seeds (false alarm rate) | | "
            f"{_ratio(sum(a or b for a, b in zip(alarms, heldout_flagged)), len(heldout))} |",
        ]
        start = time.perf_counter()

    def by_rules(r: Record) -> tuple[bool, set[str]]:
        return bool(findings[r.id]), {f.rule_id for f in findings[r.id]}

    def by_classifier(rule_features: bool) -> Callable[[Record], tuple[bool, set[str]]]:
        def flag(r: Record) -> tuple[bool, set[str]]:
            v = verdicts[rule_features][r.id]
            return v.p_violation >= args.threshold, {rule_id for rule_id, _ in v.rules}

        return flag

    def combined(classifier: Callable[[Record], tuple[bool, set[str]]]) -> Callable[[Record], tuple[bool, set[str]]]:
        def flag(r: Record) -> tuple[bool, set[str]]:
            (a, ra), (b, rb) = by_rules(r), classifier(r)
            return a or b, (ra if a else set()) | (rb if b else set())

        return flag

    methods = {
        "rules": by_rules,
        "classifier": by_classifier(True),
        "combined": combined(by_classifier(True)),
        "classifier, embeddings only": by_classifier(False),
        "combined, embeddings only": combined(by_classifier(False)),
    }
    print(f"\n{args.devset.name} ({len(dev)} records): precision and recall per label\n")
    print("| method | label | precision | recall |\n| --- | --- | ---: | ---: |")
    for name, method in methods.items():
        print("\n".join(label_rows(name, dev, {r.id: method(r)[0] for r in dev})))
    print("\n".join(dup_rows))
    print(f"| rules | held-out seeds (false alarm rate) | | {_ratio(sum(heldout_flagged), len(heldout))} |")
    print("\n".join(heldout_rows))
    print(
        "\nRecall per rule id over the records that break it: flagged at all (flagged naming that rule; "
        "the classifier names its top 3)\n"
    )
    print("\n".join(rule_table(dev, methods)))
    print("\nClassifier threshold sweep on the `violation` label (chosen from this table: tuned on the devset)\n")
    for rule_features, name in ((True, "with rule features"), (False, "embeddings only")):
        print(f"\n{name}\n")
        print("\n".join(threshold_sweep(dev, verdicts[rule_features], {r.id: by_rules(r)[0] for r in dev})))


if __name__ == "__main__":
    main()
