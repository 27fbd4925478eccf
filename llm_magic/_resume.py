"""Resuming a run: its plan is saved in the run log when it starts, its rows as they finish;
a resume sends only the jobs without an answer and returns every row in the original order.

"No answer" is a row with an `error` (failed, interrupted, never sent) or no row at all (the
kernel died first): those are sent again; an answered row is taken from the log as it was kept
there (its output cut to max_log_chars, like `%llm history`). Three ways in, one plan:
`%llm resume RUN_ID` rebuilds the plan from the log alone (`_plan.plan_of_run`); `--resume` and
`compare(resume=True)` resume the newest run of the very same request, or run it afresh when
there is none; `compare(resume=RUN_ID)` resumes that run, which must have asked the same.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, fields, replace
from typing import TYPE_CHECKING, Any

from ._request import Request
from ._store_plans import latest_run, load_plan, logged_rows, save_plan
from ._targets import Target, TargetSpec
from .errors import UsageProblem
from .providers.base import Options

if TYPE_CHECKING:
    from ._plan import Plan
    from .store import Store

__all__ = ["resumed", "save", "stored_run", "with_answers"]


def _prompts(plan: Plan) -> list[tuple[str, str | None]]:
    """The plan's distinct prompts in order, each with its system prompt."""
    seen: dict[int, tuple[str, str | None]] = {}
    for job in plan.jobs:
        if job.prompt_no not in seen:
            system = next((m.content for m in job.messages if m.role == "system"), None)
            seen[job.prompt_no] = (job.prompt, system)
    return list(seen.values())


def _essentials(plan: Plan) -> dict[str, Any]:
    """What the plan needs besides its prompts: targets, options, repeats, the run's policy."""
    specs = list({job.spec.label: job.spec for job in plan.jobs}.values())
    options = plan.jobs[0].options if plan.jobs else Options()
    policy = plan.policy
    return {
        "v": 1,
        "targets": [[spec.label, [str(t) for t in spec.chain]] for spec in specs],
        "repeat": plan.request.repeat,
        "options": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(options).items()},
        "retries": policy.retries,
        "concurrency": policy.concurrency,
        "cache": policy.cache,
        "deadline": policy.deadline or 0,
        "format": plan.request.format,
    }


def _fingerprint(essentials: dict[str, Any], prompts: list[tuple[str, str | None]]) -> str:
    """What decides the rows: targets, repeats, sampling options and every prompt."""
    digest = hashlib.sha256()
    options = {
        k: v for k, v in essentials["options"].items() if not k.endswith(("timeout", "stream"))
    }
    head = [essentials["targets"], essentials["repeat"], options]
    digest.update(json.dumps(head, sort_keys=True).encode())
    for prompt, system in prompts:
        digest.update(json.dumps([prompt, system]).encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


def _resumable(plan: Plan) -> str | None:
    """Why the plan cannot be saved for a resume, or None when it can: a --chat run's turns
    and --tools' functions live in the kernel; images are logged as hashes, never as the bytes
    a resume would send; --batch runs have their own way back (collect)."""
    if plan.request.chat:
        return "a --chat run cannot be resumed: its conversation is in the kernel"
    if plan.request.batch:
        return "a --batch run is collected, not resumed: %llm collect RUN_ID"
    first = plan.jobs[0] if plan.jobs else None
    if first is not None and any(m.images for m in first.messages):
        return "a run with images cannot be resumed: the log keeps their hashes, not them"
    if first is not None and (first.tools is not None or first.options.tools):
        return "a run with --tools cannot be resumed: its functions live in the kernel"
    return None


def save(plan: Plan, store: Store) -> bool:
    """Write the plan of a new run of several rows to the log, unless it cannot be resumed
    (_resumable)."""
    if plan.resumed or len(plan.jobs) < 2 or _resumable(plan) is not None:
        return False  # one request (complete()) is simply asked again: no write for its plan
    prompts = _prompts(plan)
    essentials = _essentials(plan)
    return save_plan(
        store, plan.run_id, _fingerprint(essentials, prompts), essentials, prompts, len(plan.jobs)
    )


def _store() -> Store:
    from ._config import resolve_setting
    from .store import default_store

    if not resolve_setting("log").value:
        raise UsageProblem("resuming reads the run log, which is off (the log setting)")
    store = default_store()
    if store.problem is not None:
        raise UsageProblem(f"the run log cannot be read: {store.problem}")
    return store


def _unknown(run_id: str, store: Store) -> UsageProblem:
    return UsageProblem(
        f"no run {run_id!r} to resume in the run log {store.path} (the run id is in the "
        "result's run_id column and df.attrs['run_id'])"
    )


def _with_answers(plan: Plan, run_id: str, store: Store) -> Plan:
    rows = logged_rows(store, run_id)
    answered = {i: r for i, r in rows.items() if r.error is None and i < len(plan.jobs)}
    return replace(plan, run_id=run_id, answered=answered, resumed=True)


def resumed(plan: Plan) -> Plan:
    """`plan` as a resume of the earlier run its request names (see the module docstring)."""
    wanted = plan.request.resume
    why_not = _resumable(plan)
    if why_not is not None:
        raise UsageProblem(why_not)
    if not isinstance(wanted, bool | str):
        raise UsageProblem(f"resume= takes True or a run id, not {wanted!r}")
    store = _store()
    fingerprint = _fingerprint(_essentials(plan), _prompts(plan))
    if wanted is True:
        run_id = latest_run(store, fingerprint)
        return plan if run_id is None else _with_answers(plan, run_id, store)
    stored = load_plan(store, wanted)
    if stored is None:
        raise _unknown(wanted, store)
    if stored[0]["fingerprint"] != fingerprint:
        raise UsageProblem(
            f"run {wanted!r} asked for other prompts, targets or options than this request; "
            f"%llm resume {wanted} resumes it as it was"
        )
    return _with_answers(plan, wanted, store)


def stored_run(run_id: str) -> tuple[Request, list[TargetSpec], Options, list[str | None]]:
    """Run `run_id`'s request, targets, options and system prompts, read back from the log
    (for `_plan.plan_of_run`: `%llm resume RUN_ID` in any kernel)."""
    store = _store()
    stored = load_plan(store, run_id)
    if stored is None:
        raise _unknown(run_id, store)
    essentials, prompts = stored
    specs = [
        TargetSpec(tuple(Target(*link.split(":", 1)) for link in chain), label)
        for label, chain in essentials["targets"]
    ]
    known = {f.name for f in fields(Options)}
    # JSON has lists where Options has tuples (stop): back to tuples, so Options stays hashable
    values = {
        k: tuple(v) if isinstance(v, list) else v
        for k, v in essentials["options"].items()
        if k in known
    }
    options = Options(**values)
    request = Request(
        prompts=tuple(prompt for prompt, _ in prompts),
        targets=tuple(label for label, _ in essentials["targets"]),
        repeat=essentials["repeat"],
        retries=essentials["retries"],
        concurrency=essentials["concurrency"],
        cache=essentials["cache"],
        deadline=essentials["deadline"],
        timeout=options.read_timeout,
        format=essentials["format"],
        resume=run_id,
    )
    return request, specs, options, [system for _, system in prompts]


def with_answers(plan: Plan) -> Plan:
    """`plan` (rebuilt by stored_run) with its run's answers from the log."""
    return _with_answers(plan, str(plan.request.resume), _store())
