"""One request being answered: plain replies, chunked streams, and deliberate breakage."""

from __future__ import annotations

import json
import re
import selectors
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .wire import Completion

if TYPE_CHECKING:
    from .base import RecordedRequest, TestServer
    from .transport import Handler

__all__ = ["Aborted", "Exchange", "StreamShape", "dumps"]


class Aborted(Exception):
    """Raised inside a handler to drop the connection without finishing the response."""


class Exchange:
    """One request and the tools to answer it (plain, streamed, or broken on purpose)."""

    def __init__(self, server: TestServer, handler: Handler, request: RecordedRequest) -> None:
        self.server = server
        self.handler = handler
        self.request = request
        self.faults = server.faults  # a snapshot reference: reset() swaps in a new object
        self.cancel = server._cancel  # set by reset()/stop(): wakes delays and stalls
        self.started = time.monotonic()
        self.responded = False
        # Only chat replies drip: listing models or pulling stays quick.
        self.drip = self.faults.drip if server.chat_marker in request.path else 0.0

    @property
    def body(self) -> Any:
        return self.request.body

    # -- timing ---------------------------------------------------------------------------
    def sleep(self, seconds: float) -> None:
        """Sleep, but give up (drop the connection) when the server is reset or stopped."""
        if seconds > 0 and self.cancel.wait(seconds):
            raise Aborted
        if self.cancel.is_set():
            raise Aborted

    def stall(self) -> None:
        """Keep the socket open, sending nothing, until the client leaves or the server stops."""
        sock = self.handler.connection
        # selectors (epoll), not select(): a long test session may hold descriptors past 1,024.
        with selectors.DefaultSelector() as watch:
            watch.register(sock, selectors.EVENT_READ)
            while not self.cancel.wait(0.02):
                try:
                    if watch.select(0) and not sock.recv(1, socket.MSG_PEEK):
                        break  # orderly close from the client
                except OSError:
                    break
        raise Aborted

    def abort(self) -> None:
        """Close the connection now, leaving whatever was sent unterminated."""
        raise Aborted

    # -- plain replies --------------------------------------------------------------------
    def send(
        self,
        status: int,
        body: bytes,
        content_type: str | None = "application/json; charset=utf-8",
        headers: dict[str, str] | None = None,
    ) -> None:
        h = self.handler
        h.send_response(status)
        if content_type is not None:
            h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            h.send_header(key, value)
        h.end_headers()
        self.responded = True
        if body and self.request.method != "HEAD":
            self._send_body(body)

    def send_json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        self.send(status, dumps(obj), headers=headers)

    def send_error_json(self, status: int, obj: Any) -> None:
        """An error reply: adds Retry-After when the `retry_after` knob is set."""
        headers = {}
        if self.faults.retry_after is not None:
            headers["Retry-After"] = _seconds(self.faults.retry_after)
        self.send_json(status, obj, headers=headers)

    # -- streamed replies (chunked transfer encoding) -------------------------------------
    def start_stream(self, content_type: str, headers: dict[str, str] | None = None) -> None:
        h = self.handler
        h.send_response(200)
        h.send_header("Content-Type", content_type)
        h.send_header("Transfer-Encoding", "chunked")
        h.send_header("Cache-Control", "no-cache")
        for key, value in (headers or {}).items():
            h.send_header(key, value)
        h.end_headers()
        self.responded = True

    def write(self, data: bytes) -> None:
        """One chunk of the chunked body, in one send() call (unless it drips)."""
        if data:
            self._send_body(b"%X\r\n%s\r\n" % (len(data), data))

    def end_stream(self) -> None:
        self._send_body(b"0\r\n\r\n")

    def _send_body(self, data: bytes) -> None:
        """Body bytes at once, or (the `drip` knob) one byte at a time, each after a pause: a
        server that is never silent for long, so no read timeout ever fires."""
        if not self.drip:
            self.handler.wfile.write(data)
            return
        for i in range(len(data)):
            self.sleep(self.drip)
            self.handler.wfile.write(data[i : i + 1])

    def stream(self, shape: StreamShape, completion: Completion) -> None:
        """Run a streamed reply through `shape`, applying the stream fault knobs.

        "After N content chunks" counts content chunks only (not a leading role chunk), so
        N=0 breaks the stream before the first word and N=len(words) just before the tail.
        """
        f = self.faults
        self.write(shape.head())
        words = completion.words
        for i in range(len(words) + 1):
            if f.cut_after == i:
                self.abort()
            if f.malformed_after == i:
                self.write(shape.malformed())
            if f.error_after == i:
                self.write(shape.error())  # then the body ends properly, like the real servers
                self.end_stream()
                return
            if f.stall_after == i:
                self.stall()
            if i == len(words):
                break
            if i > 0:
                self.sleep(f.token_delay)
            self.write(shape.content(i, words[i], i == len(words) - 1))
        self.write(shape.tail())
        self.end_stream()

    def broken_plain_reply(self, send_error: Callable[[], None]) -> bool:
        """Stream fault knobs applied to a non-streamed reply; True when one was applied.

        cut: the connection closes with no response; stall: no response, socket kept open;
        malformed: 200 with a body that is not JSON; error: `send_error()` (an error status).
        """
        f = self.faults
        if f.cut_after is not None:
            self.abort()
        if f.stall_after is not None:
            self.stall()
        if f.malformed_after is not None:
            self.send(200, b"{not json")
            return True
        if f.error_after is not None:
            send_error()
            return True
        return False

    def wait_generation(self, completion: Completion) -> None:
        """The time a non-streamed answer takes to 'generate' (token_delay between words)."""
        self.sleep(self.faults.token_delay * max(0, len(completion.words) - 1))


class StreamShape:
    """How one protocol frames a streamed answer; the fault logic lives in Exchange.stream."""

    def head(self) -> bytes:
        return b""

    def content(self, index: int, word: str, last: bool) -> bytes:
        raise NotImplementedError

    def malformed(self) -> bytes:
        raise NotImplementedError

    def error(self) -> bytes:
        raise NotImplementedError

    def tail(self) -> bytes:
        return b""


_SURROGATE = re.compile("[\ud800-\udfff]")


def dumps(obj: Any) -> bytes:
    """Compact JSON like the real servers send (no spaces after separators), UTF-8 but for lone
    surrogates: UTF-8 cannot carry them, so they go out as the `\\ud800` escapes JSON allows
    (json.dumps writes them raw when ensure_ascii is off). Controls are always escaped."""
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    try:
        return text.encode()
    except UnicodeEncodeError:
        return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text).encode()


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)
