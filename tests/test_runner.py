"""The runner: timing, token accounting, retries, fallbacks, isolation of failures, cancellation.

The providers here are scripted in-process doubles (the runner is what is under test); the real
providers are exercised against loopback servers in test_magic.py and the provider tests.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

from llm_magic._accounting import estimate_tokens
from llm_magic._runner import Job, Policy, RunInterrupted, run_jobs
from llm_magic._targets import Target, TargetSpec
from llm_magic.errors import ConnectFailed, ProviderError, RateLimited, ServerFailed, StreamBroken
from llm_magic.providers.base import CancelToken, Chunk, Message, Options, Usage

Script = Callable[[int, CancelToken | None], Iterator[Chunk]]


class ScriptedProvider:
    """A provider whose n-th call runs script(n, cancel)."""

    base_url = None

    def __init__(self, name: str, script: Script) -> None:
        self.name = name
        self.script = script
        self.calls = 0
        self.lock = threading.Lock()

    def stream(self, messages, model, options, cancel=None):
        with self.lock:
            n = self.calls
            self.calls += 1
        return self.script(n, cancel)

    def list_models(self):
        return []

    def health(self):
        raise NotImplementedError


def words(text: str, delay: float = 0.0, usage: Usage | None = None) -> Script:
    def script(n: int, cancel: CancelToken | None) -> Iterator[Chunk]:
        for word in text.split(" "):
            if delay:
                time.sleep(delay)
            yield Chunk(text=word + " ")
        yield Chunk(finish_reason="stop", usage=usage)

    return script


def job(spec: str, index: int = 0, options: Options = Options()) -> Job:
    chain = tuple(Target(*link.split(":", 1)) for link in spec.split("|"))
    return Job(index, "hi there", (Message("user", "hi there"),), TargetSpec(chain, spec), options)


def run(jobs: list[Job], providers: dict[str, ScriptedProvider], **policy) -> list:
    policy.setdefault("backoff_base", 0.01)
    return run_jobs(jobs, providers.__getitem__, Policy(**policy))


def test_timing_and_reported_usage_are_recorded() -> None:
    p = ScriptedProvider("a", words("one two three", delay=0.05, usage=Usage(7, 3)))
    (rec,) = run([job("a:m")], {"a": p})
    assert rec.output == "one two three "
    assert rec.error is None and rec.finish_reason == "stop"
    assert 0.04 <= rec.ttft_s < rec.latency_s
    assert rec.latency_s >= 0.15
    assert (rec.prompt_tokens, rec.completion_tokens, rec.total_tokens) == (7, 3, 10)
    assert rec.tokens_estimated is False
    assert rec.tokens_per_s == pytest.approx(3 / (rec.latency_s - rec.ttft_s))
    assert rec.started_at is not None and rec.started_at.tzinfo is not None


def test_an_answer_in_one_piece_is_rated_over_its_whole_latency() -> None:
    def buffered(n: int, cancel: CancelToken | None) -> Iterator[Chunk]:
        time.sleep(0.1)  # the server generates, then sends everything at once
        yield Chunk(text="fifty tokens of text", usage=Usage(5, 50), finish_reason="stop")

    (rec,) = run([job("a:m")], {"a": ScriptedProvider("a", buffered)})
    assert rec.ttft_s is not None and rec.latency_s - rec.ttft_s < 0.01  # nothing to divide by
    assert rec.tokens_per_s == pytest.approx(50 / rec.latency_s)  # not 50 / (almost zero)
    assert rec.tokens_per_s < 600


def test_missing_usage_is_estimated_and_flagged() -> None:
    p = ScriptedProvider("a", words("x" * 40))
    (rec,) = run([job("a:m")], {"a": p})
    assert rec.tokens_estimated is True
    assert rec.completion_tokens == estimate_tokens("x" * 40 + " ") == 10
    assert rec.prompt_tokens == estimate_tokens("hi there")


def test_targets_run_concurrently() -> None:
    providers = {n: ScriptedProvider(n, words("a b", delay=0.2)) for n in "abcd"}
    start = time.perf_counter()
    records = run([job(f"{n}:m", i) for i, n in enumerate("abcd")], providers)
    wall = time.perf_counter() - start
    assert [r.provider for r in records] == list("abcd")
    assert wall < 4 * 0.4  # sequential would need 1.6 s; concurrent about 0.4 s


def test_a_failing_target_keeps_the_other_rows() -> None:
    def broken(n: int, cancel: CancelToken | None) -> Iterator[Chunk]:
        raise ServerFailed("boom", provider="bad", status=500)
        yield Chunk()

    providers = {
        "good": ScriptedProvider("good", words("fine")),
        "bad": ScriptedProvider("bad", broken),
    }
    good, bad = run([job("good:m", 0), job("bad:m", 1)], providers, retries=0)
    assert good.output == "fine " and good.error is None
    assert bad.error == "bad: HTTP 500: boom" and bad.finish_reason == "error"
    assert bad.output == "" and bad.completion_tokens is None


def test_retryable_errors_are_retried_then_succeed() -> None:
    def flaky(n: int, cancel: CancelToken | None) -> Iterator[Chunk]:
        if n < 2:
            raise ServerFailed("try later", provider="a", status=503)
        yield from words("ok")(n, cancel)

    p = ScriptedProvider("a", flaky)
    (rec,) = run([job("a:m")], {"a": p}, retries=2)
    assert rec.output == "ok " and rec.error is None and p.calls == 3


def test_retries_stop_at_the_limit() -> None:
    def down(n: int, cancel: CancelToken | None) -> Iterator[Chunk]:
        raise ConnectFailed("refused", provider="a")
        yield Chunk()

    p = ScriptedProvider("a", down)
    (rec,) = run([job("a:m")], {"a": p}, retries=3)
    assert p.calls == 4 and rec.error == "a: refused (after 4 attempts)"


def test_a_retry_after_beyond_the_cap_is_not_waited_for_nor_ignored() -> None:
    def limited(n: int, cancel: CancelToken | None) -> Iterator[Chunk]:
        raise RateLimited("slow down", provider="a", status=429, retry_after=3600)
        yield Chunk()

    p = ScriptedProvider("a", limited)
    (rec,) = run([job("a:m")], {"a": p}, retries=2)
    assert p.calls == 1  # asking again before the hour is up would only be refused
    assert (
        rec.error
        == "a: HTTP 429: slow down (Retry-After 3600 s is longer than the 60 s llm_magic waits)"
    )


def test_client_errors_are_not_retried() -> None:
    def unauthorized(n: int, cancel: CancelToken | None) -> Iterator[Chunk]:
        raise ProviderError("no API key: set X_API_KEY", provider="a")
        yield Chunk()

    p = ScriptedProvider("a", unauthorized)
    (rec,) = run([job("a:m")], {"a": p}, retries=2)
    assert p.calls == 1 and "X_API_KEY" in rec.error


def test_retry_after_is_honoured() -> None:
    def limited(n: int, cancel: CancelToken | None) -> Iterator[Chunk]:
        if n == 0:
            raise RateLimited("slow down", provider="a", status=429, retry_after=0.3)
        yield from words("ok")(n, cancel)

    p = ScriptedProvider("a", limited)
    start = time.perf_counter()
    (rec,) = run([job("a:m")], {"a": p}, retries=1)
    assert rec.output == "ok " and time.perf_counter() - start >= 0.3


def test_a_stream_broken_midway_keeps_its_text_and_is_not_retried() -> None:
    def cut(n: int, cancel: CancelToken | None) -> Iterator[Chunk]:
        yield Chunk(text="partial ")
        raise StreamBroken("connection closed mid-stream", provider="a")

    p = ScriptedProvider("a", cut)
    (rec,) = run([job("a:m")], {"a": p}, retries=2)
    assert rec.output == "partial " and "mid-stream" in rec.error and p.calls == 1
    assert rec.tokens_estimated and rec.completion_tokens == estimate_tokens("partial ")


def test_fallback_chain_records_which_target_failed() -> None:
    def down(n: int, cancel: CancelToken | None) -> Iterator[Chunk]:
        raise ConnectFailed("refused", provider="a")
        yield Chunk()

    providers = {"a": ScriptedProvider("a", down), "b": ScriptedProvider("b", words("from b"))}
    (rec,) = run([job("a:m1|b:m2")], providers, retries=0)
    assert rec.target == "b:m2" and rec.output == "from b " and rec.error is None
    assert rec.fallback_from == "a:m1"


def test_fallback_chain_all_failing_reports_every_links_error() -> None:
    def down(name: str) -> Script:
        def script(n: int, cancel: CancelToken | None) -> Iterator[Chunk]:
            raise ConnectFailed("refused", provider=name)
            yield Chunk()

        return script

    providers = {"a": ScriptedProvider("a", down("a")), "b": ScriptedProvider("b", down("b"))}
    (rec,) = run([job("a:m|b:m")], providers, retries=0)
    assert rec.target == "b:m" and rec.fallback_from == "a:m"
    assert rec.error == "a: refused; b: refused"  # one line, why each link failed

    def stalls(n: int, cancel: CancelToken | None) -> Iterator[Chunk]:
        assert cancel is not None
        cancel.wait(30)
        yield Chunk(text="never")

    providers["c"] = ScriptedProvider("c", stalls)
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()  # the third link is interrupted, not failed
    with pytest.raises(RunInterrupted) as info:
        run_jobs([job("a:m|b:m|c:m")], providers.__getitem__, Policy(retries=0), stop=stop)
    (rec,) = info.value.records
    assert rec.target == "c:m" and rec.finish_reason == "interrupted"
    assert rec.error.startswith("interrupted") and rec.fallback_from == "a:m|b:m"


def test_a_provider_bug_becomes_an_error_row() -> None:
    def buggy(n: int, cancel: CancelToken | None) -> Iterator[Chunk]:
        raise KeyError("oops")
        yield Chunk()

    (rec,) = run([job("a:m")], {"a": ScriptedProvider("a", buggy)})
    assert rec.error is not None and "KeyError" in rec.error


def test_interrupt_cancels_in_flight_requests_and_keeps_rows(interrupt_main) -> None:
    started, quick_done = threading.Event(), threading.Event()

    def slow(n: int, cancel: CancelToken | None) -> Iterator[Chunk]:
        yield Chunk(text="begun ")
        started.set()
        assert cancel is not None
        cancel.wait(30)  # a blocked read, released only by cancel()
        yield Chunk(text="never")

    def quick(n: int, cancel: CancelToken | None) -> Iterator[Chunk]:
        yield Chunk(text="quick")
        quick_done.set()

    def late(n: int, cancel: CancelToken | None) -> Iterator[Chunk]:
        yield Chunk(text="should not run")

    providers = {
        "a": ScriptedProvider("a", quick),
        "b": ScriptedProvider("b", slow),
        "c": ScriptedProvider("c", late),
    }
    # Deliver KeyboardInterrupt to the main thread once a request is in flight, as Jupyter does.
    def interrupt() -> None:
        started.wait(5)
        quick_done.wait(5)
        interrupt_main()

    threading.Thread(target=interrupt).start()
    start = time.perf_counter()
    with pytest.raises(RunInterrupted) as info:
        # One worker: the third job waits behind the blocked second one and is never sent.
        run([job("a:m", 0), job("b:m", 1), job("c:m", 2)], providers, concurrency=1)
    assert time.perf_counter() - start < 5
    a, b, c = info.value.records
    assert a.output == "quick" and a.error is None
    assert b.finish_reason == "interrupted" and b.output == "begun "
    assert c.finish_reason == "interrupted" and c.output == "" and providers["c"].calls == 0
    time.sleep(0.2)
    # Every worker has ended; the process's one deadline watch thread stays (it is shared).
    workers = [t for t in threading.enumerate() if t.name.startswith("llm_magic")]
    assert [t.name for t in workers] in ([], ["llm_magic-deadlines"])


def test_jobs_beyond_concurrency_wait_their_turn() -> None:
    active = 0
    peak = 0
    lock = threading.Lock()

    def counted(n: int, cancel: CancelToken | None) -> Iterator[Chunk]:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        time.sleep(0.05)
        with lock:
            active -= 1
        yield Chunk(text="x")

    p = ScriptedProvider("a", counted)
    records = run([job("a:m", i) for i in range(12)], {"a": p}, concurrency=3)
    assert len(records) == 12 and peak == 3


def test_a_stop_during_a_retry_wait_keeps_the_reason_it_was_waiting() -> None:
    def down(n: int, cancel: CancelToken | None) -> Iterator[Chunk]:
        raise ConnectFailed("cannot connect: refused", provider="a")
        yield Chunk()

    providers = {"a": ScriptedProvider("a", down)}
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()  # Stop pressed while the job waits to retry
    with pytest.raises(RunInterrupted) as info:
        run_jobs([job("a:m")], providers.__getitem__, Policy(backoff_base=5.0), stop=stop)
    (rec,) = info.value.records
    assert rec.finish_reason == "interrupted"
    assert rec.error == "interrupted while waiting to retry after: a: cannot connect: refused"


def test_stop_event_cancels_a_run_on_another_thread() -> None:
    """A widget's Stop button: the run is on a background thread, no KeyboardInterrupt there."""
    started = threading.Event()

    def slow(n: int, cancel: CancelToken | None) -> Iterator[Chunk]:
        yield Chunk(text="begun ")
        started.set()
        assert cancel is not None
        cancel.wait(30)  # a blocked read, released only by cancel()
        yield Chunk(text="never")

    quick_done = threading.Event()

    class Done:  # tells the test when job a's record is final
        def on_text(self, job: Job, text: str) -> None:
            pass

        def on_done(self, job: Job, record) -> None:
            if job.index == 0:
                quick_done.set()

    providers = {"a": ScriptedProvider("a", words("fine")), "b": ScriptedProvider("b", slow)}
    stop = threading.Event()
    outcome: list[BaseException | list] = []

    def background() -> None:
        try:
            outcome.append(
                run_jobs(
                    [job("a:m", 0), job("b:m", 1)],
                    providers.__getitem__,
                    Policy(),
                    Done(),
                    stop=stop,
                )
            )
        except RunInterrupted as exc:
            outcome.append(exc)

    runner = threading.Thread(target=background)
    runner.start()
    assert started.wait(5) and quick_done.wait(5)
    stop.set()
    runner.join(10)
    assert not runner.is_alive()
    (result,) = outcome
    assert isinstance(result, RunInterrupted)
    a, b = result.records
    assert a.output == "fine " and a.error is None
    assert b.finish_reason == "interrupted" and b.output == "begun "


def test_a_limited_provider_queues_before_the_clock_starts() -> None:
    p = ScriptedProvider("local", words("a b", delay=0.1))
    records = run([job("local:m", i) for i in range(3)], {"local": p}, limits={"local": 1})
    # Each answer takes ~0.2 s; waiting for the limit must not count as latency.
    assert all(r.latency_s < 0.35 for r in records)
    starts = sorted(r.started_at for r in records)
    assert (starts[2] - starts[0]).total_seconds() >= 0.35  # they really ran one at a time


class SlowToPrepare(ScriptedProvider):
    """Loads something before it can answer (the embedded backend loads its model file)."""

    def prepare(self, model: str) -> None:
        time.sleep(0.3)


def test_start_up_is_not_timed_as_latency() -> None:
    providers = {
        "a": SlowToPrepare("a", words("x")),
        "b": ScriptedProvider("b", words("y z", delay=0.05)),
    }
    built: list[str] = []

    def slow_registry(name: str) -> ScriptedProvider:  # building one takes 0.3 s, as an import
        if name not in built:
            time.sleep(0.3)
            built.append(name)
        return providers[name]

    records = run_jobs([job("a:m", 0), job("b:m", 1)], slow_registry, Policy())
    assert built == ["a", "b"]  # each built once, before the run's first request
    assert [r.error for r in records] == [None, None]
    assert all(r.latency_s < 0.25 for r in records), [r.latency_s for r in records]


def test_an_interrupt_while_providers_are_built_keeps_every_row() -> None:
    def interrupted_import(name: str) -> ScriptedProvider:
        raise KeyboardInterrupt  # Ctrl-C during the first `import openai` of a session

    with pytest.raises(RunInterrupted) as info:
        run_jobs([job("a:m", 0), job("b:m", 1)], interrupted_import, Policy())
    records = info.value.records
    assert [r.target for r in records] == ["a:m", "b:m"]
    assert all(r.finish_reason == "interrupted" for r in records)


def test_the_embedded_model_is_limited_to_one_request_by_default() -> None:
    from llm_magic._plan import make_plan
    from llm_magic._request import Request
    from llm_magic._session import Session

    assert make_plan(Request(("Hi",)), Session()).policy.limits["local"] == 1
