"""Shared HTTP plumbing for the providers that speak HTTP (httpx2 underneath, also for the SDK).

What lives here, once:
- (with `_http_errors`, which reads what went wrong) every failure as one `llm_magic.errors`;
- `Exchange`: one request whose socket a CancelToken can abort, with the rule "after the first
  text, every failure is StreamBroken" applied in one place;
- `HTTPService`: a base URL, a key and one pooled client (`_sockets.make_client`).

Every message is redacted (redaction.py): the key a provider sends is registered by the
transport, so no key needs to be passed around to be hidden.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any, ClassVar, TypeVar

import httpx2

from .. import errors
from .._redaction import redact, redact_url
from ..errors import ProviderError
from ._http_errors import map_exception, status_error_from
from ._sockets import IOSlot, make_client
from .base import CancelToken, Chunk, Health, Options, ProviderFacts

__all__ = [
    "ADMIN_TIMEOUT",
    "HEALTH_TIMEOUT",
    "Exchange",
    "HTTPService",
    "ServiceProvider",
    "timeout_for",
]

# Listings, show, ps: a healthy server answers them in well under a second, so a server that
# took the connection and says nothing for 5 s is not going to; the kernel is blocked meanwhile.
ADMIN_TIMEOUT = httpx2.Timeout(5.0, connect=5.0)
HEALTH_TIMEOUT = 2.0  # seconds; a status check must answer quickly or count as down
_HTTP_FAILURES = (httpx2.HTTPError, httpx2.StreamError, OSError)

T = TypeVar("T")


def timeout_for(options: Options) -> httpx2.Timeout:
    return httpx2.Timeout(
        connect=options.connect_timeout,
        read=options.read_timeout,
        write=options.read_timeout,
        pool=options.read_timeout,
    )


# --------------------------------------------------------------------------- exchanges


class Exchange:
    """One request: its abortable socket, its response, and how its failures are reported.

    Set `started = True` once text has been handed out: from then on every failure is
    StreamBroken. Use as a context manager; leaving it closes the response. Built by
    `HTTPService.exchange` (entering sends the request) or bare, for an SDK that sends
    (`call` + `adopt`).
    """

    def __init__(
        self,
        name: str,
        timeouts: httpx2.Timeout | None,
        cancel: CancelToken | None,
        *,
        client: httpx2.Client | None = None,
        request: httpx2.Request | None = None,
    ) -> None:
        self.name = name
        self.timeouts = timeouts
        self.started = False
        self._cancel = cancel
        self._client = client
        self._request = request
        self._slot = IOSlot()
        self._response: httpx2.Response | None = None
        self._source: Iterator[Any] | None = None  # what _guarded is reading from
        if cancel is not None:
            cancel.on_cancel(self._slot.abort)

    @property
    def cancelled(self) -> bool:
        return self._cancel is not None and self._cancel.cancelled

    def check_cancelled(self) -> None:
        if self.cancelled:
            raise errors.Cancelled("cancelled", provider=self.name)

    def error(self, cls: type[ProviderError], message: str) -> ProviderError:
        """`cls(message)` before the first text, StreamBroken after it."""
        message = redact(message)
        if self.started:
            return errors.StreamBroken(f"stream broken: {message}", provider=self.name)
        return cls(message, provider=self.name)

    def mapped(self, exc: BaseException) -> ProviderError:
        return map_exception(
            self.name,
            exc,
            started=self.started,
            cancelled=self.cancelled,
            timeouts=self.timeouts,
        )

    def __enter__(self) -> Exchange:
        self.check_cancelled()
        if self._request is not None and self._client is not None:
            try:
                self._send(self._client, self._request)
            except BaseException:
                self.close()
                raise
        return self

    def _send(self, client: httpx2.Client, request: httpx2.Request) -> None:
        try:
            with self._slot.active():
                response = client.send(request, stream=True)
                self._response = response
                if response.status_code >= 400:
                    response.read()
                    raise status_error_from(self.name, response)
        except _HTTP_FAILURES as exc:
            raise self.mapped(exc) from None

    def call(self, fn: Callable[[], T], mapper: Callable[[BaseException], ProviderError]) -> T:
        """Run `fn` (an SDK call) with this request's socket watched; map what it raises."""
        self.check_cancelled()
        try:
            with self._slot.active():
                return fn()
        except ProviderError:
            raise
        except Exception as exc:
            if self.cancelled:
                raise errors.Cancelled("cancelled", provider=self.name) from None
            raise mapper(exc) from None

    def adopt(self, response: httpx2.Response) -> None:
        """Read and close `response` (sent by someone else) through this exchange."""
        self._response = response

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._slot.release()
        if self._response is not None:
            # Closing a broken connection may fail; there is nothing left to keep.
            with contextlib.suppress(Exception):
                self._response.close()

    @property
    def response(self) -> httpx2.Response:
        assert self._response is not None, "no response yet"
        return self._response

    def _guarded(self, source: Iterator[Any]) -> Iterator[Any]:
        self._source = source
        while True:
            self.check_cancelled()
            try:
                with self._slot.active():
                    item = next(source)
            except StopIteration:
                return
            except _HTTP_FAILURES as exc:
                raise self.mapped(exc) from None
            yield item

    def finish(self, limit: int = 1000) -> None:
        """Read the rest of the body (the chunked terminator, usually) so that the connection
        goes back to the pool instead of being closed; give up quietly after `limit` items."""
        source = self._source if self._source is not None else self.response.iter_raw()
        try:
            with self._slot.active():
                for count, _ in enumerate(source):
                    if count >= limit:
                        break
        except Exception:  # the answer is complete; a dirty end only costs the connection
            pass

    def body(self, limit: int | None = None) -> bytes:
        """The whole body; past `limit` bytes (None: no limit) a BadResponse."""
        if limit is None:
            return b"".join(self._guarded(self.response.iter_bytes()))
        parts, size = [], 0
        for data in self._guarded(self.response.iter_bytes()):
            size += len(data)
            if size > limit:
                raise self.error(errors.BadResponse, f"the reply is over {limit:,} bytes")
            parts.append(data)
        return b"".join(parts)

    def lines(self) -> Iterator[str]:
        """Body lines (NDJSON, SSE), blank ones included: SSE needs them.

        Split here rather than by httpx2's iter_lines: that decodes text and runs a line decoder
        per chunk, a large share of a streamed answer's client time. Line ends are \\n, \\r\\n or
        \\r as SSE allows; a UTF-8 character never holds those bytes, so lines decode alone.
        """
        pending = b""
        for data in self._guarded(self.response.iter_bytes()):
            pending += data
            lines = pending.splitlines(keepends=True)
            # The last piece may be a line still arriving, or a "\r" whose "\n" is next.
            pending = lines.pop() if not lines[-1].endswith(b"\n") else b""
            for line in lines:
                yield line.rstrip(b"\r\n").decode("utf-8", "replace")
        if pending:
            yield pending.rstrip(b"\r\n").decode("utf-8", "replace")


class HTTPService:
    """A provider's base URL, key and pooled client; thread-safe (httpx2.Client is)."""

    def __init__(
        self,
        name: str,
        base_url: str,
        api_key: str | None,
        headers: dict[str, str] | None = None,
        *,
        key_header: str = "Authorization",
    ) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        all_headers = {"Accept": "application/json", **(headers or {})}
        if api_key:
            # `Authorization` carries a bearer token; a vendor's own header (x-api-key) the key.
            bearer = key_header.lower() == "authorization"
            all_headers[key_header] = f"Bearer {api_key}" if bearer else api_key
        self.client = make_client(
            name=name, base_url=self.base_url, secret=api_key, headers=all_headers
        )

    def url(self, path: str) -> str:
        return self.base_url + path

    def exchange(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        timeouts: httpx2.Timeout,
        cancel: CancelToken | None = None,
        accept: str | None = None,
    ) -> Exchange:
        headers = {"Accept": accept} if accept else None
        request = self.client.build_request(
            method, self.url(path), json=json_body, headers=headers, timeout=timeouts
        )
        return Exchange(self.name, timeouts, cancel, client=self.client, request=request)

    def call_json(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        timeouts: httpx2.Timeout,
        cancel: CancelToken | None = None,
    ) -> Any:
        """A whole request/response; the parsed JSON body, or None for an empty body."""
        with self.exchange(
            method, path, json_body=json_body, timeouts=timeouts, cancel=cancel
        ) as exchange:
            body = exchange.body()
        return _json_of(body, path, self.name)

    def upload(
        self,
        path: str,
        data: bytes,
        filename: str,
        fields: dict[str, str],
        *,
        timeouts: httpx2.Timeout,
    ) -> Any:
        """POST a file as multipart/form-data (field `file`) beside `fields`; the JSON reply."""
        request = self.client.build_request(
            "POST",
            self.url(path),
            files={"file": (filename, data, "application/jsonl")},
            data=fields,
            timeout=timeouts,
        )
        with Exchange(self.name, timeouts, None, client=self.client, request=request) as ex:
            return _json_of(ex.body(), path, self.name)

    def download(self, path: str, limit: int, *, timeouts: httpx2.Timeout) -> bytes:
        """GET a file's bytes; a body over `limit` bytes is a BadResponse."""
        with self.exchange("GET", path, timeouts=timeouts, accept="*/*") as exchange:
            return exchange.body(limit)

    def ping(self, method: str, path: str) -> tuple[bool, float | None, Any, str | None]:
        """(reachable, rtt_s, parsed body or None, error) of one quick request."""
        timeouts = httpx2.Timeout(HEALTH_TIMEOUT)
        start = time.perf_counter()
        try:
            body = self.call_json(method, path, timeouts=timeouts)
        except errors.TransportError as exc:
            return False, None, None, exc.message
        except ProviderError as exc:  # it answered, but not well
            return True, time.perf_counter() - start, None, exc.message
        return True, time.perf_counter() - start, body, None

    def close(self) -> None:
        self.client.close()


def _json_of(body: bytes, path: str, name: str) -> Any:
    """A reply's parsed JSON, None for an empty body; anything else is one BadResponse line."""
    if not body.strip():
        return None
    try:
        return json.loads(body)
    except ValueError:
        raise errors.BadResponse(
            f"{path} replied with something that is not JSON: "
            f"{body[:60].decode('utf-8', 'replace')!r}",
            provider=name,
        ) from None


_Keyed = TypeVar("_Keyed", bound="KeyedProvider")


class KeyedProvider:
    """What the three HTTP providers share: the missing-key rule and closing their pool.

    Subclasses set `name`, `_key_env` and `_missing_key` and implement `close()`.
    """

    name: str
    base_url: str
    _key_env: str | None
    _missing_key: bool

    def __repr__(self) -> str:
        # Credentials a base URL may carry (user:password@, ?key=...) never reach a repr.
        url = redact_url(self.base_url)
        return f"{type(self).__name__}(name={self.name!r}, base_url={url!r})"

    def _key_problem(self) -> str | None:
        return f"no API key: set {self._key_env}" if self._missing_key else None

    def _require_key(self) -> None:
        problem = self._key_problem()
        if problem:
            raise errors.ProviderError(problem, provider=self.name)

    def close(self) -> None:  # pragma: no cover - every subclass overrides it
        raise NotImplementedError

    def __enter__(self: _Keyed) -> _Keyed:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class ServiceProvider(KeyedProvider, ProviderFacts):
    """An HTTP provider that says everything through one `HTTPService` (Mistral, Anthropic):
    built from a name, base URL and key, it posts a request for an answer and reads it back
    streamed or whole, checks its health on its model listing, and closes its pool.
    Subclasses declare their facts, and `extra_headers` for every request (a protocol version).
    """

    extra_headers: ClassVar[dict[str, str]] = {}
    health_query: ClassVar[str] = ""  # added to `listing_path` for a health check

    def __init__(
        self, *, name: str, base_url: str | None, api_key: str | None, key_env: str | None = None
    ) -> None:
        self.name = name
        self.base_url = self.normalise_base_url(base_url) or ""
        self._key_env = key_env
        self._missing_key = api_key is None and key_env is not None
        self._http = HTTPService(
            name, self.base_url, api_key, dict(self.extra_headers), key_header=self.key_header
        )

    def _answer(
        self,
        path: str,
        body: dict[str, Any],
        options: Options,
        cancel: CancelToken | None,
        streamed: Callable[[Exchange], Iterator[Chunk]],
        whole: Callable[[Exchange, bytes], Chunk],
    ) -> Iterator[Chunk]:
        """POST `body` to `path`; the Chunks `streamed` reads from the events, or the one
        Chunk `whole` makes of the body when `options.stream` is off."""
        self._require_key()
        exchange = self._http.exchange(
            "POST",
            path,
            json_body=body,
            timeouts=timeout_for(options),
            cancel=cancel,
            accept="text/event-stream" if options.stream else "application/json",
        )
        with exchange:
            if options.stream:
                yield from streamed(exchange)
            else:
                yield whole(exchange, exchange.body())

    def health(self) -> Health:
        path = f"{self.listing_path or ''}{self.health_query}"
        reachable, rtt, _, error = self._http.ping("GET", path)
        error = self._key_problem() or error
        return Health(
            provider=self.name, base_url=self.base_url, reachable=reachable, rtt_s=rtt, error=error
        )

    def close(self) -> None:
        """Close the pooled connections (the registry keeps providers for the whole session)."""
        self._http.close()


def unix_time(value: Any) -> str | None:
    """An OpenAI-style `created` (seconds since the epoch) as ISO 8601 UTC; None if absent."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return datetime.fromtimestamp(value, timezone.utc).isoformat()
    return None
