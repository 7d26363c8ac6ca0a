from __future__ import annotations

import duckdb
import pytest

from ballast.records import ModelRef, Record, Source, content_id
from ballast.store import decisions_table, read_records, write_records, write_table


def _record(**kw) -> Record:
    base = dict(
        instruction="Draft a reply about a late sofa.",
        input="Order HB-1",
        output="Kind regards,",
        source=Source.self_instruct,
    )
    return Record(**(base | kw))


def test_id_is_a_stable_hash_of_the_text_alone():
    a = _record(round=1)
    b = _record(round=3, source=Source.evol)
    assert a.id == b.id == content_id(a.instruction, a.input, a.output)
    assert len(a.id) == 20
    assert _record(output="Kind regards.").id != a.id
    # Field boundaries matter: moving text between fields changes the id.
    assert content_id("ab", "c", "") != content_id("a", "bc", "")


def test_decisions_decide_whether_a_record_is_kept():
    r = _record()
    assert r.kept
    r.decide("curate.length", True, "within bounds").decide(
        "curate.policy", False, "wrong return window", rule_id="R1", score=1.0
    )
    assert not r.kept and r.decisions[1].rule_id == "R1"


def test_parquet_round_trip_keeps_every_field(tmp_path):
    full = _record(
        parent_ids=["p1", "p2"],
        round=2,
        generator=ModelRef(name="smollm2", sha256="ab" * 32),
        template_id="self_instruct/v1",
        template_sha256="cd" * 32,
        decoding={"temperature": 0.7, "max_tokens": 256, "stop": None},
        policy_version="harbor/1",
        slice="returns",
        rules=["R1", "T4"],
        audience="customer",
        weight=2.5,
        scores={"ifd": 0.83, "ppl": 12.5},
        meta={"ref": "RET-001"},
    )
    full.decide("curate.exact_dup", False, "exact duplicate", duplicate_of="x" * 20)
    bare = _record(instruction="Summarise this ticket.")
    path = write_records([full, bare], tmp_path / "records.parquet")
    assert read_records(path) == [full, bare]
    assert not list(tmp_path.glob(".*.tmp"))


def test_decision_log_is_queryable_with_duckdb(tmp_path):
    records = [_record(output=str(i)) for i in range(5)]
    for i, r in enumerate(records):
        r.decide("curate.length", True, "ok")
        if i % 2:
            r.decide("curate.policy", False, "missing sign-off", rule_id="T4")
    path = write_table(decisions_table(records), tmp_path / "decisions.parquet")
    rows = duckdb.sql(f"select rule_id, count(*) from '{path}' where not kept group by rule_id").fetchall()
    assert rows == [("T4", 2)]


def test_a_record_needs_an_instruction_and_a_known_source():
    with pytest.raises(ValueError):
        Record(source=Source.human)  # type: ignore[call-arg]
    with pytest.raises(ValueError):
        Record(instruction="x", source="scraped")
