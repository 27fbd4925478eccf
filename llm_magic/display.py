"""The live view a cell shows while answers stream in.

Workers call `update()` / `finish()` from their own threads. Those calls only store the text
under a short lock and, if no flush is pending, start a flusher thread; the flusher renders at
most every `interval` seconds, outside the lock, and publishes with `DisplayHandle.update` (the
one way to reach the right cell output from another thread). `close()` stops the flusher and
renders the final state itself, so the last state is never lost and no worker ever waits for
a render.

Single column + markdown: the text goes out as Markdown made safe by `html.safe_markdown`
(model text cannot inject HTML or script). Otherwise an escaped HTML grid (html.grid_html);
only fmt="html" renders model HTML as such. Without a frontend (plain terminal IPython, or no
IPython at all) nothing is displayed.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass
from typing import Any

from llm_magic import html
from llm_magic.errors import redact
from llm_magic.html import safe_markdown  # re-exported: api.Completion renders with it

__all__ = ["LiveView", "safe_markdown"]


@dataclass
class _Column:
    text: str = ""
    caption: str = ""
    error: str | None = None
    done: bool = False


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
        self._flusher: threading.Thread | None = None
        self._wake = threading.Event()  # set by close() to cut a flusher's wait short
        self._handle: Any = None  # IPython DisplayHandle once shown in a frontend

    # ---- what gets displayed -------------------------------------------------------------
    def _bundle(self, columns: list[_Column]) -> dict[str, str]:
        plain = "\n\n".join(
            f"[{label}]\n{redact(c.text)}" + (f"\nerror: {c.error}" if c.error else "")
            for label, c in zip(self.labels, columns, strict=True)
        )
        if len(columns) == 1 and self.fmt == "markdown":
            col = columns[0]
            md = html.safe_markdown(col.text)
            if col.error:
                md += (
                    '\n\n<div style="color:var(--jp-error-color1,#d9534f);font-weight:600">'
                    f"error: {html.escape(col.error)}</div>"
                )
            if col.done:
                caption = " · ".join(filter(None, [self.labels[0], col.caption]))
                md += f'\n\n<div style="font-size:11px;opacity:.7">{html.escape(caption)}</div>'
            return {"text/plain": plain, "text/markdown": md}
        # Answers under the same label (repeats of one target) stack in one column, tagged
        # #0, #1, ... as side_by_side() shows them: every target stays in view.
        heads = list(dict.fromkeys(self.labels))
        cells: dict[str, list[html.Entry]] = {head: [] for head in heads}
        stacked = len(heads) < len(self.labels)
        for label, c in zip(self.labels, columns, strict=True):
            tag = f"#{len(cells[label])}" if stacked else ""
            cells[label].append(html.Entry(c.text, c.caption, c.error, tag, pending=not c.done))
        row = [cells[head] for head in heads]
        return {
            "text/plain": plain,
            "text/html": html.grid_html(heads, [(None, row)], self.fmt),
        }

    def render(self) -> dict[str, str]:
        """The MIME bundle of the current state (what the next display update will send)."""
        return self._bundle(self._snapshot())

    def _snapshot(self) -> list[_Column]:
        with self._lock:
            return [_Column(c.text, c.caption, c.error, c.done) for c in self._columns]

    # ---- lifecycle -------------------------------------------------------------------------
    def show(self) -> None:
        """Display the initial (empty) view; a no-op without a frontend."""
        if self._handle is not None or not _has_frontend():
            return
        from IPython.display import display

        self._handle = display(self.render(), raw=True, display_id=True)
        self._last_render = time.monotonic()

    def update(self, index: int, text: str) -> None:
        """The full text of column `index` so far. Thread-safe, cheap, never renders itself."""
        with self._lock:
            column = self._columns[index]
            if column.done:
                return  # a late chunk must not undo finish()
            column.text = text
            self._poke()

    def finish(self, index: int, text: str, caption: str = "", error: str | None = None) -> None:
        """Column `index` is done: its final text, its caption ("0.84 s · 42 tok · ..."),
        and its error when it failed."""
        with self._lock:
            self._columns[index] = _Column(text, caption, error, done=True)
            self._poke()

    def close(self) -> None:
        """Stop the flusher and render the final state (always, unthrottled)."""
        with self._lock:
            self._closed = True
            flusher = self._flusher
        self._wake.set()
        if flusher is not None and flusher is not threading.current_thread():
            flusher.join()
        self._publish(self.render())

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
                    wait = self._last_render + self.interval - time.monotonic()
                if wait > 0 and self._wake.wait(wait):
                    return  # close() is joining us and renders the final state itself
                with self._lock:
                    self._dirty = False
                    self._last_render = time.monotonic()
                self._publish(self.render())
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
