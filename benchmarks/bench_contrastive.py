"""How many contrastive negatives the policy checker catches (no model; about ten seconds).

Negatives are built from the training seeds of the example (split_heldout(..., 0.25, salt="heldout:13")),
one per applicable edit; "caught" means a finding with the violated rule id, "flagged" any finding. The edits
made for the classifier (a blame sentence, instructions first, outside advice, the wrong team, ...) are meant to
be caught rarely: their rates show what the rule checks cannot see.

    python benchmarks/bench_contrastive.py
"""

from __future__ import annotations

from pathlib import Path

from ballast.generate.contrastive import check_negatives, contrastive_negatives
from ballast.policy.schema import load_policy
from ballast.recipe import ContrastiveConfig
from ballast.seeds import load_seeds, split_heldout

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "harbor-support"


def main() -> None:
    policy = load_policy(EXAMPLE / "policy.yaml")
    train = split_heldout(load_seeds(EXAMPLE / "seeds.jsonl", policy), 0.25, salt="heldout:13").train
    negatives, _ = contrastive_negatives(train, policy, ContrastiveConfig())
    result = check_negatives(negatives, train, policy)
    print(
        f"{result['n']} negatives from {len(train)} training seeds: caught (violated rule found) "
        f"{result['caught']} = {result['catch_rate']:.3f}; flagged (any finding) {result['flagged']} = "
        f"{result['flagged'] / result['n']:.3f}; parent seed already flagged for the rule: "
        f"{result['seed_already_flagged']}"
    )
    print("\n| edit | negatives | caught | rate |\n| --- | ---: | ---: | ---: |")
    for kind, c in result["by_edit"].items():
        print(f"| {kind} | {c['n']} | {c['caught']} | {c['catch_rate']:.3f} |")


if __name__ == "__main__":
    main()
