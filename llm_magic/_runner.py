"""Concurrent fan-out: every job on a worker thread, timed the same way for every provider.

The main thread only waits, in short steps, so a KeyboardInterrupt reaches it at once; it then
cancels every job's CancelToken, which closes the streams the workers are blocked in.
"""

from __future__ import annotations

import contextlib
import random
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Protocol

from ._accounting import account, estimate_tokens
from ._deadlines import Armed, Deadlines
from ._images import fetched
from ._records import RunRecord
from ._redaction import Redactor, redact, redact_url
from ._targets import Target, TargetSpec
from ._utf8 import utf8_safe
from .errors import (
    Cancelled,
    DeadlinePassed,
    LLMMagicError,
    ProviderError,
    RunInterrupted,
    StreamBroken,
    one_line,
)
from .providers.base import CancelToken, Chunk, Message, Options, Provider, Usage

if TYPE_CHECKING:
    from ._tool_loop import ToolSteps
    from ._tools import ToolBox

__all__ = [
    "Events",
    "Job",
    "Policy",
    "RunInterrupted",
    "new_run_id",
    "run_jobs",
]


@dataclass(frozen=True, slots=True)  # a run may plan 100,000 of these
class Job:
    index: int
    prompt: str  # the rendered user prompt, as recorded
    messages: tuple[Message, ...]
    spec: TargetSpec
    options: Options
    repeat: int = 0
    prompt_no: int = 0  # which of the run's prompts (two --over items may render the same text)
    tools: ToolBox | None = None  # the run's tools (their specs are in options.tools)
    texts: tuple[str, ...] = ()  # when set, ask for these texts' embeddings, not an answer


@dataclass(frozen=True)
class Policy:
    retries: int = 2
    concurrency: int = 8
    limits: Mapping[str, int] = field(default_factory=dict)  # per-provider requests in flight
    backoff_base: float = 0.5
    backoff_max: float = 8.0
    retry_after_max: float = 60.0
    prices: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    cache: bool = False  # serve repeated requests from the response cache (store.py)
    deadline: float | None = None  # seconds in all for one row, retries included
    max_log_chars: int | None = None  # an answer longer is not cached (None: the setting's)


class Events(Protocol):
    """What a view hears of a run, from the worker threads.

    `on_text` gets each new piece of an answer (never the whole text again: a long answer
    would cost quadratic time); `on_done` comes exactly once per job, with its final row, for
    jobs an interrupt stopped before they started too.
    """

    def on_text(self, job: Job, piece: str) -> None: ...

    def on_done(self, job: Job, record: RunRecord) -> None: ...


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


class _Interrupted(Exception):
    pass


def run_jobs(
    jobs: Sequence[Job],
    get_provider: Callable[[str], Provider],
    policy: Policy = Policy(),
    events: Events | None = None,
    run_id: str | None = None,
    stop: threading.Event | None = None,
) -> list[RunRecord]:
    """Run every job concurrently; return one record per job, in job order.

    A failing job never loses the others. On KeyboardInterrupt every request in flight is
    cancelled, the records so far are kept (finish_reason "interrupted") and the interrupt is
    raised again as `RunInterrupted` carrying them. Setting `stop` from another thread (a
    widget's Stop button, when the run itself is on a background thread) does the same.
    """
    run_id = run_id or new_run_id()
    get_provider = _resolved_once(get_provider)
    limits = {name: threading.BoundedSemaphore(n) for name, n in policy.limits.items() if n > 0}
    workers = max(1, min(policy.concurrency, len(jobs)))
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="llm_magic")
    deadlines = Deadlines()
    run = _Run(run_id, get_provider, policy, events, limits, deadlines)
    rows = _Rows(jobs, events)
    started = _Started(len(jobs))
    clean = Redactor()

    def work() -> None:
        # Each worker takes the next job until none is left: a token and a pending task exist
        # only for the jobs in flight, so a run of 100,000 rows costs no more to hold than 16.
        while (taken := started.take()) is not None:
            i, token = taken
            record = None
            try:
                record = _run_one(jobs[i], run, token)
                record.output = clean(record.output)  # a model or proxy may echo the key sent
            except Exception:  # noqa: BLE001 - a bug: the row says so below, the worker goes on
                record = None
            finally:
                started.end(i)
                rows.report(i, record or _interrupted_record(jobs[i], run_id))

    try:
        # Inside the try: an interrupt during a first SDK import still leaves every row.
        _build_providers(get_provider, jobs)
        for _ in range(workers):
            pool.submit(work)
        # Short waits keep the main thread responsive to KeyboardInterrupt.
        while not rows.wait(0.05):
            if stop is not None and stop.is_set():
                raise KeyboardInterrupt  # a stop request takes the interrupt's path below
    except KeyboardInterrupt:
        started.cancel()  # first, so no further job starts; closes the streams in flight
        # Started jobs end promptly once their stream is closed. The wait runs on a helper
        # thread so a provider that ignores cancel cannot hang us.
        closer = threading.Thread(target=pool.shutdown, kwargs={"cancel_futures": True})
        closer.start()
        closer.join(timeout=2.0)
        raise RunInterrupted(rows.finish(lambda job: _interrupted_record(job, run_id))) from None
    finally:
        pool.shutdown(wait=False)
        deadlines.close()
    return rows.finish(lambda job: _interrupted_record(job, run_id))


class _Started:
    """Hands out job numbers in order, each with its CancelToken, and holds the tokens of the
    jobs in flight only; `cancel()` cancels those and lets no further job start."""

    def __init__(self, count: int) -> None:
        self._count = count
        self._next = 0
        self._tokens: dict[int, CancelToken] = {}
        self._cancelled = False
        self._lock = threading.Lock()

    def take(self) -> tuple[int, CancelToken] | None:
        with self._lock:
            if self._cancelled or self._next >= self._count:
                return None
            i, self._next = self._next, self._next + 1
            token = self._tokens[i] = CancelToken()
            return i, token

    def end(self, i: int) -> None:
        with self._lock:
            self._tokens.pop(i, None)

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = True
            tokens = list(self._tokens.values())
        for token in tokens:
            token.cancel()


class _Rows:
    """One record per job, each reported to the events exactly once, whoever ends it first:
    its worker, or the interrupt that stopped it before it started (or in a stuck read)."""

    def __init__(self, jobs: Sequence[Job], events: Events | None) -> None:
        self._jobs = jobs
        self._events = events
        self._records: list[RunRecord | None] = [None] * len(jobs)
        self._lock = threading.Lock()
        # One counter and one event, not futures.wait(): that re-arms a waiter on every
        # pending future each time it wakes, which costs real time on a run of thousands.
        self._left = len(jobs)
        self._done = threading.Event()
        if not jobs:
            self._done.set()

    def report(self, i: int, record: RunRecord) -> None:
        with self._lock:
            if self._records[i] is not None:
                return  # the interrupt has already reported this row
            self._records[i] = record
        if self._events is not None:
            self._events.on_done(self._jobs[i], record)
        with self._lock:  # counted once heard: the run ends after its last row's on_done
            self._left -= 1
            if self._left == 0:
                self._done.set()

    def wait(self, timeout: float) -> bool:
        return self._done.wait(timeout)

    def finish(self, missing: Callable[[Job], RunRecord]) -> list[RunRecord]:
        """Every row, in job order; jobs not ended yet get (and report) `missing(job)`."""
        for i, job in enumerate(self._jobs):
            if self._records[i] is None:
                self.report(i, missing(job))
        return [r for r in self._records if r is not None]


def _resolved_once(get_provider: Callable[[str], Provider]) -> Callable[[str], Provider]:
    """Each provider looked up once per run: the registry stats the config file and takes a
    lock on every call, which 16 busy threads then queue on."""
    found: dict[str, Provider] = {}

    def lookup(name: str) -> Provider:
        provider = found.get(name)
        if provider is None:  # a race looks it up twice and gets the same shared instance
            provider = found[name] = get_provider(name)
        return provider

    return lookup


def _build_providers(get_provider: Callable[[str], Provider], jobs: Sequence[Job]) -> None:
    """Build every provider the run may use before any job starts: otherwise one target's SDK
    import (half a second for openai) holds the GIL while another target is being timed."""
    for name in dict.fromkeys(t.provider for job in jobs for t in job.spec.chain):
        # A provider that cannot be built fails again in its job's attempt, as the row's error.
        with contextlib.suppress(LLMMagicError):
            get_provider(name)


def unsent_record(job: Job, run_id: str, **fields: Any) -> RunRecord:
    """A row for `job` that no request of this run answered: stopped before it was sent, or
    (batch runs) not submitted, or served from the cache."""
    target = job.spec.primary
    return RunRecord(
        run_id=run_id,
        target=str(target),
        provider=target.provider,
        model=target.model,
        prompt=job.prompt,
        repeat=job.repeat,
        params=job_params(job),
        **fields,
    )


def _interrupted_record(job: Job, run_id: str) -> RunRecord:
    return unsent_record(
        job, run_id, finish_reason="interrupted", error="interrupted before it was sent"
    )


def job_params(job: Job, shared: dict[Any, dict[str, Any]] | None = None) -> dict[str, Any]:
    """What was sent besides the prompt: the sampling options set, and the system prompt
    (it may differ per row, rendered per --over item). One dict for the rows that were sent
    the same (`shared`, the run's): rows replace it, never change it in place."""
    system = next((m.content for m in job.messages if m.role == "system"), None)
    images = job.messages[-1].images if job.messages else ()
    shared = {} if shared is None else shared
    params = shared.get((job.options, system, images))
    if params is None:
        params = shared[job.options, system, images] = job.options.sampling()
        if system is not None:
            params["system"] = system
        if images:  # never the bytes: a hash and a size (or the URL) is what the log keeps
            params["images"] = [image.summary() for image in images]
    return params


def _why_not_retry(
    error: ProviderError, record: RunRecord, attempt: int, policy: Policy
) -> str | None:
    """None when the attempt should be retried; else what to add to the row's error (the
    reason, when it is not plain from the error itself)."""
    if not error.retryable or record.output:
        return ""  # not a passing failure, or text already arrived: a retry would differ
    if attempt >= policy.retries:
        return f" (after {attempt + 1} attempts)" if attempt else ""
    retry_after = getattr(error, "retry_after", None)
    if retry_after is not None and retry_after > policy.retry_after_max:
        # Asking again sooner than the server said would only be refused again.
        return (
            f" (Retry-After {retry_after:g} s is longer than the {policy.retry_after_max:g} s"
            " llm_magic waits)"
        )
    return None


def _backoff(policy: Policy, attempt: int, error: ProviderError) -> float:
    retry_after = getattr(error, "retry_after", None)
    if retry_after is not None and 0 <= retry_after <= policy.retry_after_max:
        return float(retry_after)
    delay = min(policy.backoff_base * 2**attempt, policy.backoff_max)
    return delay * (1 - 0.25 * random.random())  # jitter spreads out retries of parallel jobs


@dataclass(frozen=True)
class _Run:
    """What every job of one run shares."""

    run_id: str
    get_provider: Callable[[str], Provider]
    policy: Policy
    events: Events | None
    limits: Mapping[str, threading.BoundedSemaphore]  # per-provider requests in flight
    deadlines: Deadlines
    params: dict[Any, dict[str, Any]] = field(default_factory=dict)  # see job_params


_FINAL = ("interrupted", "deadline")  # no fallback after these: the row itself is over


def _run_one(job: Job, run: _Run, token: CancelToken) -> RunRecord:
    failed: list[str] = []
    why: list[str] = []
    record: RunRecord | None = None
    for target in job.spec.chain:
        record = _try_target(job, target, run, token)
        if record.error is None or record.finish_reason in _FINAL or record.output:
            break  # answered, stopped, or broke mid-stream with text worth keeping
        failed.append(str(target))
        why.append(record.error or "")
    else:
        if len(why) > 1 and record is not None:  # every link failed: say why for each
            record.error = "; ".join(why)
    assert record is not None
    record.fallback_from = "|".join(t for t in failed if t != record.target) or None
    return record


def _try_target(job: Job, target: Target, run: _Run, token: CancelToken) -> RunRecord:
    record = RunRecord(
        run_id=run.run_id,
        target=sys.intern(str(target)),  # one string per target, not one per row
        provider=target.provider,
        model=target.model,
        prompt=job.prompt,
        repeat=job.repeat,
        params=job_params(job, run.params),
    )
    # A row whose tools run is never cached: a tool's result may change (and it has effects).
    cached = run.policy.cache and not (job.tools is not None and job.tools.run)
    key = _cache_key(job, target, run.get_provider) if cached else None
    if key is None:
        _fetch(job, target, record, run, token)
        return record
    from .store import copy_answer, default_store

    # Identical requests at once (a repeated --over item): the first is sent, the others wait
    # for it and are served from the cache it fills, instead of each paying for its own.
    with _SAME_REQUEST.held(key, token):
        hit = None if token.cancelled else default_store().cache_get(key)
        if hit is not None:
            record.started_at = datetime.now(timezone.utc)
            copy_answer(hit, record)
            if run.events is not None:
                run.events.on_text(job, record.output)
            return record
        _fetch(job, target, record, run, token)
        # only answers that finished without error, and whole
        default_store().cache_put(key, record, max_chars=run.policy.max_log_chars)
    return record


def _fetch(job: Job, target: Target, record: RunRecord, run: _Run, token: CancelToken) -> None:
    """Ask `target`, retrying as the policy allows; fills `record`, timings and accounts."""
    policy = run.policy
    attempt = 0
    fired: Armed | None = None  # is_set() when the row's deadline cancelled it
    steps = None
    if job.tools is not None:  # the calls it asks for; with --run-tools, the loop
        from ._tool_loop import ToolSteps

        steps = ToolSteps(job.messages, job.tools)
    while not token.cancelled:
        limit = run.limits.get(target.provider)
        if limit is not None and not _acquire(limit, token):
            continue  # cancelled while queued: the loop ends as "interrupted before it was sent"
        if fired is None and policy.deadline:
            # From the first time it is sent: a row queued behind others has not started.
            fired = run.deadlines.arm(policy.deadline, token)
        try:
            error = _attempt(job, target, record, run.get_provider, token, run.events, steps)
        finally:
            if limit is not None:
                limit.release()
        if error is None:
            if steps is not None and steps.step_done(record, token):
                if not token.cancelled:
                    attempt = 0  # its tools ran: the next step has its own retries
                    continue
                if fired is not None and fired.is_set():
                    _deadline_passed(record, policy.deadline or 0, attempt, target)
                else:
                    record.finish_reason, record.error = "interrupted", "interrupted"
            break
        if fired is not None and fired.is_set():
            _deadline_passed(record, policy.deadline or 0, attempt, target)
            break
        if token.cancelled or isinstance(error, Cancelled):
            record.finish_reason = "interrupted"
            record.error = "interrupted"
            break
        why_not = _why_not_retry(error, record, attempt, policy)
        if why_not is not None:
            record.failure = error.extended(why_not)  # complete() raises it: the row's words
            record.error = error.message
            record.finish_reason = "error"
            break
        # The wait is itself interruptible: cancel() sets the event.
        if token.wait(_backoff(policy, attempt, error)):
            if fired is not None and fired.is_set():
                _deadline_passed(record, policy.deadline or 0, attempt, target, error)
                break
            # keep why it was waiting: that is what the user needs to know about this target
            record.finish_reason = "interrupted"
            record.error = f"interrupted while waiting to retry after: {error.message}"
            break
        attempt += 1
    else:
        record.finish_reason, record.error = "interrupted", "interrupted before it was sent"
    if fired is not None:
        run.deadlines.disarm(fired)  # lets go of the token (and its stream) now, not in 600 s
    if steps is not None:
        steps.finish(record)
    account(record, job.messages, policy.prices)


def _deadline_passed(
    record: RunRecord,
    seconds: float,
    attempt: int,
    target: Target,
    retrying: ProviderError | None = None,
) -> None:
    """The row's time is up: its error names the deadline; any text so far is kept."""
    how = f" after {attempt + 1} attempts" if attempt else ""
    why = f" (it was waiting to retry after: {retrying.message})" if retrying else ""
    failure = DeadlinePassed(
        f"the deadline of {seconds:g} s passed{how}{why}; --deadline sets it (0: none)",
        provider=target.provider,
    )
    record.failure, record.error, record.finish_reason = failure, failure.message, "deadline"


class _OnePerKey:
    """A lock per key, made on first use and dropped when its last user leaves."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, list[int]]] = {}  # key -> (lock, [users])

    @contextlib.contextmanager
    def held(self, key: str, token: CancelToken) -> Iterator[bool]:
        """Hold `key`'s lock meanwhile; yields False (not held) if cancelled while waiting."""
        with self._guard:
            lock, users = self._locks.setdefault(key, (threading.Lock(), [0]))
            users[0] += 1
        got = _acquire(lock, token)
        try:
            yield got
        finally:
            if got:
                lock.release()
            with self._guard:
                users[0] -= 1
                if users[0] == 0:
                    del self._locks[key]


_SAME_REQUEST = _OnePerKey()  # process-wide: a cell and a panel may share the cache too


def _acquire(limit: threading.BoundedSemaphore | threading.Lock, token: CancelToken) -> bool:
    """Wait for a per-provider slot in short steps; False if the run was cancelled meanwhile."""
    while not limit.acquire(timeout=0.05):
        if token.cancelled:
            return False
    if token.cancelled:
        limit.release()
        return False
    return True


def _cache_key(job: Job, target: Target, get_provider: Callable[[str], Provider]) -> str | None:
    from .store import cache_key

    try:
        base_url = getattr(get_provider(target.provider), "base_url", None)
    except LLMMagicError:
        return None  # the attempt itself will report why the provider cannot be built
    return cache_key(
        target.provider, base_url, target.model, job.messages, job.options, repeat=job.repeat
    )


def _attempt(
    job: Job,
    target: Target,
    record: RunRecord,
    get_provider: Callable[[str], Provider],
    token: CancelToken,
    events: Events | None,
    steps: ToolSteps | None = None,
) -> ProviderError | None:
    """One request. Fills `record` with what arrived; returns the error, if any. With tools,
    `steps` gathers the calls asked for and says what to send (the loop's messages)."""
    parts: list[str] = []
    messages = job.messages if steps is None else steps.messages
    if steps is not None:
        steps.begin_attempt()
    record.output, record.ttft_s, record.finish_reason, record.pieces = "", None, None, 0
    record.prompt_tokens = record.completion_tokens = None
    record.started_at = datetime.now(timezone.utc)
    start = time.perf_counter()
    try:
        provider = get_provider(target.provider)
        messages = _with_images(provider, messages, target)
        # optional: load the model (embedded), or its embedding instance
        prepare = getattr(provider, "prepare_embeddings" if job.texts else "prepare", None)
        if prepare is not None:
            prepare(target.model)
        # The clock starts once the provider is built (SDK imported, client made, model
        # loaded): start-up must not make a session's first request look slower than the next.
        record.started_at = datetime.now(timezone.utc)
        start = time.perf_counter()
        chunks = (
            _embedded(provider, job, target, record, token)
            if job.texts
            else provider.stream(list(messages), target.model, job.options, token)
        )
        for chunk in chunks:
            if token.cancelled:
                break
            if chunk.tool_calls and steps is not None:
                steps.assembler.add(chunk.tool_calls)
            if chunk.endpoint:  # a pool of servers says which one took the request
                record.endpoint = _shown_url(chunk.endpoint)
            if chunk.text:
                if record.ttft_s is None and job.options.stream:
                    record.ttft_s = time.perf_counter() - start
                parts.append(chunk.text)
                if events is not None:
                    events.on_text(job, chunk.text)
            if chunk.usage is not None:
                if chunk.usage.prompt_tokens is not None:
                    record.prompt_tokens = chunk.usage.prompt_tokens
                if chunk.usage.completion_tokens is not None:
                    record.completion_tokens = chunk.usage.completion_tokens
            if chunk.finish_reason:
                record.finish_reason = chunk.finish_reason
            if chunk.model:
                record.model = chunk.model
        error = Cancelled("interrupted", provider=target.provider) if token.cancelled else None
    except ProviderError as exc:
        error = exc
        if exc.endpoint:
            record.endpoint = _shown_url(exc.endpoint)
    except LLMMagicError as exc:  # e.g. a config problem met while building the provider
        error = ProviderError(exc.message)
    except Exception as exc:  # a provider bug must still become a row, never lose the others
        error = StreamBroken(f"{type(exc).__name__}: {one_line(redact(str(exc)))}")
    record.latency_s = time.perf_counter() - start
    # Every row of a target says the same few words here: one string each, not one per row.
    record.model = sys.intern(record.model)
    if record.finish_reason is not None:
        record.finish_reason = sys.intern(record.finish_reason)
    record.pieces = len(parts)
    record.output = _utf8_safe("".join(parts), record)
    if error is not None and token.cancelled:
        error = Cancelled("interrupted", provider=target.provider)
    return error


def _with_images(
    provider: Provider, messages: Sequence[Message], target: Target
) -> list[Message]:
    """The messages as `provider` can take their images. A target that cannot take images
    fails its row, in one line, before anything is sent or loaded (a provider class declares
    it: ProviderFacts.takes_images); for one that takes them only as data (Ollama), URL images
    are fetched here first (`_images.fetched`: bounded in time and size)."""
    if not any(m.images for m in messages):
        return list(messages)
    if not getattr(provider, "takes_images", False):
        raise ProviderError(
            f"{target.model} cannot take images (--image, images=): it reads text only",
            provider=target.provider,
        )
    if getattr(provider, "takes_image_urls", False):
        return list(messages)
    try:
        return [
            replace(m, images=tuple(fetched(i) for i in m.images)) if m.images else m
            for m in messages
        ]
    except ValueError as exc:
        raise ProviderError(str(exc), provider=target.provider) from None


def _embedded(
    provider: Provider, job: Job, target: Target, record: RunRecord, token: CancelToken
) -> Iterator[Chunk]:
    """An embedding request as the one Chunk a row reads: a line saying what came back (the
    log's `output`), the texts' token count; the vectors go on the record."""
    embed = getattr(provider, "embed", None)
    if embed is None:  # the planner refuses such a target; a plugin may still lack it
        raise ProviderError("it offers no embeddings", provider=target.provider)
    result = embed(list(job.texts), target.model, job.options, token)
    record.vectors = result.vectors
    size = len(result.vectors[0]) if result.vectors else 0
    prompt_tokens = result.prompt_tokens
    if prompt_tokens is None:
        prompt_tokens = sum(estimate_tokens(t) for t in job.texts)
        record.tokens_estimated = True
    line = f"{len(result.vectors)} embeddings of {size} dimensions"
    usage = Usage(prompt_tokens=prompt_tokens, completion_tokens=0)
    yield Chunk(text=line, usage=usage, finish_reason="stop", model=result.model)


def _shown_url(url: str | None) -> str | None:
    return redact_url(url) if url else None


def _utf8_safe(text: str, record: RunRecord) -> str:
    """Text that UTF-8 can hold: a lone surrogate (legal in JSON as "\\ud800") becomes U+FFFD,
    noted on the row, so the log, the cache and every view can take the answer."""
    fixed, lone = utf8_safe(text)
    if lone:
        note = f"{lone} character(s) UTF-8 cannot hold became U+FFFD"
        record.params = {**record.params, "notes": [note]}  # shared with other rows: a copy
    return fixed
