"""Big live runs: rows stream to the run log as they finish, an interrupted run is resumed
(`%llm resume RUN_ID`, `--resume`, `compare(resume=…)`) sending only the rows without an
answer, in this kernel or a new one, and the view of a huge run costs the same per update
however many rows it has. Against the loopback OpenAI server, on real sockets."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from IPython.core.error import UsageError

import llm_magic
from llm_magic import _live, _run_log
from llm_magic._plan import make_plan
from llm_magic._request import Request
from llm_magic._session import Session
from llm_magic.errors import RunInterrupted, UsageProblem
from llm_magic.store import Store, log_path

TARGET = "openai:gpt-4o-mini"
ITEMS = [f"q{i}" for i in range(24)]


@pytest.fixture
def openai(backends):
    return backends.openai


def logged(run_id: str | None = None) -> list[tuple[str, int | None, str | None]]:
    """(run_id, job, error) of every row in the log, read through a connection of our own."""
    store = Store(log_path())
    try:
        query = "SELECT run_id, job, error FROM runs ORDER BY id"
        rows = store.read("read", lambda conn: conn.execute(query).fetchall(), [])
    finally:
        store.close()
    return [tuple(r) for r in rows if run_id is None or r[0] == run_id]


def interrupt_when(server, count: int, interrupt_main) -> None:
    """Interrupt the main thread once the server has had `count` requests."""

    def watch() -> None:
        deadline = time.monotonic() + 20
        while server.request_count < count and time.monotonic() < deadline:
            time.sleep(0.005)
        interrupt_main()

    threading.Thread(target=watch, daemon=True).start()


def test_rows_reach_the_log_while_the_run_goes_on(openai, monkeypatch) -> None:
    monkeypatch.setattr(_run_log, "EVERY_ROWS", 4)  # small transactions, to see them land
    openai.delay = 0.05
    seen_mid_run: list[int] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            rows = logged()
            if 0 < len(rows) < len(ITEMS):
                seen_mid_run.append(len(rows))
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        df = llm_magic.compare("{item}", TARGET, over=ITEMS, concurrency=2)
    finally:
        done.set()
        watcher.join()
    assert seen_mid_run, "no row was in the log before the run ended"
    rows = logged(df.attrs["run_id"])
    assert sorted(job for _, job, _ in rows) == list(range(len(ITEMS)))  # each row once
    assert (df["run_id"] == df.attrs["run_id"]).all()


def test_an_interrupted_cell_leaves_its_rows_in_the_log_and_resumes(
    ip, openai, interrupt_main
) -> None:
    openai.delay = 0.05
    ip.user_ns["items"] = ITEMS
    interrupt_when(openai, 6, interrupt_main)
    with pytest.raises(KeyboardInterrupt, match=r"%llm resume ([0-9a-f]{12}) \(or --resume\)"):
        ip.run_cell(f"%%llm {TARGET} --over items -c 2\n{{item}}")
    first = ip.user_ns["_llm"]
    run_id = first.attrs["run_id"]
    answered = int(first["error"].isna().sum())
    assert 0 < answered < len(ITEMS)
    # every row is in the log already, the unanswered ones with their error
    rows = logged(run_id)
    assert sorted(job for _, job, _ in rows) == list(range(len(ITEMS)))
    assert sum(error is None for _, _, error in rows) == answered

    openai.delay = 0.0
    sent_before = openai.request_count
    ip.run_cell(f"%llm resume {run_id}")
    assert openai.request_count - sent_before == len(ITEMS) - answered  # only the missing ones
    whole = ip.user_ns["_llm"]
    assert whole.attrs["run_id"] == run_id and (whole["run_id"] == run_id).all()
    assert list(whole["prompt"]) == ITEMS and whole["error"].isna().all()
    sent = [r.body["messages"][-1]["content"] for r in openai.requests[sent_before:]]
    missing = set(first.loc[first["error"].notna(), "prompt"])
    assert sorted(sent) == sorted(missing)
    # the kept rows are the very answers of the first run
    kept = first["error"].isna()
    assert list(whole.loc[kept, "output"]) == list(first.loc[kept, "output"])


def test_resume_flag_on_the_same_cell_sends_only_the_rest(ip, openai, interrupt_main) -> None:
    openai.delay = 0.05
    ip.user_ns["items"] = ITEMS
    cell = f"%%llm {TARGET} --over items -c 2 -q\n{{item}}"
    interrupt_when(openai, 5, interrupt_main)
    with pytest.raises(KeyboardInterrupt):
        ip.run_cell(cell)
    missing = int(ip.user_ns["_llm"]["error"].notna().sum())
    openai.delay = 0.0
    sent_before = openai.request_count
    ip.run_cell(cell.replace("-q", "-q --resume"))
    assert openai.request_count - sent_before == missing
    assert ip.user_ns["_llm"]["error"].isna().all()
    # resumed again with nothing missing: nothing is sent, the whole frame comes back
    ip.run_cell(cell.replace("-q", "-q --resume"))
    assert openai.request_count - sent_before == missing
    assert list(ip.user_ns["_llm"]["prompt"]) == ITEMS


def test_compare_resume_resends_failed_rows_and_only_those(openai) -> None:
    openai.status, openai.fail_times = 500, 5
    first = llm_magic.compare("{item}", TARGET, over=ITEMS, retries=0, concurrency=1)
    assert int(first["error"].notna().sum()) == 5
    sent_before = openai.request_count
    again = llm_magic.compare(
        "{item}", TARGET, over=ITEMS, retries=0, concurrency=1, resume=first.attrs["run_id"]
    )
    assert openai.request_count - sent_before == 5  # the failed rows, and only they
    assert again["error"].isna().all() and list(again["prompt"]) == ITEMS
    assert again.attrs["run_id"] == first.attrs["run_id"]


def test_resume_true_without_an_earlier_run_just_runs(openai) -> None:
    df = llm_magic.compare("{item}", TARGET, over=ITEMS[:3], resume=True)
    assert openai.request_count == 3 and df["error"].isna().all()


def test_compare_interrupted_then_resumed_in_a_new_process(openai, interrupt_main) -> None:
    openai.delay = 0.05
    interrupt_when(openai, 5, interrupt_main)
    with pytest.raises(RunInterrupted) as info:
        llm_magic.compare("{item}", TARGET, over=ITEMS, concurrency=2)
    records = info.value.records
    run_id = records[0].run_id
    missing = sum(r.error is not None for r in records)
    assert 0 < missing < len(ITEMS)
    openai.delay = 0.0
    sent_before = openai.request_count
    # a new kernel: another process, the same store, nothing shared but the files
    code = (
        "import llm_magic, sys\n"
        "from llm_magic._api import run\n"
        "from llm_magic._plan import plan_of_run\n"
        "from llm_magic._session import Session\n"
        f"records = run(plan_of_run({run_id!r}, Session()), session=Session())\n"
        "print(len(records), sum(r.error is None for r in records), records[0].run_id)\n"
    )
    root = Path(llm_magic.__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(len(ITEMS)), str(len(ITEMS)), run_id]
    assert openai.request_count - sent_before == missing


def test_resume_of_an_unknown_run_is_one_line(ip, openai) -> None:
    with pytest.raises(UsageError, match=r"no run 'feedfacecafe' to resume") as info:
        ip.run_cell("%llm resume feedfacecafe")
    assert "\n" not in str(info.value)
    with pytest.raises(UsageProblem, match="no run 'nope' to resume"):
        llm_magic.compare("Hi", TARGET, resume="nope")
    with pytest.raises(UsageError, match="usage: %llm resume RUN_ID"):
        ip.run_cell("%llm resume")
    assert openai.request_count == 0


def test_resume_of_a_run_that_asked_something_else_is_refused(openai) -> None:
    first = llm_magic.compare("{item}", TARGET, over=ITEMS[:2])
    with pytest.raises(UsageProblem, match="asked for other prompts, targets or options"):
        llm_magic.compare("{item}", TARGET, over=ITEMS[:3], resume=first.attrs["run_id"])
    assert openai.request_count == 2


def test_with_the_log_off_nothing_is_logged_and_resume_says_why(openai, isolated_env) -> None:
    (isolated_env / "config.toml").write_text("log = false\n")
    llm_magic.compare("{item}", TARGET, over=ITEMS[:3])
    assert logged() == []
    with pytest.raises(UsageProblem, match="run log, which is off"):
        llm_magic.compare("Hi", TARGET, resume=True)
    assert openai.request_count == 3


def test_a_huge_run_view_draws_one_bounded_line_whatever_the_rows(capsys) -> None:
    """The view of a run past LIVE_COLUMNS_MAX is one bar: no row is drawn, so each update
    costs the same for 100 rows as for 20,000."""
    from llm_magic._records import RunRecord

    widths = {}
    for rows in (100, 20_000):
        plan = make_plan(Request(("{item}",), (TARGET,), over=list(range(rows))), Session())
        view = _live.view_for(plan)
        assert type(view).__name__ == "_ProgressBar"
        for job in plan.jobs:
            failed = "boom" if job.index % 1000 == 0 else None
            record = RunRecord(plan.run_id, TARGET, "openai", "m", job.prompt, error=failed)
            view.on_done(job, record)
        view.close()
        drawn = [line for line in capsys.readouterr().err.split("\r") if line.strip()]
        assert drawn and f"{rows}/{rows}" in drawn[-1] and plan.run_id in drawn[-1]
        widths[rows] = max(map(len, drawn))
    assert widths[20_000] < 200 and widths[20_000] - widths[100] < 20  # digits, not rows


def test_runs_that_cannot_be_resumed_say_why_in_one_line(openai) -> None:
    from tests.test_images import PNG

    with pytest.raises(UsageProblem, match="a run with images cannot be resumed"):
        llm_magic.compare("What is this?", TARGET, images=[PNG], resume=True)
    with pytest.raises(UsageProblem, match="a --chat run cannot be resumed"):
        llm_magic.compare("Hi", TARGET, chat=True, resume=True)
    assert openai.request_count == 0
