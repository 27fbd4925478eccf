"""Find local LLM servers by asking the usual ports on 127.0.0.1 what they speak.

Only the loopback address is ever probed. Each port is identified by protocol: `GET
/api/version` answers on Ollama only; `GET /v1/models` answers on every OpenAI-compatible
server, and the `owned_by` it writes on each model tells which one it is (llama.cpp, vLLM, LM
Studio; LocalAI lists bare entries); failing that, the port is the best guess. Ports are probed
at once, with a short timeout, so a scan costs about one round trip.

`DEFAULT_PORTS` is read at call time: tests (and users with unusual ports) can point discovery
elsewhere by passing `ports=` or by changing it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

from ._redaction import redact
from .errors import LLMMagicError, TimedOut, one_line

__all__ = [
    "DEFAULT_PORTS",
    "LOOPBACK",
    "PROBE_TIMEOUT",
    "Found",
    "discover",
    "error_text",
    "gather",
    "loopback_port",
    "probe_port",
    "unprefixed",
]

# Ollama, LM Studio, llama.cpp's server and LocalAI, vLLM: where they listen out of the box.
DEFAULT_PORTS: tuple[int, ...] = (11434, 1234, 8080, 8000)
PROBE_TIMEOUT = 1.0  # seconds per request: a local server answers in milliseconds or not at all
LOOPBACK = "127.0.0.1"
_LOOPBACK_NAMES = {"127.0.0.1", "localhost", "::1", "[::1]"}

# `owned_by` values a server writes about itself on every model it lists -> (preset, product).
# Only values known from the servers' sources: OpenAI's own API says "openai" or "system".
_OWNED_BY = {
    "llamacpp": ("llamacpp", "llama.cpp"),
    "me": ("llamacpp", "llama-cpp-python"),
    "vllm": ("vllm", "vLLM"),
    "organization_owner": ("lmstudio", "LM Studio"),
    "sglang": (None, "SGLang"),
}
_PRODUCT = {"lmstudio": "LM Studio", "llamacpp": "llama.cpp", "localai": "LocalAI", "vllm": "vLLM"}
_PORT_GUESS = {1234: "lmstudio", 8080: "llamacpp", 8000: "vllm"}
# Where each product tells its version, if it does.
_VERSION_PATH = {"vLLM": "/version", "LocalAI": "/version", "llama.cpp": "/props"}

K = TypeVar("K", bound=Hashable)


# --------------------------------------------------------------------------- probing ports


@dataclass(frozen=True)
class Found:
    """Something that answered HTTP on a probed port, and what it appears to be."""

    port: int
    kind: str  # "ollama", "openai" (OpenAI-compatible) or "http" (unidentified)
    preset: str | None  # the built-in provider that speaks to it, when known
    server: str  # product name for people: "Ollama", "vLLM", "OpenAI-compatible", ...
    base_url: str
    rtt_s: float
    version: str | None = None


def _json(response: Any) -> Any:
    try:
        return json.loads(response.content)
    except ValueError:
        return None


def _identify(port: int, body: Any) -> tuple[str | None, str]:
    entries = body.get("data") if isinstance(body, dict) else None
    entries = [e for e in entries or [] if isinstance(e, dict)]
    owners = {e.get("owned_by") for e in entries}
    for owner in owners:
        if owner in _OWNED_BY:
            return _OWNED_BY[owner]
    if entries and owners == {None}:  # LocalAI lists bare {"id", "object"} entries
        return "localai", "LocalAI"
    guess = _PORT_GUESS.get(port)
    if guess is not None:
        return guess, f"OpenAI-compatible (port {port}: {_PRODUCT[guess]}?)"
    return None, "OpenAI-compatible"


def _version_of(client: Any, root: str, server: str) -> str | None:
    path = next((p for name, p in _VERSION_PATH.items() if server.startswith(name)), None)
    if path is None:
        return None
    try:
        body = _json(client.get(root + path))
    except Exception:  # a version is a nicety; its absence is no error
        return None
    if isinstance(body, dict):
        value = body.get("version") or body.get("build_info")
        return str(value) if isinstance(value, (str, int, float)) else None
    return None


def probe_port(port: int, timeout: float = PROBE_TIMEOUT, client: Any = None) -> Found | None:
    """What answers on 127.0.0.1:`port`, or None when nothing speaks HTTP there."""
    import httpx2

    own = client is None
    if own:
        # trust_env=False: a proxy from the environment must never see loopback probes.
        client = httpx2.Client(trust_env=False, timeout=httpx2.Timeout(timeout))
    root = f"http://{LOOPBACK}:{int(port)}"
    try:
        start = time.perf_counter()
        try:
            reply = client.get(root + "/api/version")
        except (httpx2.HTTPError, OSError):
            return None
        rtt = time.perf_counter() - start
        body = _json(reply)
        if reply.status_code == 200 and isinstance(body, dict) and "version" in body:
            return Found(port, "ollama", "ollama", "Ollama", root, rtt, str(body["version"]))
        try:
            reply = client.get(root + "/v1/models")
        except (httpx2.HTTPError, OSError):
            return Found(port, "http", None, "unknown HTTP server", root, rtt)
        body = _json(reply)
        listing = isinstance(body, dict) and "data" in body
        if (reply.status_code == 200 and listing) or reply.status_code in (401, 403):
            preset, server = _identify(port, body)
            version = _version_of(client, root, server)
            return Found(port, "openai", preset, server, root + "/v1", rtt, version)
        return Found(
            port, "http", None, f"unknown HTTP server (HTTP {reply.status_code})", root, rtt
        )
    finally:
        if own:
            client.close()


def discover(ports: Sequence[int] | None = None, timeout: float = PROBE_TIMEOUT) -> list[Found]:
    """Probe `ports` (default DEFAULT_PORTS) on 127.0.0.1 at once; what answered, by port."""
    import httpx2

    wanted = list(dict.fromkeys(DEFAULT_PORTS if ports is None else ports))
    if not wanted:
        return []
    with httpx2.Client(trust_env=False, timeout=httpx2.Timeout(timeout)) as client:
        results = gather(
            {p: (lambda p=p: probe_port(p, timeout, client)) for p in wanted},
            deadline=4 * timeout + 1,
        )
    return [r for r in results.values() if isinstance(r, Found)]


# --------------------------------------------------------------------------- helpers


def gather(calls: dict[K, Callable[[], Any]], deadline: float) -> dict[K, Any]:
    """Run every call at once; each key maps to its result or the exception it raised.

    A call still running at the deadline maps to TimedOut; its thread is left to finish alone.
    """
    if not calls:
        return {}
    pool = ThreadPoolExecutor(max_workers=min(16, len(calls)), thread_name_prefix="llm-discover")
    futures = {pool.submit(fn): key for key, fn in calls.items()}
    try:
        done, _ = wait(futures, timeout=deadline)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    results: dict[K, Any] = {}
    for future, key in futures.items():
        if future not in done:
            results[key] = TimedOut(f"no answer within {deadline:g} s")
        elif future.exception() is not None:
            results[key] = future.exception()
        else:
            results[key] = future.result()
    return results


def error_text(exc: BaseException) -> str:
    """One line for a failure, a key never in it (plugins may raise anything)."""
    if isinstance(exc, LLMMagicError):
        return exc.message
    return one_line(redact(f"{type(exc).__name__}: {exc}"))


def unprefixed(text: str, name: str) -> str:
    """A provider's message without the "name: " it starts with, for a row that names it."""
    return text[len(name) + 2 :] if text.startswith(f"{name}: ") else text


def loopback_port(url: str | None) -> int | None:
    """The port of a 127.0.0.1/localhost URL; None for any other host."""
    if not url:
        return None
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if (parts.hostname or "") not in _LOOPBACK_NAMES:
        return None
    try:
        return parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return None
