"""Generation throughput: ballast's generation path against the raw backend, same prompts, one run.

ballast's path is what the generate stage runs: generate_all over CachedGenerator(backend) with a CallLog,
results streamed to the cache and the log as each call finishes (a fresh cache per repetition, so every
call is a miss). The raw side is the bare library: llama_cpp.Llama.create_completion on the same rendered
prompts, same Llama object and per-prompt seeds (in process), and plain httpx POSTs with the same concurrency
(server). The two sides take turns chunk by chunk, the order flipping each turn, so warm-up, drift and other
load on the machine fall on both alike. On a shared 2-core machine llama.cpp's threads spin-wait badly when
another process takes a core: check the load average it prints, or pass --threads 1.

    python benchmarks/bench_generation.py                      # in process and a llama.cpp server at 1, 4, 8
    python benchmarks/bench_generation.py --no-server --prompts 8
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from ballast.backends.base import Decoding, call_seed
from ballast.backends.cache import CachedGenerator
from ballast.backends.calls import CallLog, generate_all
from ballast.backends.llamacpp import LlamaCppBackend
from ballast.backends.models import resolve
from ballast.backends.openai_http import OpenAIBackend
from ballast.policy.schema import load_policy
from ballast.seeds import load_seeds, split_heldout
from ballast.templates.prompts import record_messages

MODEL = "smollm2-135m-instruct"


def prompts_from_seeds(n: int) -> list[list[dict]]:
    example = ROOT / "examples" / "harbor-support"
    policy = load_policy(example / "policy.yaml")
    train = split_heldout(load_seeds(example / "seeds.jsonl", policy), 0.25, salt="heldout:13").train
    return [record_messages(r, policy.company, with_response=False) for r in train[:n]]


def ballast_run(backend, prompts, decoding, workdir: Path, tag: str) -> tuple[int, float, int]:
    cached = CachedGenerator(backend, workdir / f"cache-{tag}.sqlite")
    log = CallLog(workdir / f"calls-{tag}.jsonl")
    start = time.perf_counter()
    gens = generate_all(cached, prompts, decoding, label=f"ballast {tag}", log=log, progress=False)
    seconds = time.perf_counter() - start
    log.close()
    return sum(g.completion_tokens for g in gens if g.ok), seconds, sum(not g.ok for g in gens)


def raw_in_process(backend: LlamaCppBackend, prompts, decoding) -> tuple[int, float, int]:
    llm, tokens = backend.llm, 0
    start = time.perf_counter()
    for prompt in prompts:
        text = backend.render(prompt)
        out = llm.create_completion(
            text,
            max_tokens=decoding.max_tokens,
            temperature=decoding.temperature,
            top_p=decoding.top_p,
            seed=call_seed(text, decoding.seed),
        )
        tokens += out["usage"]["completion_tokens"]
    return tokens, time.perf_counter() - start, 0


async def _raw_server(base_url: str, model: str, prompts, decoding, concurrency: int) -> tuple[int, int]:
    gate = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:

        async def one(messages) -> int:
            body = {
                "model": model,
                "messages": list(messages),
                "temperature": decoding.temperature,
                "top_p": decoding.top_p,
                "max_tokens": decoding.max_tokens,
                "seed": decoding.seed,
            }
            async with gate:
                resp = await client.post(f"{base_url}/chat/completions", json=body)
            return resp.json()["usage"]["completion_tokens"] if resp.status_code == 200 else -1

        counts = await asyncio.gather(*(one(p) for p in prompts))
    return sum(c for c in counts if c > 0), sum(c < 0 for c in counts)


def raw_server(base_url, model, prompts, decoding, concurrency) -> tuple[int, float, int]:
    start = time.perf_counter()
    tokens, failed = asyncio.run(_raw_server(base_url, model, prompts, decoding, concurrency))
    return tokens, time.perf_counter() - start, failed


def compare(label: str, prompts, chunk: int, raw, ours, reps: int) -> dict:
    """Raw and ballast alternate chunk by chunk (the order flipping each time), so load from anything else on
    the machine falls on both sides alike; tokens and seconds are summed per side."""
    totals = {"raw": [0, 0.0, 0], "ballast": [0, 0.0, 0]}
    for rep in range(reps):
        for start in range(0, len(prompts), chunk):
            part = prompts[start : start + chunk]
            sides = [("raw", raw), ("ballast", ours)]
            # Flip per chunk and per pass: each chunk runs raw-first in one pass and ballast-first in the next.
            for side, fn in sides if (start // chunk + rep) % 2 == 0 else sides[::-1]:
                tokens, seconds, failed = fn(part, f"{rep}-{start}")
                totals[side][0] += tokens
                totals[side][1] += seconds
                totals[side][2] += failed
    raw_rate = totals["raw"][0] / totals["raw"][1]
    our_rate = totals["ballast"][0] / totals["ballast"][1]
    row = {
        "label": label,
        "raw_tok_s": raw_rate,
        "ballast_tok_s": our_rate,
        "ratio": our_rate / raw_rate,
        "raw_tokens": totals["raw"][0],
        "ballast_tokens": totals["ballast"][0],
        "failed": totals["raw"][2] + totals["ballast"][2],
    }
    print(
        f"{label:<28} raw {raw_rate:7.1f} tok/s   ballast {our_rate:7.1f} tok/s   ratio {row['ratio']:.3f}   "
        f"(tokens {row['raw_tokens']} / {row['ballast_tokens']}, failures {row['failed']}, "
        f"load {os.getloadavg()[0]:.2f})",
        flush=True,
    )
    return row


def start_server(threads: int) -> tuple[subprocess.Popen, str, Path]:
    path, _ = resolve(MODEL)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = Path(tempfile.mkdtemp()) / "server.log"
    with open(log, "w") as out:  # a file, not a pipe: a full pipe would stall the server
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "llama_cpp.server",
                "--model",
                str(path),
                "--model_alias",
                "smollm2",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--n_ctx",
                "2048",
                "--n_threads",
                str(threads),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 120
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{base}/models", timeout=1).status_code == 200:
                return proc, base, log
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("server did not answer within 120 s")
        time.sleep(0.3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--reps", type=int, default=2, help="passes over the prompts")
    ap.add_argument("--chunk", type=int, default=4, help="prompts per turn; raw and ballast take turns")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--no-server", action="store_true")
    args = ap.parse_args()
    # `timeout` and Ctrl-C: exit through the finally blocks, so the server process is stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    prompts = prompts_from_seeds(args.prompts)
    decoding = Decoding(temperature=0.7, top_p=0.9, max_tokens=args.max_tokens, seed=0)
    print(
        f"{len(prompts)} prompts x {args.max_tokens} max tokens, {args.reps} repetitions per side, "
        f"{args.threads} threads, load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        backend = LlamaCppBackend(MODEL, n_threads=args.threads)
        backend.generate(prompts[:1], Decoding(max_tokens=4))  # load the model outside the timing
        rows.append(
            compare(
                "llama.cpp in process",
                prompts,
                args.chunk,
                lambda part, tag: raw_in_process(backend, part, decoding),
                lambda part, tag: ballast_run(backend, part, decoding, work, f"inproc-{tag}"),
                args.reps,
            )
        )
        if not args.no_server:
            proc, base, _ = start_server(args.threads)
            try:
                raw_server(base, "smollm2", prompts[:1], Decoding(max_tokens=4), 1)  # warm the server
                for c in args.concurrency:
                    server = OpenAIBackend(base, "smollm2", concurrency=c, timeout_s=600)
                    rows.append(
                        compare(
                            f"llama.cpp server, c={c}",
                            prompts,
                            max(args.chunk, c),
                            lambda part, tag, c=c: raw_server(base, "smollm2", part, decoding, c),
                            lambda part, tag, c=c, s=server: ballast_run(s, part, decoding, work, f"server{c}-{tag}"),
                            args.reps,
                        )
                    )
            finally:
                proc.terminate()
                proc.wait(timeout=10)
    print("\n| path | raw tok/s | ballast tok/s | ballast / raw |\n| --- | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['label']} | {r['raw_tok_s']:.1f} | {r['ballast_tok_s']:.1f} | {r['ratio']:.3f} |")
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
