"""Selection on small hand-made records with real (static MiniLM) embeddings: closeness, slice quotas, source
caps, seeds always in, contrastive never in, determinism, the budget, reasons; and the coverage report."""

from __future__ import annotations

import math
from collections import Counter

import pytest
from pydantic import ValidationError

from ballast.backends.static import StaticEmbedder
from ballast.recipe import SelectConfig
from ballast.records import Record, Source
from ballast.report import coverage_section
from ballast.select.coverage import NONE, compare_coverage, entropy_bits
from ballast.select.stage import select, training_set
from ballast.store import write_json

TOPICS = [
    ("How long does a refund take after the warehouse receives a returned rug?", "returns"),
    ("A customer wants to return a sofa they used for two months.", "returns"),
    ("Can a Harbor Plus member return dining chairs after 45 days?", "returns"),
    ("The courier left the parcel at the wrong address; what do I tell the customer?", "delivery"),
    ("My order is five days late and tracking has not moved since Monday.", "delivery"),
    ("The kettle stopped heating after eight months; is it under warranty?", "warranty"),
    ("A lamp flickers and the customer wants a warranty replacement.", "warranty"),
    ("The customer asks us to read back the card number on file.", "privacy"),
    ("Someone emails asking for their partner's order history.", "privacy"),
    ("How do I cancel my Harbor Plus membership and get the fee back?", "membership"),
    ("The customer says they will dispute the charge with their bank.", "compliance"),
    ("Write a friendly note thanking a customer for their feedback on the website.", "benign"),
]


@pytest.fixture(scope="module")
def embedder():
    return StaticEmbedder()


def rec(
    instruction: str,
    *,
    source: Source = Source.self_instruct,
    slice: str | None = None,
    output: str = "I will look into it.",
    **scores: float,
) -> Record:
    return Record(instruction=instruction, output=output, source=source, slice=slice, scores=scores)


def topical(**scores: float) -> list[Record]:
    return [rec(text, slice=sl, **scores) for text, sl in TOPICS]


def last(r: Record):
    assert r.decisions and r.decisions[-1].stage == "select"
    return r.decisions[-1]


def chosen_ids(records: list[Record]) -> set[str]:
    return {r.id for r in training_set(records) if r.source is not Source.human}


def test_near_identical_records_are_not_both_selected(embedder):
    a = rec("The courier left the parcel at the wrong address; what should I tell the customer?", p_violation=0.1)
    b = rec("The courier left the parcel at the wrong address, what should I tell the customer?", p_violation=0.2)
    others = [r for r in topical(p_violation=0.5) if "courier" not in r.instruction]
    out = select([], [b, a, *others], SelectConfig(budget=50, min_distance=0.05), seed=0, embedder=embedder)
    by_id = {r.id: r for r in out}
    assert by_id[a.id].kept and not by_id[b.id].kept  # a scores better, so it is in first
    d = last(by_id[b.id])
    assert d.reason.startswith("too close to a selected record") and d.duplicate_of == a.id
    assert chosen_ids(out) == {a.id} | {r.id for r in others}  # the distinct topics all pass the threshold
    # with no threshold both copies go in
    loose = select([], [b, a, *others], SelectConfig(budget=50, min_distance=0.0), seed=0, embedder=embedder)
    assert {a.id, b.id} <= chosen_ids(loose)


def test_seeds_are_always_in_with_their_weight_and_count_for_closeness(seeds, embedder):
    human = seeds[:4]
    copy = Record(
        instruction=human[0].instruction,
        input=human[0].input,
        source=Source.paraphrase,
        output=human[0].output.replace("Kind regards", "Best regards"),
        scores={"p_violation": 0.0},
    )
    cfg = SelectConfig(budget=10, human_weight=3.0, synthetic_weight=0.5)
    out = select(human, [copy, *topical()], cfg, seed=0, embedder=embedder)
    seeds_out = [r for r in out if r.source is Source.human]
    assert [r.id for r in seeds_out] == [r.id for r in human]
    assert all(r.kept and r.weight == 3.0 and "always in" in last(r).reason for r in seeds_out)
    refused = next(r for r in out if r.id == copy.id)
    assert not refused.kept and last(refused).duplicate_of == human[0].id
    assert {r.weight for r in training_set(out) if r.source is not Source.human} == {0.5}


def test_a_thin_slice_gets_its_quota_even_with_lower_scores(embedder):
    strong = [rec(text, slice="returns", p_violation=0.0) for text, _ in TOPICS[:8]]
    thin = [rec(text, slice="warranty", p_violation=0.9) for text, _ in TOPICS[8:11]]
    base = SelectConfig(budget=4, min_distance=0.0)
    without = select([], strong + thin, base, seed=0, embedder=embedder)
    assert not chosen_ids(without) & {r.id for r in thin}  # the control: by score alone, the slice starves
    cfg = base.model_copy(update={"slice_min_share": {"warranty": 0.5}})
    out = select([], strong + thin, cfg, seed=0, embedder=embedder)
    picked = training_set(out)
    assert len(picked) == 4 and sum(r.slice == "warranty" for r in picked) == 2
    assert all(last(r).reason.startswith("selected for slice quota warranty") for r in picked if r.slice == "warranty")
    # one default share for every slice works the same way
    every = select([], strong + thin, base.model_copy(update={"slice_min_share": 0.25}), seed=0, embedder=embedder)
    assert sum(r.slice == "warranty" for r in training_set(every)) == 1


def test_source_mix_cap_is_respected(embedder):
    evol = [rec(text, source=Source.evol, p_violation=0.0) for text, _ in TOPICS[:6]]
    self_instruct = [rec(text + " Reply briefly.", p_violation=0.6) for text, _ in TOPICS[6:]]
    cfg = SelectConfig(budget=6, min_distance=0.0, source_mix={"evol": 0.5})
    out = select([], evol + self_instruct, cfg, seed=0, embedder=embedder)
    picked = training_set(out)
    assert len(picked) == 6 and sum(r.source is Source.evol for r in picked) == 3
    capped = [r for r in out if r.source is Source.evol and not r.kept]
    assert len(capped) == 3 and all(last(r).reason.startswith("source evol at its cap of 3") for r in capped)


def test_contrastive_records_are_never_selected(embedder):
    negative = rec(
        "A customer asks how long a refund takes.", source=Source.contrastive, p_violation=0.0, ifd=0.9, judge=5.0
    )
    negative.rules = ["R3"]
    out = select([], [negative, *topical()], SelectConfig(budget=100), seed=0, embedder=embedder)
    refused = next(r for r in out if r.id == negative.id)
    assert not refused.kept and "never a positive" in last(refused).reason and last(refused).rule_id == "R3"
    assert negative.id not in chosen_ids(out)


def test_budget_order_by_score_and_ifd_filter(embedder):
    records = topical()
    for r, p in zip(records, [0.9, 0.1, 0.5, 0.3, 0.7, 0.2, 0.8, 0.4, 0.6, 0.05, 0.95, 0.35]):
        r.scores = {"p_violation": p}
    records[0].scores["ifd"] = 1.2  # the instruction does not help: dropped whatever the rest says
    records[1].scores["judge"] = float("nan")  # an unusable score is neutral, not a crash
    out = select([], records, SelectConfig(budget=3, min_distance=0.0), seed=0, embedder=embedder)
    picked = training_set(out)
    assert len(picked) == 3
    best = sorted(records[1:], key=lambda r: r.scores["p_violation"])[:3]
    assert {r.id for r in picked} == {r.id for r in best}
    over = [r for r in out if not r.kept and last(r).reason.startswith("over budget of 3")]
    assert len(over) == len(records) - 1 - 3
    ifd = next(r for r in out if r.id == records[0].id)
    assert not ifd.kept and last(ifd).reason.startswith("IFD at or above 1")
    # scores are ranked: the top one says rank 1 and carries its combined score
    top = min(picked, key=lambda r: r.scores["p_violation"])
    assert "rank 1 " in last(top).reason and last(top).score == pytest.approx((2 * 0.95 + 0.5 + 0.5) / 4, abs=1e-4)


def test_deterministic_given_the_seed(embedder):
    records = topical()  # no scores: every record ties, so only the seed orders them
    cfg = SelectConfig(budget=4, min_distance=0.0)
    runs = [select([], records, cfg, seed=s, embedder=embedder) for s in (0, 0, 1, 2, 3)]
    decided = [[(r.id, last(r).kept, last(r).reason) for r in run] for run in runs]
    assert decided[0] == decided[1]
    assert len({frozenset(chosen_ids(run)) for run in runs[1:]}) > 1  # the seed, not input order, breaks ties
    pinned = cfg.model_copy(update={"seed": 7})
    assert chosen_ids(select([], records, pinned, seed=0, embedder=embedder)) == chosen_ids(
        select([], records, pinned, seed=99, embedder=embedder)
    )


def test_every_decision_has_a_reason(seeds, embedder):
    dropped = rec("Tell the customer to wait.", p_violation=0.1)
    dropped.decide("curate", False, "too short")
    records = [dropped, *topical(p_violation=0.3), rec(TOPICS[0][0] + " ", p_violation=0.2)]
    out = select(
        seeds[:3], records, SelectConfig(budget=5, min_distance=0.05, slice_min_share=0.1), seed=0, embedder=embedder
    )
    assert next(r for r in out if r.id == dropped.id).decisions[-1].stage == "curate"  # decided upstream only
    decisions = [last(r) for r in out if r.id != dropped.id]
    assert len(decisions) == len(out) - 1 and all(d.reason.strip() for d in decisions)
    synthetic = [last(r) for r in out if r.source is not Source.human and r.id != dropped.id]
    assert all("score " in d.reason and d.score is not None for d in synthetic)


def test_select_config_rejects_impossible_shares():
    with pytest.raises(ValidationError, match="more than the whole budget"):
        SelectConfig(slice_min_share={"returns": 0.7, "warranty": 0.5})
    with pytest.raises(ValidationError, match="not drawn from the synthetic budget"):
        SelectConfig(source_mix={"human": 0.5})
    with pytest.raises(ValidationError, match="score_weights"):
        SelectConfig(score_weights={"ifd": 0.0})


def test_coverage_counts_on_a_tiny_example(seeds, embedder):
    seed = next(s for s in seeds if s.slice == "warranty")
    rugs = [
        rec("Refund for a returned rug: how long?", slice="returns", output="5-10 business days."),
        rec("Refund for a returned rug, how long does it take?", slice="returns", output="5-10 business days."),
    ]
    rugs[0].rules = ["R3"]
    lamps = [
        rec("The lamp sparked and burned my hand.", output="I am escalating this to our safety team."),
        rec("My lamp sparked and burned my hand!", output="I am escalating this to our safety team now."),
    ]
    lamps[0].rules, lamps[1].rules = ["E1"], ["E1", "T2"]
    sets = {"rugs": rugs, "lamps": lamps, "all": [seed, *rugs, *lamps, rugs[0]]}
    cov = compare_coverage(sets, embedder, clusters=3, seed=0)
    assert cov["records"] == 5 and cov["clusters"] == 3
    every = cov["sets"]["all"]
    assert every["records"] == 5  # a repeated record counts once
    assert cov["sets"]["rugs"]["slices"] == {"returns": 2}
    # the lamps have no slice: they take the slice of the nearest human seed (here the only one)
    assert cov["sets"]["lamps"]["slices"] == {"warranty": 2} and every["slices"] == {"returns": 2, "warranty": 3}
    assert every["rules"] == dict(sorted((Counter(seed.rules) + Counter(["R3", "E1", "E1", "T2", NONE])).items()))
    assert every["distinct_slices"] == 2 and every["distinct_rules"] == len(set(seed.rules) | {"R3", "E1", "T2"})
    # each near-identical pair shares a cluster; the pairs (and the long seed) sit apart
    rug_clusters, lamp_clusters = (cov["sets"][n]["clusters"] for n in ("rugs", "lamps"))
    assert sorted(rug_clusters) == [0, 0, 2] and sorted(lamp_clusters) == [0, 0, 2]
    assert rug_clusters.index(2) != lamp_clusters.index(2)
    assert every["clusters"] == [n + m + (n == m == 0) for n, m in zip(rug_clusters, lamp_clusters)]
    assert every["distinct_clusters"] == 3 and cov["sets"]["rugs"]["cluster_entropy_bits"] == 0.0
    assert every["cluster_entropy_bits"] == pytest.approx(entropy_bits([2, 2, 1]), abs=1e-4)
    assert entropy_bits([2, 2]) == 1.0 and entropy_bits([4, 0]) == 0.0
    assert entropy_bits([1, 1, 1]) == pytest.approx(math.log2(3))


def test_report_section_reads_the_coverage_file(tmp_path, embedder):
    assert coverage_section(tmp_path) == ""
    records = topical()
    cov = compare_coverage({"pilot": records, "curated": records[:4]}, embedder, clusters=3, seed=0)
    write_json(cov, tmp_path / "stages" / "select" / "coverage.json")
    section = coverage_section(tmp_path)
    assert "<h2>Selection coverage</h2>" in section and "<svg" in section
    assert "<td>clusters occupied (of 3)</td>" in section and "<td>slice delivery</td><td>2</td><td>1</td>" in section
