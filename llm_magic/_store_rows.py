"""How a run's rows are stored: each RunRecord column as an SQL value and back (its kind read
from the field's annotation, so a new column needs no change here), every string redacted and
UTF-8-safe, an answer cut to the log's limit and flagged `truncated`."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
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


def _texts(record: RunRecord) -> Iterator[str]:
    """Every string of a record that will be written, params' keys and values included."""
    stack: list[Any] = [getattr(record, c) for c in _ROW if _KINDS[c] in ("text", "json")]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            yield value
        elif isinstance(value, dict | list | tuple):
            stack.extend([*map(str, value), *value.values()] if isinstance(value, dict) else value)


def _clean(records: Sequence[RunRecord]) -> bool:
    """True when redact() would change none of the records' strings.

    redact() reads the environment on every call, too slow for 10,000 strings of a benchmark;
    one call on the strings joined by newlines answers for all of them: a secret or key shape
    inside one string is also inside the joined text (a newline is not a word character, so
    the key shapes' word boundaries hold). A change anywhere sends us back to string by string.
    """
    joined = "\n".join(s for r in records for s in _texts(r))
    return redact(joined) == joined


def _to_sql(name: str, value: Any, redacting: bool) -> Any:
    kind = _KINDS[name]
    if value is None or (kind == "real" and math.isnan(value)):
        return None
    if kind == "text":
        return utf8_safe(redact(str(value)) if redacting else str(value))[0]
    if kind == "json":
        value = _redact_json(value) if redacting else value
        return utf8_safe(json.dumps(value, sort_keys=True, default=str, ensure_ascii=False))[0]
    if kind == "time":  # naive datetimes are taken as UTC, as _frame.to_dataframe does
        when = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        return when.astimezone(timezone.utc).isoformat()
    return {"bool": int, "real": float, "int": int}[kind](value)


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
    dirty = not _clean([r for r, _ in kept])
    rows = []
    for r, cut in kept:
        redacting = dirty and not _clean([r])
        row = [_to_sql(c, getattr(r, c), redacting) for c in _ROW]
        if cut:
            row[_OUTPUT] = row[_OUTPUT][:limit]
        rows.append((*row, int(cut)))
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
