"""Row deadlines: one thread for the whole process cancels each request whose row's time is up
(--deadline: seconds in all, every attempt and retry included)."""

from __future__ import annotations

import heapq
import threading
import time

from .providers.base import CancelToken

__all__ = ["Deadlines"]


class _Watch:
    """The one thread of the process that cancels requests whose row's time is up.

    Started on first use and kept: a thread per run cost a one-request complete() 0.4 ms. The
    entries of a run that has ended are skipped, and swept out once they are half the heap.
    """

    def __init__(self) -> None:
        self._due: list[tuple[float, int, Deadlines, CancelToken, threading.Event]] = []
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._count = 0
        self._stale = 0

    def arm(self, at: float, owner: Deadlines, token: CancelToken) -> threading.Event:
        fired = threading.Event()
        with self._cond:
            self._count += 1
            heapq.heappush(self._due, (at, self._count, owner, token, fired))
            owner.armed += 1
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._watch, daemon=True, name="llm_magic-deadlines"
                )
                self._thread.start()
            self._cond.notify()
        return fired

    def forget(self, owner: Deadlines) -> None:
        """`owner`'s run has ended: its entries are stale."""
        with self._cond:
            owner.closed = True
            self._stale += owner.armed
            if self._stale * 2 > len(self._due):
                self._due = [e for e in self._due if not e[2].closed]
                heapq.heapify(self._due)
                self._stale = 0

    def _watch(self) -> None:
        while True:
            with self._cond:
                now = time.monotonic()
                due = []
                while self._due and self._due[0][0] <= now:
                    entry = heapq.heappop(self._due)
                    if entry[2].closed:
                        self._stale = max(0, self._stale - 1)
                    else:
                        due.append(entry)
                if not due:
                    self._cond.wait(self._due[0][0] - now if self._due else None)
                    continue
            for _, _, _, token, fired in due:  # outside the lock: closing a stream may block
                if not token.cancelled:
                    fired.set()
                    token.cancel()


_WATCH = _Watch()


class Deadlines:
    """A run's deadlines, kept by the process's one watch thread until the run ends."""

    def __init__(self) -> None:
        self.armed = 0
        self.closed = False

    def arm(self, seconds: float, token: CancelToken) -> threading.Event:
        """Cancel `token` in `seconds`; the event returned is set if that happened."""
        return _WATCH.arm(time.monotonic() + seconds, self, token)

    def close(self) -> None:
        _WATCH.forget(self)
