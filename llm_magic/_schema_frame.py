"""The columns structured output adds to a frame — `parsed` (object), `schema_valid`
(boolean), `schema_error` (string) — and what `df.llm.summary()` adds from them (the valid rate
with a Wilson interval). Only a run with a schema has them; imported with pandas.

A failed request has no answer to read: `schema_valid` is NA there (the row counts in
`errors`, not in the valid rate). An answer off the schema is a row like any other, with
`schema_valid` False and the first problem in `schema_error`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd

from ._frame import SCHEMA_DTYPES
from ._schema import StructuredSchema, compile_schema
from ._scoring import wilson
from .errors import UsageProblem

__all__ = ["SCHEMA_COLUMNS", "logged_schema_columns", "schema_columns", "schema_summary"]

SCHEMA_COLUMNS = tuple(SCHEMA_DTYPES)  # parsed, schema_valid, schema_error: a Reading's order
NO_ANSWER = (None, None, "no answer")  # schema_valid NA: a failed request has no answer


Row = tuple[Any, bool | None, str | None]  # a Reading, or NO_ANSWER


def _readings(
    frame: pd.DataFrame, schema_of: Callable[[int], StructuredSchema | None]
) -> list[Row | None]:
    outputs = frame["output"].tolist()
    failed = frame["error"].notna().tolist()
    finish = frame["finish_reason"].tolist() if "finish_reason" in frame else [None] * len(frame)
    out: list[Row | None] = []
    for i, answer in enumerate(outputs):
        schema = schema_of(i)
        if schema is None:
            out.append(None)
            continue
        if failed[i]:
            out.append(NO_ANSWER)
            continue
        parsed, valid, error = schema.read(answer if isinstance(answer, str) else "")
        if not valid and finish[i] == "length":
            error = f"{error} (the answer was cut at max_tokens)"
        out.append((parsed, valid, error))
    return out


def _with_columns(frame: pd.DataFrame, readings: Sequence[Row | None]) -> pd.DataFrame:
    def column(n: int) -> list[Any]:
        return [r[n] if r is not None else None for r in readings]

    out = frame.drop(columns=[c for c in SCHEMA_COLUMNS if c in frame.columns])
    for n, (name, dtype) in enumerate(SCHEMA_DTYPES.items()):
        out[name] = pd.Series(column(n), index=frame.index, dtype=dtype)
    return out


def schema_columns(frame: pd.DataFrame, schema: StructuredSchema) -> pd.DataFrame:
    """The frame of a run asked with `schema`, with the three columns."""
    return _with_columns(frame, _readings(frame, lambda i: schema))


def logged_schema_columns(frame: pd.DataFrame, truncated: Sequence[bool]) -> pd.DataFrame:
    """Rows read back from the run log: each one asked with a schema (its params'
    `json_schema`) read against it again, `parsed` as the plain JSON value (a Pydantic class
    is not in the log). The frame as it is when no row had a schema."""
    texts = [p.get("json_schema") if isinstance(p, dict) else None for p in frame["params"]]
    if not any(isinstance(t, str) for t in texts):
        return frame
    compiled: dict[str, StructuredSchema | None] = {}

    def schema_of(i: int) -> StructuredSchema | None:
        text = texts[i]
        if not isinstance(text, str):
            return None
        if text not in compiled:
            try:
                compiled[text] = compile_schema(json.loads(text), "the logged schema")
            except (ValueError, UsageProblem):  # written by another version: not readable
                compiled[text] = None
        return compiled[text]

    readings = _readings(frame, schema_of)
    for i, cut in enumerate(truncated):
        if cut and readings[i] is not None and readings[i] is not NO_ANSWER:
            readings[i] = (None, None, "the log kept only the start of the answer")
    return _with_columns(frame, readings)


def schema_summary(frame: pd.DataFrame) -> pd.DataFrame | None:
    """Per target: valid_rate over the answers (failed requests aside) and its 95 % Wilson
    interval (valid_lo, valid_hi); None when the frame has no schema columns."""
    if "schema_valid" not in frame.columns or "target" not in frame.columns:
        return None
    out: dict[Any, dict[str, float]] = {}
    for target, group in frame.groupby("target", sort=False, dropna=False):
        read = group["schema_valid"].dropna()
        n, k = len(read), int(read.astype(bool).sum())
        lo, hi = wilson(k, n)
        out[target] = {"valid_rate": k / n if n else math.nan, "valid_lo": lo, "valid_hi": hi}
    result = pd.DataFrame.from_dict(out, orient="index", dtype="float64")
    return result.reindex(columns=["valid_rate", "valid_lo", "valid_hi"])
