"""`%%llm` and `%llm`: a thin layer that turns a parsed Command into a run.

Parsing lives in command.py, targets in targets.py, the run in api.py/runner.py, rendering in
display.py. This module only wires them to IPython: the user namespace, `%config`, UsageError.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class, no_var_expand
from traitlets import Bool, Float, Int, Unicode

from . import api
from .command import Command, parse_command, parse_subcommand, usage_text
from .errors import ConfigProblem, ProviderError, UsageProblem
from .records import RunRecord
from .runner import Job, RunInterrupted
from .template import check_over_fields, expand_over, render

__all__ = ["LLMMagics"]

# Up to this many answers stream live in columns; a larger run shows a progress bar instead.
LIVE_COLUMNS_MAX = 12


@magics_class
class LLMMagics(Magics):
    """Compare LLM backends from a cell. Settings: `%config LLMMagics.<name> = value`."""

    default_target = Unicode(
        None, allow_none=True, help="Target used when a cell names none, e.g. 'ollama:llama3.2'."
    ).tag(config=True)
    timeout = Float(None, allow_none=True, help="Read timeout in seconds.").tag(config=True)
    connect_timeout = Float(None, allow_none=True, help="Connect timeout in seconds.").tag(
        config=True
    )
    retries = Int(
        None, allow_none=True, help="Retries on 408/409/429/5xx and lost connections."
    ).tag(config=True)
    concurrency = Int(None, allow_none=True, help="Requests in flight at once.").tag(config=True)
    cache = Bool(None, allow_none=True, help="Serve repeated requests from the cache.").tag(
        config=True
    )

    def __init__(self, shell: Any = None, session: api.Session | None = None, **kwargs: Any):
        super().__init__(shell, **kwargs)
        self.session = session or api.session

    @property
    def session(self) -> api.Session:
        return self._session

    @session.setter
    def session(self, session: api.Session) -> None:
        # compare(), complete() and the panel on this session follow %config as cells do.
        session.settings = self.configured
        self._session = session

    def configured(self) -> dict[str, Any]:
        """Settings set with %config (None means: not set, fall through to env/file/default)."""
        names = ("default_target", "timeout", "connect_timeout", "retries", "concurrency", "cache")
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}

    @no_var_expand  # {name} in the line is ours to render, not IPython's
    @line_cell_magic
    def llm(self, line: str, cell: str | None = None) -> Any:
        """%%llm [TARGET ...] [options] + prompt cell; %llm SUBCOMMAND. See `%llm help`."""
        try:
            if cell is None:
                try:
                    return self._subcommand(line)
                except ProviderError as exc:  # a server's refusal, in its own words
                    raise UsageError(exc.message) from None
            return self._cell(parse_command(line, cell))
        except (UsageProblem, ConfigProblem) as exc:
            raise UsageError(exc.message) from None

    # -- the cell ----------------------------------------------------------------------------

    def _cell(self, cmd: Command) -> Any:
        if cmd.help:
            print(usage_text())
            return None
        ns = self.shell.user_ns
        specs = self.session.specs(cmd.targets)
        rows: list[dict[str, Any]] = [{}]
        if cmd.over:
            if cmd.over not in ns:
                raise UsageProblem(f"--over {cmd.over}: no variable {cmd.over!r} in the notebook")
            rows = expand_over(ns[cmd.over], cmd.over)
            # the system prompt may use the items' fields too
            check_over_fields(cmd.template + "\n" + (cmd.system or ""), rows, cmd.over, ns)
        fill: Callable[[str, dict[str, Any]], str] = (
            (lambda text, row: render(text, {**ns, **row})) if cmd.interpolate else (lambda t, r: t)
        )
        prompts = [fill(cmd.template, row) for row in rows]
        system = [fill(cmd.system, row) for row in rows] if cmd.system else None
        configured = self.configured()
        options = api.make_options(
            temperature=cmd.temperature,
            max_tokens=cmd.max_tokens,
            top_p=cmd.top_p,
            seed=cmd.seed,
            stop=cmd.stop,
            stream=cmd.stream,
            timeout=cmd.timeout,
            configured=configured,
        )
        policy = api.make_policy(
            retries=cmd.retries, concurrency=cmd.concurrency, cache=cmd.cache, configured=configured
        )
        conversations = self.session.conversations if cmd.chat else None
        jobs = api.plan_jobs(
            prompts, specs, options, system=system, repeat=cmd.repeat, conversations=conversations
        )
        view = None if cmd.quiet else _view_for(jobs, cmd.format)
        interrupted = False
        try:
            records = api.run(jobs, policy, view, self.session)
        except RunInterrupted as exc:
            records, interrupted = exc.records, True
        finally:
            if view is not None:
                view.close()
        if cmd.chat:
            self.session.remember(jobs, records)
        from .results import to_dataframe

        df = to_dataframe(records)
        ns["_llm"] = df
        if cmd.out:
            ns[cmd.out] = df
        if interrupted:
            # Stop "Run All" here, as an interrupt should, and say what was kept.
            done = sum(1 for r in records if r.finish_reason != "interrupted")
            raise KeyboardInterrupt(
                f"{done} of {len(records)} answers finished; every row is in _llm"
            ) from None
        if cmd.quiet and records and all(r.error is not None for r in records):
            # -q hides answers, not a run with none: say so in one line (Run All goes on)
            print(
                f"%%llm -q: all {len(records)} answers failed ({records[0].error});"
                " the rows are in _llm",
                file=sys.stderr,
            )
        if cmd.quiet or len(jobs) == 1:
            return None  # the single answer is already on screen; the row is in _llm
        return df

    # -- subcommands ---------------------------------------------------------------------------

    def _subcommand(self, line: str) -> Any:
        from .subcommands import run_subcommand

        name, args = parse_subcommand(line)
        return run_subcommand(self, name, args)


def _label(job: Job, jobs: list[Job]) -> str:
    """A live column's header; the repeats of one target share it and stack in the column."""
    label = job.spec.label
    if any(j.prompt_no for j in jobs):
        label += f" · prompt {job.prompt_no + 1}"
    return label


def caption(record: RunRecord) -> str:
    """The line under a live answer, the same as side_by_side() shows, plus any fallback."""
    from .html import caption_text

    text = caption_text(
        record.latency_s,
        record.completion_tokens,
        record.tokens_per_s,
        estimated=record.tokens_estimated,
        cached=record.cached,
    )
    return f"{text} · after {record.fallback_from} failed" if record.fallback_from else text


class _LiveEvents:
    """Feeds runner events to the live columns (one per job)."""

    def __init__(self, jobs: list[Job], fmt: str) -> None:
        from .display import LiveView

        self._view = LiveView([_label(j, jobs) for j in jobs], fmt=fmt)
        self._view.show()

    def on_text(self, job: Job, text: str) -> None:
        self._view.update(job.index, text)

    def on_done(self, job: Job, record: RunRecord) -> None:
        self._view.finish(job.index, record.output, caption(record), record.error)

    def close(self) -> None:
        self._view.close()


class _ProgressEvents:
    """For large runs: one tqdm bar instead of hundreds of columns."""

    def __init__(self, jobs: list[Job]) -> None:
        from tqdm.auto import tqdm

        self._bar = tqdm(total=len(jobs), desc="llm", unit="answer")
        self._errors = 0

    def on_text(self, job: Job, text: str) -> None:
        pass

    def on_done(self, job: Job, record: RunRecord) -> None:
        if record.error is not None:
            self._errors += 1
            self._bar.set_postfix(errors=self._errors, refresh=False)
        self._bar.update(1)

    def close(self) -> None:
        if self._errors:  # a full bar alone would read as all well
            self._bar.set_description(f"llm · {self._errors} failed", refresh=False)
        self._bar.close()


def _view_for(jobs: list[Job], fmt: str) -> _LiveEvents | _ProgressEvents:
    if len(jobs) <= LIVE_COLUMNS_MAX:
        return _LiveEvents(jobs, fmt)
    return _ProgressEvents(jobs)
