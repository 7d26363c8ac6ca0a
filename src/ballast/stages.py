"""The stage names, in pipeline order, and the names decisions carry in the decision log: one place for both."""

from __future__ import annotations

STAGES = ("generate", "curate", "score", "select", "train", "evaluate", "report")
# The judge grades records in the score stage; its decisions have always been logged as plain "judge".
JUDGE = "judge"


def decision_stage(stage: str, step: str | None = None) -> str:
    """The stage name a decision is logged under: "select", or "curate.minhash_duplicate" for a step of a stage."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; stages are {', '.join(STAGES)}")
    return f"{stage}.{step}" if step else stage


def stage_order_sql(column: str = "stage") -> str:
    """A DuckDB expression ranking a decision's stage name in pipeline order (judge decisions with score)."""
    cases = " ".join(f"when {column} like '{name}%' then {rank}" for rank, name in enumerate(STAGES))
    return f"case when {column} = '{JUDGE}' then {STAGES.index('score')} {cases} else {len(STAGES)} end"
