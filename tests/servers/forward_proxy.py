"""A loopback HTTP forward proxy, as a company network puts in front of the internet.

It takes the two kinds of proxy request a client sends:
- absolute-form (`POST http://127.0.0.1:PORT/v1/chat/completions HTTP/1.1`) for http URLs:
  the request goes on in origin form, without its Proxy-* headers, the answer comes back as it
  streams, and the connection closes after it (`Connection: close`);
- CONNECT host:port for https URLs: a tunnel. With `tls` (a server SSLContext) the proxy ends
  the client's TLS itself and carries the plain bytes on to a plain-HTTP loopback server, so
  the protocol servers can stand behind an https URL without learning TLS.

With `credentials`, a request without the matching `Proxy-Authorization: Basic …` gets 407.
Only loopback hosts are forwarded to. `requests` records what arrived: (method, target,
headers) with lower-case header names.
"""

from __future__ import annotations

import base64
import contextlib
import selectors
import socket
import ssl
import threading
from dataclasses import dataclass
from socketserver import BaseRequestHandler, ThreadingTCPServer
from urllib.parse import urlsplit

__all__ = ["ForwardProxy", "ProxiedRequest"]

_LOOPBACK = ("127.0.0.1", "localhost", "::1")
_HOP_BY_HOP = ("proxy-authorization", "proxy-connection", "connection", "keep-alive")


@dataclass(frozen=True)
class ProxiedRequest:
    method: str
    target: str  # the absolute URL, or host:port for CONNECT
    headers: dict[str, str]


class _Server(ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False

    def __init__(self, owner: ForwardProxy) -> None:
        self.owner = owner
        super().__init__(("127.0.0.1", 0), _Handler)


def _read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    """The request head (up to the blank line) and whatever came after it."""
    data = b""
    while b"\r\n\r\n" not in data:
        piece = sock.recv(65536)
        if not piece:
            return b"", b""
        data += piece
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def _pipe(one: socket.socket, other: socket.socket) -> None:
    """Carry bytes both ways until either side closes."""
    # selectors (epoll), not select(): a long test session may hold descriptors past 1,024.
    with selectors.DefaultSelector() as watch:
        for sock in (one, other):
            watch.register(sock, selectors.EVENT_READ)
        while True:
            pending = [s for s in (one, other) if isinstance(s, ssl.SSLSocket) and s.pending()]
            readable = pending or [key.fileobj for key, _ in watch.select(30)]
            if not readable:
                return
            for source in readable:
                try:
                    data = source.recv(65536)
                except (OSError, ssl.SSLError):
                    return
                if not data:
                    return
                (other if source is one else one).sendall(data)


class _Handler(BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        client: socket.socket = self.request
        head, rest = _read_head(client)
        if not head:
            return
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        owner = self.server.owner
        owner._record(ProxiedRequest(method, target, headers))
        if not owner._authorised(headers.get("proxy-authorization", "")):
            client.sendall(
                b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                b'Proxy-Authenticate: Basic realm="test"\r\nContent-Length: 0\r\n'
                b"Connection: close\r\n\r\n"
            )
            return
        if method == "CONNECT":
            self._tunnel(client, target, rest)
        else:
            self._forward(client, method, target, lines[1:], rest)

    def _upstream(self, host: str, port: int) -> socket.socket | None:
        if host.strip("[]") not in _LOOPBACK:
            return None
        with contextlib.suppress(OSError):
            return socket.create_connection(("127.0.0.1", port), timeout=30)
        return None

    def _tunnel(self, client: socket.socket, target: str, rest: bytes) -> None:
        host, _, port = target.rpartition(":")
        upstream = self._upstream(host, int(port))
        if upstream is None:
            client.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            return
        with upstream:
            client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            tls = self.server.owner.tls
            if tls is None:
                upstream.sendall(rest)
                _pipe(client, upstream)
                return
            try:
                wrapped = tls.wrap_socket(client, server_side=True)
            except (OSError, ssl.SSLError):
                return
            with wrapped:
                _pipe(wrapped, upstream)

    def _forward(
        self, client: socket.socket, method: str, target: str, lines: list[str], rest: bytes
    ) -> None:
        url = urlsplit(target)
        upstream = self._upstream(url.hostname or "", url.port or 80)
        if upstream is None:
            client.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            return
        path = url.path + (f"?{url.query}" if url.query else "")
        kept = [line for line in lines if line.split(":")[0].strip().lower() not in _HOP_BY_HOP]
        head = "\r\n".join([f"{method} {path} HTTP/1.1", *kept, "Connection: close"])
        fields = (line.partition(":") for line in lines)
        length = next((int(v) for k, _, v in fields if k.lower() == "content-length"), 0)
        while len(rest) < length:  # the whole body goes before the answer is awaited
            piece = client.recv(65536)
            if not piece:
                return
            rest += piece
        with upstream:
            upstream.sendall(head.encode("latin-1") + b"\r\n\r\n" + rest)
            # The answer's head gets `Connection: close` too: one request per connection keeps
            # this proxy from having to parse bodies to find where the next request starts.
            answer, body = _read_head(upstream)
            if not answer:
                return
            kept = [
                line
                for line in answer.decode("latin-1").split("\r\n")
                if line.split(":")[0].strip().lower() not in _HOP_BY_HOP
            ]
            client.sendall("\r\n".join([*kept, "Connection: close"]).encode("latin-1"))
            client.sendall(b"\r\n\r\n" + body)
            _pipe(client, upstream)


class ForwardProxy:
    """Start with `with ForwardProxy() as proxy:`; `proxy.url` is what HTTPS_PROXY takes."""

    __test__ = False

    def __init__(
        self, credentials: tuple[str, str] | None = None, tls: ssl.SSLContext | None = None
    ) -> None:
        self.credentials = credentials
        self.tls = tls
        self._lock = threading.Lock()
        self._requests: list[ProxiedRequest] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def url(self) -> str:
        auth = f"{self.credentials[0]}:{self.credentials[1]}@" if self.credentials else ""
        return f"http://{auth}127.0.0.1:{self.port}"

    @property
    def requests(self) -> list[ProxiedRequest]:
        with self._lock:
            return list(self._requests)

    def _record(self, request: ProxiedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def _authorised(self, header: str) -> bool:
        if self.credentials is None:
            return True
        expected = base64.b64encode(":".join(self.credentials).encode()).decode()
        return header == f"Basic {expected}"

    def __enter__(self) -> ForwardProxy:
        self._server = _Server(self)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)
