"""The runner's promises to its views and to the user's clock: every job reported once (those
an interrupt stopped before they started too), pieces not whole texts, a deadline per row, and
answers that UTF-8 can always hold. Scripted in-process providers: the runner is under test."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from llm_magic import _deadlines
from llm_magic._runner import Job, Policy, RunInterrupted, run_jobs
from llm_magic.errors import DeadlinePassed, ServerFailed
from llm_magic.providers.base import CancelToken, Chunk
from tests.test_runner import ScriptedProvider, job, words


class Heard:
    """Records what a view hears."""

    def __init__(self) -> None:
        self.pieces: dict[int, list[str]] = {}
        self.done: list[int] = []
        self.lock = threading.Lock()

    def on_text(self, job: Job, piece: str) -> None:
        with self.lock:
            self.pieces.setdefault(job.index, []).append(piece)

    def on_done(self, job: Job, record) -> None:
        with self.lock:
            self.done.append(job.index)


def blocked(n: int, cancel: CancelToken | None) -> Iterator[Chunk]:
    yield Chunk(text="begun ")
    assert cancel is not None
    cancel.wait(30)  # a blocked read, released only by cancel()


def drip(n: int, cancel: CancelToken | None) -> Iterator[Chunk]:
    """A byte now and then, forever: no read timeout ever fires."""
    while cancel is None or not cancel.cancelled:
        yield Chunk(text=".")
        if cancel is not None and cancel.wait(0.05):
            return


def test_views_hear_pieces_and_every_job_once() -> None:
    heard = Heard()
    p = ScriptedProvider("a", words("one two three"))
    records = run_jobs([job("a:m", 0), job("a:m", 1)], {"a": p}.__getitem__, Policy(), heard)
    assert heard.pieces[0] == ["one ", "two ", "three "]  # each piece once, never the sum
    assert sorted(heard.done) == [0, 1]
    assert [r.output for r in records] == ["one two three "] * 2


def test_an_interrupt_reports_the_jobs_that_never_started() -> None:
    heard = Heard()
    providers = {"a": ScriptedProvider("a", blocked)}
    jobs = [job("a:m", i) for i in range(5)]
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    with pytest.raises(RunInterrupted) as info:  # one worker: four jobs are still queued
        run_jobs(jobs, providers.__getitem__, Policy(concurrency=1), heard, stop=stop)
    assert sorted(heard.done) == [0, 1, 2, 3, 4]  # no column left at "waiting…"
    records = info.value.records
    assert records[0].output == "begun " and records[0].finish_reason == "interrupted"
    assert [r.error for r in records[1:]] == ["interrupted before it was sent"] * 4


def test_a_row_past_its_deadline_ends_and_keeps_its_text() -> None:
    providers = {"a": ScriptedProvider("a", drip), "b": ScriptedProvider("b", words("quick"))}
    started = time.monotonic()
    slow, quick = run_jobs(
        [job("a:m", 0), job("b:m", 1)], providers.__getitem__, Policy(deadline=0.5)
    )
    took = time.monotonic() - started
    assert 0.5 <= took < 5
    assert slow.finish_reason == "deadline" and slow.output.startswith("...")
    assert "deadline of 0.5 s passed" in slow.error and "--deadline" in slow.error
    assert isinstance(slow.failure, DeadlinePassed)
    assert quick.error is None and quick.output == "quick "


def test_the_deadline_counts_retries_and_their_waits() -> None:
    def failing(n: int, cancel: CancelToken | None) -> Iterator[Chunk]:
        raise ServerFailed("busy", status=503)
        yield Chunk()  # pragma: no cover - makes this a generator

    providers = {"a": ScriptedProvider("a", failing)}
    started = time.monotonic()
    (record,) = run_jobs(
        [job("a:m")], providers.__getitem__, Policy(retries=10, backoff_base=0.2, deadline=0.7)
    )
    assert time.monotonic() - started < 3  # ten retries with backoff would take far longer
    assert record.finish_reason == "deadline"
    assert "after" in record.error and "HTTP 503" in record.error  # why it was retrying


def test_a_deadline_does_not_try_the_next_link_of_a_chain() -> None:
    providers = {"a": ScriptedProvider("a", drip), "b": ScriptedProvider("b", words("late"))}
    (record,) = run_jobs([job("a:m|b:m")], providers.__getitem__, Policy(deadline=0.3))
    assert record.finish_reason == "deadline" and providers["b"].calls == 0


def test_one_deadline_thread_serves_every_run_and_ended_runs_leave_nothing() -> None:
    p = ScriptedProvider("a", words("x"))
    for _ in range(50):
        run_jobs([job("a:m"), job("a:m", 1)], {"a": p}.__getitem__, Policy(deadline=600))
    assert len([t for t in threading.enumerate() if t.name == "llm_magic-deadlines"]) == 1
    # 100 deadlines were armed, 600 s away, and every run has ended: they are swept, not kept
    # until they fall due (a long batch session would otherwise hold every job's token).
    assert len(_deadlines._WATCH._due) <= 2


def test_lone_surrogates_become_replacement_characters_with_a_note() -> None:
    def odd(n: int, cancel: CancelToken | None) -> Iterator[Chunk]:
        yield Chunk(text="a\ud800b ")  # legal JSON ("\\ud800"), not UTF-8
        yield Chunk(text="\ud83d")  # a pair split over two pieces is whole once joined
        yield Chunk(text="\ude00", finish_reason="stop")

    (record,) = run_jobs([job("a:m")], {"a": ScriptedProvider("a", odd)}.__getitem__, Policy())
    assert record.output == "a\ufffdb \U0001f600"
    assert record.error is None
    assert record.params["notes"] == ["1 character(s) UTF-8 cannot hold became U+FFFD"]
    record.output.encode("utf-8")  # the log, the cache and every view can take it
