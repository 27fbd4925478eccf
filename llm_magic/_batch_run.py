"""A `--batch` run end to end: submit the batchable jobs (`_batch_submit`), run the others
live, and with `--wait`, wait for the batches and collect them (`_batch_collect`).

Waiting polls each batch, first POLL_FIRST s after submitting, each gap then POLL_GROWTH times
the last up to POLL_MAX s, for at most WAIT_MAX s (the providers' 24 h window and an hour),
with a progress bar of requests done. ■ stops the waiting, never the batches;
POLL_FAILURES_MAX polls failing in a row stop it too. Either way the cell says how to collect.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from . import providers
from ._batch_collect import collect_entries
from ._batch_lines import batched_frame
from ._batch_plan import batchable
from ._batch_store import BatchEntry, update
from ._batch_submit import Prices, batch_store, state_changes, submit
from ._records import RunRecord
from ._runner import new_run_id
from .errors import ProviderError, RunInterrupted
from .store import Store

if TYPE_CHECKING:
    import pandas as pd

    from ._plan import Plan
    from ._session import Session

__all__ = [
    "POLL_FIRST",
    "POLL_GROWTH",
    "POLL_MAX",
    "BatchRun",
    "batch_cell",
    "batch_frame",
    "batch_run",
    "wait_for",
]

POLL_FIRST = 1.0  # seconds before the first poll
POLL_GROWTH = 1.5  # each gap this times the last ...
POLL_MAX = 30.0  # ... up to this
WAIT_MAX = 25 * 3600.0
POLL_FAILURES_MAX = 5


def _progress(entries: Sequence[BatchEntry]) -> tuple[int, int, str]:
    total = sum(e.total or 0 for e in entries)
    done = sum((e.succeeded or 0) + (e.failed or 0) for e in entries)
    statuses = ", ".join(dict.fromkeys(e.status for e in entries))
    return total, done, statuses


def wait_for(
    store: Store, entries: Sequence[BatchEntry], prices: Prices, *, show: bool = True
) -> list[str]:
    """Poll until every batch has ended (see the module docstring); lines to show when the
    waiting stopped for another reason. KeyboardInterrupt goes on up: the caller says how to
    collect."""
    pending = [e for e in entries if e.remote_id and not e.done]
    if not pending:
        return []
    bar = None
    if show:
        from tqdm.auto import tqdm

        bar = tqdm(total=_progress(entries)[0], desc="batch", unit="request")
    delay, failures, started = POLL_FIRST, 0, time.monotonic()
    problem = ""
    try:
        while pending:
            time.sleep(delay)
            for entry in pending:
                try:
                    state = providers.batch_api(entry.provider).state(entry.remote_id)
                except ProviderError as exc:
                    failures, problem = failures + 1, exc.message
                    continue
                failures = 0
                update(store, entry, **state_changes(entry, state, prices))
            pending = [e for e in pending if not e.done]
            if bar is not None:
                total, done, statuses = _progress(entries)
                bar.total, bar.n = max(total, done), done
                bar.set_postfix_str(statuses, refresh=False)
                bar.refresh()
            if failures >= POLL_FAILURES_MAX:
                return [f"stopped waiting after {failures} failed polls: {problem}"]
            if time.monotonic() - started > WAIT_MAX:
                return [f"stopped waiting after {WAIT_MAX / 3600:g} h"]
            delay = min(delay * POLL_GROWTH, POLL_MAX)
    finally:
        if bar is not None:
            bar.close()
    return []


@dataclass
class BatchRun:
    run_id: str
    frame: pd.DataFrame | None  # None: no row yet (every job went to a batch, not waited for)
    entries: list[BatchEntry]
    notes: list[str]
    stopped: str | None = None  # why the run stopped early, and how to collect


def _submitted(entries: Sequence[BatchEntry], run_id: str) -> str:
    said = ", ".join(f"{e.provider}:{e.model} {e.shown_id} ({e.total})" for e in entries)
    count = sum(e.total or 0 for e in entries)
    s = "" if len(entries) == 1 else "es"
    return (
        f"submitted {len(entries)} batch{s}, {count} requests: {said};"
        f" collect with %llm collect {run_id}"
    )


def batch_run(
    plan: Plan,
    session: Session,
    run: Callable[..., list[RunRecord]],
    view_for: Callable[[Plan], Any] | None = None,
    *,
    show: bool = True,
) -> BatchRun:
    """Submit the batchable jobs, run the others live (`run`: _api.run, shown by
    `view_for(plan)`), and with `wait`, wait for the batches and collect them."""
    run_id = new_run_id()
    store = batch_store()
    live = [job for job in plan.jobs if not batchable(job.spec)]
    notes = []
    if live:
        named = ", ".join(dict.fromkeys(job.spec.label for job in live))
        notes.append(f"no batch API for {named}: asked live")
    entries, rows = submit(plan, [j for j in plan.jobs if batchable(j.spec)], run_id, store)
    if entries:
        notes.append(_submitted(entries, run_id))
    stopped = None
    if live:
        sub = replace(plan, jobs=tuple(replace(job, index=i) for i, job in enumerate(live)))
        view = view_for(sub) if view_for is not None else None
        try:
            records = run(sub, view, session, run_id=run_id)
        except RunInterrupted as exc:
            records = exc.records
            done = sum(1 for r in records if r.finish_reason != "interrupted")
            stopped = f"{done} of {len(records)} live answers finished"
        finally:
            if view is not None:
                view.close()
        rows += [(job.index, record, False) for job, record in zip(live, records, strict=True)]
    if plan.request.wait and entries and stopped is None:
        try:
            notes += wait_for(store, entries, plan.policy.prices, show=show)
            got, said, unread = collect_entries(store, entries, plan.policy.prices)
            rows += got
            notes += said + unread
        except KeyboardInterrupt:
            stopped = "stopped waiting"
    if stopped and entries:
        stopped += f"; the batches go on: %llm collect {run_id} once they end"
    frame = batched_frame(rows, [run_id]) if rows else None
    if frame is not None:
        frame.attrs["batches"] = [e.shown_id for e in entries]
    return BatchRun(run_id, frame, entries, notes, stopped)


def batch_frame(plan: Plan, session: Session, run: Callable[..., list[RunRecord]]) -> pd.DataFrame:
    """compare(batch=True): what `batch_run` gives, its lines printed; an empty frame (with
    `batched`) when every row went to a batch that was not waited for."""
    result = batch_run(plan, session, run)
    for note in result.notes:
        print(note)
    if result.stopped:
        raise KeyboardInterrupt(result.stopped)
    if result.frame is not None:
        return result.frame
    frame = batched_frame([])
    frame.attrs["batches"] = [e.shown_id for e in result.entries]
    return frame


def batch_cell(
    plan: Plan,
    ns: dict[str, Any],
    out: str | None,
    quiet: bool,
    session: Session,
    run: Callable[..., list[RunRecord]],
) -> Any:
    """A `%%llm --batch` cell: live columns for the live targets, one line per thing to know
    (who ran live, what was submitted and how to collect it), the frame in `_llm`."""
    from ._live import view_for
    from .results import compact

    result = batch_run(plan, session, run, None if quiet else view_for, show=not quiet)
    for note in result.notes:
        print(note)
    if result.frame is not None:
        ns["_llm"] = result.frame
        if out:
            ns[out] = result.frame
    if result.stopped:
        raise KeyboardInterrupt(result.stopped)
    if quiet or result.frame is None:
        return None
    return compact(result.frame)
