"""A small threaded HTTP/1.1 server on 127.0.0.1 that the protocol servers build on.

Why not a framework: the fault knobs need byte-level control of the socket (cut a chunked body
mid-way, stall with the socket open, send a malformed line), and the stdlib gives exactly that.

One thread per connection, keep-alive, TCP_NODELAY on every accepted socket (otherwise Nagle plus
the peer's delayed ACK adds ~40 ms to small streamed writes and ruins latency measurements).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .exchange import Aborted, Exchange, StreamShape, dumps
from .transport import Handler, HTTPServer
from .wire import Completion, plan_completion

__all__ = ["Exchange", "Faults", "RecordedRequest", "StreamShape", "TestServer", "dumps"]


@dataclass
class Faults:
    """Knobs that change how chat requests are answered. `TestServer.reset()` restores defaults."""

    delay: float = 0.0  # seconds before the first byte of a chat reply
    token_delay: float = 0.0  # seconds between streamed content chunks
    drip: float = 0.0  # seconds before each single byte of a chat reply's body (never quite idle)
    reply: str | None = None  # exact answer text; None: "Echo from MODEL: LAST USER MESSAGE"
    reply_to: Callable[[str], str] | None = None  # answer text from the last user message
    reply_chars: int | None = None  # the answer text repeated to exactly N characters (huge)
    chunk_chars: int | None = None  # stream the answer in pieces of N characters (None: by word)
    status: int | None = None  # answer chat requests with this HTTP error status
    error_message: str | None = None  # overrides the protocol's default error message
    fail_times: int | None = None  # only the first N chat requests get `status` (None: all)
    statuses: list[int] = field(default_factory=list)  # per-request statuses, popped; <400 = ok
    retry_after: float | None = None  # Retry-After header (seconds) on error replies
    cut_after: int | None = None  # close abruptly after N content chunks
    malformed_after: int | None = None  # one malformed line after N content chunks, then go on
    error_after: int | None = None  # protocol's in-stream error after N content chunks
    stall_after: int | None = None  # stop sending after N content chunks, keep the socket open
    usage: bool = True  # report token usage
    report_model: str | None = None  # model name reported back (None: the requested one)
    echo_headers: bool = False  # answer with the request's headers, one "name: value" a line
    redirect: int | None = None  # answer chat requests with this 3xx status and a Location
    redirect_to: str | None = None  # that Location (None: this server, under /moved)
    # Scripted tool calls (tool_turns.py): (name, arguments JSON text) to call when the request
    # has tools, while the conversation holds fewer than `tool_rounds` tool results.
    tool_call: tuple[str, str] | None = None
    tool_rounds: int = 1
    tool_pieces: int = 3  # fragments the arguments stream in (where the protocol splits them)
    tool_parallel: int = 1  # calls in one answer
    # Serve at most N chat requests at a time; the others wait their turn, connection open (as
    # a vLLM server queues what exceeds --max-num-seqs, or Ollama beyond OLLAMA_NUM_PARALLEL).
    max_concurrent: int | None = None


_FAULT_NAMES = frozenset(f.name for f in dataclasses.fields(Faults))


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str  # without the query string
    headers: dict[str, str]  # lower-case keys
    body: Any  # parsed JSON, or None when empty or not JSON
    time: float  # time.monotonic() at arrival
    query: str = ""
    raw: bytes = b""


Route = Callable[[Exchange], None]


class TestServer:
    """Base of the protocol servers: lifecycle, routing, recording, the fault decisions.

    Subclasses fill `self.routes[(METHOD, PATH)]` and may override `not_found`.
    """

    __test__ = False  # not a pytest test class despite the name
    url_suffix = ""
    chat_marker = "chat"  # in the path of every request that asks for an answer

    def __init__(self, api_key: str | None = None) -> None:
        self._lock = threading.Lock()
        self._turns = threading.Condition()  # chat requests being served (max_concurrent)
        self._serving = 0
        self._default_api_key = api_key
        self.routes: dict[tuple[str, str], Route] = {}
        # (path prefix, handler(ex, rest of the path)) for paths holding an id: /v1/batches/ID
        self.prefix_routes: list[tuple[str, Callable[[Exchange, str], None]]] = []
        self._httpd: HTTPServer | None = None
        self._serve_thread: threading.Thread | None = None
        self._cancel = threading.Event()
        self.port = 0
        self.reset()

    # Fault knobs can be set directly on the server: `server.delay = 0.2` sets faults.delay.
    def __getattr__(self, name: str) -> Any:
        if name in _FAULT_NAMES:
            return getattr(self.faults, name)
        raise AttributeError(name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _FAULT_NAMES:
            setattr(self.faults, name, value)
        else:
            super().__setattr__(name, value)

    # -- lifecycle ------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.url_suffix}"

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> TestServer:
        if self._httpd is not None:
            return self
        if self._cancel.is_set():  # restarted after stop()
            self._cancel = threading.Event()
        self._httpd = HTTPServer(self)
        self.port = self._httpd.server_address[1]
        self._serve_thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"{type(self).__name__}:{self.port}",
            daemon=True,
        )
        self._serve_thread.start()
        return self

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._cancel.set()  # wake sleeping and stalled handlers
        httpd.shutdown()
        httpd.close_connections()
        httpd.server_close()
        if self._serve_thread is not None:
            self._serve_thread.join(5)
            self._serve_thread = None

    def __enter__(self) -> TestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reset(self) -> None:
        """Default knobs, no recorded requests; pending delays/stalls of the last test end."""
        with self._lock:
            old = self._cancel
            self._cancel = threading.Event()
            old.set()
            self.faults = Faults()
            self.api_key = self._default_api_key
            self._requests: list[RecordedRequest] = []
            self._failed = 0
            # most chat requests handled at the same time since the last reset
            self.in_flight = getattr(self, "in_flight", 0)
            self.max_in_flight = self.in_flight
            self.max_serving = 0  # most chat requests answered at once (under max_concurrent)
            self.connection_count = 0  # TCP connections accepted since the last reset
        self.reset_state()

    def reset_state(self) -> None:
        """Hook for subclasses: restore protocol state (installed models, ...)."""

    # -- recording ------------------------------------------------------------------------
    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def request_count(self) -> int:
        with self._lock:
            return len(self._requests)

    def chat_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == "POST" and self.chat_marker in r.path]

    # -- helpers for the protocol handlers ------------------------------------------------
    def next_error_status(self, ex: Exchange) -> int | None:
        """The error status this chat request must get from the status knobs, or None."""
        f = ex.faults
        with self._lock:
            if f.statuses:
                status = f.statuses.pop(0)
                return status if status >= 400 else None
            if f.status is None:
                return None
            if f.fail_times is not None and self._failed >= f.fail_times:
                return None
            self._failed += 1
            return f.status

    def bearer_ok(self, ex: Exchange) -> bool:
        if self.api_key is None:
            return True
        return ex.request.headers.get("authorization", "") == f"Bearer {self.api_key}"

    def completion(
        self,
        ex: Exchange,
        model: str,
        messages: Any,
        max_tokens: int | None,
        reply: str | None = None,
    ) -> Completion:
        """What the fake model answers: `reply` (a tool result's answer), else the knobs'."""
        f = ex.faults
        reply = f.reply if reply is None else reply
        if f.echo_headers:  # what a debugging proxy answers: everything it was sent
            reply = "\n".join(f"{k}: {v}" for k, v in ex.request.headers.items())
        return plan_completion(
            reply,
            f.report_model,
            model,
            messages,
            max_tokens,
            size=f.reply_chars,
            piece=f.chunk_chars,
            reply_to=f.reply_to,
        )

    @contextlib.contextmanager
    def chat_slot(self) -> Iterator[None]:
        """Counts chat requests in progress (`in_flight`, `max_in_flight`, those waiting for
        a turn under `max_concurrent` included) and holds each to its turn."""
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        served, cancel = False, self._cancel
        try:
            with self._turns:
                limit = self.faults.max_concurrent
                while limit is not None and self._serving >= limit:
                    if cancel.is_set():
                        raise Aborted
                    self._turns.wait(0.05)
                self._serving += 1
                self.max_serving = max(self.max_serving, self._serving)
                served = True
            yield
        finally:
            with self._lock:
                self.in_flight -= 1
            if served:
                with self._turns:
                    self._serving -= 1
                    self._turns.notify()

    def not_found(self, ex: Exchange) -> None:
        ex.send(404, b"404 page not found", "text/plain")

    def bad_json(self, ex: Exchange) -> None:
        ex.send_json(400, {"error": "invalid JSON body"})

    # -- dispatch (runs on the connection's thread) ---------------------------------------
    def _dispatch(self, handler: Handler) -> None:
        raw = handler.read_body()
        path, _, query = handler.path.partition("?")
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
        request = RecordedRequest(
            method=handler.command,
            path=path,
            headers={k.lower(): v for k, v in handler.headers.items()},
            body=body,
            time=time.monotonic(),
            query=query,
            raw=raw,
        )
        with self._lock:
            self._requests.append(request)
            ex = Exchange(self, handler, request)
        route = self.routes.get((request.method, path))
        if route is None and request.method == "HEAD":
            route = self.routes.get(("GET", path))
        for prefix, handle in self.prefix_routes if route is None else ():
            if path.startswith(prefix) and len(path) > len(prefix):
                route = functools.partial(handle, rest=path[len(prefix) :])
                break
        multipart = request.headers.get("content-type", "").startswith("multipart/")
        try:
            if route is None:
                self.not_found(ex)
            elif raw and body is None and request.method in ("POST", "DELETE") and not multipart:
                self.bad_json(ex)
            elif ex.faults.redirect is not None and self.chat_marker in path:
                where = ex.faults.redirect_to or f"{self.root_url}/moved{path}"
                ex.send(ex.faults.redirect, b"", None, headers={"Location": where})
            else:
                route(ex)
        except Aborted:
            handler.close_connection = True
        except (ConnectionError, OSError):
            handler.close_connection = True  # the client went away; nothing to answer
        except Exception as exc:  # a bug in a test server: make it loud, not a hang
            traceback.print_exc()
            handler.close_connection = True
            if not ex.responded:
                ex.send(500, dumps({"error": f"test server bug: {exc!r}"}))
        else:
            if not ex.responded:
                ex.send(500, b'{"error":"test server route sent no reply"}')
