"""The SQLite run log and the response cache, in one file.

The database is `$LLM_MAGIC_HOME/log.db`, else the config file's `log_path`, else `log.db` in
the platformdirs user data dir (`~/.local/share/llm_magic/`). WAL mode; created 0600 in a 0700
directory (SQLite gives -wal and -shm the database's mode). Every string goes through
`redaction.redact` before it is written, even though records are redacted already: a careless
server may echo a key into an answer. Persistence never breaks a run: a database that cannot be
opened or written is one line on stderr per store, and its operations become no-ops.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import sqlite3
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import fields
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import one_line
from .providers.base import Message, Options
from .records import COLUMNS, RunRecord
from .redaction import redact

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "ANSWER_FIELDS",
    "DB_NAME",
    "Store",
    "cache_key",
    "copy_answer",
    "default_store",
    "log_location",
    "log_path",
    "record_run",
]

DB_NAME = "log.db"

# What a cached row takes from the stored answer; the rest (run_id, prompt, repeat, params,
# started_at, fallback_from) belongs to the run that asked.
ANSWER_FIELDS: tuple[str, ...] = tuple(
    "model output latency_s ttft_s prompt_tokens completion_tokens total_tokens "  # noqa: SIM905
    "tokens_estimated tokens_per_s cost_usd finish_reason".split()
)

# How each RunRecord field is stored, from its annotation ("float | None" -> "real"), so a new
# column is stored without touching this module.
_BY_TYPE = {"float": "real", "int": "int", "bool": "bool", "dict": "json", "datetime": "time"}
_KINDS: dict[str, str] = {
    f.name: _BY_TYPE.get(str(f.type).split("[")[0].split(" ")[0], "text") for f in fields(RunRecord)
}
_SQL = {"real": "REAL", "int": "INTEGER", "bool": "INTEGER"}
_UNFINISHED = ("interrupted", "error")
_COLS = ", ".join(f'"{c}"' for c in COLUMNS)
_MARKS = ", ".join("?" for _ in COLUMNS)


def log_location() -> tuple[Path, str]:
    """Where the database lives right now and what put it there: "environment LLM_MAGIC_HOME",
    "config file PATH" or "default" (see the module docstring for the order)."""
    home = os.environ.get("LLM_MAGIC_HOME", "").strip()
    if home:
        return Path(home).expanduser() / DB_NAME, "environment LLM_MAGIC_HOME"
    from .config import load_file_config

    file = load_file_config()
    configured = file.settings.get("log_path")
    if configured:
        path = Path(str(configured)).expanduser()
        if not path.is_absolute() and file.path is not None:
            path = file.path.parent / path  # relative to the config file, not to the notebook
        if path.is_dir() or str(configured).endswith(("/", os.sep)):
            path = path / DB_NAME
        return path, f"config file {file.path}"
    from platformdirs import user_data_dir

    return Path(user_data_dir("llm_magic", appauthor=False)) / DB_NAME, "default"


def log_path() -> Path:
    """Where the database lives right now (see the module docstring for the order)."""
    return log_location()[0]


def cache_key(
    provider: str,
    base_url: str | None,
    model: str,
    messages: Sequence[Message],
    options: Options,
    *,
    repeat: int = 0,
) -> str:
    """sha256 of a canonical JSON of what decides the answer: provider, base URL, model,
    messages and the sampling options. Timeouts, streaming and the API key are not in it.

    `repeat` (the row's repeat index) enters only when non-zero, so `-r 5 --cache` replays five
    distinct answers rather than five copies of the first.
    """
    # temperature 1 and 1.0 are the same request (json writes the stop tuple as a list)
    floats = ("temperature", "top_p")
    sampling = {k: float(v) if k in floats else v for k, v in options.sampling().items()}
    body: dict[str, Any] = {
        "v": 1,
        "provider": provider,
        "base_url": base_url.rstrip("/") if base_url else None,
        "model": model,
        "messages": [[m.role, m.content] for m in messages],
        "options": sampling,
        **({"repeat": repeat} if repeat else {}),
    }
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def copy_answer(hit: RunRecord, into: RunRecord) -> RunRecord:
    """Serve a cache hit as `into`'s answer: the answer fields, no error, cached=True."""
    for name in ANSWER_FIELDS:
        setattr(into, name, getattr(hit, name))
    into.error, into.cached = None, True
    return into


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
    stack: list[Any] = [getattr(record, c) for c in COLUMNS if _KINDS[c] in ("text", "json")]
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


def _to_sql(name: str, value: Any, scrub: bool) -> Any:
    kind = _KINDS[name]
    if value is None or (kind == "real" and math.isnan(value)):
        return None
    if kind == "text":
        return redact(str(value)) if scrub else str(value)
    if kind == "json":
        value = _redact_json(value) if scrub else value
        return json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)
    if kind == "time":  # naive datetimes are taken as UTC, as results.to_dataframe does
        when = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        return when.astimezone(timezone.utc).isoformat()
    return {"bool": int, "real": float, "int": int}[kind](value)


def _from_sql(name: str, value: Any) -> Any:
    kind = _KINDS[name]
    if kind == "bool":
        return bool(value)
    if kind == "json":
        return json.loads(value) if value else {}
    if value is None:
        return "" if name in ("run_id", "target", "provider", "model", "prompt", "output") else None
    if kind == "time":
        return datetime.fromisoformat(value)
    return value


def _rows(records: Sequence[RunRecord]) -> list[tuple[Any, ...]]:
    """Records as SQL rows, every string redacted (cheaply when there is nothing to redact)."""
    dirty = not _clean(records)
    rows = []
    for r in records:
        scrub = dirty and not _clean([r])
        rows.append(tuple(_to_sql(c, getattr(r, c), scrub) for c in COLUMNS))
    return rows


def _record(row: Sequence[Any]) -> RunRecord:
    return RunRecord(**{c: _from_sql(c, v) for c, v in zip(COLUMNS, row, strict=True)})


def _declare(column: str) -> str:
    return f'"{column}" {_SQL.get(_KINDS[column], "TEXT")}'


def _table_sql(table: str, extra: str = "") -> str:
    return f"CREATE TABLE IF NOT EXISTS {table} ({extra}{', '.join(map(_declare, COLUMNS))})"


class Store:
    """The run log and response cache in one SQLite file; safe to share between threads
    (one connection, one lock: rows are written by the main thread, the cache is read and
    written by the runner's workers)."""

    def __init__(self, path: Path | str | None = None) -> None:
        self.path = Path(path).expanduser() if path is not None else log_path()
        self.problem: str | None = None  # why the store is unusable, if it is
        self._lock, self._warned = threading.RLock(), False
        self._conn: sqlite3.Connection | None = None
        try:
            self._conn = self._open()
        except (OSError, sqlite3.Error) as exc:
            self.problem = self._complain(f"cannot open {self.path}", exc)

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r}, {self.problem or 'open'})"

    def _open(self) -> sqlite3.Connection:
        folder = self.path.parent
        if not folder.is_dir():
            folder.mkdir(parents=True, exist_ok=True)
            os.chmod(folder, 0o700)  # only a folder we made: a user's own folder is theirs
        # Create the file 0600 before SQLite does (it would use 0644 under a usual umask).
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if hasattr(os, "fchmod"):
                os.fchmod(fd, 0o600)  # an older, looser file is tightened too
        finally:
            os.close(fd)
        conn = sqlite3.connect(
            str(self.path), timeout=5.0, isolation_level=None, check_same_thread=False
        )
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")  # durable enough in WAL mode, much faster
            conn.execute("PRAGMA secure_delete=ON")  # clear() really removes old answers
            conn.execute(_table_sql("runs", "id INTEGER PRIMARY KEY AUTOINCREMENT, "))
            conn.execute(_table_sql("cache", "key TEXT PRIMARY KEY, created_at TEXT NOT NULL, "))
            for table in ("runs", "cache"):
                self._add_missing_columns(conn, table)
        except BaseException:
            conn.close()
            raise
        for suffix in ("-wal", "-shm"):
            # SQLite copies the database's mode to these; this only guards odd file systems.
            with contextlib.suppress(OSError):
                os.chmod(f"{self.path}{suffix}", 0o600)
        return conn

    @staticmethod
    def _add_missing_columns(conn: sqlite3.Connection, table: str) -> None:
        """A database written by an older version gains the columns RunRecord has since grown."""
        have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        for c in COLUMNS:
            if c not in have:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {_declare(c)}")

    def _complain(self, action: str, exc: BaseException) -> str:
        problem = one_line(redact(f"{action}: {exc}"))
        if not self._warned:
            self._warned = True
            print(f"llm_magic: run log/cache skipped: {problem}", file=sys.stderr)
        return problem

    @contextlib.contextmanager
    def _using(self, action: str) -> Iterator[sqlite3.Connection | None]:
        """The connection under the lock, or None when unusable; a database error becomes a
        warning (once) instead of an exception."""
        with self._lock:
            if self._conn is None:
                yield None
                return
            try:
                yield self._conn
            except (OSError, sqlite3.Error) as exc:
                if self._conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        self._conn.execute("ROLLBACK")
                self._complain(f"cannot {action} {self.path}", exc)

    def log(self, records: Sequence[RunRecord]) -> None:
        """Append every record, in order, in one transaction. Never raises for the database."""
        rows = _rows(records)
        with self._using("write the run log to") as conn:
            if conn is None or not rows:
                return
            conn.execute("BEGIN")
            conn.executemany(f"INSERT INTO runs ({_COLS}) VALUES ({_MARKS})", rows)
            conn.execute("COMMIT")

    def history(self, n: int | None = None) -> list[RunRecord]:
        """The last `n` rows logged (all with None), oldest first, newest last."""
        if n is not None and n <= 0:
            return []
        limit = -1 if n is None else int(n)  # SQLite: a negative LIMIT means none
        query = (
            f"SELECT {_COLS} FROM (SELECT id, {_COLS} FROM runs ORDER BY id DESC LIMIT ?) "
            "ORDER BY id"
        )
        with self._using("read the run log from") as conn:
            if conn is None:
                return []
            return [_record(row) for row in conn.execute(query, (limit,)).fetchall()]
        return []  # reached only when reading failed (and was reported)

    def history_frame(self, n: int | None = 20) -> pd.DataFrame:
        """history(n) as a DataFrame with the schema of a run's DataFrame."""
        from .results import to_dataframe

        return to_dataframe(self.history(n))

    def clear(self, *, log: bool = True, cache: bool = True) -> None:
        """Delete the run log and/or the cache (overwritten on disk: secure_delete is on)."""
        with self._using("clear") as conn:
            if conn is None:
                return
            conn.execute("BEGIN")
            if log:
                conn.execute("DELETE FROM runs")
            if cache:
                conn.execute("DELETE FROM cache")
            conn.execute("COMMIT")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the WAL still held the old pages

    def cache_get(self, key: str) -> RunRecord | None:
        """The answer stored under `key`, marked cached=True, or None.

        Its latency_s, ttft_s, tokens_per_s and cost_usd are those measured when the answer was
        first received: the row describes the model's answer, and `cached` says it was replayed.
        """
        with self._using("read the cache from") as conn:
            if conn is None:
                return None
            row = conn.execute(f"SELECT {_COLS} FROM cache WHERE key = ?", (key,)).fetchone()
            if row is None:
                return None
            record = _record(row)
            record.cached = True
            return record
        return None  # reached only when reading failed (and was reported)

    def cache_put(self, key: str, record: RunRecord) -> bool:
        """Store a finished answer under `key`. Errors, interrupted rows and rows that were
        themselves served from the cache are not stored. True when stored."""
        if record.error is not None or record.cached or record.finish_reason in _UNFINISHED:
            return False
        row = (key, datetime.now(timezone.utc).isoformat(), *_rows([record])[0])
        with self._using("write the cache to") as conn:
            if conn is None:
                return False
            conn.execute(
                f"INSERT OR REPLACE INTO cache (key, created_at, {_COLS}) VALUES (?, ?, {_MARKS})",
                row,
            )
            return True
        return False  # reached only when writing failed (and was reported)

    def close(self) -> None:
        with self._lock, contextlib.suppress(sqlite3.Error):
            conn, self._conn, self.problem = self._conn, None, self.problem or "closed"
            if conn is not None:
                conn.close()


_stores: dict[Path, Store] = {}
_stores_lock = threading.Lock()


def default_store() -> Store:
    """The process's Store for the current location (one per resolved path, made lazily)."""
    path = log_path().expanduser().resolve()
    with _stores_lock:
        store = _stores.get(path)
        if store is None:
            store = _stores[path] = Store(path)
        return store


def record_run(records: Sequence[RunRecord]) -> None:
    """Log a run's rows to the default store unless the `log` setting is off.

    Never raises: a run must not fail because its log could not be written.
    """
    try:
        from .config import resolve_setting

        if records and resolve_setting("log").value:
            default_store().log(records)
    except Exception as exc:  # a broken config file or path: the run itself still stands
        print(f"llm_magic: run log skipped: {one_line(redact(str(exc)))}", file=sys.stderr)
