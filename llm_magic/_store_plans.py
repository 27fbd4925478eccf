"""The store's record of what each run asked for, so that a later kernel can resume it.

Three things, all in the run log's database: `plans` (one row per run: its id, when it
started, a fingerprint of what it asks and the request's essentials as JSON — targets,
options, repeats; never a key), `plan_prompts` (the run's distinct prompts and system prompts,
redacted as every stored string is), and a `job` column on `runs` giving each logged row's
place in its plan. A run's jobs are prompt x target x repeat in plan order, so those three
rebuild them (_resume.py).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from ._redaction import Redactor
from ._store_rows import STORED_COLS, record_of
from ._utf8 import utf8_safe

if TYPE_CHECKING:
    from ._records import RunRecord
    from .store import Store

__all__ = [
    "PLAN_TABLES",
    "StoredPlan",
    "create_plan_tables",
    "latest_run",
    "load_plan",
    "logged_rows",
    "save_plan",
]

PLAN_TABLES = ("plans", "plan_prompts")

StoredPlan = tuple[dict[str, Any], list[tuple[str, str | None]]]  # essentials, prompts


def create_plan_tables(conn: sqlite3.Connection) -> None:
    """The tables and the `runs.job` column (inside the store's opening transaction)."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS plans (run_id TEXT PRIMARY KEY, created_at TEXT NOT NULL, "
        "fingerprint TEXT NOT NULL, jobs INTEGER NOT NULL, essentials TEXT NOT NULL)"
    )
    conn.execute("CREATE INDEX IF NOT EXISTS plans_by_fingerprint ON plans (fingerprint)")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS plan_prompts (run_id TEXT NOT NULL, prompt_no INTEGER "
        "NOT NULL, prompt TEXT NOT NULL, system TEXT, PRIMARY KEY (run_id, prompt_no))"
    )
    if "job" not in {row[1] for row in conn.execute("PRAGMA table_info(runs)")}:
        conn.execute('ALTER TABLE runs ADD COLUMN "job" INTEGER')  # NULL for older rows
    conn.execute("CREATE INDEX IF NOT EXISTS runs_by_job ON runs (run_id, job)")


def _stored(text: str, redact: Callable[[str], str]) -> str:
    return utf8_safe(redact(text))[0]


def save_plan(
    store: Store,
    run_id: str,
    fingerprint: str,
    essentials: Mapping[str, Any],
    prompts: Iterable[tuple[str, str | None]],
    jobs: int,
) -> bool:
    """Write a run's plan before anything is sent; True once committed."""
    head = (
        run_id,
        datetime.now(timezone.utc).isoformat(),
        fingerprint,
        jobs,
        json.dumps(dict(essentials), sort_keys=True),
    )
    clean = Redactor()  # the environment read once for all the prompts, not once a prompt
    rows = [
        (run_id, no, _stored(prompt, clean), _stored(system, clean) if system else None)
        for no, (prompt, system) in enumerate(prompts)
    ]

    def write(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT OR REPLACE INTO plans VALUES (?, ?, ?, ?, ?)", head)
        conn.execute("DELETE FROM plan_prompts WHERE run_id = ?", (run_id,))
        conn.executemany("INSERT INTO plan_prompts VALUES (?, ?, ?, ?)", rows)

    return store.write("write the run's plan to", write)


def load_plan(store: Store, run_id: str) -> StoredPlan | None:
    """The essentials (with its "fingerprint") and the prompts (in order) of run `run_id`,
    or None if unknown."""

    def read(conn: sqlite3.Connection) -> StoredPlan | None:
        query = "SELECT essentials, fingerprint FROM plans WHERE run_id = ?"
        found = conn.execute(query, (run_id,)).fetchone()
        if found is None:
            return None
        essentials = {**json.loads(found[0]), "fingerprint": found[1]}
        query = "SELECT prompt, system FROM plan_prompts WHERE run_id = ? ORDER BY prompt_no"
        return essentials, [(row[0], row[1]) for row in conn.execute(query, (run_id,))]

    return store.read("read a run's plan from", read, None)


def latest_run(store: Store, fingerprint: str) -> str | None:
    """The newest run whose plan has this fingerprint, or None."""
    query = "SELECT run_id FROM plans WHERE fingerprint = ? ORDER BY created_at DESC LIMIT 1"

    def read(conn: sqlite3.Connection) -> str | None:
        row = conn.execute(query, (fingerprint,)).fetchone()
        return None if row is None else str(row[0])

    return store.read("read the plans in", read, None)


def logged_rows(store: Store, run_id: str) -> dict[int, RunRecord]:
    """Run `run_id`'s logged rows by their place in its plan; the newest row of each place
    (a resumed place was logged again)."""
    query = f"SELECT job, {STORED_COLS} FROM runs WHERE run_id = ? AND job IS NOT NULL ORDER BY id"

    def read(conn: sqlite3.Connection) -> dict[int, RunRecord]:
        rows: dict[int, RunRecord] = {}
        for job, *stored in conn.execute(query, (run_id,)):
            rows[int(job)] = record_of(stored)[0]
        return rows

    return store.read("read the run log from", read, {})
