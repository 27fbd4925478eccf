"""Shared HTTP plumbing for the providers that speak HTTP (httpx2 underneath, also for the SDK).

What lives here, once:
- one pooled `httpx2.Client` per provider object, whose sockets another thread can abort
  (`IOSlot`): closing a response from another thread does not wake a read blocked in the
  kernel, shutting the socket down does;
- turning httpx2 exceptions and HTTP error statuses into `llm_magic.errors`, with the server's
  own message (whatever shape its error body has) and `Retry-After`;
- `Exchange`: one streaming request with the rule "after the first text, every failure is
  StreamBroken" applied in one place.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpcore2
import httpx2

from .. import errors
from ..errors import ProviderError
from .base import CancelToken, Options

__all__ = [
    "ADMIN_TIMEOUT",
    "Exchange",
    "HTTPService",
    "IOSlot",
    "error_text",
    "make_client",
    "map_exception",
    "retry_after",
    "timeout_for",
]

ADMIN_TIMEOUT = httpx2.Timeout(30.0, connect=5.0)  # listings and other short admin calls
HEALTH_TIMEOUT = 2.0  # seconds; a status check must answer quickly or count as down
_MESSAGE_LIMIT = 240

# --------------------------------------------------------------------------- cancellation

_current = threading.local()  # .slot: the IOSlot of the request this thread is working on


class IOSlot:
    """The socket one request is using, so that another thread can abort a blocked read.

    The worker thread marks the slot active around each blocking call (`with slot.active():`);
    every read or write on a pooled connection then records its stream here. `abort()` shuts
    that socket down, which makes the blocked read fail at once; a later read fails too.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stream: httpcore2.NetworkStream | None = None
        self._aborted = False
        self._released = False

    @property
    def aborted(self) -> bool:
        return self._aborted

    def watch(self, stream: httpcore2.NetworkStream) -> None:
        with self._lock:
            if self._aborted:
                raise httpcore2.ReadError("request cancelled")
            if not self._released:
                self._stream = stream

    def abort(self) -> None:
        with self._lock:
            self._aborted = True
            # Shut down under the lock so the connection cannot go back to the pool (and be
            # reused by another request) between the lookup and the shutdown.
            if self._stream is not None and not self._released:
                _shutdown(self._stream)

    def release(self) -> None:
        """The request is over: its connection may serve others now, never abort it."""
        with self._lock:
            self._released = True
            self._stream = None

    @contextmanager
    def active(self) -> Iterator[None]:
        previous = getattr(_current, "slot", None)
        _current.slot = self
        try:
            yield
        finally:
            _current.slot = previous


def _shutdown(stream: httpcore2.NetworkStream) -> None:
    sock = stream.get_extra_info("socket")
    if sock is None:
        return
    try:
        fd = sock.fileno()
        if fd < 0:
            return
        # Shut down a duplicate of the descriptor: shutdown acts on the connection itself, and
        # going around an SSLSocket keeps its state intact for the thread still reading it.
        dup = socket.fromfd(fd, sock.family, sock.type)
        try:
            dup.shutdown(socket.SHUT_RDWR)
        finally:
            dup.close()
    except OSError:
        pass


class _WatchedStream(httpcore2.NetworkStream):
    def __init__(self, inner: httpcore2.NetworkStream) -> None:
        self._inner = inner

    def _announce(self) -> None:
        slot = getattr(_current, "slot", None)
        if slot is not None:
            slot.watch(self)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        self._announce()
        return self._inner.read(max_bytes, timeout)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._announce()
        self._inner.write(buffer, timeout)

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore2.NetworkStream:
        return _WatchedStream(self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _WatchedBackend(httpcore2.NetworkBackend):
    def __init__(self, inner: httpcore2.NetworkBackend) -> None:
        self._inner = inner

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None, socket_options: Any = None
                    ) -> httpcore2.NetworkStream:
        slot = getattr(_current, "slot", None)
        if slot is not None and slot.aborted:
            raise httpcore2.ConnectError("request cancelled")
        return _WatchedStream(
            self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        )

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Any = None) -> httpcore2.NetworkStream:
        return _WatchedStream(self._inner.connect_unix_socket(path, timeout, socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def make_client(*, headers: dict[str, str] | None = None,
                timeout: httpx2.Timeout | None = None) -> httpx2.Client:
    """A pooled client, safe to share between threads, whose sockets an IOSlot can abort."""
    transport = httpx2.HTTPTransport(
        limits=httpx2.Limits(max_connections=64, max_keepalive_connections=16)
    )
    # httpx2 has no public hook for the network backend; wrap the pool's one when it is where
    # it has been since httpx 0.18. Without it cancellation still works between reads.
    pool = getattr(transport, "_pool", None)
    backend = getattr(pool, "_network_backend", None)
    if backend is not None:
        pool._network_backend = _WatchedBackend(backend)  # type: ignore[union-attr]
    return httpx2.Client(
        transport=transport,
        headers=headers,
        timeout=timeout or httpx2.Timeout(120.0, connect=5.0),
    )


def timeout_for(options: Options) -> httpx2.Timeout:
    return httpx2.Timeout(
        connect=options.connect_timeout,
        read=options.read_timeout,
        write=options.read_timeout,
        pool=options.read_timeout,
    )


# --------------------------------------------------------------------------- error mapping


def retry_after(headers: Any) -> float | None:
    """Seconds the server asked us to wait: `retry-after-ms`, else `retry-after` (s or date)."""
    if headers is None:
        return None
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(float(raw_ms) / 1000.0, 0.0)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(float(raw), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(when.timestamp() - time.time(), 0.0)


def _shorten(text: str, limit: int = _MESSAGE_LIMIT) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _detail_text(detail: Any) -> str:
    """FastAPI-style `[{"loc": [...], "msg": ..., "type": ...}]` as `body.x: msg (type)`."""
    parts = []
    for item in detail if isinstance(detail, list) else [detail]:
        if isinstance(item, dict) and "msg" in item:
            loc = ".".join(str(p) for p in item.get("loc") or [])
            kind = f" ({item['type']})" if item.get("type") else ""
            parts.append(f"{loc}: {item['msg']}{kind}" if loc else f"{item['msg']}{kind}")
        else:
            parts.append(_message_of(item) or json.dumps(item, ensure_ascii=False))
    return "; ".join(p for p in parts if p)


def _message_of(body: Any) -> str:
    """The human part of an error body, whatever shape the server chose."""
    if isinstance(body, str):
        return body
    if isinstance(body, list):
        return _detail_text(body)
    if not isinstance(body, dict):
        return "" if body is None else str(body)
    for key in ("error", "message", "detail"):
        value = body.get(key)
        if value in (None, "", [], {}):
            continue
        if key == "detail" or (isinstance(value, dict) and "detail" in value):
            text = _detail_text(value.get("detail") if isinstance(value, dict) else value)
        else:
            text = _message_of(value)
        if text:
            return text
    return json.dumps(body, ensure_ascii=False)


def error_text(body: str | bytes, fallback: str = "") -> str:
    """A readable one-line message from an error body: JSON in any known shape, or plain text."""
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    body = body.strip()
    if not body:
        return fallback
    try:
        parsed = json.loads(body)
    except ValueError:
        return _shorten(body)
    return _shorten(_message_of(parsed) or body) or fallback


def scrub(text: str, secret: str | None) -> str:
    """The message with the provider's own key removed (it may not be in the environment)."""
    return errors.redact(text, (secret,) if secret else ())


def status_error_from(provider: str, response: httpx2.Response,
                      secret: str | None = None) -> errors.StatusError:
    """The StatusError for an HTTP error reply; the body must have been read."""
    reason = response.reason_phrase or "error"
    try:
        text = error_text(response.content, reason)
    except httpx2.HTTPError:
        text = reason
    return errors.status_error(
        response.status_code,
        scrub(text, secret),
        provider=provider,
        retry_after=retry_after(response.headers),
    )


def _what(exc: BaseException) -> str:
    detail = str(exc).strip()
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


def map_exception(provider: str, exc: BaseException, *, started: bool, cancelled: bool,
                  secret: str | None = None, timeouts: httpx2.Timeout | None = None
                  ) -> ProviderError:
    """The llm_magic error for an httpx2 exception met while talking to `provider`.

    `started`: text has been yielded already, so the failure is StreamBroken (the partial text
    stays valid, a retry would repeat it). `cancelled`: the user stopped the run.
    """
    if cancelled:
        return errors.Cancelled("cancelled", provider=provider)
    read = timeouts.read if timeouts is not None else None
    connect = timeouts.connect if timeouts is not None else None
    if isinstance(exc, httpx2.ConnectTimeout):
        msg = f"connect timed out after {connect:g} s" if connect else "connect timed out"
        return errors.TimedOut(msg, provider=provider)
    if isinstance(exc, httpx2.TimeoutException):
        msg = f"no data for {read:g} s (read timeout)" if read else "read timed out"
        if started:
            return errors.StreamBroken(f"stream stalled: {msg}", provider=provider)
        return errors.TimedOut(msg, provider=provider)
    if isinstance(exc, httpx2.ConnectError):
        return errors.ConnectFailed(scrub(f"cannot connect: {exc}", secret), provider=provider)
    if isinstance(exc, httpx2.SSEError):  # e.g. a 200 that is not text/event-stream
        cls: type[ProviderError] = errors.StreamBroken if started else errors.BadResponse
        return cls(scrub(f"not a server-sent event stream: {exc}", secret), provider=provider)
    if started:
        return errors.StreamBroken(scrub(f"stream broken: {_what(exc)}", secret),
                                   provider=provider)
    if isinstance(exc, (httpx2.TransportError, httpx2.StreamError)):
        return errors.TransportError(scrub(f"connection lost: {_what(exc)}", secret),
                                     provider=provider)
    return errors.BadResponse(scrub(f"unexpected reply: {_what(exc)}", secret),
                              provider=provider)


# --------------------------------------------------------------------------- exchanges


class Exchange:
    """One streaming request: send, check the status, then iterate the body, mapping failures.

    Set `started = True` once text has been handed out: from then on every failure is
    StreamBroken. Use as a context manager; leaving it closes the response.
    """

    def __init__(self, service: HTTPService, request: httpx2.Request,
                 timeouts: httpx2.Timeout, cancel: CancelToken | None) -> None:
        self.service = service
        self.started = False
        self._request = request
        self._timeouts = timeouts
        self._cancel = cancel
        self._slot = IOSlot()
        self._response: httpx2.Response | None = None
        if cancel is not None:
            cancel.on_cancel(self._slot.abort)

    @property
    def cancelled(self) -> bool:
        return self._cancel is not None and self._cancel.cancelled

    def check_cancelled(self) -> None:
        if self.cancelled:
            raise errors.Cancelled("cancelled", provider=self.service.name)

    def error(self, cls: type[ProviderError], message: str) -> ProviderError:
        """`cls(message)` before the first text, StreamBroken after it."""
        message = scrub(message, self.service.secret)
        if self.started:
            return errors.StreamBroken(f"stream broken: {message}", provider=self.service.name)
        return cls(message, provider=self.service.name)

    def _mapped(self, exc: BaseException) -> ProviderError:
        return map_exception(self.service.name, exc, started=self.started,
                             cancelled=self.cancelled, secret=self.service.secret,
                             timeouts=self._timeouts)

    def __enter__(self) -> Exchange:
        self.check_cancelled()
        try:
            with self._slot.active():
                response = self.service.client.send(self._request, stream=True)
                self._response = response
                if response.status_code >= 400:
                    response.read()
                    raise status_error_from(self.service.name, response, self.service.secret)
        except ProviderError:
            self.close()
            raise
        except (httpx2.HTTPError, httpx2.StreamError, OSError) as exc:
            self.close()
            raise self._mapped(exc) from None
        return self

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
        assert self._response is not None
        return self._response

    def _guarded(self, source: Iterator[Any]) -> Iterator[Any]:
        while True:
            self.check_cancelled()
            try:
                with self._slot.active():
                    item = next(source)
            except StopIteration:
                return
            except (httpx2.HTTPError, httpx2.StreamError, OSError) as exc:
                raise self._mapped(exc) from None
            yield item

    def body(self) -> bytes:
        """The whole body."""
        return b"".join(self._guarded(self.response.iter_bytes()))

    def lines(self) -> Iterator[str]:
        """Body lines (NDJSON), blank ones skipped."""
        for line in self._guarded(self.response.iter_lines()):
            if line.strip():
                yield line

    def events(self) -> Iterator[httpx2.ServerSentEvent]:
        """Server-sent events of the body."""
        yield from self._guarded(iter(httpx2.EventSource(self.response)))


class HTTPService:
    """A provider's base URL, key and pooled client; thread-safe (httpx2.Client is)."""

    def __init__(self, name: str, base_url: str, api_key: str | None,
                 headers: dict[str, str] | None = None) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.secret = api_key
        all_headers = {"Accept": "application/json", **(headers or {})}
        if api_key:
            all_headers["Authorization"] = f"Bearer {api_key}"
        self.client = make_client(headers=all_headers)

    def url(self, path: str) -> str:
        return self.base_url + path

    def exchange(self, method: str, path: str, *, json_body: Any = None,
                 timeouts: httpx2.Timeout, cancel: CancelToken | None = None,
                 accept: str | None = None) -> Exchange:
        headers = {"Accept": accept} if accept else None
        request = self.client.build_request(method, self.url(path), json=json_body,
                                            headers=headers, timeout=timeouts)
        return Exchange(self, request, timeouts, cancel)

    def call_json(self, method: str, path: str, *, json_body: Any = None,
                  timeouts: httpx2.Timeout, cancel: CancelToken | None = None) -> Any:
        """A whole request/response; the parsed JSON body, or None for an empty body."""
        with self.exchange(method, path, json_body=json_body, timeouts=timeouts,
                           cancel=cancel) as exchange:
            body = exchange.body()
        if not body.strip():
            return None
        try:
            return json.loads(body)
        except ValueError:
            raise errors.BadResponse(
                scrub(f"{path} replied with something that is not JSON: "
                      f"{body[:60].decode('utf-8', 'replace')!r}", self.secret),
                provider=self.name,
            ) from None

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
