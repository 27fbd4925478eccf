"""One panel run as it streams: runner events in, column and status widgets out.

The runner calls `on_text` / `on_done` from its worker threads for every token; those calls
only store text under a lock. A ticker thread renders what changed at most every `interval`
seconds by assigning widget values (the thread-safe way to reach a widget; `with Output():`
from a thread would land in the wrong cell), and refreshes the elapsed time. Answers render as
Markdown (html.markdown_html) and stay bounded as in the magic's live view: at most
`STREAM_TAIL` characters each while the run goes on, the first `SHOWN_HEAD` at the end; an
answer that did not change is not rendered again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from . import _html as html
from ._panel_view import column_html, status_html
from ._records import RunRecord
from ._runner import Job
from ._view_text import SHOWN_HEAD, STREAM_TAIL, Tail, render_spacing

__all__ = ["LiveRun", "caption"]


def caption(record: RunRecord) -> str:
    text = html.caption_text(
        record.latency_s,
        record.completion_tokens,
        record.tokens_per_s,
        estimated=record.tokens_estimated,
        cached=record.cached,
    )
    if record.fallback_from:
        text += f" · after {record.fallback_from} failed"
    return text


@dataclass
class _Answer:
    tail: Tail = field(default_factory=Tail)  # the answer so far (all of it once done)
    record: RunRecord | None = None

    @property
    def state(self) -> str:
        if self.record is None:
            return "streaming" if self.tail.length else "waiting"
        if self.record.finish_reason == "interrupted":
            return "stopped"
        return "error" if self.record.error else "done"


class LiveRun:
    """Feeds one run into `columns` (one widget per target label) and `status`."""

    def __init__(
        self,
        jobs: Sequence[Job],
        labels: Sequence[str],
        columns: Sequence[Any],
        status: Any,
        interval: float = 0.1,
        fmt: str = "markdown",
    ) -> None:
        self.labels = list(labels)
        self.columns = list(columns)
        self.status = status
        self.interval = interval
        self._repeats = max((j.repeat for j in jobs), default=0) + 1
        self._answers = [[_Answer() for _ in range(self._repeats)] for _ in self.labels]
        self._slot = {j.index: (self.labels.index(j.spec.label), j.repeat) for j in jobs}
        self._lock = threading.Lock()
        self._dirty: set[int] = set(range(len(self.labels)))
        self._caches = [html.EntryCache(fmt) for _ in self.labels]
        self._final = False  # set by close(): the last render shows more of each answer
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self.started = time.monotonic()

    # ---- runner events (worker threads): store only ---------------------------------------
    def on_text(self, job: Job, piece: str) -> None:
        column, repeat = self._slot[job.index]
        with self._lock:
            answer = self._answers[column][repeat]
            if answer.record is None:  # a late chunk must not undo on_done
                answer.tail.append(piece)
                self._dirty.add(column)

    def on_done(self, job: Job, record: RunRecord) -> None:
        column, repeat = self._slot[job.index]
        with self._lock:
            self._answers[column][repeat] = _Answer(Tail(record.output), record)
            self._dirty.add(column)

    # ---- rendering --------------------------------------------------------------------------
    def column_states(self) -> list[str]:
        """Per column: streaming while any answer streams, else the worst final state."""
        with self._lock:
            states = [[a.state for a in answers] for answers in self._answers]
        out = []
        for column in states:
            for state in ("streaming", "waiting", "stopped", "error"):
                if state in column:
                    break
            else:
                state = "done"
            if state == "waiting" and any(s != "waiting" for s in column):
                state = "streaming"  # between two repeats: still at work
            out.append(state)
        return out

    def _entries(self, column: int) -> list[html.Entry]:
        """The column's answers as they stand (caller holds the lock)."""
        tagged = self._repeats > 1
        done_limit = SHOWN_HEAD if self._final else STREAM_TAIL
        entries = []
        for i, a in enumerate(self._answers[column]):
            r = a.record
            entries.append(
                html.Entry(
                    text=a.tail.text(),
                    caption=caption(r) if r is not None else "",
                    error=r.error if r is not None else None,
                    tag=f"run {i + 1}" if tagged else "",
                    pending=r is None,
                    limit=STREAM_TAIL if r is None else done_limit,
                    skipped=a.tail.skipped,
                )
            )
        return entries

    def render_status(self, phase: str, message: str | None = None) -> None:
        elapsed = time.monotonic() - self.started
        states = self.column_states()
        done = sum(s in ("done", "error", "stopped") for s in states)
        if message is None:
            message = f"{elapsed:.1f} s · {done}/{len(states)} targets finished"
        pairs = zip(self.labels, states, strict=True)
        chips = [(f"{label} · {state}", state) for label, state in pairs]
        self.status.value = status_html(phase, message, chips)

    def _flush(self) -> int:
        """Render the columns that changed; returns the characters sent."""
        with self._lock:  # only the snapshot under the lock: workers never wait for a render
            dirty, self._dirty = self._dirty, set()
            entries = {c: self._entries(c) for c in sorted(dirty)}
        sent = 0
        for c, answers in entries.items():
            self.columns[c].value = body = column_html(self.labels[c], answers, self._caches[c])
            sent += len(body)
        return sent

    def _tick(self) -> None:
        wait = self.interval
        while not self._stop.wait(wait):
            started = time.perf_counter()
            sent = self._flush()
            self.render_status("running")
            wait = render_spacing(self.interval, time.perf_counter() - started, sent)

    # ---- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        self._flush()
        self.render_status("running")
        self._ticker = threading.Thread(target=self._tick, daemon=True, name="llm-magic-panel")
        self._ticker.start()

    def close(self) -> float:
        """Stop the ticker and render the final columns; returns the elapsed seconds."""
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
        with self._lock:
            self._final = True
            self._dirty = set(range(len(self.labels)))
        self._flush()
        return time.monotonic() - self.started
