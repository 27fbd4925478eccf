"""The SQLite run log and the response cache, in one file.

The database is `$LLM_MAGIC_HOME/log.db`, else the config file's `log_path`, else `log.db` in
the platformdirs user data dir (`~/.local/share/llm_magic/`). WAL mode; created 0600 in a 0700
directory (SQLite gives -wal and -shm the database's mode). Every string goes through
`redaction.redact` before it is written, even though records are redacted already: a careless
server may echo a key into an answer, and made UTF-8-safe (a lone surrogate, which a JSON
escape can carry, becomes U+FFFD). Each answer is kept up to `max_log_chars` characters (config;
0: whole); a row cut so is flagged in the store-only `truncated` column (`history_frame()`
shows it) and never served from the cache. Persistence never breaks a run: a database that
cannot be opened or written is one line on stderr per store, and its operations become no-ops.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import sys
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import _ranges as ranges
from ._records import OPTIONAL_COLUMNS, RunRecord
from ._redaction import redact
from ._store_plans import PLAN_TABLES, create_plan_tables
from ._store_rows import (
    MARKS,
    STORED,
    STORED_COLS,
    TRUNCATED,
    declare,
    record_of,
    sql_rows,
    table_sql,
)
from .errors import one_line
from .providers.base import Message, Options

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
    "tokens_estimated tokens_per_s cost_usd finish_reason tool_calls".split()
)

_UNFINISHED = ("interrupted", "error")


def log_location() -> tuple[Path, str]:
    """Where the database lives right now and what put it there: "environment LLM_MAGIC_HOME",
    "config file PATH" or "default" (see the module docstring for the order)."""
    home = os.environ.get("LLM_MAGIC_HOME", "").strip()
    if home:
        return Path(home).expanduser() / DB_NAME, "environment LLM_MAGIC_HOME"
    from ._config import load_file_config

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
    messages (with their images' hashes) and the sampling options. Timeouts, streaming and the
    API key are not in it.

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
        # an image enters by its hash (its bytes never reach the log or the key)
        "messages": [[m.role, m.content, *(i.sha256 for i in m.images)] for m in messages],
        "options": sampling,
        **({"repeat": repeat} if repeat else {}),
        # what the tools are, not only their names (params keeps the names)
        **({"tools": [[t.name, t.description, t.parameters] for t in options.tools]}
           if options.tools else {}),
    }
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    # surrogatepass: a prompt holding a lone surrogate still has a key, its own
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def copy_answer(hit: RunRecord, into: RunRecord) -> RunRecord:
    """Serve a cache hit as `into`'s answer: the answer fields, no error, cached=True."""
    for name in ANSWER_FIELDS:
        setattr(into, name, getattr(hit, name))
    into.error, into.cached = None, True
    return into


def _limit(max_chars: int | None) -> int:
    """Characters of an answer the store keeps: `max_chars`, else the max_log_chars setting
    (environment, config file or default); 0 means all."""
    from ._config import resolve_setting

    if max_chars is None:
        return int(resolve_setting("max_log_chars").value)
    ranges.check("max_log_chars", max_chars, "")
    return int(max_chars)


def _close_quietly(conn: sqlite3.Connection) -> None:
    with contextlib.suppress(sqlite3.Error):
        conn.close()


class Store:
    """The run log and response cache in one SQLite file; safe to share between threads
    (one connection, one lock: rows are written by the main thread, the cache is read and
    written by the runner's workers).

    Every write is one `BEGIN IMMEDIATE` transaction (it takes the write lock at once, so two
    processes never both wait to upgrade a read lock), committed at its end and rolled back on
    any exception, KeyboardInterrupt included: a failed write never leaves the connection inside
    a transaction, which would keep this kernel's later runs and every other process from
    writing. A connection that cannot be rolled back is closed and the next use opens another.
    Every connection is closed by `close()`, when the store is garbage-collected, or when the
    process ends, whichever comes first.
    """

    def __init__(self, path: Path | str | None = None) -> None:
        self.path = Path(path).expanduser() if path is not None else log_path()
        self.problem: str | None = None  # why the store is unusable, if it is
        self._lock, self._warned = threading.RLock(), False
        self._conn: sqlite3.Connection | None = None
        self._closer: weakref.finalize | None = None  # closes _conn; runs at most once
        self._connect()

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r}, {self.problem or 'open'})"

    def _connect(self) -> None:
        """Open the database (the lock held, or in __init__); on failure the store is unusable."""
        try:
            conn = self._open()
        except (OSError, sqlite3.Error) as exc:
            self.problem = self._complain(f"cannot open {self.path}", exc)
            return
        self._conn, self.problem = conn, None
        # Holds the connection, not the store: when the store is collected (or the process
        # ends first) the connection is closed, as Python 3.13 warns it must be.
        self._closer = weakref.finalize(self, _close_quietly, conn)

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
            with self._transaction(conn):  # two processes opening at once: one after the other
                conn.execute(table_sql("runs", "id INTEGER PRIMARY KEY AUTOINCREMENT, "))
                conn.execute(
                    table_sql("cache", "key TEXT PRIMARY KEY, created_at TEXT NOT NULL, ")
                )
                for table in ("runs", "cache"):
                    self._add_missing_columns(conn, table)
                create_plan_tables(conn)  # what a run asked for, so it can be resumed
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
        """A database written by an older version gains the columns it has since grown."""
        have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        for c in STORED:
            if c not in have:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {declare(c)}")

    def _complain(self, action: str, exc: BaseException) -> str:
        problem = one_line(redact(f"{action}: {exc}"))
        if not self._warned:
            self._warned = True
            print(f"llm_magic: run log/cache skipped: {problem}", file=sys.stderr)
        return problem

    @contextlib.contextmanager
    def _transaction(self, conn: sqlite3.Connection) -> Iterator[None]:
        """One BEGIN IMMEDIATE ... COMMIT, rolled back on any exception (which goes on up)."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
            conn.execute("COMMIT")
        except BaseException:
            self._roll_back(conn)
            raise

    def _roll_back(self, conn: sqlite3.Connection) -> None:
        """End the connection's open transaction, if any; a connection that cannot is closed
        (the next use opens a fresh one), so it never holds the database's write lock."""
        with contextlib.suppress(sqlite3.Error):
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if not conn.in_transaction:
                return
        if conn is self._conn:
            self._shut()

    def _shut(self) -> None:
        """Close the connection (the lock held); the store reopens it at the next use."""
        closer, self._conn, self._closer = self._closer, None, None
        if closer is not None:
            closer()

    def reopen(self) -> None:
        """Close the connection and open the database again (say, after the file was moved
        back, or once a store that could not open can); the old connection is closed first."""
        with self._lock:
            self._shut()
            self._connect()

    def _ready(self) -> sqlite3.Connection | None:
        """The connection (the lock held), outside any transaction: one that an interrupt left
        open is rolled back, and a connection closed after a failure is opened again."""
        if self._conn is not None:
            self._roll_back(self._conn)
        if self._conn is None and self.problem is None:
            self._connect()
        return self._conn

    @contextlib.contextmanager
    def _using(self, action: str) -> Iterator[sqlite3.Connection | None]:
        """The connection under the lock, or None when unusable. Any exception of the block
        rolls back what it began; a database error, or any other Exception, becomes a warning
        (once) instead of an exception: persistence never breaks a run. KeyboardInterrupt and
        SystemExit go on up, after the rollback."""
        with self._lock:
            conn = self._ready()
            if conn is None:
                yield None
                return
            try:
                yield conn
            except Exception as exc:
                self._roll_back(conn)
                self._complain(f"cannot {action} {self.path}", exc)
            except BaseException:
                self._roll_back(conn)
                raise

    def _write(self, action: str, work: Callable[[sqlite3.Connection], object]) -> bool:
        """Run `work` in one transaction (see the class docstring); True once committed."""
        committed = False
        with self._using(action) as conn:
            if conn is not None:
                with self._transaction(conn):
                    work(conn)
                committed = True
        return committed

    def log(
        self,
        records: Sequence[RunRecord],
        *,
        max_chars: int | None = None,
        jobs: Sequence[int] | None = None,
    ) -> None:
        """Append every record, in order, in one transaction. Each output longer than
        `max_chars` (default: the max_log_chars setting; 0: no limit) is stored cut to that
        many characters and flagged truncated. `jobs`, one per record, are their places in the
        run's plan (what a resume reads back). Never raises for the database."""
        rows = sql_rows(records, _limit(max_chars))
        if not rows:
            return
        insert = f"INSERT INTO runs ({STORED_COLS}) VALUES ({MARKS})"
        if jobs is not None:
            insert = f'INSERT INTO runs ({STORED_COLS}, "job") VALUES ({MARKS}, ?)'
            rows = [(*row, job) for row, job in zip(rows, jobs, strict=True)]
        self._write("write the run log to", lambda conn: conn.executemany(insert, rows))

    def write(self, action: str, work: Callable[[sqlite3.Connection], object]) -> bool:
        """`work(conn)` in one write transaction, as the store's own writes (for the tables
        of _store_plans); True once committed. Never raises for the database."""
        return self._write(action, work)

    def read(self, action: str, work: Callable[[sqlite3.Connection], Any], default: Any) -> Any:
        """`work(conn)` under the store's lock; `default` when the store is unusable or the
        read failed (reported once). Never raises for the database."""
        with self._using(action) as conn:
            if conn is not None:
                return work(conn)
        return default

    def _logged(self, n: int | None) -> list[tuple[RunRecord, bool]]:
        """The last `n` rows logged (all with None), oldest first, with their truncated flag."""
        if n is not None and n <= 0:
            return []
        limit = -1 if n is None else int(n)  # SQLite: a negative LIMIT means none
        query = (
            f"SELECT {STORED_COLS} FROM (SELECT id, {STORED_COLS} FROM runs "
            "ORDER BY id DESC LIMIT ?) ORDER BY id"
        )
        with self._using("read the run log from") as conn:
            if conn is None:
                return []
            return [record_of(row) for row in conn.execute(query, (limit,)).fetchall()]
        return []  # reached only when reading failed (and was reported)

    def history(self, n: int | None = None) -> list[RunRecord]:
        """The last `n` rows logged (all with None), oldest first, newest last. A truncated
        row's output is what the log kept; its params' notes say how long the answer was."""
        return [record for record, _ in self._logged(n)]

    def history_frame(self, n: int | None = 20) -> pd.DataFrame:
        """history(n) as a DataFrame: a run's columns and dtypes, then `truncated` (boolean):
        True where the log kept only the first max_log_chars characters of the answer; then,
        when some row was asked with a schema, parsed / schema_valid / schema_error."""
        import pandas as pd

        from ._frame import to_dataframe
        from ._schema_frame import logged_schema_columns

        logged = self._logged(n)
        # an optional column (tool_calls) when a row shown had it
        having = [c for c in OPTIONAL_COLUMNS if any(getattr(r, c) is not None for r, _ in logged)]
        frame = to_dataframe((record for record, _ in logged), having)
        cuts = [cut for _, cut in logged]
        frame[TRUNCATED] = pd.array(cuts, dtype="boolean")
        # rows asked with a schema (params' json_schema) read against it again
        return logged_schema_columns(frame, cuts)

    def clear(self, *, log: bool = True, cache: bool = True) -> None:
        """Delete the run log and/or the cache (overwritten on disk: secure_delete is on)."""
        tables = [name for name, chosen in (("runs", log), ("cache", cache)) if chosen]
        tables += PLAN_TABLES if log else ()  # a plan without its rows cannot be resumed

        def delete(conn: sqlite3.Connection) -> None:
            for table in tables:
                conn.execute(f"DELETE FROM {table}")

        if self._write("clear", delete):
            with self._using("clear") as conn:
                if conn is not None:  # the WAL still held the old pages
                    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def cache_get(self, key: str) -> RunRecord | None:
        """The answer stored under `key`, marked cached=True, or None.

        Its latency_s, ttft_s, tokens_per_s and cost_usd are those measured when the answer was
        first received: the row describes the model's answer, and `cached` says it was replayed.
        A row holding part of an answer (truncated) is never served.
        """
        query = f"SELECT {STORED_COLS} FROM cache WHERE key = ?"
        with self._using("read the cache from") as conn:
            if conn is None:
                return None
            row = conn.execute(query, (key,)).fetchone()
            if row is None:
                return None
            record, truncated = record_of(row)
            if truncated:
                return None
            record.cached = True
            return record
        return None  # reached only when reading failed (and was reported)

    def cache_put(self, key: str, record: RunRecord, *, max_chars: int | None = None) -> bool:
        """Store a finished answer under `key`. Errors, interrupted rows, rows that were
        themselves served from the cache, and answers longer than `max_chars` (default: the
        max_log_chars setting; 0: no limit), which the store would have to cut, are not
        stored. True when stored."""
        if record.error is not None or record.cached or record.finish_reason in _UNFINISHED:
            return False
        limit = _limit(max_chars)
        if limit and len(record.output) > limit:
            return False  # the cache replays whole answers only
        row = (key, datetime.now(timezone.utc).isoformat(), *sql_rows([record])[0])
        insert = (
            f"INSERT OR REPLACE INTO cache (key, created_at, {STORED_COLS}) "
            f"VALUES (?, ?, {MARKS})"
        )
        return self._write("write the cache to", lambda conn: conn.execute(insert, row))

    def close(self) -> None:
        """Close the connection for good (a transaction in progress is rolled back)."""
        with self._lock:
            self._shut()
            self.problem = self.problem or "closed"


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


def record_run(records: Sequence[RunRecord], max_chars: int | None = None) -> None:
    """Log a run's rows to the default store unless the `log` setting is off, each answer cut
    to `max_chars` (default: the max_log_chars setting; the planner passes %config's too).

    Never raises: a run must not fail because its log could not be written.
    """
    try:
        from ._config import resolve_setting

        if records and resolve_setting("log").value:
            default_store().log(records, max_chars=max_chars)
    except Exception as exc:  # a broken config file or path: the run itself still stands
        print(f"llm_magic: run log skipped: {one_line(redact(str(exc)))}", file=sys.stderr)
