"""Streaming generation: results reach the cache and the call log as each call finishes; a backend that
fails or crashes part-way leaves recorded failures and loses none of the finished calls."""

from __future__ import annotations

import asyncio
import json
import time

from ballast.backends.base import Decoding, Generation, streams_results
from ballast.backends.cache import CachedGenerator
from ballast.backends.calls import CallLog, generate_all
from ballast.backends.openai_http import OpenAIBackend, RateLimiter
from ballast.records import ModelRef


class Flaky:
    """Streams results; raises after `die_after` prompts, like a backend that crashes mid-batch."""

    def __init__(self, die_after: int | None = None) -> None:
        self.model = ModelRef(name="flaky")
        self.die_after = die_after
        self.calls = 0

    def generate(self, prompts, decoding, on_result=None):
        out = []
        for i, p in enumerate(prompts):
            if self.die_after is not None and self.calls >= self.die_after:
                raise RuntimeError("backend fell over")
            self.calls += 1
            gen = (
                Generation(text=None, error="HTTP 500")
                if "bad" in p
                else Generation(text=p.upper(), completion_tokens=2)
            )
            out.append(gen)
            if on_result:
                on_result(i, gen)
        return out


def test_a_crash_mid_batch_keeps_finished_calls_and_records_the_rest(tmp_path):
    log = CallLog(tmp_path / "calls.jsonl")
    cached = CachedGenerator(Flaky(die_after=3), tmp_path / "cache.sqlite")
    prompts = ["a", "bad", "c", "d", "e"]
    gens = generate_all(cached, prompts, Decoding(), label="t", log=log, progress=False)
    assert [g.text for g in gens[:3]] == ["A", None, "C"]
    assert gens[1].error == "HTTP 500"
    assert all(not g.ok and "backend fell over" in g.error for g in gens[3:])
    lines = [json.loads(x) for x in (tmp_path / "calls.jsonl").read_text().splitlines()]
    assert len(lines) == 5 and [x["ok"] for x in lines].count(True) == 2
    assert log.summary() == {"calls_ok": 2, "calls_failed": 3}
    # The finished successes were cached as they returned: a rerun asks only for the rest.
    again = CachedGenerator(Flaky(), tmp_path / "cache.sqlite")
    gens = generate_all(again, prompts, Decoding(), label="t", progress=False)
    assert again.hits == 2 and again.misses == 3
    assert [g.text for g in gens] == ["A", None, "C", "D", "E"]


def test_non_streaming_backends_run_in_chunks():
    class Plain:
        model = ModelRef(name="plain")

        def __init__(self) -> None:
            self.sizes: list[int] = []

        def generate(self, prompts, decoding):
            self.sizes.append(len(prompts))
            return [Generation(text=p) for p in prompts][:-1]  # one result short: a backend bug

    plain = Plain()
    assert not streams_results(plain)
    gens = generate_all(plain, [str(i) for i in range(7)], Decoding(), label="t", chunk=3, progress=False)
    assert plain.sizes == [3, 3, 1]
    assert [g.ok for g in gens] == [True, True, False, True, True, False, False]
    assert "returned 2 results for 3 prompts" in gens[2].error


def test_rate_limiter_spaces_request_starts():
    limiter = RateLimiter(20.0)

    async def go() -> list[float]:
        starts = []

        async def one():
            await limiter.wait()
            starts.append(time.monotonic())

        await asyncio.gather(*(one() for _ in range(6)))
        return starts

    starts = asyncio.run(go())
    assert starts[-1] - starts[0] >= 5 / 20 - 0.01


def test_server_results_stream_in_and_respect_the_rate_limit(llama_server, tmp_path):
    backend = OpenAIBackend(
        llama_server["base_url"],
        llama_server["model"],
        concurrency=4,
        requests_per_second=5.0,
        model_sha256=llama_server["sha256"],
    )
    assert streams_results(backend)
    seen: list[int] = []
    start = time.monotonic()
    gens = backend.generate(
        [f"Count: {i}," for i in range(6)],
        Decoding(temperature=0.0, max_tokens=2),
        on_result=lambda i, g: seen.append(i),
    )
    assert time.monotonic() - start >= 5 / 5.0 - 0.05  # six starts, 0.2 s apart
    assert sorted(seen) == list(range(6)) and all(g.ok for g in gens)
    # Through the cache and generate_all: the second run is all cache hits, in order.
    log = CallLog(tmp_path / "calls.jsonl")
    cached = CachedGenerator(backend, tmp_path / "cache.sqlite")
    first = generate_all(
        cached,
        ["One, two,", "Red, green,"],
        Decoding(temperature=0.0, max_tokens=3),
        label="t",
        log=log,
        progress=False,
    )
    second = generate_all(
        cached, ["One, two,", "Red, green,"], Decoding(temperature=0.0, max_tokens=3), label="t", progress=False
    )
    assert [g.text for g in first] == [g.text for g in second] and cached.hits == 2
    assert log.summary()["calls_ok"] == 2


def test_in_process_backend_streams(weak):
    seen = []
    gens = weak.generate(
        ["The sky is", "word " * 5000],
        Decoding(temperature=0.0, max_tokens=2),
        on_result=lambda i, g: seen.append((i, g.ok)),
    )
    assert seen == [(0, True), (1, False)] and gens[1].error  # the over-long prompt is a recorded failure


def test_rate_limited_server_is_retried_after_its_retry_after(tmp_path):
    """A stand-in server answers 429 (Retry-After: 0.3) twice, then 200: one success after three attempts."""
    import http.server
    import threading

    hits: list[float] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            hits.append(time.monotonic())
            if len(hits) <= 2:
                self.send_response(429)
                self.send_header("Retry-After", "0.3")
                self.end_headers()
                self.wfile.write(b"slow down")
                return
            body = json.dumps(
                {
                    "choices": [{"message": {"content": "ok"}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 3, "completion_tokens": 1},
                }
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        backend = OpenAIBackend(f"http://127.0.0.1:{server.server_address[1]}/v1", "m", max_retries=3, backoff_s=0.01)
        gen = backend.generate([[{"role": "user", "content": "hi"}]], Decoding(max_tokens=2))[0]
        assert gen.ok and gen.text == "ok" and gen.attempts == 3
        assert hits[1] - hits[0] >= 0.29 and hits[2] - hits[1] >= 0.29
        hits.clear()
        gen = OpenAIBackend(backend.base_url, "m", max_retries=1, backoff_s=0.01).generate(
            [[{"role": "user", "content": "hi"}]], Decoding(max_tokens=2)
        )[0]
        assert not gen.ok and gen.attempts == 2 and gen.error.startswith("HTTP 429")
    finally:
        server.shutdown()
