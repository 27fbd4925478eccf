"""The transport under every HTTP provider: an httpx2.Client whose sockets another thread can
abort, that goes through the proxy the environment or the config names, registers every
credential it sends (redaction.py) and refuses to follow a redirect, saying where it pointed.

Closing a response from another thread does not wake a read blocked in the kernel (the
descriptor is closed, the blocked recv() is not woken), so a cancelled request would wait for
its read timeout. Shutting the socket down does wake it. httpx2 shows no socket, so the
client's network backend is wrapped: every read or write records its stream in the `IOSlot`
of the request the calling thread is working on, and `IOSlot.abort()` shuts that one down.
Sync httpx2 (and the openai SDK on it) does all I/O in the calling thread, hence thread-local.
"""

from __future__ import annotations

import base64
import contextlib
import socket
import threading
from typing import Any
from urllib.parse import unquote

import httpcore2
import httpx2

from .. import errors
from .._redaction import add_header_secrets, add_secret, redact_url
from ._proxy import Route, configured_proxy, route_for

__all__ = ["IOSlot", "Refused", "make_client"]

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

    def active(self) -> _Active:
        """Context manager: reads and writes of this thread belong to this slot meanwhile."""
        return _Active(self)


class _Active:
    # A class rather than @contextmanager: it wraps every read of every stream.
    __slots__ = ("_slot", "_previous")

    def __init__(self, slot: IOSlot) -> None:
        self._slot = slot
        self._previous: IOSlot | None = None

    def __enter__(self) -> None:
        self._previous = getattr(_current, "slot", None)
        _current.slot = self._slot

    def __exit__(self, *exc_info: object) -> None:
        _current.slot = self._previous


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

    def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore2.NetworkStream:
        return _WatchedStream(self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _WatchedBackend(httpcore2.NetworkBackend):
    def __init__(self, inner: httpcore2.NetworkBackend) -> None:
        self._inner = inner

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore2.NetworkStream:
        slot = getattr(_current, "slot", None)
        if slot is not None and slot.aborted:
            raise httpcore2.ConnectError("request cancelled")
        return _WatchedStream(
            self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        )

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore2.NetworkStream:
        return _WatchedStream(self._inner.connect_unix_socket(path, timeout, socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


_LIMITS = httpx2.Limits(max_connections=64, max_keepalive_connections=16)
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


class Refused(httpx2.TransportError):
    """The transport would not go on with a request (a redirect, an unusable proxy); `error`
    is what the provider reports. An httpx2 error, so that the SDK hands it back as a cause."""

    def __init__(self, error: errors.ProviderError, request: httpx2.Request) -> None:
        super().__init__(error.message, request=request)
        self.error = error


def _watched(proxy: str | None) -> httpx2.HTTPTransport:
    """A pooled transport (direct, or through `proxy`) whose sockets an IOSlot can abort."""
    transport = httpx2.HTTPTransport(limits=_LIMITS, proxy=proxy)
    # httpx2 has no public hook for the network backend: wrap the pool's (direct and proxy
    # pools alike keep it there, as since httpx 0.18); test_transport.py fails if it moves.
    # Without it cancelling still works, only between reads.
    pool = getattr(transport, "_pool", None)
    backend = getattr(pool, "_network_backend", None)
    if backend is not None:
        pool._network_backend = _WatchedBackend(backend)  # type: ignore[union-attr]
    return transport


def _remember_proxy_credentials(proxy: str) -> None:
    """A proxy's password, and the Basic credential made of it, are secrets too."""
    parts = httpx2.URL(proxy)
    if parts.password:
        user, password = unquote(parts.username), unquote(parts.password)
        add_secret(password)
        add_secret(base64.b64encode(f"{user}:{password}".encode()).decode("ascii"))


class _Routes(httpx2.BaseTransport):
    """Sends each request direct or through the proxy that applies to its URL (one pool per
    proxy), and turns a redirect into a one-line error.

    Each origin's route is decided at its first request and kept, as httpx decides at client
    construction: reading the environment per request would cost more than the rest of the
    transport. The registry builds a new provider when the route of its base URL changes.
    """

    def __init__(self, name: str, base_url: str) -> None:
        self._name = name
        self._base_url = base_url.rstrip("/")
        self._lock = threading.Lock()
        self._pools: dict[str | None, httpx2.HTTPTransport] = {}
        self._routes: dict[tuple[str, str, int | None], Route] = {}
        if base_url:  # build the usual pool now, not inside the first request's timing
            # An unusable proxy is said by the first request, as a row's error.
            with contextlib.suppress(ImportError, ValueError, httpx2.InvalidURL):
                self._pool(self._route(httpx2.URL(base_url)).proxy)

    def _route(self, url: httpx2.URL) -> Route:
        origin = (url.scheme, url.host, url.port)
        route = self._routes.get(origin)
        if route is None:  # two threads may both work it out: the same answer
            route = route_for(url.scheme, url.host, url.port, configured_proxy(self._name))
            self._routes[origin] = route
        return route

    def _pool(self, proxy: str | None) -> httpx2.HTTPTransport:
        with self._lock:
            pool = self._pools.get(proxy)
            if pool is None:
                if proxy is not None:
                    _remember_proxy_credentials(proxy)
                pool = self._pools[proxy] = _watched(proxy)
            return pool

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        add_header_secrets(request.headers)
        route = self._route(request.url)
        try:
            pool = self._pool(route.proxy)
        except ImportError:
            problem = f"cannot use the proxy {route.shown()}: SOCKS needs `pip install socksio`"
            raise Refused(errors.ProviderError(problem, provider=self._name), request) from None
        except (ValueError, httpx2.InvalidURL) as exc:  # an unknown scheme
            problem = f"cannot use the proxy {route.shown()}: {exc}"
            raise Refused(errors.ProviderError(problem, provider=self._name), request) from None
        try:
            response = pool.handle_request(request)
        except (httpx2.ConnectError, httpx2.ProxyError) as exc:
            if route.proxy is None:
                raise
            raise Refused(_proxy_failure(self._name, route, exc), request) from None
        if response.status_code in _REDIRECTS and "location" in response.headers:
            response.close()
            error = _redirect_error(self._name, self._base_url, request.url, response)
            raise Refused(error, request)
        return response

    def close(self) -> None:
        with self._lock:
            pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            pool.close()


def _proxy_failure(name: str, route: Route, exc: Exception) -> errors.ProviderError:
    """A proxy that cannot be reached may be retried; one that refuses the tunnel is final."""
    if isinstance(exc, httpx2.ProxyError):
        return errors.ProviderError(f"the proxy {route.shown()} refused: {exc}", provider=name)
    text = f"cannot connect to the proxy {route.shown()}: {exc}"
    return errors.ConnectFailed(text, provider=name)


def _base_url_variable(name: str) -> str | None:
    """The environment variable that sets provider `name`'s base URL, if it has one."""
    from . import spec_for

    try:
        spec = spec_for(name)
    except errors.LLMMagicError:
        return None
    return spec.url_env if spec is not None else None


def _without_query(url: str) -> str:
    return url.partition("#")[0].partition("?")[0]


def _redirect_error(
    name: str, base_url: str, sent: httpx2.URL, response: httpx2.Response
) -> errors.StatusError:
    """A redirect is never followed (the key would go wherever it points); the error says
    where it pointed and, when the new place ends in the same path, which base URL to set."""
    target = str(sent.join(response.headers["location"]))
    message = f"the server redirected to {redact_url(target)}"
    asked = _without_query(str(sent))
    tail = asked[len(base_url) :] if base_url and asked.startswith(base_url) else ""
    moved = _without_query(target)
    variable = _base_url_variable(name)
    if tail.startswith("/") and moved.endswith(tail) and len(moved) > len(tail):
        where = f"set {variable} to" if variable else "use the base URL"
        message += f"; {where} {redact_url(moved[: -len(tail)])}"
    else:
        where = f" ({variable})" if variable else ""
        message += f"; redirects are not followed: check the base URL{where}"
    return errors.status_error(response.status_code, message, provider=name)


def make_client(
    *,
    name: str = "",
    base_url: str = "",
    secret: str | None = None,
    headers: dict[str, str] | None = None,
    timeout: httpx2.Timeout | None = None,
) -> httpx2.Client:
    """Provider `name`'s pooled client, safe to share between threads; `secret` is the key it
    will send (hidden from every text from now on, see redaction.py)."""
    add_secret(secret)
    return httpx2.Client(
        transport=_Routes(name, base_url),
        headers=headers,
        timeout=timeout or httpx2.Timeout(120.0, connect=5.0),
    )
