"""How a run's rows are stored: each RunRecord column as an SQL value and back (its kind read
from the field's annotation, so a new column needs no change here), every string redacted and
UTF-8-safe, an answer cut to the log's limit and flagged `truncated`."""

from __future__ import annotations

import json
import math
import operator
from collections.abc import Sequence
from dataclasses import fields, replace
from datetime import datetime, timezone
from typing import Any

from ._records import COLUMNS, OPTIONAL_COLUMNS, RunRecord
from ._redaction import redact
from ._utf8 import utf8_safe

__all__ = [
    "MARKS",
    "STORED",
    "STORED_COLS",
    "TRUNCATED",
    "declare",
    "record_of",
    "sql_rows",
    "table_sql",
]


# How each RunRecord field is stored, from its annotation ("float | None" -> "real"), so a new
# column is stored without touching this module.
_BY_TYPE = {
    "float": "real",
    "int": "int",
    "bool": "bool",
    "dict": "json",
    "list": "json",
    "datetime": "time",
}
_KINDS: dict[str, str] = {
    f.name: _BY_TYPE.get(str(f.type).split("[")[0].split(" ")[0], "text") for f in fields(RunRecord)
}
_SQL = {"real": "REAL", "int": "INTEGER", "bool": "INTEGER"}
# Not a RunRecord field: the DataFrame of a run keeps every character, only the log cuts.
TRUNCATED = "truncated"
_ROW = (*COLUMNS, *OPTIONAL_COLUMNS)  # every column a record can have, optional ones last
STORED = (*_ROW, TRUNCATED)  # a stored row: the record's columns, then the flag
STORED_COLS = ", ".join(f'"{c}"' for c in STORED)
MARKS = ", ".join("?" for _ in STORED)
_OUTPUT = COLUMNS.index("output")
# Redaction reads this far past a cut, so a key that crosses it is hidden whole.
_CUT_MARGIN = 512


def _redact_json(value: Any) -> Any:
    """Redact every string inside a JSON-like value (keys too)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {_redact_json(str(k)): _redact_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_json(v) for v in value]
    return value


def _strings(value: Any, out: list[str], seen: set[int]) -> None:
    """Add every string inside a JSON-like value, keys included, to `out`. A value already
    walked (the rows of one run share their params dict) is not walked again."""
    stack = [value]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            out.append(value)
        elif isinstance(value, dict | list | tuple) and value and id(value) not in seen:
            seen.add(id(value))
            stack.extend([*map(str, value), *value.values()] if isinstance(value, dict) else value)


def _clean(columns: dict[str, list[Any]]) -> bool:
    """True when redact() would change none of the strings in these columns (name -> values).

    redact() reads the environment on every call, too slow for 10,000 strings of a benchmark;
    one call on the strings joined by newlines answers for all of them: a secret or key shape
    inside one string is also inside the joined text (a newline is not a word character, so
    the key shapes' word boundaries hold). A change anywhere sends us back to row by row.
    """
    strings: list[str] = []
    seen: set[int] = set()
    for name, values in columns.items():
        if _KINDS[name] == "text":
            strings += [v if type(v) is str else str(v) for v in values if v is not None]
        elif _KINDS[name] == "json":
            for value in values:
                if value and id(value) not in seen:  # most rows: {} or the run's shared dict
                    _strings(value, strings, seen)
    joined = "\n".join(strings)
    return redact(joined) == joined


def _to_sql(name: str, value: Any) -> Any:
    """One column's value as stored, redacted: the slow path, for a row that holds a secret."""
    kind = _KINDS[name]
    if value is None:
        return None
    if kind == "text":
        return _text(redact(str(value)))
    if kind == "json":
        return _json(_redact_json(value))
    return _stored(kind, [value])[0]


def _text(value: Any) -> str:
    text = value if type(value) is str else str(value)
    return text if text.isascii() else utf8_safe(text)[0]


def _json(value: Any) -> str:
    return utf8_safe(json.dumps(value, sort_keys=True, default=str, ensure_ascii=False))[0]


def _time(value: datetime) -> str:
    # naive datetimes are taken as UTC, as _frame.to_dataframe does
    if value.tzinfo is not timezone.utc:
        value = value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value
        value = value.astimezone(timezone.utc)
    return value.isoformat()


def _stored(kind: str, values: list[Any]) -> list[Any]:
    """A column's values as stored (no redaction). Column by column, not cell by cell: a
    100,000-row run is logged in one pass a column."""
    if kind == "text":
        ascii_ = str.isascii
        return [
            None if v is None else v if type(v) is str and ascii_(v) else _text(v) for v in values
        ]
    if kind == "json":
        dumped: dict[int, str] = {}  # one dump a shared value (the values stay alive meanwhile)
        for v in values:
            if v is not None and id(v) not in dumped:
                dumped[id(v)] = _json(v)
        return [None if v is None else dumped[id(v)] for v in values]
    if kind == "time":
        return [None if v is None else _time(v) for v in values]
    if kind == "real":
        return [None if v is None or math.isnan(v) else float(v) for v in values]
    return [None if v is None else int(v) for v in values]  # int, bool


def _from_sql(name: str, value: Any) -> Any:
    kind = _KINDS[name]
    if kind == "bool":
        return bool(value)
    if kind == "json":
        if name in OPTIONAL_COLUMNS:
            return json.loads(value) if value else None  # NULL: the run did not have it
        return json.loads(value) if value else {}
    if value is None:
        return "" if name in ("run_id", "target", "provider", "model", "prompt", "output") else None
    if kind == "time":
        return datetime.fromisoformat(value)
    return value


def _cut(record: RunRecord, limit: int) -> tuple[RunRecord, bool]:
    """`record` as the log keeps it, and whether its output was cut: an output longer than
    `limit` (0: none) is cut to `limit` characters plus a margin, which rows removes after
    redaction (so a key that crosses the cut is hidden whole, never half written), and the
    row's params get a note of how long the answer was."""
    record, calls_cut = _cut_calls(record, limit)
    size = len(record.output)
    if not limit or size <= limit:
        return record, calls_cut
    note = f"the run log keeps the first {limit:,} of {size:,} characters of the answer"
    params = _noted(record.params, note)
    return replace(record, output=record.output[: limit + _CUT_MARGIN], params=params), True


def _noted(params: dict[str, Any], note: str) -> dict[str, Any]:
    notes = params.get("notes")
    return {**params, "notes": [*(notes if isinstance(notes, list) else []), note]}


def _cut_calls(record: RunRecord, limit: int) -> tuple[RunRecord, bool]:
    """Tool calls (a server's arguments, a tool's results) bigger than `limit` characters in
    all are logged by name only, with a note: the log stays bounded whatever came back."""
    if not limit or not record.tool_calls:
        return record, False
    size = len(json.dumps(record.tool_calls, default=str, ensure_ascii=False))
    if size <= limit:
        return record, False
    names = [{"name": str(c.get("name"))[:200]} for c in record.tool_calls[:100]]
    note = f"the run log keeps only the names of the tool calls ({size:,} characters in all)"
    return replace(record, tool_calls=names, params=_noted(record.params, note)), True


def sql_rows(records: Sequence[RunRecord], limit: int = 0) -> list[tuple[Any, ...]]:
    """Records as SQL rows (the record's columns, then the truncated flag): outputs cut to
    `limit` (0: whole), every string redacted (cheaply when there is nothing to redact) and
    UTF-8-safe."""
    kept = [_cut(r, limit) for r in records]
    logged = [r for r, _ in kept]
    columns = {c: list(map(operator.attrgetter(c), logged)) for c in _ROW}
    flags = [int(cut) for _, cut in kept]
    rows = list(zip(*(_stored(_KINDS[c], v) for c, v in columns.items()), flags, strict=True))
    if not _clean(columns):
        for i, r in enumerate(logged):
            if not _clean({c: [getattr(r, c)] for c in _ROW}):
                rows[i] = (*(_to_sql(c, getattr(r, c)) for c in _ROW), flags[i])
    for i in (i for i, cut in enumerate(flags) if cut):
        row = list(rows[i])
        row[_OUTPUT] = row[_OUTPUT][:limit]
        rows[i] = tuple(row)
    return rows


def record_of(row: Sequence[Any]) -> tuple[RunRecord, bool]:
    """A stored row (the record's columns, then the truncated flag) as a record and its flag."""
    *values, truncated = row
    record = RunRecord(**{c: _from_sql(c, v) for c, v in zip(_ROW, values, strict=True)})
    return record, bool(truncated)


def declare(column: str) -> str:
    if column == TRUNCATED:
        return f'"{TRUNCATED}" INTEGER NOT NULL DEFAULT 0'
    return f'"{column}" {_SQL.get(_KINDS[column], "TEXT")}'


def table_sql(table: str, extra: str = "") -> str:
    declared = ", ".join(map(declare, STORED))
    return f"CREATE TABLE IF NOT EXISTS {table} ({extra}{declared})"
