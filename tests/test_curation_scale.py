"""Curation at pool scale on small inputs: the fast novelty rule is the exhaustive one, LSH finds near-duplicates,
the chunked runner decides as the in-memory one does, and bad input is dropped with a reason, never a crash."""

from __future__ import annotations

import random
import zlib

import numpy as np
import pyarrow.parquet as pq
import pytest
from rouge_score import rouge_scorer, tokenize
from typer.testing import CliRunner

from ballast.curate.dedup import MinHashDuplicate, MinHasher, SemanticDuplicate, lsh_params
from ballast.curate.filters import ExactDuplicate, Novelty
from ballast.curate.stage import curation_filters
from ballast.curate.stream import curate_parquet
from ballast.curate.text import TextCheck
from ballast.recipe import CurateConfig, MinHashConfig, SemanticConfig
from ballast.records import ModelRef, Record, Source
from ballast.rouge import RougeNoveltyIndex, lcs_length, rouge_f, rouge_tokens
from ballast.store import write_records
from rouge_reference import RougeNovelty

WORDS = (
    "draft a reply to this customer chat email about the refund return window order late delivery sofa "
    "chair warranty claim please summarise ticket agent escalate damaged parcel courier photo address"
).split()


def _texts(n: int, seed: int) -> list[str]:
    """Instructions with many near-copies: random edits of a few hundred bases, some of them crossing 0.7."""
    rng = random.Random(seed)
    bases = [[rng.choice(WORDS) for _ in range(rng.randrange(1, 24))] for _ in range(n // 5)]
    out = []
    for _ in range(n):
        t = list(rng.choice(bases))
        for _ in range(rng.randrange(0, 5)):
            op = rng.randrange(3)
            if op == 0 and t:
                t.pop(rng.randrange(len(t)))
            elif op == 1:
                t.insert(rng.randrange(len(t) + 1), rng.choice(WORDS))
            elif t:
                t[rng.randrange(len(t))] = rng.choice(WORDS)
        sep = rng.choice([" ", ", ", " - ", "  "])
        out.append(sep.join(t).capitalize() + rng.choice(["", ".", "?"]))
    return out + ["", "¿Qué?", "Ünïcödé ÄÖ"]


def _exhaustive(texts: list[str], threshold: float) -> list[tuple[bool, int | None, float]]:
    """Self-Instruct's loop with rouge-score's own tokenizer and LCS scoring against every accepted text."""
    pool: list[tuple[int, list[str]]] = []
    out = []
    for i, text in enumerate(texts):
        tokens = tokenize.tokenize(text, None)
        best_i, best = None, 0.0
        for j, other in pool:
            score = rouge_scorer._score_lcs(other, tokens).fmeasure
            if score > best:
                best_i, best = j, score
        novel = best <= threshold
        out.append((novel, best_i, best))
        if novel:
            pool.append((i, tokens))
    return out


@pytest.mark.parametrize("threshold,n", [(0.7, 1600), (0.5, 1000)])
def test_indexed_novelty_makes_the_exhaustive_decisions(threshold, n):
    texts = _texts(n, seed=int(threshold * 10))
    expected = _exhaustive(texts, threshold)
    index = RougeNoveltyIndex(threshold).fit(texts)
    dropped = 0
    for i, (text, (novel, similar, score)) in enumerate(zip(texts, expected)):
        got_novel, got_similar, got_score = index.add_if_novel(str(i), text)
        assert got_novel == novel, (text, got_score, score)
        if not novel:  # a drop names the same most similar text with the same score, to the bit
            dropped += 1
            assert (got_similar, got_score) == (str(similar), score)
    assert 0.1 < dropped / len(texts) < 0.9  # the sample exercises both outcomes
    assert index.pairs_verified < len(texts) * len(index) / 4  # and the index pruned most pairs


def test_indexed_novelty_matches_the_reference_class_and_borderline_scores():
    # F exactly 0.7 (7 of 10 tokens in common, same lengths) is not over the threshold: still novel.
    a = "one two three four five six seven eight nine ten"
    b = "one two three four five six seven xa xb xc"
    ref, fast = RougeNovelty(0.7), RougeNoveltyIndex(0.7)
    for rid, text in (("a", a), ("b", b)):
        assert fast.is_novel(text)[0] == ref.is_novel(text)[0]
        ref.add(rid, text)
        fast.add(rid, text)
    texts = _texts(300, seed=5)
    ref, fast = RougeNovelty(0.7), RougeNoveltyIndex(0.7)  # unfitted: first-seen order, still exact
    for i, text in enumerate(texts):
        r = ref.is_novel(text)
        assert fast.add_if_novel(str(i), text)[0] == r[0]
        if r[0]:
            ref.add(str(i), text)


def test_tokens_and_lcs_are_rouge_scores():
    for text in ("Hello, World! İstanbul 12ab", "", "naïve café—ok", "K\u212a x_y"):
        assert rouge_tokens(text) == tokenize.tokenize(text, None)
    rng = random.Random(1)
    for _ in range(500):
        a = [rng.randrange(5) for _ in range(rng.randrange(1, 40))]
        b = [rng.randrange(5) for _ in range(rng.randrange(1, 40))]
        assert lcs_length(a, b) == rouge_scorer._lcs_table(a, b)[-1][-1]
        lcs = lcs_length(a, b)
        assert rouge_f(lcs, len(b), len(a)) == rouge_scorer._score_lcs(b, a).fmeasure


def _record(i: int, text: str, **kw) -> Record:
    return Record(
        instruction=f"Task {i}: answer the customer about their order.",
        input="",
        output=text,
        source=Source.self_instruct,
        **kw,
    )


def _paragraph(rng: random.Random, n: int = 80) -> str:
    return " ".join(rng.choice(WORDS) + str(rng.randrange(50)) for _ in range(n))


def test_minhash_lsh_catches_near_duplicates_and_keeps_distinct_records():
    rng = random.Random(3)
    bases = [_paragraph(rng) for _ in range(60)]
    records = [_record(i, t) for i, t in enumerate(bases)]
    near = []
    for i, t in enumerate(bases[:30]):
        words = t.split()
        for _ in range(2):  # two word substitutions in 80 words: a light edit
            words[rng.randrange(len(words))] = "changed"
        near.append(_record(100 + i, " ".join(words)))
    cfg = MinHashConfig()
    f = MinHashDuplicate(cfg)
    f.batch_size = 37  # batch borders fall inside the data: earlier batches and the same batch both count
    f.run(records + near)
    assert all(r.kept for r in records)
    caught = [r for r in near if not r.kept]
    assert len(caught) >= 28
    d = caught[0].decisions[-1]
    assert d.stage == "curate.minhash_duplicate" and d.score >= cfg.threshold
    assert d.duplicate_of == records[int(caught[0].instruction.split()[1][:-1]) - 100].id
    assert "MinHash Jaccard" in d.reason


def test_minhash_signatures_estimate_jaccard():
    hasher = MinHasher(num_perm=256, shingle_words=1, seed=0)
    a = " ".join(f"w{i}" for i in range(200))
    b = " ".join(f"w{i}" for i in range(100, 300))  # 100 shared of 300: Jaccard 1/3
    sig, empty = hasher.signatures([a, b, ""])
    assert empty.tolist() == [False, False, True]
    assert abs(np.mean(sig[0] == sig[1]) - 1 / 3) < 0.08
    bands, rows = lsh_params(MinHashConfig(num_perm=128, threshold=0.7))
    assert bands * rows <= 128
    assert lsh_params(MinHashConfig(bands=16, rows=8)) == (16, 8)


class _FakeEmbedder:
    """Responses that share a leading word get nearly the same vector; others are orthogonal."""

    model = ModelRef(name="fake")
    dims = {"alpha": 0, "beta": 1, "gamma": 2, "delta": 3}

    def embed(self, texts):
        out = np.zeros((len(texts), 64), dtype=np.float32)
        for i, t in enumerate(texts):
            word = t.split("\n")[2].split()[0]
            out[i, self.dims[word]] = 1.0
            out[i, 4 + i % 60] += 0.05
        n = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(n > 0, n, 1)


def test_semantic_duplicates_use_the_index_and_the_same_batch():
    texts = ["alpha one", "beta two", "alpha three", "gamma four", "beta five", "delta six", "alpha seven"]
    records = [_record(i, t) for i, t in enumerate(texts)]
    f = SemanticDuplicate(SemanticConfig(enabled=True, threshold=0.9), embedder=_FakeEmbedder())
    f.batch_size = 3
    f.run(records)
    assert [r.kept for r in records] == [True, True, False, True, False, True, False]
    assert records[2].decisions[-1].duplicate_of == records[0].id  # same batch
    assert records[4].decisions[-1].duplicate_of == records[1].id  # an earlier batch, through usearch
    assert "cosine" in records[6].decisions[-1].reason


BAD = [
    ("empty instruction", dict(instruction="", output="A reply of enough words to pass the length filter.")),
    (
        "characters, over max_record_chars",
        dict(instruction="Draft a reply to this customer about the refund.", output="word " * 20_000),
    ),
    (
        "U+FFFD",
        dict(
            instruction="Draft a r\ufffd\ufffdply to this customer.",
            output="Thank you for your message, we will look into the order.",
        ),
    ),
    (
        "not English",
        dict(
            instruction="Redacta una respuesta a este cliente sobre su pedido.",
            output="Gracias por escribirnos. Puede devolver la alfombra dentro de los treinta días.",
        ),
    ),
    (
        "Latin-alphabet",
        dict(
            instruction="请给这位顾客写一封回复邮件，关于退款。",
            output="感谢您联系我们。很抱歉沙发到货时有划痕。我们会为您安排免费更换或全额退款。",
        ),
    ),
]


def test_bad_input_is_dropped_with_a_reason():
    check = TextCheck(CurateConfig())
    for expected, fields in BAD:
        drop = check.drop(Record(source=Source.imported, **fields))
        assert drop is not None and expected.lower() in drop.reason.lower(), (expected, drop)
    ok = Record(
        source=Source.imported,
        instruction="Draft a reply to this customer about the refund.",
        output="Thank you for getting in touch; the refund is on its way to your card.",
    )
    assert check.drop(ok) is None


def _pool(tmp_path, n: int = 400) -> tuple[list[Record], object]:
    rng = random.Random(7)
    records = []
    for i in range(n):
        if i % 5 == 4:  # a near copy of the record before
            prev = records[-1]
            records.append(
                Record(
                    instruction=prev.instruction + " Please.",
                    output=prev.output.replace(" ", "  ", 1) + " Thanks.",
                    source=Source.self_instruct,
                )
            )
        elif i % 7 == 6:  # an exact copy
            records.append(records[-1].model_copy(deep=True))
        else:
            records.append(
                Record(
                    instruction=" ".join(rng.choice(WORDS) for _ in range(rng.randrange(4, 14))),
                    output=_paragraph(rng, 40),
                    source=Source.self_instruct,
                )
            )
    records += [Record(source=Source.imported, **fields) for _, fields in BAD]
    path = write_records(records, tmp_path / "pool.parquet")
    return records, path


class _WordEmbedder:
    """The first word of the response picks the direction: records that start alike are semantic duplicates."""

    model = ModelRef(name="words")

    def embed(self, texts):
        out = np.zeros((len(texts), 32), dtype=np.float32)
        for i, t in enumerate(texts):
            out[i, zlib.crc32(t.split("\n")[2].split()[0].encode()) % 32] = 1.0
        return out


def test_chunked_curation_decides_as_in_memory_and_cli_explains(tmp_path):
    records, path = _pool(tmp_path)
    cfg = CurateConfig(chunk_size=64, min_output_words=5)

    def filters():  # the semantic filter runs in the chunked runner's second thread
        return [*curation_filters(cfg, [], None), SemanticDuplicate(SemanticConfig(), embedder=_WordEmbedder())]

    in_memory = [r.model_copy(deep=True) for r in records]
    for f in filters():
        f.batch_size = cfg.chunk_size
        f.run(in_memory)
    assert any(d.stage == "curate.semantic_duplicate" and not d.kept for r in in_memory for d in r.decisions)
    run = tmp_path / "run"
    report = curate_parquet(
        path,
        run / "stages" / "curate" / "records.parquet",
        run / "decisions.parquet",
        cfg,
        filters=filters(),
        progress=False,
    )
    assert report.records_in == len(records)
    streamed = pq.read_table(run / "stages" / "curate" / "records.parquet").column("decisions").to_pylist()
    assert [[(d["stage"], d["kept"], d["reason"], d["duplicate_of"]) for d in ds] for ds in streamed] == [
        [(d.stage, d.kept, d.reason, d.duplicate_of) for d in r.decisions] for r in in_memory
    ]
    assert report.kept == sum(r.kept for r in in_memory)
    log = pq.read_table(run / "decisions.parquet")
    assert log.num_rows == sum(len(r.decisions) for r in in_memory)
    reasons = set(log.column("reason").to_pylist())
    assert {"exact duplicate", "empty instruction"} <= reasons
    assert any(r.startswith("near-duplicate: MinHash") for r in reasons)

    from ballast.cli import app

    runner = CliRunner()
    dup = next(r for r in in_memory if any(d.stage == "curate.minhash_duplicate" and not d.kept for d in r.decisions))
    result = runner.invoke(app, ["explain", str(run), dup.id[:12]])
    assert result.exit_code == 0, result.output
    assert "duplicate of" in result.output and "duplicated by this record, curate.minhash_duplicate" in result.output
    exact = next(r for r in in_memory if any(d.reason == "exact duplicate" for d in r.decisions))
    result = runner.invoke(app, ["explain", str(run), exact.id])
    assert result.exit_code == 0 and "occurrence 2 of 2" in result.output
    result = runner.invoke(app, ["stats", str(run)])
    assert result.exit_code == 0, result.output
    assert "curate.minhash_duplicate" in result.output and "per stage and source" in result.output
    assert "imported" in result.output


def test_curate_command_runs_on_a_pool_with_bad_rows(tmp_path):
    _, path = _pool(tmp_path, n=50)
    from ballast.cli import app

    result = CliRunner().invoke(
        app, ["curate", str(path), "--out", str(tmp_path / "run"), "minhash.threshold=0.6", "chunk_size=16"]
    )
    assert result.exit_code == 0, result.output
    assert "curate.normalise" in result.output and (tmp_path / "run" / "decisions.parquet").is_file()
    bad = CliRunner().invoke(app, ["curate", str(tmp_path / "missing.parquet"), "--out", str(tmp_path / "r2")])
    assert bad.exit_code == 2 and "no such pool file" in bad.output


def test_exact_duplicate_drops_a_verbatim_copy_of_a_seen_record():
    seed = _record(1, "The same text twice.")
    f = ExactDuplicate([seed])
    copy = seed.model_copy(deep=True)
    assert f.drop(copy).duplicate_of == seed.id


def test_novelty_filter_uses_seen_records(seeds):
    f = Novelty(0.7, seeds[:50])
    records = [
        Record(instruction=seeds[3].instruction, output="x", source=Source.self_instruct),
        Record(
            instruction="Completely new words nobody used before in this set", output="y", source=Source.self_instruct
        ),
    ]
    f.run(records)
    assert not records[0].kept and records[0].decisions[0].duplicate_of == seeds[3].id
    assert records[1].kept


@pytest.mark.slow
def test_static_model_finds_a_paraphrased_record():
    """The real distilled model (distilled once from the packaged MiniLM, then cached)."""
    from ballast.backends.static import StaticEmbedder

    embedder = StaticEmbedder()
    assert embedder.model.sha256 and len(embedder.model.sha256) == 64
    base = (
        "Thank you for getting in touch, and I'm sorry the rug turned out too large for your hallway. You're "
        "within our 30-day return window, and because the rug is unused and still in its original packaging, it "
        "qualifies for a return. Once our warehouse receives the rug, your refund of USD 149 will be issued to "
        "your card within 5-10 business days."
    )
    paraphrase = (
        "Many thanks for getting in touch, and I apologise that the rug turned out too large for your "
        "hallway. Because the rug is unused and still in the box it came in, and you're within our 30-day "
        "returns period, it qualifies for a return. Once our warehouse receives the rug, your refund of "
        "USD 149 will be issued back to your card in five to ten working days."
    )
    other = (
        "The warranty on the Calder sofa frame is five years. Please send a photo of the broken joint and the "
        "order number, and we will arrange a technician visit or a replacement frame, whichever you prefer."
    )
    records = [_record(1, base), _record(2, other), _record(3, paraphrase)]
    SemanticDuplicate(SemanticConfig(enabled=True), embedder=embedder).run(records)
    assert [r.kept for r in records] == [True, True, False]
    assert records[2].decisions[-1].duplicate_of == records[0].id
