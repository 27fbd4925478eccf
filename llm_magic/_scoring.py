"""Checks applied to a result frame: the `score_NAME`, `pass_NAME`, `passed` and `checks`
columns, and what `df.llm.summary()` adds from them (pass rate with a Wilson interval).

Imported with pandas, by results.py; the checks themselves live in checks.py.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd

from ._checks import Check, CheckPlan, compile_checks, notebook_namespace
from ._template import expand_over, render
from .errors import UsageProblem, one_line

if TYPE_CHECKING:
    from ._judge import Judge
    from ._similar import Embedder

# What judge: and similar: ask for a batch of tasks: a verdict per task, and their figures
Ask = Callable[[Sequence[tuple[str, ...]]], tuple[list[tuple[float, str]], dict]]

__all__ = ["check_frame", "is_check_column", "pass_summary", "score_run", "wilson"]

NO_ANSWER = "no answer"
_NO_ANSWER = {"score": math.nan, "pass": False, "reason": NO_ANSWER}
_Z95 = 1.959963984540054


class _Unfilled(str):
    """A TEXT/PATTERN that could not be filled for one row: the reason, not an argument."""


def is_check_column(name: Any) -> bool:
    return name in ("passed", "checks") or str(name).startswith(("score_", "pass_"))


def score_run(
    frame: pd.DataFrame,
    plan: CheckPlan,
    prompt_nos: Sequence[int],
    judge: Judge | None = None,
    embedder: Embedder | None = None,
) -> pd.DataFrame:
    """The frame of a run (rows in job order) with its checks' columns; `judge` scores the
    judge: checks (its figures go to df.attrs["judge"]), `embedder` the similar: checks
    (df.attrs["embed"])."""
    nos = list(prompt_nos)[: len(frame)]
    args = [[plan.args[p][j] for p in nos] for j in range(len(plan.checks))]

    def row(i: int) -> Mapping[str, Any]:
        return {**plan.items[nos[i]], **frame.iloc[i].to_dict()}

    return _scored(frame, plan.checks, args, row, judge, embedder)


def check_frame(
    frame: pd.DataFrame,
    checks: Any,
    over: Any = None,
    variables: Mapping[str, Any] | None = None,
    judge: Callable[[], Judge] | None = None,
    embedder: Callable[[], Embedder] | None = None,
) -> pd.DataFrame:
    """`df.llm.check(...)`: score an existing frame again, no answer asked again (judge: and
    similar: checks ask the judge and the embedder). TEXT/PATTERN fields are filled from the
    row's columns, then the `over` item the row came from, then `variables` (default: the
    notebook's names)."""
    for needed in ("output", "error"):
        if needed not in frame.columns:
            raise UsageProblem(f"df.llm.check() needs the column {needed!r}")
    namespace = notebook_namespace() if variables is None else variables
    compiled = compile_checks(checks, namespace)
    if not compiled:
        raise UsageProblem("df.llm.check() got no checks, e.g. df.llm.check('contains:Paris')")
    scope = RowScope(frame, over, namespace)
    for check in compiled:
        scope.need(check.fields, f"check {str(check.spec)!r}")
    args = [_fills(check, len(frame), scope.lookup) for check in compiled]
    row = scope.row

    kinds = {c.kind for c in compiled}
    return _scored(
        frame,
        compiled,
        args,
        row,
        judge() if judge is not None and "judge" in kinds else None,
        embedder() if embedder is not None and "similar" in kinds else None,
    )


class RowScope:
    """Where a template's {fields} are found for row i of a frame: the row's columns, then the
    `over` item the row came from, then `namespace` (the notebook's names)."""

    def __init__(self, frame: pd.DataFrame, over: Any, namespace: Mapping[str, Any]) -> None:
        self.items = _items_per_row(frame, over)
        self.columns = {
            str(c): frame[c].tolist() for c in frame.columns if not is_check_column(c)
        }
        self.namespace = namespace

    def need(self, names: Sequence[str], what: str) -> None:
        """UsageProblem (before anything is asked) for a field found nowhere."""
        items = self.items
        for name in names:
            if name not in self.columns and not (items and name in items[0]) and (
                name not in self.namespace
            ):
                raise UsageProblem(
                    f"{what}: {{{name}}} is not a column of the frame, a field of over= or a"
                    " notebook variable"
                )

    def lookup(self, i: int, name: str) -> Any:
        if name in self.columns:
            return self.columns[name][i]
        if self.items and name in self.items[i]:
            return self.items[i][name]
        return self.namespace[name]

    def row(self, i: int) -> Mapping[str, Any]:
        items = self.items
        return {**(items[i] if items else {}), **{k: v[i] for k, v in self.columns.items()}}


def _scored(
    frame: pd.DataFrame,
    checks: Sequence[Check],
    args: Sequence[Sequence[str | None]],
    row: Callable[[int], Mapping[str, Any]],
    judge: Judge | None,
    embedder: Embedder | None = None,
) -> pd.DataFrame:
    outputs = frame["output"].tolist()
    prompts = frame["prompt"].tolist() if "prompt" in frame.columns else [""] * len(frame)

    def answer(i: int) -> str:
        return outputs[i] if isinstance(outputs[i], str) else ""

    # Asked once the answers are in, each kind as one batch: the judge gets the rubric, the
    # question and the answer; the embedder the TEXT and the answer.
    judged, judge_stats = _asked(
        "judge", checks, frame, args, judge, lambda rubric, i: (rubric, str(prompts[i]), answer(i))
    )
    compared, embed_stats = _asked(
        "similar", checks, frame, args, embedder, lambda text, i: (text, answer(i))
    )
    scored = _with_columns(frame, _columns(checks, frame, args, row, {**judged, **compared}))
    for name, stats in (("judge", judge_stats), ("embed", embed_stats)):
        if stats is not None:
            scored.attrs[name] = stats
    return scored


def _asked(
    kind: str,
    checks: Sequence[Check],
    frame: pd.DataFrame,
    args: Sequence[Sequence[str | None]],
    ask: Ask | None,
    task: Callable[[str, int], tuple[str, ...]],
) -> tuple[dict[tuple[int, int], tuple[float, str]], dict | None]:
    """Every `kind` check of every answered row as one batch of `task(arg, row no)` for `ask`:
    {(check no, row no): verdict} and the batch's figures."""
    if ask is None:
        return {}, None
    failed = frame["error"].notna().tolist()
    keys, tasks = [], []
    for j, check in enumerate(checks):
        if check.kind != kind:
            continue
        for i, arg in enumerate(args[j]):
            if failed[i] or arg is None or isinstance(arg, _Unfilled):
                continue  # no answer, or an argument that could not be filled: reasoned below
            keys.append((j, i))
            tasks.append(task(arg, i))
    verdicts, stats = ask(tasks)
    return dict(zip(keys, verdicts, strict=True)), stats


def _fills(check: Check, n: int, lookup: Callable[[int, str], Any]) -> list[str | None]:
    """The check's TEXT/PATTERN for each row; filled once per distinct set of field values."""
    if not check.templated:
        return [check.spec.arg] * n
    assert check.spec.arg is not None
    out: list[str | None] = []
    seen: dict[Any, str] = {}
    for i in range(n):
        scope = {name: lookup(i, name) for name in check.fields}
        try:  # typed: 1, 1.0 and True are equal keys but render apart
            key: Any = tuple((type(v), v) for v in scope.values())
            hash(key)
        except TypeError:
            key = None
        if key is not None and key in seen:
            out.append(seen[key])
            continue
        try:
            filled: str = render(check.spec.arg, scope)
        except UsageProblem as exc:
            filled = _Unfilled(exc.message)
        if key is not None:
            seen[key] = filled
        out.append(filled)
    return out


def _items_per_row(frame: pd.DataFrame, over: Any) -> list[Mapping[str, Any]] | None:
    """The `over` items lined up with the frame's rows: a run over N items has N blocks of
    equal size (targets x repeats), each block one prompt."""
    if over is None:
        return None
    items = expand_over(over, "over")
    size, rest = divmod(len(frame), len(items))
    prompts = frame["prompt"].tolist() if "prompt" in frame.columns else None
    lined_up = size > 0 and rest == 0 and prompts is not None
    if lined_up:
        blocks = (prompts[b * size : (b + 1) * size] for b in range(len(items)))  # type: ignore[index]
        lined_up = all(len(set(block)) == 1 for block in blocks)
    if not lined_up:
        raise UsageProblem(
            f"df.llm.check(over=...): {len(frame)} rows do not line up with {len(items)} items"
            " as the rows of a --over run do; add the items' fields as columns instead"
        )
    return [item for item in items for _ in range(size)]


def _columns(
    checks: Sequence[Check],
    frame: pd.DataFrame,
    args: Sequence[Sequence[str | None]],
    row_of: Callable[[int], Mapping[str, Any]],
    asked: Mapping[tuple[int, int], tuple[float, str]],
) -> dict[str, Any]:
    """Score every row with every check (`args`: per check, each row's TEXT/PATTERN). A failed
    request is NaN/False with the reason "no answer"."""
    outputs = frame["output"].tolist()
    failed = frame["error"].notna().tolist()
    n, nan = len(frame), math.nan
    answered = [i for i in range(n) if not failed[i]]
    rows = [functools.partial(row_of, i) for i in range(n)]  # called only by py: checks
    details: list[dict[str, Any]] = [{} for _ in range(n)]
    columns: dict[str, Any] = {}
    passes = []
    for j, (check, check_args) in enumerate(zip(checks, args, strict=True)):
        scores, oks = [nan] * n, [False] * n
        verdicts: list[dict[str, Any]] = [_NO_ANSWER] * n
        score_one, threshold = check.score, check.threshold
        for i in answered:
            arg, answer = check_args[i], outputs[i]
            if isinstance(arg, _Unfilled):
                score, reason = nan, one_line(str(arg), 200)
            elif (j, i) in asked:  # a judge's verdict, a cosine
                score, reason = asked[j, i]
            else:
                score, reason = score_one(answer if isinstance(answer, str) else "", arg, rows[i])
            ok = score >= threshold  # NaN compares False: what cannot be scored never passes
            scores[i], oks[i] = score, ok
            verdicts[i] = {"score": score, "pass": ok, "reason": reason}
        for detail, verdict in zip(details, verdicts, strict=True):
            detail[check.name] = dict(verdict) if verdict is _NO_ANSWER else verdict
        columns[f"score_{check.name}"] = pd.Series(scores, index=frame.index, dtype="float64")
        columns[f"pass_{check.name}"] = pd.Series(oks, index=frame.index, dtype="boolean")
        passes.append(oks)
    every = [all(row) for row in zip(*passes, strict=True)] if passes else [False] * n
    columns["passed"] = pd.Series(every, index=frame.index, dtype="boolean")
    columns["checks"] = pd.Series(details, index=frame.index, dtype=object)
    return columns


def _with_columns(frame: pd.DataFrame, columns: dict[str, Any]) -> pd.DataFrame:
    """The frame without the columns of earlier checks, with these."""
    kept = frame[[c for c in frame.columns if not is_check_column(c)]]
    return pd.concat([kept, pd.DataFrame(columns, index=frame.index)], axis=1)


# ---- summary ---------------------------------------------------------------------------------
def wilson(passed: int, n: int, z: float = _Z95) -> tuple[float, float]:
    """The Wilson score interval of a pass rate (95 % by default); NaN for no rows. Unlike
    p ± z·se it stays inside 0–1 and is honest for small n and rates near 0 or 1."""
    if n <= 0:
        return math.nan, math.nan
    p = passed / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def pass_summary(frame: pd.DataFrame) -> pd.DataFrame | None:
    """Per target: pass_rate, its 95 % Wilson interval (pass_lo, pass_hi) and the mean of each
    score column; None when the frame has no checks. Every row counts, failures as not passed."""
    if "passed" not in frame.columns or "target" not in frame.columns:
        return None
    scores = [c for c in frame.columns if str(c).startswith("score_")]
    out: dict[Any, dict[str, float]] = {}
    for target, group in frame.groupby("target", sort=False, dropna=False):
        n = len(group)
        k = int(group["passed"].fillna(False).astype(bool).sum())
        lo, hi = wilson(k, n)
        out[target] = {"pass_rate": k / n if n else math.nan, "pass_lo": lo, "pass_hi": hi}
        for column in scores:
            out[target][column] = float(group[column].astype("float64").mean())
    result = pd.DataFrame.from_dict(out, orient="index", dtype="float64")
    return result.reindex(columns=["pass_rate", "pass_lo", "pass_hi", *scores])
