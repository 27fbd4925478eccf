"""A run's rows go to the run log as they finish, not all at the end.

`RunLog` sits between the runner and the view: it passes every event on, and writes finished
rows in small transactions (every `EVERY_ROWS` rows or `EVERY_S` seconds, whichever comes
first; one transaction per row would cost a disk sync each). The plan is written before the
first request, so a run the kernel never finished can be resumed from another kernel
(_resume.py). Nothing here ever raises for the log: a log that cannot be written is one line
on stderr, and the run goes on.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._records import RunRecord
from ._redaction import redact
from .errors import one_line

if TYPE_CHECKING:
    from ._plan import Plan
    from ._runner import Events, Job
    from .store import Store

__all__ = ["RunLog"]

EVERY_ROWS = 500
EVERY_S = 1.0


class RunLog:
    """Events that log each finished row (with its place in the plan) and forward to `view`."""

    def __init__(self, plan: Plan, view: Events | None) -> None:
        self._view = view
        self._max_chars = plan.policy.max_log_chars
        self._pending: list[tuple[int, RunRecord]] = []
        self._lock = threading.Lock()
        self._last = time.monotonic()
        self._closed = False
        self._store = _open_log()
        if self._store is not None:
            from ._resume import save

            _quietly(save, plan, self._store)

    def on_text(self, job: Job, piece: str) -> None:
        if self._view is not None:
            self._view.on_text(job, piece)

    def on_done(self, job: Job, record: RunRecord) -> None:
        if self._view is not None:
            self._view.on_done(job, record)
        if self._store is None:
            return
        with self._lock:
            self._pending.append((job.index, record))
            due = len(self._pending) >= EVERY_ROWS or time.monotonic() - self._last >= EVERY_S
            if not (due or self._closed):  # closed: a worker's late row, written at once
                return
            batch, self._pending, self._last = self._pending, [], time.monotonic()
        self._write(batch)

    def close(self) -> None:
        """Write the rows not written yet."""
        with self._lock:
            batch, self._pending, self._closed = self._pending, [], True
        if batch:
            self._write(batch)

    def _write(self, batch: list[tuple[int, RunRecord]]) -> None:
        assert self._store is not None
        batch.sort(key=lambda pair: pair[0])  # a run that fits one write is logged in plan order
        records = [record for _, record in batch]
        jobs = [index for index, _ in batch]
        _quietly(self._store.log, records, max_chars=self._max_chars, jobs=jobs)


def _open_log() -> Store | None:
    """The default store, unless the `log` setting is off (or the config cannot be read)."""
    from ._config import resolve_setting
    from .store import default_store

    try:
        return default_store() if resolve_setting("log").value else None
    except Exception as exc:  # a broken config file or path: the run itself still stands
        print(f"llm_magic: run log skipped: {one_line(redact(str(exc)))}", file=sys.stderr)
        return None


def _quietly(action: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    try:
        action(*args, **kwargs)
    except Exception as exc:  # the store reports its own failures; this is anything else
        print(f"llm_magic: run log skipped: {one_line(redact(str(exc)))}", file=sys.stderr)
