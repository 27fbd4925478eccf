"""The backends llm_magic can talk to, how they are, what they hold: `%llm status` and `models`.

Configured backends: the built-in local ones (ollama, the embedded model, and the key-less
presets lmstudio, llamacpp, localai, vllm), every provider with a key, an explicit base URL
variable or a config-file table, and providers registered at run time or by entry point. A
cloud API without a key is never contacted. To these, discovery (discovery.py) adds whatever
answers on the usual local ports. Health checks, probes and listings all run at once.

Nothing here prints: callers get DataFrames and one-line notes about what was skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from . import providers
from ._config import FileConfig, load_file_config
from ._discovery import (
    LOOPBACK,
    PROBE_TIMEOUT,
    Found,
    discover,
    error_text,
    gather,
    loopback_port,
    unprefixed,
)
from ._redaction import redact_url
from .errors import TimedOut, TransportError, UnknownProvider
from .providers.base import Health, ModelInfo, Provider, ProviderFacts

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "MODEL_COLUMNS",
    "Backend",
    "configured_backends",
    "models_table",
    "notes_for",
    "plain_timeouts",
    "status_table",
]

STATUS_DEADLINE = 6.0  # whole-table limit for `status` (a provider's health waits up to 2 s)
MODELS_DEADLINE = 40.0  # listings may page through a cloud API


@dataclass(frozen=True)
class Backend:
    name: str  # the provider name, or `preset@port` for a server found only by discovery
    kind: str  # ollama, openai, mistral, local, or plugin
    base_url: str | None
    source: str  # "built-in default", "environment VAR", "config file PATH", "discovered ..."
    default_local: bool = False  # a key-less local preset nobody set up: silent when down
    found: Found | None = None  # what a port probe saw at this backend's address
    adhoc: bool = False  # found by discovery only: no registry provider points there


_UNNAMED = {"ollama": "ollama", "openai": "openai-compatible"}  # labels when no preset fits


def _where(source: str) -> str:
    return "built-in default" if source == "built-in" else source


def configured_backends(cfg: FileConfig | None = None) -> list[Backend]:
    """Every backend worth contacting, in provider-name order (see the module docstring)."""
    cfg = cfg if cfg is not None else load_file_config()
    backends = []
    for name in providers.known_providers(cfg):
        spec = providers.spec_for(name, cfg)
        if spec is None:  # registered at run time or by entry point
            backends.append(Backend(name, "plugin", None, "registered provider"))
            continue
        endpoint = providers.resolve_endpoint(spec)
        explicit = endpoint.base_url_source != "built-in" or spec.source != "built-in"
        if spec.key_required and not (endpoint.api_key or explicit):
            continue  # a cloud API without a key: never contacted
        url = providers.base_url_of(spec, endpoint)
        in_process = providers.kind_facts(spec.kind).in_process
        default_local = (
            not explicit
            and not endpoint.api_key
            and not in_process
            and loopback_port(url) is not None
        )
        source = "in-process" if in_process else _where(endpoint.base_url_source)
        backends.append(Backend(name, spec.kind, url, source, default_local))
    return backends


def _with_discovered(backends: list[Backend], found: list[Found]) -> list[Backend]:
    """Attach what discovery saw to the backend at the same port; add the rest as backends."""
    by_port = {f.port: f for f in found}
    out = []
    for b in backends:
        seen = by_port.get(loopback_port(b.base_url) or -1)
        if seen is not None and seen.kind != "http":
            # Presets sharing a default port (llamacpp and localai on 8080): once the server says
            # which it is, the other preset is not there.
            if (
                b.default_local
                and seen.preset
                and seen.preset != b.name
                and any(
                    o.default_local and o.name == seen.preset and o.base_url == b.base_url
                    for o in backends
                )
            ):
                continue
            b = replace(b, found=seen)
        out.append(b)
    used = {loopback_port(b.base_url) for b in backends}
    for f in found:
        if f.port not in used:
            label = f"{f.preset or _UNNAMED.get(f.kind, 'http')}@{f.port}"
            spec = providers.BUILTIN.get(f.preset or "")
            hint = f"; set {spec.url_env}={f.base_url} to use it" if spec else ""
            out.append(
                Backend(
                    label,
                    f.kind,
                    f.base_url,
                    f"discovered on port {f.port}{hint}",
                    found=f,
                    adhoc=True,
                )
            )
    return out


def _provider(b: Backend, cfg: FileConfig) -> Provider:
    """The provider object for a backend: the registry's, or a fresh one for a discovered one."""
    if not b.adhoc:
        return providers.get_provider(b.name, cfg)
    assert b.base_url is not None  # discovery always found it at an address
    return providers.adhoc_provider(b.kind, b.name, b.base_url)


def _facts(b: Backend, cfg: FileConfig) -> type[ProviderFacts]:
    if b.kind != "plugin":
        return providers.kind_facts(b.kind)
    try:
        return providers.facts(b.name, cfg)
    except Exception:  # a plugin that cannot be built: its health or listing says why
        return ProviderFacts


def _close_discovered(provider: Provider, b: Backend) -> None:
    if b.adhoc and hasattr(provider, "close"):
        provider.close()  # built for this call only; registry providers stay open


# --------------------------------------------------------------------------- status


def _health(b: Backend, cfg: FileConfig) -> Health | list[Any]:
    """The backend's health; for a pool of servers, each server's state (health, requests in
    flight, bench)."""
    provider = _provider(b, cfg)
    states = getattr(provider, "server_states", None)
    return states() if callable(states) else provider.health()


def _probe_health(b: Backend) -> Health:
    """A server found only by discovery: its probe already said how it is."""
    f = b.found
    assert f is not None
    error = None if f.kind != "http" else "answers HTTP, but no LLM API that llm_magic speaks"
    return Health(b.name, b.base_url, True, f.rtt_s, f.version, error)


def status_table(
    ports: Sequence[int] | None = None,
    timeout: float = PROBE_TIMEOUT,
    cfg: FileConfig | None = None,
) -> pd.DataFrame:
    """One row per configured or discovered backend: is it up, how fast, which version."""
    import pandas as pd

    from .providers import proxy_shown

    cfg = cfg if cfg is not None else load_file_config()
    backends = configured_backends(cfg)
    # Discovery and every health check run at once: the table costs one timeout at most.
    calls: dict[Any, Callable[[], Any]] = {None: lambda: discover(ports, timeout)}
    calls.update({b.name: (lambda b=b: _health(b, cfg)) for b in backends})
    results = gather(calls, STATUS_DEADLINE)
    found = results[None] if isinstance(results[None], list) else []
    rows = []
    for b in _with_discovered(backends, found):
        result = _probe_health(b) if b.adhoc else results[b.name]
        if isinstance(result, BaseException):
            result = Health(b.name, b.base_url, False, error=error_text(result))
        # What the probe recognised beats what the provider kind assumes.
        known = b.found is not None and (b.found.preset is not None or b.adhoc)
        server = b.found.server if known else _facts(b, cfg).server_label
        # A pool of servers behind one provider: a row per server.
        for state in result if isinstance(result, list) else [result]:
            health = getattr(state, "health", state)
            url = health.base_url or b.base_url
            benched = getattr(state, "benched_until", None)
            rows.append(
                {
                    "provider": b.name,
                    "server": server,
                    "base_url": redact_url(url) if url else url,
                    "proxy": proxy_shown(b.name, url),
                    "reachable": health.reachable,
                    "rtt_ms": None if health.rtt_s is None else round(health.rtt_s * 1000, 1),
                    "version": health.version or (b.found.version if b.found else None),
                    "source": b.source,
                    "error": None if health.error is None else unprefixed(health.error, b.name),
                    "in_flight": getattr(state, "in_flight", None),
                    "benched_until": benched,
                }
            )
    frame = pd.DataFrame(rows, columns=list(_STATUS_COLUMNS))
    frame["benched_until"] = pd.to_datetime(frame["benched_until"], utc=True)
    return frame.astype(_STATUS_COLUMNS)


_STATUS_COLUMNS = {
    "provider": "string",
    "server": "string",
    "base_url": "string",
    "proxy": "string",  # through which proxy requests go (password hidden); empty: direct
    "reachable": "boolean",
    "rtt_ms": "float64",
    "version": "string",
    "source": "string",
    "error": "string",
    # For each server of a pool (several base URLs): its requests in flight now, and until
    # when it is left out after refusing connections or timing out (NaT: it is not).
    "in_flight": "Int64",
    "benched_until": "datetime64[ns, UTC]",
}


# --------------------------------------------------------------------------- models


MODEL_COLUMNS = {
    "provider": "string",
    "model": "string",
    "size_gb": "float64",
    "modified": "datetime64[ns, UTC]",
    "context_length": "Int64",
    "details": "object",
}


@contextmanager
def plain_timeouts(facts: type[ProviderFacts], name: str) -> Iterator[None]:
    """A listing or show that timed out, said as what it means: the server took the connection
    (or not) and gave no answer in time. A provider that declares no admin timeout (a plugin)
    says its timeouts its own way."""
    try:
        yield
    except TimedOut:
        if facts.admin_timeout_s is None:
            raise
        # Its connect limit is no longer than its read limit: either way, this long.
        limit = facts.admin_timeout_s
        raise TimedOut(f"did not answer within {limit:g} s", provider=name) from None


def _list(b: Backend, cfg: FileConfig) -> list[ModelInfo]:
    provider = _provider(b, cfg)
    # The detailed listing when the provider has one (Ollama: context lengths, a request each).
    listing = getattr(provider, "list_models_in_detail", None) or provider.list_models
    try:
        with plain_timeouts(_facts(b, cfg), b.name):
            return listing()
    finally:
        _close_discovered(provider, b)


def notes_for(failures: list[tuple[Backend, BaseException]], quiet_defaults: bool) -> list[str]:
    """One line per failed backend; the unset-up local presets that are down share one line.
    A server that took the connection and said nothing is running: it gets its own line."""
    notes, down = [], []
    for b, exc in failures:
        down_for_sure = isinstance(exc, TransportError) and not isinstance(exc, TimedOut)
        if quiet_defaults and b.default_local and down_for_sure:
            down.append(b.name)
        else:
            where = f" ({redact_url(b.base_url)})" if b.base_url else ""
            notes.append(f"skipped {b.name}{where}: {unprefixed(error_text(exc), b.name)}")
    if down:
        notes.append(f"not running (default ports on {LOOPBACK}): {', '.join(down)}")
    return notes


def models_table(
    provider: str | None = None,
    ports: Sequence[int] | None = None,
    timeout: float = PROBE_TIMEOUT,
    cfg: FileConfig | None = None,
) -> tuple[pd.DataFrame, list[str]]:
    """Models of every reachable backend (or of `provider` only), and a note per skipped one."""
    import pandas as pd

    cfg = cfg if cfg is not None else load_file_config()
    if provider is not None:
        known = providers.known_providers(cfg)
        if provider not in known:
            raise UnknownProvider(
                f"unknown provider {provider!r}; known providers: {', '.join(known)}"
            )
        match = [b for b in configured_backends(cfg) if b.name == provider]
        spec = providers.spec_for(provider, cfg)
        # Not configured (a cloud API without a key): ask anyway, the provider says what's missing.
        backend = (
            match[0] if match else Backend(provider, spec.kind if spec else "plugin", None, "")
        )
        backends = [replace(backend, default_local=False)]  # asked for by name: never silent
    else:
        found = discover(ports, timeout)
        backends = [
            b for b in _with_discovered(configured_backends(cfg), found) if b.kind != "http"
        ]
    results = gather({b.name: (lambda b=b: _list(b, cfg)) for b in backends}, MODELS_DEADLINE)
    rows, failures = [], []
    for b in backends:
        listed = results[b.name]
        if isinstance(listed, BaseException):
            failures.append((b, listed))
            continue
        for m in listed:
            rows.append(
                {
                    "provider": b.name,
                    "model": m.model,
                    "size_gb": None if m.size_bytes is None else round(m.size_bytes / 1e9, 3),
                    "modified": m.modified,
                    "context_length": m.context_length,
                    "details": dict(m.details),
                }
            )
    frame = pd.DataFrame(rows, columns=list(MODEL_COLUMNS))
    frame["modified"] = pd.to_datetime(
        frame["modified"], utc=True, errors="coerce", format="ISO8601"
    )
    return frame.astype(MODEL_COLUMNS), notes_for(failures, quiet_defaults=provider is None)
