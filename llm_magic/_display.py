"""The live view a cell shows while answers stream in.

Workers call `append()` (or `update()`) and `finish()` from their own threads. Those calls only
store the text under a short lock and, if no flush is pending, start a flusher thread; the
flusher renders at most every `interval` seconds, outside the lock, and publishes with
`DisplayHandle.update` (the one way to reach the right cell output from another thread).
`close()` stops the flusher and renders the final state itself, so the last state is never
lost and no worker ever waits for a render.

What goes out stays bounded whatever the answers' length: while the run goes on, every answer
shows at most `view_text.STREAM_TAIL` characters (the newest of one that streams, the first of
one that is done), and an answer that did not change is not rendered again (html.EntryCache);
the final view shows the first `view_text.SHOWN_HEAD` characters of each. A large or costly
view also waits longer between updates (view_text.render_spacing).

A single column in Markdown is one answer rendered as Markdown (html.markdown_html: no HTML or
script from the model); otherwise an escaped HTML grid (html.grid_html); only fmt="html"
renders model HTML as such. The text/plain twin shows the same excerpts, controls made
visible. Without a frontend (plain terminal IPython, or no IPython at all) nothing is
displayed.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from llm_magic import _html as html
from llm_magic._view_text import (
    SHOWN_HEAD,
    STREAM_TAIL,
    Tail,
    excerpt,
    render_spacing,
    visible,
)

__all__ = ["LiveView"]


@dataclass
class _Column:
    tail: Tail = field(default_factory=Tail)  # the answer so far (all of it once done)
    caption: str = ""
    error: str | None = None
    done: bool = False


@dataclass(frozen=True)
class _State:
    """A column as one render sees it, copied under the lock."""

    text: str
    skipped: int
    caption: str
    error: str | None
    done: bool


def _has_frontend() -> bool:
    """True inside a kernel (or any shell whose display publisher is not the terminal's, which
    would just print `<HTML object>` for every update)."""
    try:
        from IPython.core.displaypub import DisplayPublisher
        from IPython.core.interactiveshell import InteractiveShell
    except ImportError:  # pragma: no cover - IPython is a dependency
        return False
    if not InteractiveShell.initialized():
        return False
    return type(InteractiveShell.instance().display_pub) is not DisplayPublisher


class LiveView:
    """One live column per label; see the module docstring for the threading contract."""

    def __init__(self, labels: list[str], fmt: str = "markdown", *, interval: float = 0.1) -> None:
        if not labels:
            raise ValueError("LiveView needs at least one label")
        self.labels = list(labels)
        self.fmt = html.check_format(fmt)
        self.interval = interval
        self._columns = [_Column() for _ in self.labels]
        self._lock = threading.Lock()
        self._dirty = False
        self._closed = False
        self._last_render = 0.0
        self._last_size = 0  # characters of the last update sent
        self._last_cost = 0.0  # seconds the last render took
        self._flusher: threading.Thread | None = None
        self._wake = threading.Event()  # set by close() to cut a flusher's wait short
        self._handle: Any = None  # IPython DisplayHandle once shown in a frontend
        self._cache = html.EntryCache(self.fmt)

    # ---- what gets displayed -------------------------------------------------------------
    def _plain(self, label: str, column: _State, limit: int) -> str:
        shown = excerpt(
            column.text, streaming=not column.done, limit=limit, skipped=column.skipped
        )
        error = f"\nerror: {visible(column.error)}" if column.error else ""
        return f"[{visible(label)}]\n{shown.plain()}{error}"

    def _bundle(self, columns: list[_State], final: bool) -> dict[str, str]:
        # The final view shows more of each finished answer; until then every answer is held
        # to the streaming bound, so each update stays small however many answers are done.
        head = SHOWN_HEAD if final else STREAM_TAIL

        def limit(c: _State) -> int:
            return head if c.done else STREAM_TAIL

        def entry(c: _State, tag: str = "", caption: str = "") -> html.Entry:
            caption = caption or c.caption
            return html.Entry(c.text, caption, c.error, tag, not c.done, limit(c), c.skipped)

        plain = "\n\n".join(
            self._plain(label, c, limit(c)) for label, c in zip(self.labels, columns, strict=True)
        )
        if len(columns) == 1 and self.fmt == "markdown":
            col = columns[0]
            caption = " · ".join(filter(None, [self.labels[0], col.caption])) if col.done else ""
            page = html.answer_html(entry(col, caption=caption), cache=self._cache)
            return {"text/plain": plain, "text/html": page}
        # Answers under the same label (repeats of one target) stack in one column, tagged
        # #0, #1, ... as side_by_side() shows them: every target stays in view.
        heads = list(dict.fromkeys(self.labels))
        cells: dict[str, list[html.Entry]] = {head: [] for head in heads}
        stacked = len(heads) < len(self.labels)
        for label, c in zip(self.labels, columns, strict=True):
            cells[label].append(entry(c, tag=f"#{len(cells[label])}" if stacked else ""))
        row = [cells[head] for head in heads]
        page = html.grid_html(heads, [(None, row)], self.fmt, self._cache)
        return {"text/plain": plain, "text/html": page}

    def render(self, final: bool = False) -> dict[str, str]:
        """The MIME bundle of the current state (what the next display update will send);
        `final`: as close() shows it, with more of each finished answer."""
        return self._bundle(self._snapshot(), final)

    def _snapshot(self) -> list[_State]:
        with self._lock:
            return [
                _State(c.tail.text(), c.tail.skipped, c.caption, c.error, c.done)
                for c in self._columns
            ]

    # ---- lifecycle -------------------------------------------------------------------------
    def show(self) -> None:
        """Display the initial (empty) view; a no-op without a frontend."""
        if self._handle is not None or not _has_frontend():
            return
        from IPython.display import display

        self._handle = display(self.render(), raw=True, display_id=True)
        self._last_render = time.monotonic()

    def append(self, index: int, piece: str) -> None:
        """The next piece of column `index`'s answer. Thread-safe, cheap (the view keeps only
        the newest characters), never renders itself."""
        with self._lock:
            column = self._columns[index]
            if column.done:
                return  # a late chunk must not undo finish()
            column.tail.append(piece)
            self._poke()

    def update(self, index: int, text: str) -> None:
        """The full text of column `index` so far, instead of pieces. Thread-safe, cheap."""
        with self._lock:
            column = self._columns[index]
            if column.done:
                return
            column.tail = Tail(text)
            self._poke()

    def finish(self, index: int, text: str, caption: str = "", error: str | None = None) -> None:
        """Column `index` is done: its final text, its caption ("0.84 s · 42 tok · ..."),
        and its error when it failed."""
        with self._lock:
            self._columns[index] = _Column(Tail(text), caption, error, done=True)
            self._poke()

    def close(self) -> None:
        """Stop the flusher and render the final state (always, unthrottled)."""
        with self._lock:
            self._closed = True
            flusher = self._flusher
        self._wake.set()
        if flusher is not None and flusher is not threading.current_thread():
            flusher.join()
        self._publish(self.render(final=True))

    def __enter__(self) -> LiveView:
        self.show()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- throttled rendering ------------------------------------------------------------
    def _poke(self) -> None:
        """Mark the view dirty and make sure a flusher will pick it up. Caller holds the lock."""
        self._dirty = True
        if self._flusher is None and not self._closed and self._handle is not None:
            self._flusher = threading.Thread(
                target=self._flush_loop, name="llm-magic-live", daemon=True
            )
            self._flusher.start()

    def _flush_loop(self) -> None:
        me = threading.current_thread()
        try:
            while True:
                with self._lock:
                    # deciding to stop and unregistering happen under one lock, so an update
                    # racing with the exit always finds no flusher and starts a new one
                    if not self._dirty or self._closed:
                        self._flusher = None
                        return
                    spacing = render_spacing(self.interval, self._last_cost, self._last_size)
                    wait = self._last_render + spacing - time.monotonic()
                if wait > 0 and self._wake.wait(wait):
                    return  # close() is joining us and renders the final state itself
                with self._lock:
                    self._dirty = False
                    self._last_render = time.monotonic()
                started = time.perf_counter()
                bundle = self.render()
                self._last_cost = time.perf_counter() - started
                self._last_size = sum(map(len, bundle.values()))
                self._publish(bundle)
        finally:
            with self._lock:
                if self._flusher is me:
                    self._flusher = None

    def _publish(self, bundle: dict[str, str]) -> None:
        if self._handle is None:
            return
        # a display hiccup (frontend gone, kernel shutting down) must never fail a run
        with contextlib.suppress(Exception):
            self._handle.update(bundle, raw=True)
