"""Sockets another thread can abort, behind an ordinary pooled httpx2.Client.

Closing a response from another thread does not wake a read blocked in the kernel (the
descriptor is closed, the blocked recv() is not woken), so a cancelled request would wait for
its read timeout. Shutting the socket down does wake it. httpx2 shows no socket, so the
client's network backend is wrapped: every read or write records its stream in the `IOSlot`
of the request the calling thread is working on, and `IOSlot.abort()` shuts that one down.
Sync httpx2 (and the openai SDK on it) does all I/O in the calling thread, hence thread-local.
"""

from __future__ import annotations

import socket
import threading
from typing import Any

import httpcore2
import httpx2

__all__ = ["IOSlot", "make_client"]

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


def make_client(
    *, headers: dict[str, str] | None = None, timeout: httpx2.Timeout | None = None
) -> httpx2.Client:
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
