"""The Python API, and the one run path every entry point takes.

compare(["Why is the sky blue?"], ["local:smollm2", "ollama:llama3.2"]) -> DataFrame
complete("Say hi", "openai:gpt-4o-mini") -> Completion

Options (keyword arguments of both, the same as the magic's): system, temperature, max_tokens,
top_p, seed, stop, repeat, stream, timeout, deadline, retries, concurrency, cache, images (a
path, an http(s) URL, bytes or a PIL image, or a list of them: sent with the prompt), schema (a
JSON Schema dict or a Pydantic model class the answers are held to: _schema.py); compare()
also takes `over=` (a list, Series or DataFrame: the prompts are templates filled per item)
and `checks=` (specs such as "contains:{expected}", functions, schemas: see checks.py).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from importlib import import_module
from typing import TYPE_CHECKING, Any

from . import providers
from ._plan import Plan, make_plan
from ._records import RunRecord
from ._request import Request
from ._run_log import RunLog
from ._runner import Events, run_jobs
from ._session import Session, session
from .errors import ProviderError, RunInterrupted, UsageProblem

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Completion", "compare", "complete", "run"]


@dataclass(frozen=True)
class Completion:
    """One answer from `complete()`; str() gives the text. With `schema=`, `parsed` is the
    answer read against it (the Pydantic instance or the JSON value; None when it does not
    fit), `schema_valid` whether it fits and `schema_error` why not, as the columns say."""

    text: str
    record: RunRecord
    parsed: Any = None
    schema_valid: bool | None = None
    schema_error: str | None = None

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        short = self.text if len(self.text) <= 60 else self.text[:59] + "…"
        return f"Completion({short!r}, target={self.record.target!r})"

    def _repr_html_(self) -> str:
        from ._html import Entry, answer_html

        return answer_html(Entry(self.text))


def run(
    plan: Plan,
    events: Events | None = None,
    session: Session = session,
    stop: threading.Event | None = None,
    run_id: str | None = None,
) -> list[RunRecord]:
    """Run a plan, log its rows, and remember them as the session's last result.

    Every job is reported to `events.on_done`, those an interrupt stopped before they started
    included. Setting `stop` from another thread (the panel's Stop button) cancels the run the
    way a KeyboardInterrupt does: RunInterrupted carries the rows so far.
    """
    _import_in_background("llm_magic.results")
    if run_id is not None and run_id != plan.run_id:
        plan = replace(plan, run_id=run_id)  # a part of a bigger run (--batch's live targets)
    log = RunLog(plan, events)  # the plan now, each row as it finishes
    jobs = plan.todo()  # a resumed run sends only the rows without an answer
    try:
        try:
            sent = run_jobs(jobs, providers.get_provider, plan.policy, log, plan.run_id, stop)
        finally:
            log.close()
    except KeyboardInterrupt as interrupt:
        records = plan.merged(list(getattr(interrupt, "records", [])))
        if isinstance(interrupt, RunInterrupted):
            interrupt.records = records
        _keep(plan, records, session)
        raise
    records = plan.merged(sent)
    _keep(plan, records, session)
    return records


def _keep(plan: Plan, records: list[RunRecord], session: Session) -> None:
    session.last = records
    if plan.request.chat and len(records) == len(plan.jobs):
        session.remember(plan.jobs, records)


def _import_in_background(module: str) -> None:
    """Import pandas (via results) while the first answers stream, not after them: the main
    thread is idle during a run, and the first cell of a session is what users time."""
    if module not in sys.modules:
        threading.Thread(target=import_module, args=(module,), daemon=True).start()


def compare(
    prompts: str | Sequence[str],
    targets: str | Sequence[str] | None = None,
    **options: Any,
) -> pd.DataFrame:
    """Send every prompt to every target; one DataFrame row per prompt x target x repeat.

    A failing target gives rows with `error` set; it never raises for a provider's failure.
    With `over=items` the prompts are templates: `{field}` is filled from each item (and
    `{item}`), one prompt per item.
    """
    from .results import run_frame

    prompt_list = (prompts,) if isinstance(prompts, str) else tuple(prompts)
    if not prompt_list:
        raise UsageProblem("compare() got no prompts: nothing to send")
    target_list = (targets,) if isinstance(targets, str) else tuple(targets or ())
    if targets is not None and not target_list:
        raise UsageProblem("compare() got no targets; leave targets out for the default one")
    request = Request.build("compare()", prompt_list, target_list, options)
    plan = make_plan(request, session)
    if request.batch:
        from ._batch_run import batch_frame

        return batch_frame(plan, session, run)
    return run_frame(run(plan), plan)


def complete(prompt: str, target: str | None = None, **options: Any) -> Completion:
    """One prompt to one target.

    Raises the provider's error (`llm_magic.errors.AuthFailed`, `RateLimited`, `TimedOut`, ...)
    when no text came back. A stream that broke after some text returns that partial answer,
    with the error in `answer.record.error`.
    """
    if target is not None and not isinstance(target, str):
        raise UsageProblem("complete() takes one target (a string); compare() takes several")
    for name in ("repeat", "over", "checks", "batch", "wait"):
        if name in options:
            raise UsageProblem(f"complete() asks once; {name}= is compare()'s")
    request = Request.build("complete()", (prompt,), (target,) if target else (), options)
    plan = make_plan(request, session)
    (record,) = run(plan)
    if record.error is not None and not record.output:
        raise record.failure or ProviderError(record.error)
    if plan.schema is None:
        return Completion(record.output, record)
    return Completion(record.output, record, *plan.schema.read(record.output))
