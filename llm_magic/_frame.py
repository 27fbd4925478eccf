"""The schema of a result frame: one row per RunRecord, the columns of records.COLUMNS with
fixed dtypes. Apart from results.py (the `df.llm` accessor) so that the run log can build
frames without the layers that run requests (store.py -> here, never -> results)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import pandas as pd

from ._records import COLUMNS, OPTIONAL_COLUMNS, RunRecord

__all__ = ["DTYPES", "OPTIONAL_DTYPES", "SCHEMA_DTYPES", "to_dataframe"]

_STRING = (
    "run_id",
    "target",
    "provider",
    "model",
    "prompt",
    "output",
    "finish_reason",
    "error",
    "fallback_from",
)
_FLOAT = ("latency_s", "ttft_s", "tokens_per_s", "cost_usd")
_INT = ("prompt_tokens", "completion_tokens", "total_tokens", "repeat")
_BOOL = ("tokens_estimated", "cached")

# The schema. started_at is microseconds: the same unit on pandas 2 and 3, empty or not.
DTYPES: dict[str, str] = {
    **dict.fromkeys(_STRING, "string"),
    **dict.fromkeys(_FLOAT, "float64"),
    **dict.fromkeys(_INT, "Int64"),
    **dict.fromkeys(_BOOL, "boolean"),
    "params": "object",
    "started_at": "datetime64[us, UTC]",
}
assert set(DTYPES) == set(COLUMNS), "records.COLUMNS and the DataFrame schema disagree"
# Columns a frame has only when its run asked for them (--tools).
OPTIONAL_DTYPES: dict[str, str] = {"tool_calls": "object", "endpoint": "string"}
assert set(OPTIONAL_DTYPES) == set(OPTIONAL_COLUMNS), "records and optional columns disagree"
# Columns read from the answers when the run had a schema (_schema_frame.py); never stored.
SCHEMA_DTYPES: dict[str, str] = {
    "parsed": "object",
    "schema_valid": "boolean",
    "schema_error": "string",
}


def _column(name: str, values: list[Any]) -> pd.Series:
    dtype = DTYPES.get(name) or OPTIONAL_DTYPES[name]
    if name == "started_at":
        # naive datetimes are taken as UTC; aware ones are converted
        return pd.Series(pd.to_datetime(values, utc=True)).astype(dtype)
    if name == "params":
        # A copy of each record's dict, one per dict: rows that were sent alike share one
        # (as their records do), so a run of 100,000 rows holds a handful, not 100,000.
        copies: dict[int, dict[str, Any]] = {}
        shared = [copies.get(id(v)) or copies.setdefault(id(v), dict(v or {})) for v in values]
        return pd.Series(shared, dtype=object)
    if dtype == "object":  # an optional list column: each row's own list
        return pd.Series([list(v) if v is not None else [] for v in values], dtype=object)
    if dtype == "float64":
        values = [math.nan if v is None else float(v) for v in values]
    return pd.Series(values, dtype=dtype)


def to_dataframe(records: Iterable[RunRecord], optional: Iterable[str] = ()) -> pd.DataFrame:
    """One row per record, columns exactly records.COLUMNS with the dtypes of DTYPES, then
    the `optional` columns asked for (records.OPTIONAL_COLUMNS: `tool_calls`, `endpoint`)."""
    # Plain attribute reads, not dataclasses.asdict: that deep-copies every record, which was
    # most of the time a 1,000-row batch spent after its last answer. `params` is copied below.
    rows = [r if isinstance(r, RunRecord) else _Mapped(r) for r in records]
    names = [*COLUMNS, *(c for c in OPTIONAL_COLUMNS if c in set(optional))]
    return pd.DataFrame({c: _column(c, [getattr(row, c) for row in rows]) for c in names})


class _Mapped:
    """A mapping read as a record: its missing keys are None."""

    __slots__ = ("_values",)

    def __init__(self, values: Any) -> None:
        self._values = dict(values)

    def __getattr__(self, name: str) -> Any:
        return self._values.get(name)
