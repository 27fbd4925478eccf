"""Run records -> a DataFrame with a fixed schema, and the `df.llm` accessor.

pandas is imported at the top on purpose: this module is only imported when a run produces a
frame (never by `import llm_magic`), and importing it is what registers `df.llm`.
"""

from __future__ import annotations

import importlib
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from llm_magic import _html as html
from llm_magic import _scoring as scoring
from llm_magic._checks import verdict_line
from llm_magic._frame import DTYPES, to_dataframe
from llm_magic._records import RunRecord
from llm_magic._schema_frame import schema_columns, schema_summary
from llm_magic._view_text import excerpt, visible
from llm_magic.errors import UsageProblem

if TYPE_CHECKING:
    from llm_magic._plan import Plan

__all__ = [
    "DTYPES",
    "LLMAccessor",
    "SideBySide",
    "compact",
    "empty_frame",
    "run_frame",
    "to_dataframe",
    "verdict_lines",
]

def run_frame(records: Sequence[RunRecord], plan: Plan) -> pd.DataFrame:
    """The frame of a run: its records, plus the columns of its schema and its checks."""
    frame = to_dataframe(records, plan.columns)
    if plan.schema is not None:
        frame = schema_columns(frame, plan.schema)
    if plan.checks is not None:
        nos = [job.prompt_no for job in plan.jobs]
        # A run the user stopped sends nothing more: its judge: and similar: checks stay unscored.
        if any(r.finish_reason == "interrupted" for r in records):
            frame = scoring.score_run(frame, plan.checks, nos)
        else:
            frame = scoring.score_run(frame, plan.checks, nos, plan.judge, plan.embedder)
    frame.attrs["run_id"] = plan.run_id  # what %llm resume takes, also in the run_id column
    return frame


def verdict_lines(frame: pd.DataFrame) -> list[str]:
    """Each row's checks as one line ("✓ correct 1.00 · ✗ json 0.00 (…)"); "" without."""
    if "checks" not in frame.columns:
        return [""] * len(frame)
    return [verdict_line(detail) for detail in frame["checks"].tolist()]


def empty_frame() -> pd.DataFrame:
    return to_dataframe([])


PREVIEW_CHARS = 80


def _preview(text: Any) -> Any:
    """The start of an answer on one line, controls and bidi overrides shown visibly."""
    if not isinstance(text, str):
        return text
    flat = " ".join(visible(text[: PREVIEW_CHARS * 4]).split())
    return flat if len(flat) <= PREVIEW_CHARS else flat[: PREVIEW_CHARS - 1] + "…"


def compact(frame: pd.DataFrame) -> pd.DataFrame:
    """What a run shows when it ends: one short line per answer. The prompt and the repeat
    appear only when the run had several; the full frame (every column) stays in `_llm`."""
    columns = ["target"]
    if frame["prompt"].nunique(dropna=False) > 1:
        columns.append("prompt")
    if frame["repeat"].nunique(dropna=False) > 1:
        columns.append("repeat")
    if "endpoint" in frame.columns:  # several servers behind a target: which one answered
        columns.append("endpoint")
    view = frame[columns].copy()
    if "prompt" in view.columns:
        view["prompt"] = frame["prompt"].map(_preview).astype("string")
    view["answer"] = frame["output"].map(_preview).astype("string")
    for name in ("latency_s", "ttft_s", "completion_tokens", "tokens_per_s", "cost_usd", "error"):
        view[name] = frame[name]
    if "tool_calls" in frame.columns:  # with --tools: the calls, one line
        from ._tools import calls_line

        calls = frame["tool_calls"].map(lambda entries: _preview(calls_line(entries, 400)))
        view["tool_calls"] = calls.astype("string")
    if "schema_valid" in frame.columns:  # with --schema: whether each answer fits it
        view["schema_valid"] = frame["schema_valid"]
    if "passed" in frame.columns:  # with --check: every score, and whether all passed
        for name in [c for c in frame.columns if str(c).startswith("score_")] + ["passed"]:
            view[name] = frame[name]
    return view.rename(columns={"completion_tokens": "tokens"})


def _value(x: Any) -> Any:
    """None for NA/NaN, the value otherwise (html.caption_text and f-strings want plain values)."""
    return None if x is None or (not isinstance(x, dict | list) and pd.isna(x)) else x


def _row_labels(frame: pd.DataFrame) -> pd.Series:
    """The prompt of each row; with the system prompt beside it when the rows' system prompts
    differ (`-s` rendered per --over item), so that those rows do not merge."""
    if "prompt" not in frame.columns or "params" not in frame.columns:
        return frame["prompt"]
    systems = frame["params"].map(lambda p: p.get("system") if isinstance(p, dict) else None)
    if len(set(systems.tolist())) <= 1:
        return frame["prompt"]
    said = systems.map(lambda s: f"system: {s}" if s else "no system prompt")
    return frame["prompt"].astype("string") + " · " + said


def _schema_verdict(row: pd.Series) -> str:
    """"✓ schema" or "✗ schema (why)" under an answer of a run with --schema."""
    valid = _value(row.get("schema_valid"))
    if valid is None:
        return ""
    if valid:
        return "✓ schema"
    error = str(_value(row.get("schema_error")) or "")
    return f"✗ schema ({error if len(error) <= 60 else error[:59] + '…'})"


def _calls_caption(entries: Any) -> str:
    """The calls under an answer of a run with --tools ("calls get_weather(city='Paris')")."""
    if not isinstance(entries, list) or not entries:
        return ""
    from ._tools import calls_line

    return f"calls {_preview(calls_line(entries, 400))}"


def _plain(value: Any) -> Any:
    return excerpt(value).plain() if isinstance(value, str) else value


class SideBySide:
    """Prompts as rows, targets as columns; renders as escaped HTML in a notebook, each answer
    bounded to its first view_text.SHOWN_HEAD characters."""

    def __init__(self, frame: pd.DataFrame, fmt: str = "text") -> None:
        # Columns are the targets the cell asked for: a row answered through a fallback chain
        # `a|b` stays under `a` (its caption says who answered), so it never merges into a
        # column of `b` asked for on its own.
        lane = frame["target"]
        if "fallback_from" in frame.columns:
            first_tried = frame["fallback_from"].astype("string").str.split("|").str[0]
            lane = first_tried.where(first_tried.notna(), lane)
        self._frame = frame.assign(__lane=lane, __row=_row_labels(frame))
        self.fmt = html.check_format(fmt)

    def _order(self, column: str) -> list[Any]:
        return list(dict.fromkeys(self._frame[column].tolist()))

    def _entry(self, row: pd.Series, tagged: bool) -> html.Entry:
        get = row.get
        caption = html.caption_text(
            _value(get("latency_s")),
            _value(get("completion_tokens")),
            _value(get("tokens_per_s")),
            estimated=bool(_value(get("tokens_estimated"))),
            cached=bool(_value(get("cached"))),
        )
        if _value(get("fallback_from")) is not None:
            answered = f"by {get('target')} after {get('fallback_from')} failed"
            caption = " · ".join(filter(None, [caption, answered]))
        verdicts = verdict_line(get("checks"))  # ✓/✗ and the score of each check
        calls = _calls_caption(get("tool_calls"))
        caption = " · ".join(filter(None, [_schema_verdict(row), calls, verdicts, caption]))
        repeat = _value(get("repeat"))
        return html.Entry(
            text=_value(get("output")) or "",
            caption=caption,
            error=_value(get("error")),
            tag=f"#{repeat if repeat is not None else '?'}" if tagged else "",
        )

    def _repr_html_(self) -> str:
        frame = self._frame
        targets, prompts = self._order("__lane"), self._order("__row")
        cells: dict[tuple[Any, Any], list[pd.Series]] = {}
        for _, row in frame.iterrows():
            cells.setdefault((row["__row"], row["__lane"]), []).append(row)
        tagged = any(len(v) > 1 for v in cells.values())
        rows = [
            (
                str(_value(p) or ""),
                [[self._entry(r, tagged) for r in cells.get((p, t), [])] for t in targets],
            )
            for p in prompts
        ]
        return html.grid_html([str(_value(t) or "") for t in targets], rows, self.fmt)

    def to_frame(self, values: str = "output") -> pd.DataFrame:
        """Plain pivot: one row per prompt (per prompt and repeat when there are several
        answers to a cell), one column per target, cells from the `values` column."""
        frame = self._frame[["__row", "__lane", values]].rename(
            columns={"__row": "prompt", "__lane": "target"}
        )
        nth = frame.groupby(["prompt", "target"], sort=False, dropna=False).cumcount()
        index: list[str] = ["prompt"]
        if len(frame) and nth.max() > 0:
            frame.insert(1, "__nth", nth)
            index.append("__nth")
        wide = frame.pivot(index=index, columns="target", values=values)
        order = list(dict.fromkeys(frame.set_index(index).index.tolist()))
        wide = wide.reindex(index=order, columns=self._order("__lane"))
        wide.index.names = ["prompt", "repeat"][: len(index)]
        return wide

    def __repr__(self) -> str:
        # what a terminal shows: each answer's excerpt, controls visible (to_frame() keeps all)
        wide = self.to_frame().rename(index=_plain, columns=_plain)
        return repr(wide.apply(lambda column: column.map(_plain, na_action="ignore")))


class LLMAccessor:
    """`df.llm`: side_by_side(), summary(), check(), rank(), plot() on a frame made by
    llm_magic."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self._frame = frame

    def _need(self, method: str, columns: Sequence[str]) -> pd.DataFrame:
        missing = [c for c in columns if c not in self._frame.columns]
        if missing:
            raise UsageProblem(f"df.llm.{method}() needs the column(s) {', '.join(missing)}")
        return self._frame

    def side_by_side(self, fmt: str = "text") -> SideBySide:
        return SideBySide(self._need("side_by_side", ("prompt", "target", "output")), fmt)

    def check(
        self,
        *checks: Any,
        over: Any = None,
        variables: Mapping[str, Any] | None = None,
        judge: str | None = None,
        cache: bool | None = None,
        embed: str | None = None,
    ) -> pd.DataFrame:
        """The frame scored again with other checks, no answer asked again: specs
        ("contains:{expected}"), functions (py:) or schemas. Fields are filled from the row's
        columns, then the `over` items the run went over, then `variables` (default: the
        notebook's names). judge: checks ask `judge`, similar: checks embed with `embed`
        (default for both: the default target). Returns a new frame whose check columns are
        these checks' alone."""
        from ._plan import make_embedder, make_judge
        from ._request import Request
        from ._session import session

        items: Any = checks[0] if len(checks) == 1 and isinstance(checks[0], Mapping) else checks
        request = Request(prompts=("",), judge=judge, cache=cache, embed=embed)
        return scoring.check_frame(
            self._frame, items, over=over, variables=variables,
            judge=lambda: make_judge(request, session),
            embedder=lambda: make_embedder(request, session),
        )

    def rank(
        self,
        judge: str | None = None,
        rubric: str | None = None,
        *,
        seed: int | None = 0,
        resamples: int = 1000,
        cache: bool | None = None,
        over: Any = None,
        variables: Mapping[str, Any] | None = None,
    ) -> pd.DataFrame:
        """Pairwise ranking of the frame's targets by `judge` (default: the default target):
        every pair's answers to each prompt judged in both orders. Per target, best first:
        wins, losses, ties, unreadable, skipped, win_rate and a Bradley–Terry strength with a
        95 % bootstrap interval over the prompts (`seed` fixes it; None: a fresh one). The
        verdicts are in attrs["verdicts"], the judge's figures in attrs["judge"]. The rubric
        is a template like a judge: check's ("the right answer is {expected}"), filled per
        prompt from the row's columns, then `over`, then `variables` (default: the notebook's
        names)."""
        from ._plan import make_judge
        from ._rank import RUBRIC, rank_frame
        from ._request import Request
        from ._session import session

        for name, value in (("resamples", resamples), ("seed", seed)):
            if value is None and name == "seed":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise UsageProblem(f"df.llm.rank(): {name}={value!r} is not a whole number >= 0")
        request = Request(prompts=("",), judge=judge, cache=cache)
        rubrics = _rubrics(self._frame, rubric or RUBRIC, over, variables)
        made = make_judge(request, session)  # an unknown judge is refused before anything
        return rank_frame(self._frame, made, rubrics, seed, resamples)

    def to_batch_file(self, path: Any) -> Any:
        """Each row's request (prompt, target, system prompt and sampling from `params`) as
        one line of an OpenAI batch input file, what `vllm run-batch` reads; the path."""
        from ._batch_files import frame_to_batch_file

        return frame_to_batch_file(self._frame, path)

    def summary(self) -> pd.DataFrame:
        """One row per target in order of first appearance. Latency, ttft and tokens/s are taken
        over answers without error (a failure's timing says nothing about the model's speed);
        token and cost sums count every row and are NA/NaN when none is known. With checks:
        pass_rate, its 95 % Wilson interval (pass_lo, pass_hi) and each score's mean. With a
        schema: valid_rate over the answers and its Wilson interval (valid_lo, valid_hi)."""
        cols = (
            "target",
            "error",
            "latency_s",
            "ttft_s",
            "tokens_per_s",
            "completion_tokens",
            "cost_usd",
        )
        frame = self._need("summary", cols)
        out: dict[Any, dict[str, Any]] = {}
        for target, group in frame.groupby("target", sort=False, dropna=False):
            ok = group[group["error"].isna()]
            out[target] = {
                "n": len(group),
                "errors": int(group["error"].notna().sum()),
                "latency_p50": _quantile(ok["latency_s"], 0.5),
                "latency_p95": _quantile(ok["latency_s"], 0.95),
                "ttft_p50": _quantile(ok["ttft_s"], 0.5),
                "ttft_p95": _quantile(ok["ttft_s"], 0.95),
                "tokens_per_s": _quantile(ok["tokens_per_s"], 0.5),
                "completion_tokens": group["completion_tokens"].astype("Int64").sum(min_count=1),
                "cost_usd": group["cost_usd"].astype("float64").sum(min_count=1),
            }
        result = pd.DataFrame.from_dict(out, orient="index", columns=list(_SUMMARY))
        result = result.astype(_SUMMARY)
        for extra in (schema_summary(frame), scoring.pass_summary(frame)):
            if extra is not None:
                result = result.join(extra)
        result.index.name = "target"
        return result

    def plot(self, figsize: tuple[float, float] | None = None) -> Any:
        """Bar charts per target: median latency, ttft and tokens/s, whiskers up to p95.
        Returns the array of three matplotlib Axes."""
        try:
            importlib.import_module("matplotlib")
            plt = importlib.import_module("matplotlib.pyplot")
        except ImportError:
            raise UsageProblem("df.llm.plot() needs matplotlib: pip install matplotlib") from None
        frame = self._need("plot", ("target", "latency_s", "ttft_s", "tokens_per_s"))
        targets = list(dict.fromkeys(frame["target"].tolist()))
        if "error" in frame.columns:
            frame = frame[frame["error"].isna()]  # a failure's timing is not the model's speed
        groups = dict(tuple(frame.groupby("target", sort=False, dropna=False)))
        fig, axes = plt.subplots(
            1,
            3,
            figsize=figsize or (4 + 1.2 * len(targets), 3.2),
            squeeze=False,
            layout="constrained",
        )
        for ax, (column, title) in zip(axes[0], _PLOTTED, strict=True):
            med, p95 = (
                pd.Series([_stat(groups, t, column, q) for t in targets], index=targets)
                for q in (0.5, 0.95)
            )
            med.plot.bar(ax=ax, rot=30, legend=False)  # an unknown value draws no bar
            # Whiskers go up from the median to p95. Drawn by errorbar() with a float (2, N) array:
            # bar(yerr=) in matplotlib < 3.11 splits it into a list, which trips numpy's
            # "ndim > 0 to a scalar" deprecation when there is one target.
            up = (p95 - med).fillna(0.0).to_numpy(dtype="float64")
            ax.errorbar(
                np.arange(len(targets), dtype="float64"),
                med.fillna(0.0).to_numpy(dtype="float64"),
                yerr=np.stack([np.zeros_like(up), up]),
                fmt="none",
                capsize=3,
                ecolor=plt.rcParams["xtick.color"],
            )
            for i, value in enumerate(med.tolist()):
                if math.isnan(value):  # an empty slot must not read as "fastest"
                    ax.annotate("no answer", (i, 0), ha="center", va="bottom", rotation=90)
            ax.set_title(title)
            ax.set_xlabel("")
        return axes[0]


def _rubrics(
    frame: pd.DataFrame, rubric: str, over: Any, variables: Mapping[str, Any] | None
) -> str | list[str]:
    """rank()'s rubric, filled per row when it has {fields} (UsageProblem for one found
    nowhere, before anything is asked)."""
    from ._checks import notebook_namespace
    from ._template import fields, render

    names = fields(rubric)
    if not names:
        return rubric
    scope = scoring.RowScope(frame, over, notebook_namespace() if variables is None else variables)
    scope.need(names, f"rank() rubric {rubric!r}")
    return [render(rubric, {n: scope.lookup(i, n) for n in names}) for i in range(len(frame))]


def _quantile(values: pd.Series, q: float) -> float:
    """NaN-skipping quantile; NaN, without numpy's empty-slice warning, when nothing is known."""
    known = values.astype("float64").dropna()
    return float(known.quantile(q)) if len(known) else math.nan


def _stat(groups: dict[Any, pd.DataFrame], target: Any, column: str, q: float) -> float:
    return _quantile(groups[target][column], q) if target in groups else math.nan


_SUMMARY: dict[str, str] = {
    "n": "int64",
    "errors": "int64",
    "latency_p50": "float64",
    "latency_p95": "float64",
    "ttft_p50": "float64",
    "ttft_p95": "float64",
    "tokens_per_s": "float64",
    "completion_tokens": "Int64",
    "cost_usd": "float64",
}
_PLOTTED = (
    ("latency_s", "latency (s)"),
    ("ttft_s", "time to first token (s)"),
    ("tokens_per_s", "tokens/s"),
)


def _register() -> None:
    """Register `df.llm` once; a reload of this module (autoreload) replaces its own
    registration silently, while a foreign "llm" accessor still gets pandas' warning."""
    existing = getattr(pd.DataFrame, "llm", None)
    if existing is LLMAccessor:
        return
    ours = getattr(existing, "__module__", None) == __name__
    with warnings.catch_warnings():
        if ours:
            warnings.simplefilter("ignore", UserWarning)
        pd.api.extensions.register_dataframe_accessor("llm")(LLMAccessor)


_register()
