"""How each kind of check scores one answer: contains, icontains, not-contains, equals, regex,
json, schema and py (judge.py and similar.py score judge: and similar:). checks.py parses specs
and looks up notebook objects; these functions get a ready `Check`, the answer, the row's
filled TEXT/PATTERN and a way to get the row (py:)."""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ._schema import parse_json, validated
from .errors import one_line

if TYPE_CHECKING:
    from ._checks import Check

__all__ = ["SCORERS", "Verdict", "raised"]

Verdict = tuple[float, str]  # score (NaN: not scorable) and a one-line reason
_SHOWN = 40  # characters of a TEXT quoted in a reason


def raised(what: str, exc: BaseException) -> str:
    return one_line(f"{what} raised {type(exc).__name__}: {exc}", 200)


@functools.lru_cache(maxsize=1024)  # the same TEXT is quoted in row after row
def _quoted(text: str) -> str:
    return repr(text if len(text) <= _SHOWN else text[: _SHOWN - 1] + "…")


def _contains(check: Check, answer: str, arg: Any, row: Any) -> Verdict:
    if arg in answer:
        return 1.0, f"contains {_quoted(arg)}"
    return 0.0, f"{_quoted(arg)} not found"


def _icontains(check: Check, answer: str, arg: Any, row: Any) -> Verdict:
    if arg.casefold() in answer.casefold():
        return 1.0, f"contains {_quoted(arg)} (any case)"
    return 0.0, f"{_quoted(arg)} not found (any case)"


def _not_contains(check: Check, answer: str, arg: Any, row: Any) -> Verdict:
    if arg in answer:
        return 0.0, f"contains {_quoted(arg)}"
    return 1.0, f"no {_quoted(arg)}"


def _equals(check: Check, answer: str, arg: Any, row: Any) -> Verdict:
    # Surrounding whitespace is not part of an answer: models end with a newline or not.
    if answer.strip() == arg.strip():
        return 1.0, f"equals {_quoted(arg)}"
    return 0.0, f"{_quoted(answer.strip())} is not {_quoted(arg)}"


def _regex(check: Check, answer: str, arg: Any, row: Any) -> Verdict:
    pattern = check.pattern
    if pattern is None:
        try:
            pattern = re.compile(arg)  # re caches compiled patterns: a repeated one is cheap
        except re.error as exc:
            return math.nan, one_line(f"regex {_quoted(arg)} does not compile: {exc}", 200)
    found = pattern.search(answer)
    if found:
        return 1.0, f"matches {_quoted(found.group(0))}"
    return 0.0, f"no match for {_quoted(pattern.pattern)}"


def _json(check: Check, answer: str, arg: Any, row: Any) -> Verdict:
    value, problem = parse_json(answer)
    if problem:
        return 0.0, problem
    return 1.0, f"JSON {type(value).__name__}"


def _schema(check: Check, answer: str, arg: Any, row: Any) -> Verdict:
    value, problem = parse_json(answer)
    if problem:
        return 0.0, problem
    _, problem = validated(value, check.validator, check.obj)
    if problem is not None:
        return 0.0, problem
    return 1.0, f"valid against {arg}" if check.validator is not None else f"valid {arg}"


def _py(check: Check, answer: str, arg: Any, row: Callable[[], Mapping[str, Any]]) -> Verdict:
    name = f"py:{check.spec.arg}"
    try:
        result = check.obj(answer, row())
    except Exception as exc:
        return math.nan, raised(name, exc)
    reason = ""
    if isinstance(result, tuple) and len(result) == 2:
        result, reason = result
    if not isinstance(result, bool | int | float) and callable(getattr(result, "item", None)):
        result = result.item()  # a NumPy scalar (np.bool_ is no bool): its Python value
    if isinstance(result, bool):
        score = float(result)
    elif isinstance(result, int | float) and not math.isnan(result):
        score = float(result)
        if not 0.0 <= score <= 1.0:
            return math.nan, f"{name} returned {result!r}, not a score in 0–1"
    else:
        want = "a bool, a number in 0–1 or (score, reason)"
        return math.nan, one_line(f"{name} returned {result!r}: want {want}", 200)
    return score, one_line(str(reason), 200) if reason else f"{name} gave {score:g}"


def _unjudged(check: Check, answer: str, arg: Any, row: Any) -> Verdict:
    # scoring.py hands judge: checks the judge's verdicts; this runs only when a stopped run
    # skipped the judge
    return math.nan, "not judged (the run was stopped)"


def _uncompared(check: Check, answer: str, arg: Any, row: Any) -> Verdict:
    # scoring.py hands similar: checks their cosines; this runs only when a stopped run
    # skipped the embeddings
    return math.nan, "not compared (the run was stopped)"


SCORERS: dict[str, Callable[[Check, str, Any, Any], Verdict]] = {
    "contains": _contains,
    "icontains": _icontains,
    "not-contains": _not_contains,
    "equals": _equals,
    "regex": _regex,
    "json": _json,
    "schema": _schema,
    "py": _py,
    "judge": _unjudged,
    "similar": _uncompared,
}
