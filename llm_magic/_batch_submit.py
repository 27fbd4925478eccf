"""Submitting a `--batch` run's batchable jobs: per provider and model (one model per batch,
as both APIs want), the jobs' lines in files within the provider's limits (requests and bytes
per file, `providers._batch_api`); for each file an entry and its rows are written to the
store, then the file is uploaded, its id recorded, the batch created and its id recorded
(`_batch_store`). A group that cannot be submitted (no key, a server without batch endpoints)
becomes rows with an error; the other groups go on. With --cache, a request already in the
cache is served at once instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from . import providers
from ._accounting import account
from ._batch_lines import Row, custom_id, gc_paused
from ._batch_store import BatchEntry, BatchRow, BatchStoreProblem, add_pending, update
from ._pricing import cost_usd
from ._records import RunRecord
from ._redaction import redact_url
from ._runner import Job, job_params, unsent_record
from .errors import LLMMagicError, ProviderError
from .providers.base import BatchState
from .store import Store, cache_key, default_store

if TYPE_CHECKING:
    from ._plan import Plan

__all__ = ["Prices", "batch_store", "now", "state_changes", "submit"]

Prices = Mapping[str, Mapping[str, float]]


def now() -> str:
    return datetime.now(timezone.utc).isoformat()


def batch_store() -> Store:
    store = default_store()
    if store.problem is not None:
        raise BatchStoreProblem(
            f"the store cannot keep batch ids ({store.problem}); nothing was submitted"
        )
    return store


def _unsent(job: Job, run_id: str, **fields: Any) -> RunRecord:
    """A row for `job` that was not submitted (it failed to, or the cache answered)."""
    return unsent_record(job, run_id, started_at=datetime.now(timezone.utc), **fields)


def _error_row(job: Job, run_id: str, error: str, prices: Prices) -> Row:
    record = _unsent(job, run_id, finish_reason="error", error=error)
    account(record, job.messages, prices)
    return job.index, record, True


def _chunks(api: Any, lines: Sequence[tuple[Job, bytes]]) -> Iterable[list[tuple[Job, bytes]]]:
    """The lines in files of at most `api.max_requests` lines and `api.max_bytes` bytes."""
    chunk: list[tuple[Job, bytes]] = []
    size = 0
    for job, line in lines:
        if chunk and (len(chunk) >= api.max_requests or size + len(line) > api.max_bytes):
            yield chunk
            chunk, size = [], 0
        chunk.append((job, line))
        size += len(line)
    if chunk:
        yield chunk


def state_changes(entry: BatchEntry, state: BatchState, prices: Prices) -> dict[str, Any]:
    """The entry's fields as `state` has them; the cost so far when the server counts tokens."""
    changes: dict[str, Any] = {
        "remote_id": state.id,
        "status": state.status,
        "done": state.done,
        "total": state.total if state.total else entry.total,
        "succeeded": state.succeeded,
        "failed": state.failed,
        "output_file": state.output_file,
        "error_file": state.error_file,
        "problem": state.problem,
        "missing_reason": state.missing_reason,
    }
    if state.prompt_tokens is not None and state.completion_tokens is not None:
        cost = cost_usd(
            entry.provider, entry.model, state.prompt_tokens, state.completion_tokens, prices
        )
        changes["cost_usd"] = None if cost is None else cost * entry.price_factor
    return changes


def _submit_group(
    plan: Plan, jobs: list[Job], run_id: str, store: Store, numbered: Iterable[int]
) -> tuple[list[BatchEntry], list[Row]]:
    """One provider and model: its files, each recorded, uploaded and created in turn."""
    prices = plan.policy.prices
    target = jobs[0].spec.primary
    try:
        api = providers.batch_api(target.provider)
        base_url = getattr(providers.get_provider(target.provider), "base_url", None) or ""
    except LLMMagicError as exc:
        return [], [
            _error_row(j, run_id, f"batch not submitted: {exc.message}", prices) for j in jobs
        ]
    rows: list[Row] = []
    if plan.policy.cache:  # an answer already in the cache is served, not asked again
        rows, jobs = _cached(jobs, run_id, base_url, store)
    lines = [
        (
            job,
            api.line(
                custom_id(job.index, job.repeat, str(target)),
                list(job.messages),
                target.model,
                job.options,
            ),
        )
        for job in jobs
    ]
    entries = []
    for chunk, number in zip(_chunks(api, lines), numbered, strict=False):
        entry = BatchEntry(
            key=f"{run_id}-{number}",
            run_id=run_id,
            provider=target.provider,
            model=target.model,
            base_url=redact_url(base_url),
            price_factor=api.price_factor,
            total=len(chunk),
            created_at=now(),
            cache=plan.policy.cache,
            max_log_chars=plan.policy.max_log_chars,
        )
        mapped = [
            BatchRow(
                custom_id(job.index, job.repeat, str(target)),
                job.index,
                job.prompt,
                str(target),
                job.repeat,
                job_params(job),
                _key(job, base_url) if plan.policy.cache else None,
            )
            for job, _ in chunk
        ]
        add_pending(store, entry, mapped)  # before anything leaves: nothing lost if we die now
        try:
            file_id = api.upload(b"".join(line for _, line in chunk))
            update(store, entry, input_file=file_id, status="uploaded")
            state = api.create(
                file_id, target.model, {"llm_magic_run": run_id, "llm_magic_batch": entry.key}
            )
            update(store, entry, **state_changes(entry, state, prices))
        except ProviderError as exc:
            update(store, entry, status="not submitted", done=True, problem=exc.message)
            error = f"batch not submitted: {exc.message}"
            rows += [_error_row(job, run_id, error, prices) for job, _ in chunk]
            continue
        entries.append(entry)
    return entries, rows


def _key(job: Job, base_url: str) -> str:
    target = job.spec.primary
    return cache_key(
        target.provider, base_url, target.model, job.messages, job.options, repeat=job.repeat
    )


def _cached(
    jobs: list[Job], run_id: str, base_url: str, store: Store
) -> tuple[list[Row], list[Job]]:
    from .store import copy_answer

    rows, rest = [], []
    for job in jobs:
        hit = store.cache_get(_key(job, base_url))
        if hit is None:
            rest.append(job)
            continue
        rows.append((job.index, copy_answer(hit, _unsent(job, run_id)), False))
    return rows, rest


def submit(
    plan: Plan, jobs: Sequence[Job], run_id: str, store: Store
) -> tuple[list[BatchEntry], list[Row]]:
    groups: dict[tuple[str, str], list[Job]] = {}
    for job in jobs:
        target = job.spec.primary
        groups.setdefault((target.provider, target.model), []).append(job)
    numbers = iter(range(1_000_000))
    entries: list[BatchEntry] = []
    rows: list[Row] = []
    for group in groups.values():
        with gc_paused():  # 100,000 lines: see gc_paused
            made, failed = _submit_group(plan, group, run_id, store, numbers)
        entries += made
        rows += failed
    return entries, rows
