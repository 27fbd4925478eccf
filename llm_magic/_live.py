"""What a `%%llm` cell shows while it runs: live columns, or a progress bar for big runs.

Both hear the runner's events (plan.py's jobs, from worker threads) and draw through
display.py; the magic only picks one.
"""

from __future__ import annotations

from typing import Any

from ._plan import Plan
from ._records import RunRecord
from ._runner import Job

__all__ = ["LIVE_COLUMNS_MAX", "caption", "view_for"]

# Up to this many answers stream live in columns; a larger run shows a progress bar instead.
LIVE_COLUMNS_MAX = 12


def caption(record: RunRecord) -> str:
    """The line under an answer: timing and tokens as side_by_side() shows, plus any fallback."""
    from ._html import caption_text

    text = caption_text(
        record.latency_s,
        record.completion_tokens,
        record.tokens_per_s,
        estimated=record.tokens_estimated,
        cached=record.cached,
    )
    return f"{text} · after {record.fallback_from} failed" if record.fallback_from else text


class _LiveColumns:
    """Feeds runner events to the live columns (one per job)."""

    def __init__(self, plan: Plan) -> None:
        from ._display import LiveView

        labels = [plan.job_label(j) for j in plan.jobs]
        self._view = LiveView(labels, fmt=plan.request.format)
        self._view.show()
        self._records: dict[int, RunRecord] = {}
        for index, record in plan.answered.items():  # a resumed run's answers from the log
            self.on_done(plan.jobs[index], record)

    def on_text(self, job: Job, piece: str) -> None:
        self._view.append(job.index, piece)

    def on_done(self, job: Job, record: RunRecord) -> None:
        self._records[job.index] = record
        self._view.finish(job.index, record.output, caption(record), record.error)

    def scored(self, verdicts: list[str], passed: int) -> None:
        """Each answer's checks (✓/✗ and the score, one line per row in job order) go above
        its caption once the run's frame is scored."""
        for index, line in enumerate(verdicts):
            record = self._records.get(index)
            if record is not None and line:
                said = " · ".join(filter(None, [line, caption(record)]))
                self._view.finish(index, record.output, said, record.error)

    def close(self) -> None:
        self._view.close()


class _ProgressBar:
    """For large runs: one tqdm bar instead of hundreds of columns. Each update costs the same
    however many rows the run has: a count moves and the bar redraws at most ten times a
    second; no row is drawn. The run id is in the bar, for `%llm resume` after a crash."""

    def __init__(self, plan: Plan) -> None:
        from tqdm.auto import tqdm

        self._bar = tqdm(
            total=len(plan.jobs), initial=len(plan.answered), desc=_bar_title(plan), unit="answer"
        )
        self._title = _bar_title(plan)
        self._errors = 0

    def on_text(self, job: Job, piece: str) -> None:
        pass

    def on_done(self, job: Job, record: RunRecord) -> None:
        if record.error is not None:
            self._errors += 1
            self._bar.set_postfix(errors=self._errors, refresh=False)
        self._bar.update(1)

    def scored(self, verdicts: list[str], passed: int) -> None:
        shown = f"{passed}/{len(verdicts)}"
        self._bar.set_postfix(errors=self._errors, passed=shown, refresh=False)

    def close(self) -> None:
        if self._errors:  # a full bar alone would read as all well
            self._bar.set_description(f"{self._title} · {self._errors} failed", refresh=False)
        self._bar.close()


def _bar_title(plan: Plan) -> str:
    resumed = f" · {len(plan.answered)} kept" if plan.answered else ""
    return f"llm {plan.run_id}{resumed}"


def view_for(plan: Plan) -> Any:
    """Live columns for a run that fits on screen, else a progress bar."""
    if len(plan.jobs) <= LIVE_COLUMNS_MAX:
        return _LiveColumns(plan)
    return _ProgressBar(plan)
