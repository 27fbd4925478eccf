"""Several servers behind one target: one provider per base URL, each request to the least busy.

A provider whose base URL setting names several servers (config `base_urls = [...]`, or a
comma-separated `<NAME>_BASE_URL` / `OLLAMA_HOST`) is built as a `PooledProvider` holding one
provider of its kind per URL. For each request it picks, among the servers not benched, one
with the fewest requests in flight (ties taken in turn) and below the per-server cap; when all
are at the cap it waits for a free slot.

A server that refuses the connection or times out before anything of the answer came back
(`ConnectFailed`, `TimedOut`) is benched — left out for 1 s, then 2, 4, ... up to 30 s while it
keeps failing — and the request goes to another server at once. Nothing of the answer had
arrived, so the row is answered once, by the server that finally answers. A failure after the
first chunk is that row's error, as with one server (a retry would repeat the text). When every
server has failed this request the last error goes to the runner, which retries (with its
backoff) as it would for one server; a benched server is then tried again when all are benched.

Each chunk's first piece names the server (`Chunk.endpoint`), and an error names the server
it came from (`ProviderError.endpoint`), so the row's `endpoint` column says who answered.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Any, TypeVar

from .. import errors
from .._redaction import redact_url
from ..errors import ProviderError
from .base import (
    MODEL_COMMANDS,
    CancelToken,
    Chunk,
    Embeddings,
    Health,
    Message,
    ModelInfo,
    Options,
    Provider,
)

__all__ = ["BENCH_FIRST_S", "BENCH_MAX_S", "PooledProvider", "ServerState"]

BENCH_FIRST_S = 1.0  # the first bench of a failing server; doubled at each failure in a row
BENCH_MAX_S = 30.0
_DOWN = (errors.ConnectFailed, errors.TimedOut)  # the server is not taking requests now
# What a pool does through its first server: listing details, and the `%llm` model commands.
_FIRST_SERVER = frozenset({*MODEL_COMMANDS.values(), "list_models_in_detail"})
T = TypeVar("T")


@dataclass(frozen=True)
class ServerState:
    """One server of a pool as `%llm status` shows it."""

    health: Health
    in_flight: int
    benched_until: datetime | None  # UTC; None when not benched
    failures: int  # connection refusals and timeouts in a row


class _Server:
    def __init__(self, provider: Provider) -> None:
        self.provider = provider
        self.url = provider.base_url or ""
        self.in_flight = 0
        self.failures = 0
        self.benched_until = 0.0  # time.monotonic(); in the past: not benched


class PooledProvider:
    """A Provider over several servers of one kind (see the module docstring)."""

    def __init__(self, name: str, servers: list[Provider], per_server: int) -> None:
        self.name = name
        self.per_server = per_server
        self._servers = [_Server(p) for p in servers]
        # The first server stands for the pool where one URL is asked for (the cache key:
        # any server of the pool gives the same model's answer).
        self.base_url = self._servers[0].url
        self._cond = threading.Condition()
        self._next = 0  # where the turn among equally busy servers starts

    def __repr__(self) -> str:
        urls = ", ".join(redact_url(s.url) for s in self._servers)
        return f"PooledProvider(name={self.name!r}, base_urls=[{urls}])"

    @property
    def base_urls(self) -> list[str]:
        return [s.url for s in self._servers]

    # ----------------------------------------------------------------------- choosing
    def _take(self, tried: set[int], cancel: CancelToken | None) -> _Server | None:
        """A server not tried yet for this request, with a slot taken on it; None when every
        server has been tried. Waits (in short, cancellable steps) while all are at the cap."""
        with self._cond:
            while True:
                now = time.monotonic()
                left = [i for i in range(len(self._servers)) if i not in tried]
                if not left:
                    return None
                healthy = [i for i in left if self._servers[i].benched_until <= now]
                # All benched: try the one whose bench ends first rather than give up.
                chosen = healthy or [min(left, key=lambda i: self._servers[i].benched_until)]
                free = [i for i in chosen if self._servers[i].in_flight < self.per_server]
                if free:
                    n = len(self._servers)
                    i = min(free, key=lambda i: (self._servers[i].in_flight, (i - self._next) % n))
                    self._next = (i + 1) % n
                    self._servers[i].in_flight += 1
                    return self._servers[i]
                if cancel is not None and cancel.cancelled:
                    raise errors.Cancelled("cancelled", provider=self.name)
                self._cond.wait(0.05)  # a slot frees, or a bench ends

    def _release(self, server: _Server, *, down: bool = False, answered: bool = False) -> None:
        with self._cond:
            server.in_flight -= 1
            if down:
                server.failures += 1
                bench = min(BENCH_FIRST_S * 2 ** (server.failures - 1), BENCH_MAX_S)
                server.benched_until = time.monotonic() + bench
            elif answered:
                server.failures, server.benched_until = 0, 0.0
            self._cond.notify_all()

    # ----------------------------------------------------------------------- Provider
    def stream(
        self,
        messages: list[Message],
        model: str,
        options: Options,
        cancel: CancelToken | None = None,
    ) -> Iterator[Chunk]:
        answer = self._served(lambda p: p.stream(messages, model, options, cancel), cancel)
        for n, (url, chunk) in enumerate(answer):
            # The first chunk names the server (an empty answer: a chunk saying only that).
            yield replace(chunk or Chunk(), endpoint=url) if n == 0 else chunk

    def embed(
        self, texts: list[str], model: str, options: Options, cancel: CancelToken | None = None
    ) -> Embeddings:
        """Vectors from the least busy server, chosen and retried as for an answer."""

        def ask(provider: Provider) -> list[Embeddings]:
            embed = getattr(provider, "embed", None)
            if embed is None:  # the planner refuses such a target; say so all the same
                raise ProviderError("it offers no embeddings", provider=self.name)
            return [embed(texts, model, options, cancel)]

        answers = self._served(ask, cancel)
        try:
            return next(answers)[1]
        finally:
            answers.close()

    def _served(
        self, ask: Callable[[Provider], Iterable[T]], cancel: CancelToken | None
    ) -> Iterator[tuple[str, T | None]]:
        """Each item of `ask(provider)`'s answer, with the URL of the server that gave it
        (one `None` item for an answer without any), from the servers as the module docstring
        says: the least busy first, another one at once after a refusal or a timeout."""
        tried: set[int] = set()
        failed: list[str] = []
        last: ProviderError | None = None
        while True:
            server = self._take(tried, cancel)
            if server is None:
                assert last is not None  # a pool has servers, so one was tried and failed
                raise _all_failed(last, failed, len(self._servers))
            tried.add(self._servers.index(server))
            received = down = False
            answer: Iterable[T] | None = None
            try:
                answer = ask(server.provider)
                for item in answer:
                    received = True
                    yield server.url, item
                if not received:
                    received = True
                    yield server.url, None
                return
            except ProviderError as exc:
                cancelled = cancel is not None and cancel.cancelled
                if received or cancelled or not isinstance(exc, _DOWN):
                    exc.endpoint = server.url
                    raise
                down, last, exc.endpoint = True, exc, server.url
                said = exc.message.removeprefix(f"{exc.provider}: ")
                failed.append(f"{redact_url(server.url)}: {said}")
            finally:
                close = getattr(answer, "close", None)
                if callable(close):  # left early (the run stopped): end its request now
                    close()
                self._release(server, down=down, answered=received)

    def list_models(self) -> list[ModelInfo]:
        """The first server's models that answers (the servers of a pool serve the same)."""
        last: ProviderError | None = None
        for server in self._servers:
            try:
                return server.provider.list_models()
            except errors.TransportError as exc:
                last = exc
        assert last is not None
        raise last

    def health(self) -> Health:
        """Reachable when any server is; the quickest one's round trip."""
        states = self.server_states()
        up = [s.health for s in states if s.health.reachable]
        rtts = [h.rtt_s for h in up if h.rtt_s is not None]
        down = len(states) - len(up)
        return Health(
            provider=self.name,
            base_url=self.base_url,
            reachable=bool(up),
            rtt_s=min(rtts) if rtts else None,
            version=next((h.version for h in up if h.version), None),
            error=f"{down} of {len(states)} servers down" if down else None,
        )

    def server_states(self) -> list[ServerState]:
        """Every server's health (asked at once), requests in flight and bench."""
        with ThreadPoolExecutor(max_workers=len(self._servers)) as pool:
            healths = list(pool.map(_health_of, self._servers))
        now, wall = time.monotonic(), datetime.now(timezone.utc)
        with self._cond:
            return [
                ServerState(
                    health,
                    s.in_flight,
                    wall + timedelta(seconds=s.benched_until - now)
                    if s.benched_until > now
                    else None,
                    s.failures,
                )
                for s, health in zip(self._servers, healths, strict=True)
            ]

    def close(self) -> None:
        for server in self._servers:
            close = getattr(server.provider, "close", None)
            if callable(close):
                close()

    def __getattr__(self, attr: str) -> Any:
        # Model commands (pull, rm, show, ps) act on the first server, as its listing does.
        if attr in _FIRST_SERVER:
            return getattr(self._servers[0].provider, attr)
        raise AttributeError(attr)


def _health_of(server: _Server) -> Health:
    try:
        return server.provider.health()
    except Exception as exc:  # a health check must not fail the status table
        return Health(server.provider.name, server.url, False, error=type(exc).__name__)


def _all_failed(last: ProviderError, failed: list[str], count: int) -> ProviderError:
    """The last error, its message naming every server's failure (still retryable)."""
    error = type(last)(
        f"none of the {count} servers answered: {'; '.join(failed)}", provider=last.provider
    )
    error.endpoint = last.endpoint  # the last server tried
    return error
