"""Provider batches in the SQLite store: what was submitted, and which line is which row.

Two tables beside the run log, made on first use (`CREATE TABLE IF NOT EXISTS`, then any
column a later version added is added), so a store written by an older llm_magic keeps its
rows and gains them: `batches` (one per submitted file) and `batch_rows` (one per request: its
custom_id, the row it becomes, the cache key its answer goes under). An entry is written
before its file is uploaded and updated after each step (file id, batch id, status), so a
kernel that dies at any point leaves behind what is needed to collect or explain it.
Writes go through the Store's own transaction (one `BEGIN IMMEDIATE` each); unlike the run
log, a batch entry that cannot be written stops the submission (`BatchStoreProblem`).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from ._redaction import Redactor, redact
from ._utf8 import utf8_safe
from .errors import UsageProblem
from .store import Store

__all__ = [
    "BatchEntry",
    "BatchRow",
    "BatchStoreProblem",
    "add_pending",
    "find",
    "rows_of",
    "update",
]


@dataclass
class BatchEntry:
    """One submitted (or about to be submitted) batch file."""

    key: str  # llm_magic's own id, RUN_ID-N: it exists before the provider's
    run_id: str
    provider: str
    model: str
    base_url: str  # credentials masked: shown, never used
    price_factor: float
    remote_id: str | None = None  # the provider's batch id once created
    input_file: str | None = None
    status: str = "unsubmitted"
    done: bool = False
    total: int | None = None
    succeeded: int | None = None
    failed: int | None = None
    output_file: str | None = None
    error_file: str | None = None
    problem: str | None = None
    missing_reason: str | None = None
    created_at: str | None = None  # ISO 8601, UTC
    collected_at: str | None = None
    cost_usd: float | None = None
    cache: bool = False  # collected answers go to the response cache
    max_log_chars: int | None = None

    @property
    def shown_id(self) -> str:
        return self.remote_id or self.key


@dataclass
class BatchRow:
    """One request of a batch: its line's custom_id and the row it becomes."""

    custom_id: str
    index: int  # the job's place in the run
    prompt: str
    target: str
    repeat: int
    params: dict[str, Any] = field(default_factory=dict)
    cache_key: str | None = None


class BatchStoreProblem(UsageProblem):
    """The store cannot keep a batch's ids: nothing is submitted."""


_SQL_TYPES = {"int": "INTEGER", "bool": "INTEGER", "float": "REAL"}


def _columns(cls: type) -> dict[str, str]:
    return {f.name: _SQL_TYPES.get(str(f.type).split(" ")[0], "TEXT") for f in fields(cls)}


_ENTRY = _columns(BatchEntry)
_ROW = {"key": "TEXT", **_columns(BatchRow)}
_TABLES = {
    "batches": (_ENTRY, "PRIMARY KEY (key)"),
    "batch_rows": (_ROW, "PRIMARY KEY (key, custom_id)"),
}


def _names(columns: Iterable[str]) -> str:
    return ", ".join(f'"{c}"' for c in columns)


def _ensure(conn: sqlite3.Connection) -> None:
    for table, (columns, key) in _TABLES.items():
        declared = ", ".join(f'"{c}" {t}' for c, t in columns.items())
        conn.execute(f"CREATE TABLE IF NOT EXISTS {table} ({declared}, {key})")
        have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        for column, kind in columns.items():
            if column not in have:
                conn.execute(f'ALTER TABLE {table} ADD COLUMN "{column}" {kind}')


def _text(value: Any, clean: Callable[[str], str] = redact) -> Any:
    if isinstance(value, dict):
        value = json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)
    if isinstance(value, str):
        return utf8_safe(clean(value))[0]
    return value


def _write(store: Store, action: str, work: Any) -> None:
    def run(conn: sqlite3.Connection) -> None:
        _ensure(conn)
        work(conn)

    if not store._write(action, run):  # noqa: SLF001 (the store's one transaction path)
        why = store.problem or "see the line above"
        raise BatchStoreProblem(f"the store cannot {action} ({why}); nothing was submitted")


def add_pending(store: Store, entry: BatchEntry, rows: Sequence[BatchRow]) -> None:
    """Record an entry and its rows before anything is uploaded."""
    entry_sql = f"INSERT INTO batches ({_names(_ENTRY)}) VALUES ({', '.join('?' * len(_ENTRY))})"
    row_sql = f"INSERT INTO batch_rows ({_names(_ROW)}) VALUES ({', '.join('?' * len(_ROW))})"
    entry_values = [_text(getattr(entry, c)) for c in _ENTRY]
    clean = Redactor()  # the secrets read once for every row (redact() reads them each time)
    row_values = [
        (
            entry.key,
            r.custom_id,
            r.index,
            _text(r.prompt, clean),
            r.target,
            r.repeat,
            _text(r.params, clean),
            r.cache_key,
        )
        for r in rows
    ]

    def work(conn: sqlite3.Connection) -> None:
        conn.execute(entry_sql, entry_values)
        conn.executemany(row_sql, row_values)

    _write(store, "record a batch in", work)


def update(store: Store, entry: BatchEntry, **changes: Any) -> None:
    """Change an entry's fields, in memory and in the store."""
    for name, value in changes.items():
        setattr(entry, name, value)
    names = list(changes)
    setting = ", ".join(f'"{n}" = ?' for n in names)
    sql = f"UPDATE batches SET {setting} WHERE key = ?"
    values = [_text(changes[n]) for n in names] + [entry.key]
    _write(store, "update a batch in", lambda conn: conn.execute(sql, values))


def _read(store: Store, sql: str, args: Iterable[Any]) -> list[tuple[Any, ...]]:
    with store._using("read batches from") as conn:  # noqa: SLF001
        if conn is None:
            return []
        with store._transaction(conn):  # noqa: SLF001 (tables made before they are read)
            _ensure(conn)
        return conn.execute(sql, tuple(args)).fetchall()
    return []


def _entry_of(row: Sequence[Any]) -> BatchEntry:
    values = dict(zip(_ENTRY, row, strict=True))
    for name in ("done", "cache"):
        values[name] = bool(values[name])
    return BatchEntry(**values)


def find(store: Store, which: str | None = None) -> list[BatchEntry]:
    """Entries oldest first: all (None or "all"), or those whose provider batch id, own key
    or run id is `which`."""
    sql = f"SELECT {_names(_ENTRY)} FROM batches"
    args: list[Any] = []
    if which not in (None, "all"):
        sql += " WHERE remote_id = ? OR key = ? OR run_id = ?"
        args = [which] * 3
    return [_entry_of(row) for row in _read(store, sql + " ORDER BY rowid", args)]


def rows_of(store: Store, entry: BatchEntry) -> list[BatchRow]:
    columns = list(_ROW)[1:]
    sql = f'SELECT {_names(columns)} FROM batch_rows WHERE key = ? ORDER BY "index"'
    rows = []
    # Rows sent alike share one params dict, as a live run's do: read once, stored once.
    params: dict[str, dict] = {}
    for values in _read(store, sql, [entry.key]):
        row = BatchRow(**dict(zip(columns, values, strict=True)))
        text = row.params if isinstance(row.params, str) else "{}"
        if text not in params:
            params[text] = json.loads(text)
        row.params = params[text]
        rows.append(row)
    return rows
