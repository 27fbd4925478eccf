"""`%%llm` and `%llm`: a thin layer that turns a parsed Command into a run.

Parsing lives in _command.py, targets in _targets.py, the run in _api.py/_runner.py, rendering in
_display.py. This module only wires them to IPython: the user namespace, `%config`, UsageError.
"""

from __future__ import annotations

import sys
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class, no_var_expand
from traitlets import Bool, Float, Int, Unicode

from ._command import Command, parse_command, parse_subcommand, usage_text
from ._session import Session
from ._session import session as kernel_session
from .errors import ConfigProblem, ProviderError, RunInterrupted, UsageProblem

__all__ = ["LLMMagics"]


@magics_class
class LLMMagics(Magics):
    """Compare LLM backends from a cell. Settings: `%config LLMMagics.<name> = value`."""

    default_target = Unicode(
        None, allow_none=True, help="Target used when a cell names none, e.g. 'ollama:llama3.2'."
    ).tag(config=True)
    timeout = Float(
        None, allow_none=True, help="Seconds without a byte before a request fails."
    ).tag(config=True)
    deadline = Float(
        None, allow_none=True, help="Seconds in all for one answer, retries included (0: none)."
    ).tag(config=True)
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
    max_log_chars = Int(
        None, allow_none=True, help="Characters of each answer the run log keeps (0: all)."
    ).tag(config=True)

    def __init__(self, shell: Any = None, session: Session | None = None, **kwargs: Any):
        super().__init__(shell, **kwargs)
        self.session = session or kernel_session

    @property
    def session(self) -> Session:
        return self._session

    @session.setter
    def session(self, session: Session) -> None:
        # compare(), complete() and the panel on this session follow %config as cells do.
        session.settings = self.configured
        self._session = session

    def configured(self) -> dict[str, Any]:
        """Settings set with %config (None means: not set, fall through to env/file/default)."""
        names = self.trait_names(config=True)
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
        """parse -> plan -> run -> show."""
        if cmd.help:
            print(usage_text())
            return None
        # The planner, the runner and the views load with the first cell, so %load_ext stays light.
        from ._plan import make_plan

        plan = make_plan(cmd.request(self.shell.user_ns), self.session)
        return self._run(plan, cmd.quiet, cmd.out)

    def _run(self, plan: Any, quiet: bool, out: str | None) -> Any:
        """run -> show: the frame goes to _llm (and `out`); returns what the cell shows."""
        from ._api import run
        from ._live import view_for

        ns = self.shell.user_ns
        if plan.request.batch:  # provider batch APIs: submitted, waited for, collected there
            from ._batch_run import batch_cell

            return batch_cell(plan, ns, out, quiet, self.session, run)
        view = None if quiet else view_for(plan)
        interrupted = False
        try:
            try:
                records = run(plan, view, self.session)
            except RunInterrupted as exc:
                records, interrupted = exc.records, True
            from .results import compact, run_frame, verdict_lines

            df = run_frame(records, plan)
            if view is not None and plan.checks is not None:
                # ✓/✗ and the score under each answer, in the view's last frame
                view.scored(verdict_lines(df), int(df["passed"].sum()))
        finally:
            if view is not None:
                view.close()
        ns["_llm"] = df
        if out:
            ns[out] = df
        if interrupted:
            # Stop "Run All" here, as an interrupt should, and say what was kept.
            done = sum(1 for r in records if r.finish_reason != "interrupted")
            raise KeyboardInterrupt(
                f"{done} of {len(records)} answers finished; every row is in _llm;"
                f" %llm resume {plan.run_id} (or --resume) sends the rest"
            ) from None
        if quiet and records and all(r.error is not None for r in records):
            # -q hides answers, not a run with none: say so in one line (Run All goes on)
            print(
                f"%%llm -q: all {len(records)} answers failed ({records[0].error});"
                " the rows are in _llm",
                file=sys.stderr,
            )
        single = len(plan.jobs) == 1 and plan.checks is None and plan.schema is None
        if quiet or single and not plan.columns:
            return None  # the single answer is already on screen; the row is in _llm
        return compact(df)  # every column stays in _llm

    # -- subcommands ---------------------------------------------------------------------------

    def _subcommand(self, line: str) -> Any:
        from ._subcommands import run_subcommand

        name, args = parse_subcommand(line)
        if name == "resume":  # a run, shown as a cell shows one
            from ._plan import plan_of_run

            return self._run(plan_of_run(args[0], self.session), quiet=False, out=None)
        return run_subcommand(self.session, self.configured(), name, args)

