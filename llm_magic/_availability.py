"""Which targets can answer right now, found without sending a prompt.

    available(["local:smollm2", "ollama:llama3.2", "openai:gpt-4o-mini"])
    -> ["local:smollm2"]                  # no OPENAI_API_KEY, no Ollama running

The checks are cheap and stay on this machine unless a key says otherwise:
- the embedded model (`local:`) is available when llama-cpp-python and the GGUF are installed;
- a provider that needs a key (OpenAI, Mistral, Groq, ...) is available when its key variable is
  set; nothing is sent to it, so no cloud API is contacted to find out;
- a keyless server (Ollama, llama.cpp, vLLM, LM Studio, LocalAI, a keyless endpoint of the config
  file) is asked for its model list, and only when its address is on this machine (loopback).
  For a provider that answers only the models it lists (Ollama) the model must be listed. A
  keyless server elsewhere is taken as configured.
- the asking is the provider's own `list_models()` (the one way llm_magic asks a server
  anything), so a server on this machine gets the key, headers and path a run would send.

Notebooks use it to run the cells that need a key or a server only when it is there.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from . import providers
from ._discovery import gather
from ._redaction import redact_url
from ._targets import Target, parse_target
from .errors import (
    AuthFailed,
    NotFound,
    ProviderError,
    StatusError,
    TimedOut,
    TransportError,
)

if TYPE_CHECKING:
    from .providers.base import ModelInfo, ProviderFacts

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


def available(
    targets: Iterable[str], *, timeout: float = DEFAULT_TIMEOUT, session: Any = None
) -> list[str]:
    """The target words of `targets` that can answer now, in the order given.

    A fallback chain `a|b` counts as available when any of its links is. Aliases (the config
    file's and `session`'s, by default the kernel's) are resolved as in a `%%llm` cell; a
    malformed target or an unknown provider raises UsageProblem.
    """
    return [a.target for a in check_targets(targets, timeout=timeout, session=session) if a.ok]


def check_targets(
    targets: Iterable[str], *, timeout: float = DEFAULT_TIMEOUT, session: Any = None
) -> list[Availability]:
    """One Availability per target word, with the reason, e.g. "no API key: set OPENAI_API_KEY".

    Listings run in parallel, all within `timeout` seconds, so a list of targets costs about one
    timeout at worst.
    """
    words = list(targets)
    aliases = (session if session is not None else _kernel_session()).all_aliases()
    known = providers.known_providers()

    chains = [parse_target(word, aliases, known).chain for word in words]
    links = list(dict.fromkeys(t for chain in chains for t in chain))
    plans = {t: _plan(t) for t in links}
    listings = _listings({p.provider for p in plans.values() if isinstance(p, _Ask)}, timeout)
    verdicts = {t: _verdict(t, plan, listings, timeout) for t, plan in plans.items()}
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


def _kernel_session() -> Any:
    # The kernel's session (its `%llm alias` aliases). Imported on use: availability sits
    # below the modules that run things.
    from ._session import session

    return session


@dataclass(frozen=True)
class _Ask:
    """The verdict needs the provider's model list: its server is on this machine."""

    provider: str
    base: str
    facts: type[ProviderFacts]
    key: str | None
    key_env: str | None


def _plan(target: Target) -> tuple[bool, str] | _Ask:
    """The verdict, when it needs no request; else what to ask."""
    spec = providers.spec_for(target.provider)
    if spec is None:
        # Registered at run time or by a plugin: we know nothing about how it connects.
        return True, "plugin provider, not checked"
    facts = providers.kind_facts(spec.kind)
    if facts.in_process:
        return facts.check_in_process(target.model)
    endpoint = providers.resolve_endpoint(spec)
    if spec.key_required and not endpoint.api_key:
        return False, f"no API key: set {spec.key_env}"
    base = providers.base_url_of(spec, endpoint) or ""
    if not _is_loopback(base):
        if spec.key_required:
            return True, f"{spec.key_env} is set (not contacted)"
        return True, f"configured at {redact_url(base)} (not on this machine, not probed)"
    return _Ask(target.provider, base, facts, endpoint.api_key, spec.key_env)


def _listings(names: set[str], timeout: float) -> dict[str, Any]:
    """Each provider's model list (or what it raised), all asked at once within `timeout`."""
    # Built before the clock starts: building one may import its SDK.
    built = {name: providers.get_provider(name) for name in sorted(names)}
    return gather({name: p.list_models for name, p in built.items()}, deadline=timeout)


def _verdict(
    target: Target, plan: tuple[bool, str] | _Ask, listings: dict[str, Any], timeout: float
) -> tuple[bool, str]:
    if not isinstance(plan, _Ask):
        return plan
    listed, facts, where = listings[plan.provider], plan.facts, redact_url(plan.base)
    if isinstance(listed, TimedOut):
        # Something took the connection, so a server runs there: starting one is not the advice.
        return False, f"the server at {where} did not answer within {timeout:g} s"
    if isinstance(listed, TransportError):
        if facts.start_hint:
            return False, f"no {facts.server_label} at {where} ({facts.start_hint})"
        return False, f"nothing answers at {where}"
    if isinstance(listed, AuthFailed):
        return False, _refusal(where, listed.status, plan.key, plan.key_env)
    if isinstance(listed, NotFound):  # some web server, but not the API this provider speaks
        path = facts.listing_path or "its model list"
        hint = facts.base_url_hint
        return False, f"{where} has no {path} (HTTP 404): is the base URL right?{hint}"
    if isinstance(listed, StatusError):
        return False, f"the server at {where} answered HTTP {listed.status}"
    if isinstance(listed, ProviderError):
        return False, listed.message.removeprefix(f"{plan.provider}: ")
    if isinstance(listed, BaseException):  # a plugin's class may raise anything
        return False, f"the server at {where} failed: {type(listed).__name__}"
    if facts.listed_models_only:
        return _listed(target, facts, where, listed)
    return True, f"server answers at {where}"


def _listed(
    target: Target, facts: type[ProviderFacts], where: str, listed: list[ModelInfo]
) -> tuple[bool, str]:
    """A server that answers only the models it lists: is this one among them?"""
    short = facts.short_model_name
    if short(target.model) in {short(m.model) for m in listed}:
        return True, f"{facts.server_label} at {where} has {target.model}"
    if callable(getattr(facts, "pull", None)):
        pull = f"%llm pull {target.provider}:{target.model}"
        return False, f"{facts.server_label} runs, but {target.model} is not pulled: {pull}"
    return False, f"{facts.server_label} at {where} does not list {target.model}"


def _refusal(where: str, status: int, key: str | None, key_env: str | None) -> str:
    """Why a 401/403 came back, in one line that names the key's variable, never the key."""
    if key:
        return f"the server at {where} refused the key in {key_env} (HTTP {status})"
    hint = f": set {key_env}" if key_env else ""
    return f"the server at {where} refuses us (HTTP {status}){hint}"


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
