"""Collecting provider batches, and `%llm batches` / `collect` / `cancel`.

Collecting downloads the output and error files of an ended batch: one row per request in the
run's schema plus `batched`: latency and ttft NaN (nobody timed the request), tokens as the
provider counted them, cost at the batch price; a request missing from an expired, cancelled
or failed batch is a row whose error says so. The first collect logs the rows and fills the
cache (with --cache) like a live run; later ones return the same frame again. It works in any
kernel: all it needs is in the store.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from . import providers
from ._accounting import account
from ._batch_lines import (
    LineAnswer,
    NotBatchOutput,
    Row,
    answer_into,
    batched_frame,
    cleaner,
    gc_paused,
    read_output,
)
from ._batch_store import BatchEntry, BatchRow, find, rows_of, update
from ._batch_submit import Prices, batch_store, now, state_changes
from ._config import load_file_config
from ._records import RunRecord
from ._redaction import redact
from .errors import LLMMagicError, ProviderError, UsageProblem
from .providers.base import Message
from .store import Store, record_run

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["batches", "cancel", "collect", "collect_entries"]


def _record(
    entry: BatchEntry,
    row: BatchRow,
    answer: LineAnswer | None,
    prices: Prices,
    clean: Callable[[str], str],
) -> RunRecord:
    record = RunRecord(
        run_id=entry.run_id,
        target=row.target,
        provider=entry.provider,
        model=entry.model,
        prompt=row.prompt,
        repeat=row.repeat,
        params=row.params,
        started_at=datetime.fromisoformat(entry.created_at) if entry.created_at else None,
    )
    missing = entry.missing_reason or "not in the batch's output or error file"
    answer_into(record, answer, missing, clean)
    account(record, [Message("user", row.prompt)], prices)
    if record.cost_usd is not None:
        record.cost_usd *= entry.price_factor
    return record


def _answers(api: Any, entry: BatchEntry) -> dict[str, LineAnswer]:
    answers: dict[str, LineAnswer] = {}
    for file_id in (entry.output_file, entry.error_file):
        if file_id:
            data = api.download(file_id)
            for answer in read_output(data, f"{entry.shown_id}'s file {file_id}"):
                answers[answer.custom_id] = answer
    return answers


class _Unread(Exception):
    """A batch whose state or files could not be read: the line saying why."""


def _collect_one(store: Store, entry: BatchEntry, prices: Prices) -> tuple[list[Row], str | None]:
    with gc_paused():  # 100,000 rows: see gc_paused
        return _collect(store, entry, prices)


def _collect(store: Store, entry: BatchEntry, prices: Prices) -> tuple[list[Row], str | None]:
    """The rows of one batch, or none and the line saying why not yet; _Unread when the
    provider's answer could not be had or read (the batch stays collectable)."""
    mapped = rows_of(store, entry)
    if entry.remote_id is None:
        why = entry.problem or "the kernel stopped before it was created"
        missing = replace(entry, missing_reason=f"the batch was never submitted ({why})")
        return [(r.index, _record(missing, r, None, prices, redact), True) for r in mapped], None
    try:
        api = providers.batch_api(entry.provider)
        update(store, entry, **state_changes(entry, api.state(entry.remote_id), prices))
        if not entry.done:
            done = (entry.succeeded or 0) + (entry.failed or 0)
            said = f"{done}/{entry.total or '?'} done"
            return [], f"{entry.shown_id} is {entry.status} ({said}): not ended yet"
        answers = _answers(api, entry)
    except (ProviderError, NotBatchOutput) as exc:
        raise _Unread(f"{entry.shown_id}: {getattr(exc, 'message', str(exc))}") from None
    clean = cleaner(answers.values())
    records = [(r, _record(entry, r, answers.get(r.custom_id), prices, clean)) for r in mapped]
    if entry.collected_at is None:  # logged and cached once, however often it is collected
        record_run([rec for _, rec in records], entry.max_log_chars)
        if entry.cache:
            for row, rec in records:
                if row.cache_key:
                    store.cache_put(row.cache_key, rec, max_chars=entry.max_log_chars)
    costs = [rec.cost_usd for _, rec in records if rec.cost_usd is not None]
    update(store, entry, collected_at=now(), cost_usd=sum(costs) if costs else entry.cost_usd)
    return [(row.index, rec, True) for row, rec in records], None


def collect_entries(
    store: Store, entries: Sequence[BatchEntry], prices: Prices
) -> tuple[list[Row], list[str], list[str]]:
    """The rows of every ended batch; lines for those not ended, and for those unread."""
    rows: list[Row] = []
    notes: list[str] = []
    unread: list[str] = []
    for entry in entries:
        try:
            got, note = _collect_one(store, entry, prices)
        except _Unread as exc:
            unread.append(str(exc))
            continue
        rows += got
        if note:
            notes.append(note)
    return rows, notes, unread


# --------------------------------------------------------------------------- %llm subcommands


def _entries(store: Store, which: str) -> list[BatchEntry]:
    found = find(store, which)
    if which == "all":
        found = [e for e in found if e.collected_at is None]
    elif not found:
        raise UsageProblem(
            f"no batch or run {which!r} in the store ({store.path}); %llm batches lists them"
        )
    return found


def collect(which: str = "all") -> pd.DataFrame | None:
    """`%llm collect ID|RUN_ID|all` (llm_magic.collect): the rows of every ended batch named,
    one line for each that is not ended or could not be read; None when none is ready."""
    store = batch_store()
    entries = _entries(store, which)
    if not entries:
        print("no batch left to collect (%llm batches lists them)")
        return None
    rows, notes, unread = collect_entries(store, entries, load_file_config().prices)
    if unread and not rows and not notes:
        raise UsageProblem("; ".join(unread))  # nothing to show but why: one line
    for note in notes + unread:
        print(note)
    if not rows:
        return None
    frame = batched_frame(rows, [e.run_id for e in entries])
    frame.attrs["batches"] = [e.shown_id for e in entries]
    return frame


def batches() -> pd.DataFrame:
    """`%llm batches`: every batch in the store, oldest first, the unfinished ones asked anew
    (a provider that cannot be reached keeps the status last seen)."""
    import pandas as pd

    store = batch_store()
    prices = load_file_config().prices
    entries = find(store)
    for entry in entries:
        if entry.remote_id and not entry.done:
            try:
                state = providers.batch_api(entry.provider).state(entry.remote_id)
            except LLMMagicError:
                continue
            update(store, entry, **state_changes(entry, state, prices))
    columns = {
        "id": "string",
        "run_id": "string",
        "provider": "string",
        "model": "string",
        "status": "string",
        "total": "Int64",
        "succeeded": "Int64",
        "failed": "Int64",
        "created": "datetime64[us, UTC]",
        "collected": "boolean",
        "cost_usd": "float64",
    }
    frame = pd.DataFrame(
        [
            {
                "id": e.shown_id,
                "run_id": e.run_id,
                "provider": e.provider,
                "model": e.model,
                "status": e.status,
                "total": e.total,
                "succeeded": e.succeeded,
                "failed": e.failed,
                "created": pd.Timestamp(e.created_at) if e.created_at else pd.NaT,
                "collected": e.collected_at is not None,
                "cost_usd": e.cost_usd if e.cost_usd is not None else float("nan"),
            }
            for e in entries
        ],
        columns=list(columns),
    )
    return frame.astype(columns)


def cancel(which: str) -> str:
    """`%llm cancel ID|RUN_ID`: ask the provider to cancel; the line saying what it answered."""
    store = batch_store()
    entries = [e for e in _entries(store, which) if e.remote_id and not e.done]
    if not entries:
        raise UsageProblem(f"{which}: no batch of it is still running (%llm batches)")
    said = []
    for entry in entries:
        state = providers.batch_api(entry.provider).cancel(entry.remote_id)
        update(store, entry, **state_changes(entry, state, load_file_config().prices))
        said.append(f"{entry.shown_id} {entry.status}")
    return f"cancelling {', '.join(said)}; %llm collect {which} gets what they finished"
