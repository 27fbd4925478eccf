"""Which targets the panel offers: the configured providers and the models they list.

Each provider is asked on its own daemon thread, so opening the panel never waits for a server
and a slow one never holds up the others. HTTP providers get a health check first (a 2 s
timeout), so a server that is down costs one short probe, not a full listing timeout; whoever
has not answered by `deadline` is reported as not answering and left out.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from . import providers
from ._redaction import redact
from .errors import LLMMagicError, one_line

__all__ = ["ALWAYS_OFFERED", "ModelDiscovery", "providers_to_ask"]

ALWAYS_OFFERED = "local:smollm2"  # the embedded model needs no server and no key


def providers_to_ask() -> list[str]:
    """The providers worth listing: the same ones `%llm status` checks (never a cloud API
    without a key); a broken config file is reported when a run needs it, not while browsing."""
    from ._backends import configured_backends

    try:
        return [backend.name for backend in configured_backends()]
    except LLMMagicError:
        return ["local", "ollama"]


def _list(name: str) -> list[str]:
    provider = providers.get_provider(name)
    if provider.base_url is not None:
        health = provider.health()
        if not health.reachable or health.error:
            raise LLMMagicError(health.error or "not reachable")
    # Offer the name people type (Ollama lists "llama3.2:latest" for "llama3.2"), or picking
    # the listed one beside a typed one would ask the same model twice.
    short = providers.facts(name).short_model_name
    return [f"{name}:{short(m.model)}" for m in provider.list_models()]


class ModelDiscovery:
    """Lists models in the background; `on_change()` is called (from a worker thread) each
    time a provider answers, and once more when everything answered or the deadline passed."""

    def __init__(
        self,
        on_change: Callable[[], None],
        names: list[str] | None = None,
        deadline: float = 8.0,
    ) -> None:
        self._on_change = on_change
        self._names = names
        self.deadline = deadline
        self._lock = threading.Lock()
        self.found: dict[str, list[str]] = {}
        self.problems: dict[str, str] = {}
        self.pending: list[str] = []
        self.finished = threading.Event()
        self._generation = 0  # a refresh makes answers of an older round stale

    def start(self) -> None:
        names = self._names if self._names is not None else providers_to_ask()
        with self._lock:
            self._generation += 1
            generation = self._generation
            self.found, self.problems, self.pending = {}, {}, list(names)
            self.finished.clear()
        workers = [
            threading.Thread(
                target=self._ask, args=(n, generation), daemon=True, name=f"llm-magic-models-{n}"
            )
            for n in names
        ]
        for worker in workers:
            worker.start()
        threading.Thread(
            target=self._watch, args=(workers, generation), daemon=True, name="llm-magic-models"
        ).start()

    def _ask(self, name: str, generation: int) -> None:
        try:
            found, problem = _list(name), None
        except LLMMagicError as exc:
            message = exc.message
            # provider errors often start with the provider's name, which the line already shows
            found, problem = [], one_line(message.removeprefix(f"{name}: "), 120)
        except Exception as exc:  # a plugin's bug must not break the panel
            found, problem = [], one_line(f"{type(exc).__name__}: {redact(str(exc))}", 120)
        with self._lock:
            if generation != self._generation:
                return
            if problem is None:
                self.found[name] = found
            else:
                self.problems[name] = problem
            if name in self.pending:
                self.pending.remove(name)
        self._on_change()

    def _watch(self, workers: list[threading.Thread], generation: int) -> None:
        end = time.monotonic() + self.deadline
        for worker in workers:
            worker.join(max(0.0, end - time.monotonic()))
        with self._lock:
            if generation != self._generation:
                return
            for name in self.pending:
                self.problems[name] = f"no answer within {self.deadline:g} s"
            self.pending = []
            self.finished.set()
        self._on_change()

    def targets(self) -> list[str]:
        """Every target found, the embedded model first."""
        with self._lock:
            found = [t for name in sorted(self.found) for t in self.found[name]]
        return [ALWAYS_OFFERED, *(t for t in found if t != ALWAYS_OFFERED)]

    def summary(self) -> str:
        """One line: "models: local 1 · openai 5 · ollama: not reachable · asking mistral…"."""
        with self._lock:
            parts = [f"{n} {len(m)}" for n, m in sorted(self.found.items())]
            down = sorted(n for n, why in self.problems.items() if "cannot connect" in why)
            parts += [f"{n}: {why}" for n, why in sorted(self.problems.items()) if n not in down]
            if down:  # local servers that are simply not running: one short note
                parts.append("not running: " + ", ".join(down))
            if self.pending:
                parts.append("asking " + ", ".join(self.pending) + "…")
        return "models: " + (" · ".join(parts) if parts else "none asked")
