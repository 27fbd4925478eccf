"""The SQLite run log and response cache: real files, real SQLite, real threads."""

from __future__ import annotations

import contextlib
import gc
import math
import os
import sqlite3
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest
from IPython.core.error import UsageError

from llm_magic import _config as config
from llm_magic import store
from llm_magic._records import COLUMNS, RunRecord
from llm_magic.providers.base import Message, Options
from llm_magic.results import DTYPES, to_dataframe
from llm_magic.store import Store, cache_key, copy_answer, default_store, log_path, record_run

SENTINEL = "sk-SENTINEL-store-123456789"
PLAIN_SECRET = "plainsecretvalue42"  # not key-shaped: only the environment says it is secret
T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)


def rec(i: int = 0, **kw: object) -> RunRecord:
    values: dict[str, object] = dict(
        run_id="run1",
        target="openai:gpt-4o-mini",
        provider="openai",
        model="gpt-4o-mini-2024-07-18",
        prompt=f"prompt {i}",
        output=f"answer {i}",
        latency_s=1.25 + i,
        ttft_s=0.125,
        prompt_tokens=7,
        completion_tokens=3 + i,
        total_tokens=10 + i,
        tokens_per_s=2.5,
        cost_usd=0.000123,
        finish_reason="stop",
        repeat=i,
        params={"temperature": 0.2, "stop": ["\n\n"]},
        started_at=T0 + timedelta(seconds=i),
    )
    values.update(kw)
    return RunRecord(**values)  # type: ignore[arg-type]


@pytest.fixture
def db(isolated_env: Path) -> Iterator[Store]:
    s = Store(isolated_env / "home" / "log.db")
    assert s.problem is None, s.problem
    yield s
    s.close()


def files_bytes(folder: Path) -> bytes:
    """Every byte of every file SQLite keeps for the database: main file, -wal, -shm."""
    return b"".join(p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file())


@contextlib.contextmanager
def other_connection(path: Path) -> Iterator[sqlite3.Connection]:
    """The file as another program opens it, closed after (`with sqlite3.connect(...)` only
    commits; Python 3.13 warns of a connection left unclosed)."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        yield conn
    finally:
        conn.close()


def mode(path: Path | str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# -- the run log -------------------------------------------------------------------------------


def test_log_history_round_trip_keeps_every_value_and_dtype(db: Store) -> None:
    records = [
        rec(0),
        rec(
            1,
            error="openai: HTTP 500: boom",
            finish_reason="error",
            output="",
            ttft_s=None,
            prompt_tokens=None,
            completion_tokens=None,
            total_tokens=None,
            tokens_per_s=None,
            cost_usd=math.nan,
            fallback_from="ollama:llama3.2",
            params={},
        ),
        rec(
            2,
            tokens_estimated=True,
            cached=True,
            started_at=None,
            model="m:with:colons",
            output='unicode ✓ «quotes» "x"\nnew line',
        ),
    ]
    db.log(records)
    back = db.history()
    assert [r.prompt for r in back] == ["prompt 0", "prompt 1", "prompt 2"]
    assert back[0] == records[0]
    pd.testing.assert_frame_equal(to_dataframe(back), to_dataframe(records), check_exact=True)
    frame = db.history_frame(10)
    assert tuple(frame.columns) == (*COLUMNS, "truncated")
    assert {c: str(t) for c, t in frame.dtypes.items()} == {**DTYPES, "truncated": "boolean"}
    assert not frame["truncated"].any()
    assert frame["started_at"].iloc[0] == pd.Timestamp(T0)


def test_naive_started_at_is_taken_as_utc(db: Store) -> None:
    db.log([rec(0, started_at=datetime(2025, 1, 2, 3, 4, 5))])
    (back,) = db.history()
    assert back.started_at == datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def test_history_is_the_last_n_rows_newest_last(db: Store) -> None:
    db.log([rec(i, run_id="a") for i in range(3)])
    db.log([rec(i, run_id="b") for i in range(3, 5)])
    assert [(r.run_id, r.repeat) for r in db.history(3)] == [("a", 2), ("b", 3), ("b", 4)]
    assert len(db.history()) == 5
    assert len(db.history(100)) == 5
    assert db.history(0) == []


def test_thousand_rows_are_one_transaction(db: Store) -> None:
    statements: list[str] = []
    db._conn.set_trace_callback(statements.append)  # type: ignore[union-attr]
    db.log([rec(i) for i in range(1000)])
    db._conn.set_trace_callback(None)  # type: ignore[union-attr]
    transaction = ["BEGIN IMMEDIATE", "COMMIT"]  # the write lock at once: no upgrade deadlock
    assert [s for s in statements if s in transaction] == transaction
    with other_connection(db.path) as other:
        assert other.execute("SELECT count(*) FROM runs").fetchone() == (1000,)
    assert [r.repeat for r in db.history(2)] == [998, 999]


def test_clear_empties_log_and_cache_and_scrubs_the_bytes(db: Store) -> None:
    marker = "FORGET-ME-MARKER-31337"
    db.log([rec(0, output=marker)])
    db.cache_put("k", rec(0, output=marker))
    assert marker.encode() in files_bytes(db.path.parent)
    db.clear()
    assert db.history() == [] and db.cache_get("k") is None
    assert marker.encode() not in files_bytes(db.path.parent)


# -- the file ------------------------------------------------------------------------------------


def test_wal_mode_and_private_file_modes(isolated_env: Path) -> None:
    old = os.umask(0)  # the loosest umask: the modes must come from the code, not the umask
    try:
        s = Store(isolated_env / "home" / "sub" / "log.db")
        s.log([rec(0)])
        s.cache_put("k", rec(0))
    finally:
        os.umask(old)
    try:
        with other_connection(s.path) as other:
            assert other.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert mode(s.path) == 0o600
        for suffix in ("-wal", "-shm"):
            assert Path(f"{s.path}{suffix}").exists()
            assert mode(f"{s.path}{suffix}") == 0o600
        assert mode(s.path.parent) == 0o700
    finally:
        s.close()


def test_an_existing_looser_file_is_tightened(isolated_env: Path) -> None:
    path = isolated_env / "loose.db"
    path.touch()
    path.chmod(0o644)
    s = Store(path)
    assert mode(path) == 0o600
    s.close()


def test_location_home_then_config_then_platformdirs(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert log_path() == isolated_env / "home" / "log.db"
    monkeypatch.delenv("LLM_MAGIC_HOME")
    monkeypatch.setenv("XDG_DATA_HOME", str(isolated_env / "xdg"))
    assert log_path() == isolated_env / "xdg" / "llm_magic" / "log.db"
    # log_path is read from the config file once config.DEFAULTS knows it
    monkeypatch.setitem(config.DEFAULTS, "log_path", "")
    (isolated_env / "config.toml").write_text('log_path = "logs/runs.db"\n')
    assert log_path() == isolated_env / "logs" / "runs.db"
    monkeypatch.setenv("LLM_MAGIC_HOME", str(isolated_env / "elsewhere"))
    assert log_path() == isolated_env / "elsewhere" / "log.db"


def test_default_store_is_one_per_path(isolated_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = default_store()
    assert default_store() is first
    assert first.path == (isolated_env / "home" / "log.db").resolve()
    monkeypatch.setenv("LLM_MAGIC_HOME", str(isolated_env / "other"))
    second = default_store()
    assert second is not first and second.path.parent == (isolated_env / "other").resolve()
    record_run([rec(0)])
    assert len(second.history()) == 1 and first.history() == []


def test_record_run_obeys_the_log_setting(isolated_env: Path) -> None:
    (isolated_env / "config.toml").write_text("log = false\n")
    record_run([rec(0)])
    assert default_store().history() == []
    (isolated_env / "config.toml").write_text("log = true\n")
    os.utime(isolated_env / "config.toml", (1, 1))  # a new mtime, so the config is re-read
    record_run([rec(0)])
    assert len(default_store().history()) == 1


def test_importing_the_store_imports_no_pandas() -> None:
    probe = "import sys, llm_magic.store; print('pandas' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- failures never break a run ------------------------------------------------------------------


def test_unusable_location_is_one_stderr_line_not_an_exception(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = isolated_env / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("LLM_MAGIC_HOME", str(blocker / "home"))
    s = default_store()
    assert s.problem is not None and "cannot open" in s.problem
    s.log([rec(0)])
    record_run([rec(1)])
    assert s.history() == [] and s.cache_get("k") is None
    assert s.cache_put("k", rec(0)) is False
    s.clear()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("llm_magic: run log/cache skipped:")


def test_a_file_that_is_not_a_database_is_reported_not_raised(
    isolated_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = isolated_env / "garbage.db"
    path.write_bytes(b"this is not sqlite at all" * 100)
    s = Store(path)
    assert s.problem is not None
    s.log([rec(0)])
    assert "not a database" in capsys.readouterr().err


def test_a_write_failing_after_open_is_reported_once(
    db: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    with other_connection(db.path) as other:  # someone broke the schema under us
        other.execute("DROP TABLE runs")
        other.execute("DROP TABLE cache")
    db.log([rec(0)])
    db.log([rec(1)])
    assert db.cache_put("k", rec(0)) is False
    assert db.cache_get("k") is None
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no such table" in err[0]


def test_history_magic_on_an_unusable_log_is_a_usage_error(
    ip, isolated_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = isolated_env / "a-file"
    blocker.write_text("x")
    monkeypatch.setenv("LLM_MAGIC_HOME", str(blocker))
    with pytest.raises(UsageError, match="run log cannot be read"):
        ip.run_line_magic("llm", "history")
    capsys.readouterr()


# -- what servers send back: text UTF-8 cannot hold, writes that fail, huge answers ------------

# Another process appending to the same log, as a second kernel would.
_OTHER_PROCESS = """
import sys
from llm_magic._records import RunRecord
from llm_magic.store import Store
store = Store(sys.argv[1])
store.log([RunRecord(run_id="other", target="a:b", provider="a", model="b", prompt="p")])
print(sum(r.run_id == "other" for r in store.history()))
store.close()
"""


def another_process_logs(path: Path) -> None:
    """A real second process writes a row to `path` (it waits up to 5 s for the write lock)."""
    out = subprocess.run(
        [sys.executable, "-c", _OTHER_PROCESS, str(path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert out.stderr == "" and int(out.stdout) >= 1, out


def test_lone_surrogates_are_stored_as_replacement_characters(db: Store) -> None:
    odd = rec(
        0,
        prompt="prompt \udfff",
        output="a\ud800b \ud83d\ude00",  # a lone surrogate, and a pair split in two
        error="HTTP 500: \udc80",
        model="m\ud800",
        fallback_from="x:\ud800",
        params={"k\ud800": ["v\udc00"], "system": "be \ud800 brief"},
    )
    db.log([odd])
    assert db.cache_put("k", replace(odd, error=None)) is True
    (back,) = db.history()
    assert back.output == "a\ufffdb \U0001f600"
    assert (back.prompt, back.error, back.model) == ("prompt \ufffd", "HTTP 500: \ufffd", "m\ufffd")
    assert back.fallback_from == "x:\ufffd"
    assert back.params == {"k\ufffd": ["v\ufffd"], "system": "be \ufffd brief"}
    hit = db.cache_get("k")
    assert hit is not None and hit.output == "a\ufffdb \U0001f600"
    db.log([rec(1)])  # the next run is logged, and another process can write
    another_process_logs(db.path)
    assert [r.repeat for r in db.history()] == [0, 1, 0]


def test_a_prompt_with_a_lone_surrogate_has_a_cache_key_of_its_own() -> None:
    odd = key(messages=(Message("user", "why \ud800"),))
    assert odd != key(messages=(Message("user", "why \ufffd"),)) and len(odd) == 64


def test_a_write_that_fails_midway_is_rolled_back_and_others_write_next(
    db: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    # SQLite takes the first row, then cannot bind the second's count: the write fails midway.
    db.log([rec(0), rec(1, prompt_tokens=2**70)])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot write the run log" in err[0] and "too large" in err[0]
    assert db.history() == []  # the first row went with the rest
    assert db._conn is not None and not db._conn.in_transaction
    another_process_logs(db.path)  # the write lock was released at once
    db.log([rec(2)])
    assert [(r.run_id, r.repeat) for r in db.history()] == [("other", 0), ("run1", 2)]


def test_an_error_inside_a_transaction_is_rolled_back_and_reported(
    db: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    def half(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO runs (run_id) VALUES ('half')")
        conn.execute("INSERT INTO runs (run_id) VALUES (?)", ("\ud800",))  # UTF-8 cannot

    assert db._write("write the run log to", half) is False
    assert "surrogates not allowed" in capsys.readouterr().err
    assert db.history() == []
    another_process_logs(db.path)
    db.log([rec(0)])
    assert [r.run_id for r in db.history()] == ["other", "run1"]


def test_an_interrupt_inside_a_transaction_is_rolled_back_and_goes_on_up(db: Store) -> None:
    def interrupted(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO runs (run_id) VALUES ('half')")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        db._write("write the run log to", interrupted)
    assert db._conn is not None and not db._conn.in_transaction
    another_process_logs(db.path)
    db.log([rec(0)])
    assert [r.run_id for r in db.history()] == ["other", "run1"]


def test_a_transaction_left_open_is_rolled_back_before_the_next_write(db: Store) -> None:
    assert db._conn is not None
    # What an interrupt between two statements of an older version left behind.
    db._conn.execute("BEGIN IMMEDIATE")
    db._conn.execute("INSERT INTO runs (run_id) VALUES ('stale')")
    db.log([rec(0)])
    assert [r.run_id for r in db.history()] == ["run1"]
    another_process_logs(db.path)


def test_processes_writing_one_new_log_at_once_all_get_in(isolated_env: Path) -> None:
    path = isolated_env / "shared" / "log.db"
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", _OTHER_PROCESS, str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    for w in writers:
        out, err = w.communicate(timeout=120)
        assert (w.returncode, err) == (0, ""), err
    s = Store(path)
    assert len(s.history()) == 4
    s.close()


def test_max_log_chars_cuts_the_logged_answer_and_flags_it(db: Store) -> None:
    long, short = rec(0, output="x" * 50), rec(1, output="y" * 10)
    db.log([long, short], max_chars=10)
    cut, whole = db.history()
    assert cut.output == "x" * 10 and whole.output == "y" * 10
    assert cut.params["notes"] == ["the run log keeps the first 10 of 50 characters of the answer"]
    assert "notes" not in whole.params and "notes" not in long.params  # the record is untouched
    assert len(long.output) == 50
    frame = db.history_frame()
    assert frame["truncated"].tolist() == [True, False]
    assert frame["output"].tolist() == ["x" * 10, "y" * 10]


def test_an_answer_longer_than_max_log_chars_is_never_cached(db: Store) -> None:
    assert db.cache_put("long", rec(0, output="x" * 11), max_chars=10) is False
    assert db.cache_get("long") is None
    assert db.cache_put("fits", rec(0, output="x" * 10), max_chars=10) is True
    with other_connection(db.path) as other:  # a truncated row, however it got there
        other.execute("UPDATE cache SET truncated = 1 WHERE key = 'fits'")
    assert db.cache_get("fits") is None


def test_max_log_chars_zero_keeps_every_character(db: Store) -> None:
    big = rec(0, output="é" * 1_500_000)  # past the default limit
    db.log([big], max_chars=0)
    assert db.cache_put("big", big, max_chars=0) is True
    assert db.history()[0].output == big.output and not db.history_frame()["truncated"].any()
    assert db.cache_get("big").output == big.output  # type: ignore[union-attr]


def test_max_log_chars_defaults_to_the_setting(
    db: Store, monkeypatch: pytest.MonkeyPatch, isolated_env: Path
) -> None:
    db.log([rec(0, output="x" * 1_000_001)])  # the default: 1,000,000
    assert len(db.history()[0].output) == 1_000_000
    (isolated_env / "config.toml").write_text("max_log_chars = 7\n")
    db.log([rec(1, output="x" * 8)])
    monkeypatch.setenv("LLM_MAGIC_MAX_LOG_CHARS", "5")  # the environment over the file
    db.log([rec(2, output="x" * 8)])
    assert db.cache_put("k", rec(3, output="x" * 6)) is False
    assert [len(r.output) for r in db.history()[1:]] == [7, 5]
    assert db.history_frame()["truncated"].tolist() == [True, True, True]


def test_a_key_across_the_cut_is_hidden_whole(db: Store) -> None:
    db.log([rec(0, output="a" * 94 + " " + SENTINEL + " tail")], max_chars=100)
    assert b"sk-SE" not in files_bytes(db.path.parent)  # cut first, "sk-SE" would be left
    assert db.history()[0].output == ("a" * 94 + " *** tail")[:100]


def test_an_old_log_gains_the_truncated_column(isolated_env: Path) -> None:
    path = isolated_env / "old.db"
    with other_connection(path) as old:  # the tables as an older version made them
        cols = ", ".join(f'"{c}"' for c in COLUMNS)
        old.execute(f"CREATE TABLE runs (id INTEGER PRIMARY KEY AUTOINCREMENT, {cols})")
        old.execute(f"CREATE TABLE cache (key TEXT PRIMARY KEY, created_at TEXT NOT NULL, {cols})")
        old.execute("INSERT INTO runs (run_id, output, params) VALUES ('old', 'kept', '{}')")
        old.execute("INSERT INTO cache (key, created_at, output) VALUES ('k', 'now', 'hit')")
    s = Store(path)
    try:
        assert s.history_frame()["truncated"].tolist() == [False]
        assert s.cache_get("k").output == "hit"  # type: ignore[union-attr]
        s.log([rec(0, output="x" * 20)], max_chars=10)
        assert s.history_frame()["truncated"].tolist() == [False, True]
    finally:
        s.close()


# -- every connection closed -----------------------------------------------------------------


def closed(conn: sqlite3.Connection | None) -> bool:
    try:
        conn.execute("SELECT 1")  # type: ignore[union-attr]
    except sqlite3.ProgrammingError:
        return True
    return False


def test_reopen_closes_the_old_connection(db: Store) -> None:
    db.log([rec(0)])
    old = db._conn
    db.reopen()
    assert closed(old) and db._conn is not old and not closed(db._conn)
    db.log([rec(1)])
    assert len(db.history()) == 2


def test_a_failed_reopen_closes_the_old_connection_too(
    isolated_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    s = Store(isolated_env / "here" / "log.db")
    old = s._conn
    (isolated_env / "here").rename(isolated_env / "gone")
    (isolated_env / "here").write_text("a file where the folder was")
    s.reopen()
    assert closed(old) and s._conn is None and s.problem is not None
    s.log([rec(0)])  # a no-op, reported once
    assert "cannot open" in capsys.readouterr().err
    s.close()


def test_a_store_closes_its_connection_when_collected(isolated_env: Path) -> None:
    s = Store(isolated_env / "log.db")
    conn = s._conn
    del s
    gc.collect()
    assert closed(conn)


def test_no_connection_is_left_open_when_the_process_ends(isolated_env: Path) -> None:
    """Python 3.13 warns of every SQLite connection never closed; none may be (this holds on
    any Python, and fails on 3.13 when one is left)."""
    probe = (
        "import sys\n"
        "from llm_magic._records import RunRecord\n"
        "from llm_magic.store import Store, record_run\n"
        "row = RunRecord(run_id='r', target='a:b', provider='a', model='b', prompt='p')\n"
        "record_run([row])\n"  # the default store, left open for the process's life
        "Store(sys.argv[1] + '/dropped.db').log([row])\n"  # a store dropped at once
        "Store(sys.argv[1] + '/x/log.db')\n"  # an open that fails: x is a file
        "kept = Store(sys.argv[1] + '/kept.db'); kept.log([row]); kept.reopen()\n"
        "print(len(kept.history()), len(Store(sys.argv[1] + '/dropped.db').history()))\n"
    )
    target = isolated_env / "probe"
    target.mkdir()
    (target / "x").write_text("a file")
    out = subprocess.run(
        [sys.executable, "-X", "dev", "-W", "error::ResourceWarning", "-c", probe, str(target)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (out.returncode, out.stdout) == (0, "1 1\n"), out.stderr
    (line,) = out.stderr.splitlines()  # the failed open, and nothing else
    assert line.startswith("llm_magic: run log/cache skipped: cannot open"), out.stderr


# -- the response cache --------------------------------------------------------------------------

MSGS = (Message("system", "be brief"), Message("user", "Why is the sky blue?"))
OPTS = Options(temperature=0.2, max_tokens=50)


def key(**kw: object) -> str:
    args: dict[str, object] = dict(
        provider="openai",
        base_url="http://127.0.0.1:9/v1",
        model="gpt-4o-mini",
        messages=MSGS,
        options=OPTS,
    )
    args.update(kw)
    return cache_key(**args)  # type: ignore[arg-type]


def test_cache_key_is_stable_and_ignores_transport(monkeypatch: pytest.MonkeyPatch) -> None:
    base = key()
    assert len(base) == 64 and int(base, 16) >= 0
    assert key(messages=list(MSGS)) == base
    assert (
        key(
            options=Options(
                temperature=0.2, max_tokens=50, read_timeout=1.0, connect_timeout=0.5, stream=False
            )
        )
        == base
    )
    assert key(base_url="http://127.0.0.1:9/v1/") == base
    assert key(options=Options(temperature=1, max_tokens=50)) == key(
        options=Options(temperature=1.0, max_tokens=50)
    )
    monkeypatch.setenv("OPENAI_API_KEY", SENTINEL)  # the key is not part of the request's identity
    assert key() == base
    # the same inputs in a fresh interpreter give the same key (no hash randomisation)
    probe = (
        "from llm_magic.store import cache_key\n"
        "from llm_magic.providers.base import Message, Options\n"
        "print(cache_key('openai', 'http://127.0.0.1:9/v1', 'gpt-4o-mini', "
        "[Message('system', 'be brief'), Message('user', 'Why is the sky blue?')], "
        "Options(temperature=0.2, max_tokens=50)))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == base


@pytest.mark.parametrize(
    "change",
    [
        {"provider": "vllm"},
        {"base_url": "http://127.0.0.1:10/v1"},
        {"base_url": None},
        {"model": "gpt-4o"},
        {"messages": MSGS[1:]},
        {"messages": (MSGS[0], Message("user", "Why is the sky blue?!"))},
        {"messages": (Message("user", "be brief"), MSGS[1])},
        {"options": Options(temperature=0.3, max_tokens=50)},
        {"options": Options(temperature=0.2, max_tokens=51)},
        {"options": Options(temperature=0.2, max_tokens=50, top_p=0.9)},
        {"options": Options(temperature=0.2, max_tokens=50, seed=1)},
        {"options": Options(temperature=0.2, max_tokens=50, stop=("END",))},
        {"repeat": 1},
    ],
)
def test_cache_key_changes_with_what_decides_the_answer(change: dict[str, object]) -> None:
    assert key(**change) != key()


def test_cache_get_returns_the_answer_marked_cached(db: Store) -> None:
    k = key()
    assert db.cache_get(k) is None
    original = rec(0, output="Rayleigh scattering.", cost_usd=0.0002)
    assert db.cache_put(k, original) is True
    hit = db.cache_get(k)
    assert hit is not None and hit.cached is True and original.cached is False
    for name in store.ANSWER_FIELDS:
        assert getattr(hit, name) == getattr(original, name), name
    fresh = RunRecord(
        run_id="run2",
        target="openai:gpt-4o-mini",
        provider="openai",
        model="gpt-4o-mini",
        prompt="Why?",
        repeat=3,
        params={"seed": 1},
    )
    served = copy_answer(hit, fresh)
    assert served.output == "Rayleigh scattering." and served.cached and served.error is None
    assert (served.run_id, served.prompt, served.repeat) == ("run2", "Why?", 3)
    assert served.latency_s == original.latency_s  # as measured when first answered
    assert served.model == "gpt-4o-mini-2024-07-18"


def test_failed_interrupted_and_replayed_answers_are_not_cached(db: Store) -> None:
    assert db.cache_put("e", rec(0, error="openai: HTTP 500: boom", finish_reason="error")) is False
    assert db.cache_put("i", rec(0, error="interrupted", finish_reason="interrupted")) is False
    assert db.cache_put("x", rec(0, finish_reason="interrupted")) is False
    assert db.cache_put("c", rec(0, cached=True)) is False
    assert all(db.cache_get(k) is None for k in "eixc")
    assert db.cache_put("ok", rec(0, finish_reason="length")) is True
    assert db.cache_get("ok") is not None


def test_cache_from_eight_threads_while_the_main_thread_logs(
    db: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    errors: list[BaseException] = []
    start = threading.Barrier(9)

    def worker(t: int) -> None:
        try:
            start.wait()
            for i in range(60):
                k = f"{t}-{i}"
                assert db.cache_put(k, rec(i, output=f"{t}/{i}"))
                hit = db.cache_get(k)
                assert hit is not None and hit.output == f"{t}/{i}"
                shared = db.cache_get("shared")  # every thread rewrites and reads one row too
                assert shared is None or shared.output.startswith("shared")
                db.cache_put("shared", rec(i, output=f"shared {t}"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    start.wait()
    for n in range(20):
        db.log([rec(i, run_id=f"main{n}") for i in range(10)])
    for th in threads:
        th.join(timeout=60)
    assert errors == []
    assert len(db.history()) == 200
    assert all(db.cache_get(f"{t}-59").output == f"{t}/59" for t in range(8))  # type: ignore[union-attr]
    assert capsys.readouterr().err == ""


# -- never a key -------------------------------------------------------------------------------


def test_no_key_ever_reaches_the_file(db: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SENTINEL)
    monkeypatch.setenv("MYSERVICE_TOKEN", PLAIN_SECRET)
    careless = [
        rec(
            0,
            output=f"the server echoed your key {SENTINEL} and {PLAIN_SECRET}",
            error=f"HTTP 401: invalid key {SENTINEL}; Authorization: Bearer {PLAIN_SECRET}",
            prompt=f"my key is {PLAIN_SECRET}",
            model=f"model-{SENTINEL}",
            fallback_from=f"x:{PLAIN_SECRET}",
            params={"note": f'quoted "{PLAIN_SECRET}"', PLAIN_SECRET: [SENTINEL]},
        ),
        rec(1, output="VISIBLE-MARKER-of-a-harmless-row"),
    ]
    db.log(careless)
    db.cache_put(key(), rec(2, output=f"cached {SENTINEL} {PLAIN_SECRET}"))
    raw = files_bytes(db.path.parent)
    assert b"VISIBLE-MARKER-of-a-harmless-row" in raw  # the raw bytes do hold the rows
    assert SENTINEL.encode() not in raw and PLAIN_SECRET.encode() not in raw
    assert b"SENTINEL" not in raw
    logged = db.history()[0]
    assert "***" in logged.output and "***" in (logged.error or "")
    assert logged.params == {"note": 'quoted "***"', "***": ["***"]}
    db.close()  # the checkpoint moves the WAL into the main file: check that too
    raw = files_bytes(db.path.parent)
    assert SENTINEL.encode() not in raw and PLAIN_SECRET.encode() not in raw


def test_redaction_is_exact_when_only_some_rows_hold_a_secret(
    db: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MYSERVICE_TOKEN", PLAIN_SECRET)
    # a row ending in "Bearer" must not cost the next string its first word
    rows = [rec(0, output="use Bearer", prompt="hello there"), rec(1, output=f"x {PLAIN_SECRET}")]
    db.log(rows)
    first, second = db.history()
    assert (first.output, first.prompt) == ("use Bearer", "hello there")
    assert second.output == "x ***"


# -- %llm history ------------------------------------------------------------------------------


def test_history_magic_shows_the_last_rows_as_a_run_frame(ip) -> None:
    default_store().log([rec(i, run_id=f"r{i // 5}") for i in range(25)])
    df = ip.run_line_magic("llm", "history")
    assert isinstance(df, pd.DataFrame)
    assert tuple(df.columns) == (*COLUMNS, "truncated")
    assert {c: str(t) for c, t in df.dtypes.items()} == {**DTYPES, "truncated": "boolean"}
    assert list(df["repeat"]) == list(range(5, 25))
    df3 = ip.run_line_magic("llm", "history 3")
    assert list(df3["prompt"]) == ["prompt 22", "prompt 23", "prompt 24"]
    with pytest.raises(UsageError):
        ip.run_line_magic("llm", "history zero")


def test_history_magic_on_an_empty_log_is_an_empty_run_frame(ip) -> None:
    df = ip.run_line_magic("llm", "history 5")
    assert len(df) == 0
    assert {c: str(t) for c, t in df.dtypes.items()} == {**DTYPES, "truncated": "boolean"}
