from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "harbor-support"


@pytest.fixture(scope="session")
def policy():
    from ballast.policy.schema import load_policy

    return load_policy(EXAMPLE / "policy.yaml")


@pytest.fixture(scope="session")
def seeds(policy):
    from ballast.seeds import load_seeds

    return load_seeds(EXAMPLE / "seeds.jsonl", policy)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory):
    """A real llama.cpp OpenAI-compatible server process on 127.0.0.1 serving the weak model."""
    import subprocess
    import sys
    import time

    import httpx

    from ballast.backends.models import resolve

    path, ref = resolve("smollm2-135m-instruct")
    port = _free_port()
    # The server logs a lot; a file, not a pipe, so a full pipe buffer never stalls it.
    log = open(tmp_path_factory.mktemp("llama_server") / "server.log", "w+")
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
            "2",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 120
    try:
        while True:
            if proc.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"llama.cpp server exited with {proc.returncode}: {log.read()[-2000:]}")
            try:
                if httpx.get(f"{base}/models", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("llama.cpp server did not answer within 120 s")
            time.sleep(0.3)
        yield {"base_url": base, "model": "smollm2", "sha256": ref.sha256, "port": port}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="session")
def weak():
    from ballast.backends.llamacpp import LlamaCppBackend

    return LlamaCppBackend("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def strong_base():
    from ballast.backends.llamacpp import LlamaCppBackend

    return LlamaCppBackend("gemma3-270m", n_ctx=1024)
