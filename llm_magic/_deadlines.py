"""Row deadlines: one thread for the whole process cancels each request whose row's time is up
(--deadline: seconds in all, every attempt and retry included)."""

from __future__ import annotations

import heapq
import threading
import time

from .providers.base import CancelToken

__all__ = ["Armed", "Deadlines"]


class Armed:
    """One row's deadline: `is_set()` once it fired. Disarmed when the row ends, it lets go
    of the row's token (and the stream its closers hold) at once, not when the time is up."""

    __slots__ = ("fired", "token")

    def __init__(self, token: CancelToken) -> None:
        self.token: CancelToken | None = token
        self.fired = threading.Event()

    def is_set(self) -> bool:
        return self.fired.is_set()


class _Watch:
    """The one thread of the process that cancels requests whose row's time is up.

    Started on first use and kept: a thread per run cost a one-request complete() 0.4 ms. The
    entries of a run that has ended, and of rows that ended, are skipped, and swept out once
    they are half the heap: a run of 100,000 rows holds about as many as it has in flight.
    """

    def __init__(self) -> None:
        self._due: list[tuple[float, int, Deadlines, Armed]] = []
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._count = 0
        self._stale = 0

    def arm(self, at: float, owner: Deadlines, token: CancelToken) -> Armed:
        armed = Armed(token)
        with self._cond:
            self._count += 1
            heapq.heappush(self._due, (at, self._count, owner, armed))
            owner.armed += 1
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._watch, daemon=True, name="llm_magic-deadlines"
                )
                self._thread.start()
            self._cond.notify()
        return armed

    def disarm(self, armed: Armed) -> None:
        """The row has ended: its entry is stale."""
        with self._cond:
            if armed.token is not None:
                armed.token = None
                self._stale += 1
                self._sweep()

    def forget(self, owner: Deadlines) -> None:
        """`owner`'s run has ended: its entries are stale."""
        with self._cond:
            owner.closed = True
            self._stale += owner.armed
            self._sweep()

    def _sweep(self) -> None:
        """Drop the stale entries once they are half the heap (the lock held)."""
        if self._stale * 2 > len(self._due):
            self._due = [e for e in self._due if not e[2].closed and e[3].token is not None]
            heapq.heapify(self._due)
            self._stale = 0

    def _watch(self) -> None:
        while True:
            with self._cond:
                now = time.monotonic()
                due = []
                while self._due and self._due[0][0] <= now:
                    entry = heapq.heappop(self._due)
                    if entry[2].closed or entry[3].token is None:
                        self._stale = max(0, self._stale - 1)
                    else:
                        due.append(entry[3])
                if not due:
                    self._cond.wait(self._due[0][0] - now if self._due else None)
                    continue
            for armed in due:  # outside the lock: closing a stream may block
                token = armed.token
                if token is not None and not token.cancelled:
                    armed.fired.set()
                    token.cancel()


_WATCH = _Watch()


class Deadlines:
    """A run's deadlines, kept by the process's one watch thread until the run ends."""

    def __init__(self) -> None:
        self.armed = 0
        self.closed = False

    def arm(self, seconds: float, token: CancelToken) -> Armed:
        """Cancel `token` in `seconds`; what is returned `is_set()` if that happened."""
        return _WATCH.arm(time.monotonic() + seconds, self, token)

    def disarm(self, armed: Armed) -> None:
        """The row ended in time (or not): forget its deadline now."""
        _WATCH.disarm(armed)

    def close(self) -> None:
        _WATCH.forget(self)
