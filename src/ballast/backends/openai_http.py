"""Any OpenAI-compatible server (vLLM, llama.cpp server, a hosted API): concurrent, bounded, never silent."""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Callable, Sequence

import httpx

from ballast.backends.base import Decoding, Generation, Prompt
from ballast.records import ModelRef

RETRYABLE_STATUS = {408, 409, 429, 500, 502, 503, 504}


class RateLimiter:
    """Spaces request starts at least 1/rps seconds apart, across concurrent requests and across calls
    (retries included); single-threaded asyncio needs no lock, nothing awaits between read and write."""

    def __init__(self, requests_per_second: float) -> None:
        self.interval = 1.0 / requests_per_second
        self.next_at = 0.0

    async def wait(self) -> None:
        now = time.monotonic()
        start = max(now, self.next_at)
        self.next_at = start + self.interval
        if start > now:
            await asyncio.sleep(start - now)


def _retry_after(resp: httpx.Response) -> float:
    try:
        return min(60.0, max(0.0, float(resp.headers.get("retry-after", 0))))
    except ValueError:  # an HTTP date: fall back to the backoff
        return 0.0


class OpenAIBackend:
    """Chat prompts go to /chat/completions, raw text to /completions; every failure is returned, not raised."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key_env: str | None = None,
        concurrency: int = 4,
        timeout_s: float = 60.0,
        max_retries: int = 3,
        backoff_s: float = 0.5,
        model_sha256: str | None = None,
        requests_per_second: float | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model_name = model
        self.model = ModelRef(name=model, sha256=model_sha256)
        self.api_key = os.environ.get(api_key_env, "") if api_key_env else ""
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.limiter = RateLimiter(requests_per_second) if requests_per_second else None

    def _request(self, prompt: Prompt, decoding: Decoding) -> tuple[str, dict]:
        body: dict = {
            "model": self.model_name,
            "temperature": decoding.temperature,
            "top_p": decoding.top_p,
            "max_tokens": decoding.max_tokens,
            "seed": decoding.seed,
        }
        if decoding.stop:
            body["stop"] = list(decoding.stop)
        if decoding.repetition_penalty != 1.0:  # not in the OpenAI API; vLLM and llama.cpp servers read it
            body["repetition_penalty"] = body["repeat_penalty"] = decoding.repetition_penalty
        if isinstance(prompt, str):
            return "/completions", body | {"prompt": prompt}
        return "/chat/completions", body | {"messages": list(prompt)}

    @staticmethod
    def _parse(path: str, payload: dict) -> Generation:
        choice = payload["choices"][0]
        text = choice["text"] if path == "/completions" else choice["message"]["content"]
        usage = payload.get("usage") or {}
        return Generation(
            text=text,
            prompt_tokens=usage.get("prompt_tokens", 0),
            completion_tokens=usage.get("completion_tokens", 0),
            finish_reason=choice.get("finish_reason"),
        )

    async def _one(
        self, client: httpx.AsyncClient, gate: asyncio.Semaphore, prompt: Prompt, decoding: Decoding
    ) -> Generation:
        path, body = self._request(prompt, decoding)
        attempt = 0
        while True:
            attempt += 1
            wait_s = 0.0
            async with gate:
                if self.limiter:
                    await self.limiter.wait()
                try:
                    resp = await client.post(self.base_url + path, json=body)
                except httpx.TransportError as exc:  # connect errors, timeouts, broken connections
                    error, retry = f"{type(exc).__name__}: {exc}", True
                except httpx.HTTPError as exc:  # e.g. too many redirects, undecodable body: retrying won't help
                    error, retry = f"{type(exc).__name__}: {exc}", False
                else:
                    if resp.status_code == 200:
                        try:
                            gen = self._parse(path, resp.json())
                        except (ValueError, KeyError, IndexError, TypeError) as exc:
                            error, retry = f"unparsable response: {exc!r}: {resp.text[:200]}", False
                        else:
                            gen.attempts = attempt
                            return gen
                    else:
                        error = f"HTTP {resp.status_code}: {resp.text[:200]}"
                        retry = resp.status_code in RETRYABLE_STATUS
                        wait_s = _retry_after(resp)
            if not retry or attempt > self.max_retries:
                return Generation(text=None, error=error, attempts=attempt)
            # Exponential backoff with jitter so concurrent callers do not retry in lockstep.
            # A server's Retry-After (429, 503) is honoured when it asks for longer.
            await asyncio.sleep(max(wait_s, self.backoff_s * 2 ** (attempt - 1) * (0.5 + random.random())))

    async def agenerate(
        self, prompts: Sequence[Prompt], decoding: Decoding, on_result: Callable[[int, Generation], None] | None = None
    ) -> list[Generation]:
        """`on_result(i, generation)` is called as each request finishes, in completion order."""
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        gate = asyncio.Semaphore(self.concurrency)
        limits = httpx.Limits(max_connections=self.concurrency)

        async def one(client: httpx.AsyncClient, i: int, prompt: Prompt) -> Generation:
            gen = await self._one(client, gate, prompt, decoding)
            if on_result is not None:
                on_result(i, gen)
            return gen

        async with httpx.AsyncClient(timeout=self.timeout_s, headers=headers, limits=limits) as client:
            return list(await asyncio.gather(*(one(client, i, p) for i, p in enumerate(prompts))))

    def generate(
        self, prompts: Sequence[Prompt], decoding: Decoding, on_result: Callable[[int, Generation], None] | None = None
    ) -> list[Generation]:
        return asyncio.run(self.agenerate(prompts, decoding, on_result))
