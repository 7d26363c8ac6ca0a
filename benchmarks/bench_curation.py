"""Curation of a 300,000-record pool on this machine: ours against Self-Instruct's exhaustive ROUGE-L loop and
datasketch's MinHash LSH, on the same input, in one run.

    python benchmarks/bench_curation.py                       # builds ~/.cache/ballast/benchmarks/pool.parquet
    python benchmarks/bench_curation.py --records 20000       # a quick look on a smaller pool

Each method runs in its own process, so each peak RSS is its own. Prints, for every method: seconds, peak RSS,
precision and recall against the pool's ground truth (a record is a duplicate when an earlier record of the pool
has the same cluster), and the speed ratios; for the novelty rule, the agreement of our decisions with the
exhaustive ones:

- `rouge-score`: Self-Instruct's loop as the reference `tests/rouge_reference.py` runs it (rouge-score, every
  accepted instruction), timed on the first --rouge-sample records and extrapolated to the pool with the number of
  comparisons that loop would make there (the sum, over records, of instructions accepted before it; known
  exactly because our decisions are the same).
- `all-pairs`: the same loop on the first --agreement-sample records (20,000), with every pair's LCS computed
  (vectorised bit-parallel, no pruning) and rouge-score's arithmetic for F; every pair that scores near or over
  the threshold is recomputed with rouge-score itself and must agree. This is the exhaustive decision our index
  is checked against.
- `datasketch`: MinHash (128 permutations, its default hash) and MinHashLSH at the same Jaccard threshold and
  the same word shingles as ours, one record at a time, as its documentation does it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))  # the exhaustive ROUGE-L reference lives with the tests

from ballast.backends.models import cache_dir  # noqa: E402
from ballast.curate.stream import peak_rss_mb  # noqa: E402
from ballast.recipe import CurateConfig  # noqa: E402

DEFAULT_POOL = cache_dir() / "benchmarks" / "pool.parquet"  # 84 MB: a fixture, kept out of the repository


def bench_config() -> CurateConfig:
    """Every curation stage except the policy checks (the pool is a dedup fixture, not policy-conformant)."""
    return CurateConfig(policy_checks=False, semantic={"enabled": True})


def _column(pool: Path, name: str) -> list:
    return pq.read_table(pool, columns=[name]).column(name).to_pylist()


def _texts(pool: Path) -> list[str]:
    t = pq.read_table(pool, columns=["instruction", "input", "output"])
    return [f"{a}\n{b}\n{c}" for a, b, c in zip(*(t.column(n).to_pylist() for n in ("instruction", "input", "output")))]


def _save(out: Path, stats: dict, **arrays: np.ndarray) -> None:
    stats["peak_rss_mb"] = round(peak_rss_mb())
    np.savez_compressed(out.with_suffix(".npz"), **arrays)
    out.with_suffix(".json").write_text(json.dumps(stats))


# ---- tasks, each run in its own process -------------------------------------------------------------------------


def task_curate(pool: Path, out: Path, work: Path) -> None:
    from ballast.curate.stream import curate_parquet

    start = time.perf_counter()
    report = curate_parquet(
        pool,
        work / "run" / "stages" / "curate" / "records.parquet",
        work / "run" / "decisions.parquet",
        bench_config(),
        progress=False,
    )
    seconds = time.perf_counter() - start
    decisions = pq.read_table(work / "run" / "stages" / "curate" / "records.parquet", columns=["decisions"]).column(
        "decisions"
    )
    flat = pc.list_flatten(decisions)
    parents = pc.list_parent_indices(decisions).to_numpy()
    stage = np.asarray(pc.struct_field(flat, "stage").to_pylist())
    kept = pc.struct_field(flat, "kept").to_numpy(zero_copy_only=False)
    n = len(decisions)
    dropped_at = np.full(n, "", dtype=object)
    dropped_at[parents[~kept]] = stage[~kept]
    _save(out, {"seconds": seconds, **report.as_dict()}, dropped_at=dropped_at.astype(str))


def task_novelty_fast(pool: Path, out: Path, work: Path) -> None:
    from ballast.rouge import RougeNoveltyIndex

    texts = _column(pool, "instruction")
    ids = _column(pool, "id")
    start = time.perf_counter()
    index = RougeNoveltyIndex(0.7).fit(texts)
    novel = np.zeros(len(texts), dtype=bool)
    score = np.zeros(len(texts))
    for i, (rid, text) in enumerate(zip(ids, texts)):
        novel[i], _, score[i] = index.add_if_novel(rid, text)
    seconds = time.perf_counter() - start
    accepted_before = np.concatenate(([0], np.cumsum(novel)[:-1]))
    _save(
        out,
        {"seconds": seconds, "pairs_verified": index.pairs_verified, "exhaustive_pairs": int(accepted_before.sum())},
        novel=novel,
        score=score,
        accepted_before=accepted_before,
    )


def task_rouge_exhaustive(pool: Path, out: Path, work: Path, n: int) -> None:
    from rouge_reference import RougeNovelty

    texts = _column(pool, "instruction")[:n]
    start = time.perf_counter()
    ref = RougeNovelty(0.7)
    novel = np.zeros(len(texts), dtype=bool)
    pairs = 0
    for i, text in enumerate(texts):
        pairs += len(ref._pool)
        novel[i], _, _ = ref.is_novel(text)
        if novel[i]:
            ref.add(str(i), text)
    seconds = time.perf_counter() - start
    _save(out, {"seconds": seconds, "pairs": pairs, "records": len(texts)}, novel=novel)


def task_all_pairs(pool: Path, out: Path, work: Path, n: int) -> None:
    """Self-Instruct's loop computing every pair's LCS, vectorised over the accepted pool."""
    from rouge_score import rouge_scorer, tokenize

    texts = _column(pool, "instruction")[:n]
    tokens = [tokenize.tokenize(t, None) for t in texts]  # rouge-score's own tokenizer
    vocab: dict[str, int] = {}
    ids = [[vocab.setdefault(w, len(vocab)) for w in t] for t in tokens]
    pad = len(vocab)
    width = max((len(t) for t in ids), default=1)
    acc = np.full((len(ids), width), pad, dtype=np.int64)
    acc_len = np.zeros(len(ids), dtype=np.int64)
    acc_src: list[int] = []
    novel = np.zeros(len(ids), dtype=bool)
    score = np.zeros(len(ids))
    confirmed = 0
    mask_of = np.zeros(pad + 1, dtype=np.uint64)
    start = time.perf_counter()
    for i, q in enumerate(ids):
        m, k = len(q), len(acc_src)
        best, best_j = 0.0, -1
        if m and k:
            if m <= 64:
                touched = set(q)
                for pos, tok in enumerate(q):
                    mask_of[tok] |= np.uint64(1 << pos)
                full = np.uint64((1 << m) - 1) if m < 64 else np.uint64(0xFFFFFFFFFFFFFFFF)
                v = np.full(k, full, dtype=np.uint64)
                matches = mask_of[acc[:k]]
                for col in range(width):
                    u = v & matches[:, col]
                    v = ((v + u) | (v - u)) & full
                lcs = m - np.bitwise_count(v).astype(np.int64)
                for tok in touched:
                    mask_of[tok] = 0
            else:
                from ballast.rouge import lcs_length

                lcs = np.array([lcs_length(q, acc[j, : acc_len[j]].tolist()) for j in range(k)], dtype=np.int64)
            with np.errstate(divide="ignore", invalid="ignore"):
                p, r = lcs / m, lcs / acc_len[:k]
                f = np.where(lcs > 0, 2 * p * r / (p + r), 0.0)
            best_j = int(np.argmax(f))
            best = float(f[best_j])
            for j in np.nonzero(f > 0.6)[0]:  # near or over the threshold: rouge-score itself must agree
                ref = rouge_scorer._score_lcs(tokens[acc_src[j]], tokens[i]).fmeasure
                if ref != f[j]:
                    raise AssertionError(f"all-pairs F {f[j]} != rouge-score {ref} for records {acc_src[j]}, {i}")
                confirmed += 1
        novel[i], score[i] = best <= 0.7, best
        if novel[i]:
            acc[k, :m] = q
            acc_len[k] = m
            acc_src.append(i)
    seconds = time.perf_counter() - start
    _save(
        out,
        {"seconds": seconds, "records": len(ids), "confirmed_with_rouge_score": confirmed},
        novel=novel,
        score=score,
    )


def _shingles(text: str, k: int) -> list[bytes]:
    from ballast.curate.text import normalised

    words = normalised(text).split()
    if not words:
        return []
    if len(words) < k:
        return [" ".join(words).encode()]
    return [" ".join(words[i : i + k]).encode() for i in range(len(words) - k + 1)]


def task_datasketch(pool: Path, out: Path, work: Path) -> None:
    from datasketch import LeanMinHash, MinHash, MinHashLSH

    cfg = bench_config().minhash
    texts = _texts(pool)
    start = time.perf_counter()
    lsh = MinHashLSH(threshold=cfg.threshold, num_perm=cfg.num_perm)
    stored: dict[int, LeanMinHash] = {}
    dropped = np.zeros(len(texts), dtype=bool)
    for i, text in enumerate(texts):
        shingles = _shingles(text, cfg.shingle_words)
        if not shingles:
            continue
        m = MinHash(num_perm=cfg.num_perm)
        m.update_batch(shingles)
        if any(m.jaccard(stored[c]) >= cfg.threshold for c in lsh.query(m)):
            dropped[i] = True
            continue
        lean = LeanMinHash(m)
        lsh.insert(i, lean)
        stored[i] = lean
    seconds = time.perf_counter() - start
    _save(out, {"seconds": seconds, "params": [lsh.b, lsh.r]}, dropped=dropped)


def task_minhash_ours(pool: Path, out: Path, work: Path) -> None:
    from ballast.curate.dedup import MinHashDuplicate, lsh_params
    from ballast.curate.stream import _conform, _records

    cfg = bench_config()
    f = MinHashDuplicate(cfg.minhash)
    dropped = []
    start = time.perf_counter()
    for batch in pq.ParquetFile(pool).iter_batches(batch_size=cfg.chunk_size):
        dropped += [v is not None for v in f.drop_batch(_records(_conform(batch)))]
    seconds = time.perf_counter() - start
    _save(out, {"seconds": seconds, "params": list(lsh_params(cfg.minhash))}, dropped=np.array(dropped))


TASKS = {
    "curate": task_curate,
    "novelty_fast": task_novelty_fast,
    "rouge_exhaustive": task_rouge_exhaustive,
    "all_pairs": task_all_pairs,
    "datasketch": task_datasketch,
    "minhash_ours": task_minhash_ours,
}


def run_task(name: str, pool: Path, work: Path, *extra: str) -> tuple[dict, dict]:
    out = work / name
    cmd = [sys.executable, __file__, "--task", name, "--pool", str(pool), "--work", str(work), *extra]
    print(f"  running {name} ...", flush=True)
    subprocess.run(cmd, check=True)
    stats = json.loads(out.with_suffix(".json").read_text())
    arrays = dict(np.load(out.with_suffix(".npz"), allow_pickle=False))
    print(f"  {name}: {stats['seconds']:.1f}s, peak RSS {stats['peak_rss_mb']} MB", flush=True)
    return stats, arrays


# ---- evaluation -------------------------------------------------------------------------------------------------


def ground_truth(pool: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(is a duplicate of an earlier record, strength, is a bad record) per record in pool order."""
    meta = pq.read_table(pool, columns=["meta"]).column("meta").to_pylist()
    seen: set[str] = set()
    dup = np.zeros(len(meta), dtype=bool)
    strength = np.empty(len(meta), dtype=object)
    bad = np.zeros(len(meta), dtype=bool)
    for i, m in enumerate(meta):
        m = dict(m)
        bad[i] = m["kind"] == "bad"
        strength[i] = m["strength"] or m["kind"]
        dup[i] = m["cluster"] in seen
        seen.add(m["cluster"])
    return dup, strength.astype(str), bad


def pr(pred: np.ndarray, truth: np.ndarray, valid: np.ndarray) -> tuple[float, float]:
    pred, truth = pred & valid, truth & valid
    tp = np.count_nonzero(pred & truth)
    return tp / max(np.count_nonzero(pred), 1), tp / max(np.count_nonzero(truth), 1)


def recall_by(pred: np.ndarray, truth: np.ndarray, strength: np.ndarray) -> str:
    parts = []
    for s in ("verbatim", "format", "light", "medium", "heavy"):
        sel = truth & (strength == s)
        if sel.any():
            parts.append(f"{s} {np.count_nonzero(pred & sel) / np.count_nonzero(sel):.3f}")
    return ", ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pool", type=Path, default=DEFAULT_POOL)
    parser.add_argument("--records", type=int, default=300_000, help="pool size when the pool must be built")
    parser.add_argument("--rouge-sample", type=int, default=1000, help="records for rouge-score's own loop")
    parser.add_argument("--agreement-sample", type=int, default=20_000, help="records for the all-pairs check")
    parser.add_argument("--skip", nargs="*", default=[], help="tasks to leave out, e.g. datasketch")
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument(
        "--results",
        type=Path,
        default=None,
        help="also write the figures, with this command and the machine, to this Markdown file",
    )
    parser.add_argument("--task", choices=sorted(TASKS), help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.task:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        fn = TASKS[args.task]
        extra = (args.n,) if args.task in ("rouge_exhaustive", "all_pairs") else ()
        fn(args.pool, args.work / args.task, args.work, *extra)
        return

    pool = args.pool
    if not pool.is_file():
        print(f"building {pool} ({args.records} records) ...", flush=True)
        subprocess.run(
            [
                sys.executable,
                str(ROOT / "benchmarks" / "make_pool.py"),
                "--out",
                str(pool),
                "--records",
                str(args.records),
            ],
            check=True,
        )
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_curation."))
    work.mkdir(parents=True, exist_ok=True)
    n = pq.ParquetFile(pool).metadata.num_rows
    print(f"pool {pool}: {n} records; work folder {work}", flush=True)
    if not (args.skip and "curate" in args.skip):
        # The static model is distilled once and cached; do it before timing anything.
        from ballast.backends.static import StaticEmbedder

        t0 = time.perf_counter()
        emb = StaticEmbedder()
        print(
            f"static model {emb.model.name} sha256 {emb.model.sha256[:16]} ready in {time.perf_counter() - t0:.1f}s",
            flush=True,
        )

    results = {}
    for name, extra in (
        ("curate", ()),
        ("novelty_fast", ()),
        ("rouge_exhaustive", ("--n", str(args.rouge_sample))),
        ("all_pairs", ("--n", str(args.agreement_sample))),
        ("minhash_ours", ()),
        ("datasketch", ()),
    ):
        if name not in args.skip:
            results[name] = run_task(name, pool, work, *extra)

    dup, strength, bad = ground_truth(pool)
    valid = ~bad
    print()
    print(
        f"ground truth: {np.count_nonzero(dup & valid)} duplicates of an earlier record among "
        f"{np.count_nonzero(valid)} records ({np.count_nonzero(bad)} malformed records left out of P/R)"
    )
    lines = []
    if "curate" in results:
        stats, arr = results["curate"]
        at = arr["dropped_at"]
        lines.append(
            f"ours, whole curation ({', '.join(stats['stages'])}): {stats['seconds']:.1f}s, "
            f"peak RSS {stats['peak_rss_mb']} MB, kept {stats['kept']} of {stats['records_in']}"
        )
        for stage, c in stats["stages"].items():
            lines.append(f"  {stage:28s} {c['seconds']:7.1f}s  decided {c['decided']:7d}  dropped {c['dropped']:7d}")
        dedup_stages = [
            s
            for s in stats["stages"]
            if s.split(".")[1] in ("exact_duplicate", "minhash_duplicate", "rouge_novelty", "semantic_duplicate")
        ]
        lines.append("  per dedup stage, its drops against the truth (recall is of all duplicates, cumulative):")
        cumulative = np.zeros(len(at), dtype=bool)
        for s in dedup_stages:
            pred = at == s
            cumulative |= pred
            p, _ = pr(pred, dup, valid)
            _, r = pr(cumulative, dup, valid)
            lines.append(
                f"    {s:28s} precision {p:.4f}  cumulative recall {r:.4f}  "
                f"({recall_by(cumulative, dup & valid, strength)})"
            )
        p, r = pr(cumulative, dup, valid)
        lines.append(f"  all dedup stages together: precision {p:.4f}, recall {r:.4f}")
        bad_caught = np.count_nonzero((at == "curate.normalise") & bad)
        lines.append(f"  malformed records dropped by curate.normalise: {bad_caught} of {np.count_nonzero(bad)}")
    if "novelty_fast" in results:
        fast, farr = results["novelty_fast"]
        lines.append(
            f"ours, ROUGE-L novelty alone on all {n} instructions: {fast['seconds']:.1f}s, "
            f"peak RSS {fast['peak_rss_mb']} MB, {fast['pairs_verified']} exact LCS computations "
            f"instead of {fast['exhaustive_pairs']}"
        )
        p, r = pr(~farr["novel"], dup, valid)
        lines.append(
            f"  as a dedup method: precision {p:.4f}, recall {r:.4f} "
            f"({recall_by(~farr['novel'], dup & valid, strength)})"
        )
        if "rouge_exhaustive" in results:
            ref, rarr = results["rouge_exhaustive"]
            k = ref["records"]
            per_pair = ref["seconds"] / max(ref["pairs"], 1)
            projected = per_pair * fast["exhaustive_pairs"]
            agree = np.mean(rarr["novel"] == farr["novel"][:k])
            lines.append(
                f"Self-Instruct exhaustive (rouge-score) on the first {k} records: {ref['seconds']:.1f}s "
                f"for {ref['pairs']} comparisons ({per_pair * 1e6:.1f} µs each), peak RSS "
                f"{ref['peak_rss_mb']} MB; agreement with ours {agree:.4%}"
            )
            lines.append(
                f"  extrapolated to {n} records ({fast['exhaustive_pairs']} comparisons): "
                f"{projected:.0f}s = {projected / 3600:.1f} CPU-hours; ours is "
                f"{projected / fast['seconds']:.0f}x faster on the novelty rule"
            )
        if "all_pairs" in results:
            ap, aarr = results["all_pairs"]
            k = ap["records"]
            same = aarr["novel"] == farr["novel"][:k]
            drops = ~aarr["novel"]
            same_score = np.mean(aarr["score"][drops] == farr["score"][:k][drops]) if drops.any() else 1.0
            lines.append(
                f"all-pairs exhaustive check on the first {k} records: {ap['seconds']:.1f}s; decisions "
                f"agree on {np.count_nonzero(same)} of {k} ({np.mean(same):.4%}); scores of drops "
                f"identical on {same_score:.4%}; {ap['confirmed_with_rouge_score']} pairs with F > 0.6 "
                "recomputed with rouge-score, all equal"
            )
    for name, label in (("minhash_ours", "ours, MinHash LSH alone"), ("datasketch", "datasketch MinHash LSH")):
        if name in results:
            stats, arr = results[name]
            p, r = pr(arr["dropped"], dup, valid)
            lines.append(
                f"{label} (bands, rows = {tuple(stats['params'])}): {stats['seconds']:.1f}s, peak RSS "
                f"{stats['peak_rss_mb']} MB, precision {p:.4f}, recall {r:.4f} "
                f"({recall_by(arr['dropped'], dup & valid, strength)})"
            )
    if "minhash_ours" in results and "datasketch" in results:
        lines.append(
            f"  MinHash speed ratio, datasketch / ours: "
            f"{results['datasketch'][0]['seconds'] / results['minhash_ours'][0]['seconds']:.1f}x"
        )
    print("\n".join(lines))
    (work / "summary.txt").write_text("\n".join(lines) + "\n")
    if args.results:
        import platform

        cpu = next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            platform.processor(),
        )
        command = "python " + " ".join(
            [
                str(Path(sys.argv[0]).relative_to(ROOT)) if Path(sys.argv[0]).is_absolute() else sys.argv[0],
                *sys.argv[1:],
            ]
        )
        args.results.write_text(
            "# Curation at 300,000 records: measured\n\n"
            f"Command (from the repository root): `{command}`\n\n"
            f"Machine: {os.cpu_count()} CPU cores ({cpu}), Python {platform.python_version()}; "
            f"pool {pool.name}, {n} records.\n\n```\n" + "\n".join(lines) + "\n```\n"
        )
        print(f"wrote {args.results}")


if __name__ == "__main__":
    main()
