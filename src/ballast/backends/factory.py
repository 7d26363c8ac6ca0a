"""The one place a generator backend is built from configuration: llama.cpp in process, or an OpenAI-compatible
server when one is configured."""

from __future__ import annotations

from ballast.backends.base import Generator
from ballast.recipe import ServerConfig


def backend_for(
    server: ServerConfig | None, model: str, threads: int | None = None, parallel: int | None = None
) -> Generator:
    """llama.cpp in process running `model` (an embedded model name or a GGUF path) on `threads` threads,
    `parallel` prompts at once (None: the backend's default), or the server given."""
    if server is None:
        from ballast.backends.llamacpp import LlamaCppBackend

        return LlamaCppBackend(model, n_threads=threads, **({} if parallel is None else {"parallel": parallel}))
    from ballast.backends.openai_http import OpenAIBackend

    return OpenAIBackend(
        server.base_url,
        server.model,
        api_key_env=server.api_key_env,
        concurrency=server.concurrency,
        timeout_s=server.timeout_s,
        max_retries=server.max_retries,
        model_sha256=server.model_sha256,
        requests_per_second=server.requests_per_second,
    )
