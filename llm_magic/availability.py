"""Which targets can answer right now, found without sending a prompt.

    available(["local:smollm2", "ollama:llama3.2", "openai:gpt-4o-mini"])
    -> ["local:smollm2"]                  # no OPENAI_API_KEY, no Ollama running

The checks are cheap and stay on this machine unless a key says otherwise:
- the embedded model (`local:`) is available when llama-cpp-python and the GGUF are installed;
- a provider that needs a key (OpenAI, Mistral, Groq, ...) is available when its key variable is
  set; nothing is sent to it, so no cloud API is contacted to find out;
- a keyless server (Ollama, llama.cpp, vLLM, LM Studio, LocalAI, a keyless endpoint of the config
  file) is probed with one short GET, and only when its address is on this machine (loopback).
  For Ollama the model must also be pulled. A keyless server elsewhere is taken as configured.
- a server on this machine is probed with the provider's key when one is set (as a Bearer
  token, like the provider sends it), so a local server that wants a key is not reported as
  refusing us for want of one.

Notebooks use it to run the cells that need a key or a server only when it is there.
"""

from __future__ import annotations

import http.client
import importlib.util
import ipaddress
import json
import threading
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urlsplit

from .errors import mask_url
from .targets import Target, parse_target

__all__ = ["Availability", "available", "check_targets"]

# A server on this machine that needs longer than this to list its models is not worth waiting
# for in a notebook that only wants to know whether to run a cell.
DEFAULT_TIMEOUT = 0.5


@dataclass(frozen=True)
class Availability:
    """Whether one target word can answer, and why (or why not) in one line."""

    target: str
    ok: bool
    reason: str

    def __str__(self) -> str:
        return f"{'yes' if self.ok else 'no '}  {self.target}: {self.reason}"


def available(targets: Iterable[str], *, timeout: float = DEFAULT_TIMEOUT) -> list[str]:
    """The target words of `targets` that can answer now, in the order given.

    A fallback chain `a|b` counts as available when any of its links is. Aliases are resolved
    like in a `%%llm` cell; a malformed target or an unknown provider raises UsageProblem.
    """
    return [a.target for a in check_targets(targets, timeout=timeout) if a.ok]


def check_targets(
    targets: Iterable[str], *, timeout: float = DEFAULT_TIMEOUT
) -> list[Availability]:
    """One Availability per target word, with the reason, e.g. "no API key: set OPENAI_API_KEY".

    Probes run in parallel, each at most `timeout` seconds, so a list of targets costs about one
    timeout at worst.
    """
    from . import providers
    from .api import session

    words = list(targets)
    aliases = session.all_aliases()
    known = providers.known_providers()

    chains = [parse_target(word, aliases, known).chain for word in words]
    links = list(dict.fromkeys(t for chain in chains for t in chain))
    probes = _Probes(timeout)
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(links)))) as pool:
        verdicts = dict(zip(links, pool.map(lambda t: _check(t, probes), links), strict=True))
    result = []
    for word, chain in zip(words, chains, strict=True):
        parts = [verdicts[t] for t in chain]
        ok = any(p[0] for p in parts)
        if len(chain) == 1:
            reason = parts[0][1]
        else:
            reason = "; ".join(f"{t}: {p[1]}" for t, p in zip(chain, parts, strict=True))
        result.append(Availability(word, ok, reason))
    return result


def _check(target: Target, probes: _Probes) -> tuple[bool, str]:
    from . import providers

    spec = providers.spec_for(target.provider)
    if spec is None:
        # Registered at run time or by a plugin: we know nothing about how it connects.
        return True, "plugin provider, not checked"
    if spec.kind == "local":
        return _check_local(target)
    endpoint = providers.resolve_endpoint(spec)
    if spec.key_required and not endpoint.api_key:
        return False, f"no API key: set {spec.key_env}"
    base = endpoint.base_url or ""
    if spec.kind == "ollama":
        from .providers.ollama import parse_ollama_host

        base = parse_ollama_host(base)
    if not _is_loopback(base):
        if spec.key_required:
            return True, f"{spec.key_env} is set (not contacted)"
        return True, f"configured at {mask_url(base)} (not on this machine, not probed)"
    if spec.kind == "ollama":
        return _check_ollama(base, target.model, probes, endpoint.api_key, spec.key_env)
    path = "/models"
    if spec.kind == "mistral":
        # Mistral's base URL has no /v1: the provider lists at {base}/v1/models (and drops a
        # /v1 given in the base URL). Probe where it will really ask.
        base, path = base.rstrip("/").removesuffix("/v1"), "/v1/models"
    reply = probes.get(base, path, endpoint.api_key)
    if reply.timed_out:
        return False, _silent(base, probes.timeout)
    if reply.status is None:
        return False, f"nothing answers at {mask_url(base)}"
    if reply.status == 401 or reply.status == 403:
        return False, _refusal(base, reply.status, endpoint.api_key, spec.key_env)
    if reply.status == 404:  # some web server, but not the API this provider speaks
        hint = "" if spec.kind == "mistral" else " (an OpenAI-compatible one usually ends in /v1)"
        return False, f"{mask_url(base)} has no {path} (HTTP 404): is the base URL right?{hint}"
    return True, f"server answers at {mask_url(base)}"


def _silent(base: str, timeout: float) -> str:
    # Something took the connection, so a server runs there: starting one is not the advice.
    return f"the server at {mask_url(base)} did not answer within {timeout:g} s"


def _refusal(base: str, status: int, key: str | None, key_env: str | None) -> str:
    """Why a 401/403 came back, in one line that names the key's variable, never the key."""
    where = f"the server at {mask_url(base)}"
    if key:
        return f"{where} refused the key in {key_env} (HTTP {status})"
    hint = f": set {key_env}" if key_env else ""
    return f"{where} refuses us (HTTP {status}){hint}"


def _check_local(target: Target) -> tuple[bool, str]:
    from .providers.local import INSTALL_HINT, ModelNotFound, resolve_model

    if importlib.util.find_spec("llama_cpp") is None:
        return False, f"llama-cpp-python is not installed: {INSTALL_HINT}"
    try:
        path = resolve_model(target.model, "")  # no "local: " prefix in the reason
    except ModelNotFound as exc:
        return False, exc.message
    return True, f"embedded model, {path.name}"


def _check_ollama(
    base: str, model: str, probes: _Probes, key: str | None, key_env: str | None
) -> tuple[bool, str]:
    reply = probes.get(base, "/api/tags", key)
    status, body = reply.status, reply.body
    if reply.timed_out:
        return False, _silent(base, probes.timeout)
    if status is None:
        return False, f"no Ollama at {mask_url(base)} (start it with `ollama serve`)"
    if status == 401 or status == 403:  # an Ollama behind a proxy that wants a key
        return False, _refusal(base, status, key, key_env)
    if status != 200:
        return False, f"Ollama at {mask_url(base)} answered HTTP {status}"
    names = _ollama_names(body)
    if _tagged(model) not in names:
        return False, f"Ollama runs, but {model} is not pulled: %llm pull ollama:{model}"
    return True, f"Ollama at {mask_url(base)} has {model}"


def _tagged(name: str) -> str:
    # Ollama's names: no tag means `latest` ("llama3.2" is "llama3.2:latest").
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def _ollama_names(body: bytes) -> set[str]:
    try:
        entries = json.loads(body).get("models") or []
    except (ValueError, AttributeError):
        return set()
    names = set()
    for entry in entries:
        if isinstance(entry, dict):
            for key in ("name", "model"):
                if isinstance(entry.get(key), str):
                    names.add(_tagged(entry[key]))
    return names


@dataclass(frozen=True)
class _Reply:
    """What one probe got: an HTTP status and body, or nothing (status None)."""

    status: int | None
    body: bytes = b""
    timed_out: bool = False  # nothing within the timeout (connected, usually): not refused


class _Probes:
    """Each (server, path, key) is asked once per check, however many targets it serves."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._lock = threading.Lock()
        self._asked: dict[tuple[str, str, str | None], Future[_Reply]] = {}

    def get(self, base: str, path: str, key: str | None = None) -> _Reply:
        with self._lock:
            future = self._asked.get((base, path, key))
            mine = future is None
            if future is None:
                future = self._asked[(base, path, key)] = Future()
        if mine:
            future.set_result(_get(base, path, self.timeout, key))
        return future.result()


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _get(base: str, path: str, timeout: float, key: str | None = None) -> _Reply:
    """GET base+path on a loopback server: its status and body, or status None when nothing
    answers. `key`, when given, goes as a Bearer token, as the providers send it.

    http.client rather than an HTTP library: it reads no proxy variables, so a probe of
    127.0.0.1 cannot be sent anywhere else, and it is in the standard library.
    """
    if not _is_loopback(base):  # the caller checks too; a key must never leave this machine
        return _Reply(None)
    parts = urlsplit(base)
    host = "127.0.0.1" if parts.hostname == "localhost" else parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = cls(host, port, timeout=timeout)
    headers = {"Accept": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    try:
        conn.request("GET", parts.path.rstrip("/") + path, headers=headers)
        response = conn.getresponse()
        # A model list is small; the cap keeps a confused server from holding us.
        return _Reply(response.status, response.read(1 << 20))
    except TimeoutError:  # socket.timeout: connected (or connecting) and then silence
        return _Reply(None, timed_out=True)
    except (OSError, http.client.HTTPException):
        return _Reply(None)
    finally:
        conn.close()
