"""Provider batch APIs on the wire: `--batch` / `compare(batch=True)` against the loopback
OpenAI and Mistral servers' batch endpoints (tests/servers/batch_server.py)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from IPython.core.error import UsageError

import llm_magic
from llm_magic import _batch_run
from llm_magic._batch_store import find, rows_of
from llm_magic._pricing import price
from llm_magic.errors import UsageProblem
from llm_magic.store import Store, default_store

KEY = "sk-test-not-real-batch-0000"


@pytest.fixture(autouse=True)
def fast_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    """Poll every 10 ms: the servers move one status per read, not per hour."""
    monkeypatch.setattr(_batch_run, "POLL_FIRST", 0.01)
    monkeypatch.setattr(_batch_run, "POLL_MAX", 0.02)


@pytest.fixture
def wired(monkeypatch, openai_server, mistral_server, ollama_server):
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.url)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("MISTRAL_BASE_URL", mistral_server.url)
    monkeypatch.setenv("MISTRAL_API_KEY", KEY)
    monkeypatch.setenv("OLLAMA_HOST", ollama_server.url)
    openai_server.api_key = mistral_server.api_key = KEY
    return openai_server, mistral_server, ollama_server


def _uploaded_lines(server) -> list[dict]:
    (data, purpose), *_ = server.batches.files.values()
    assert purpose == "batch"
    return [json.loads(line) for line in data.splitlines()]


def _batch_gets(server) -> list[str]:
    return [r.path for r in server.requests if r.method == "GET" and "/batch" in r.path]


def test_openai_batch_goes_through_its_statuses_and_comes_back_as_rows(wired) -> None:
    openai, _, _ = wired
    df = llm_magic.compare(
        ["Why is the sky blue?", "What is a prime?"],
        "openai:gpt-4o-mini",
        batch=True,
        wait=True,
        max_tokens=64,
        temperature=0,
        repeat=2,
    )
    # the wire: a multipart upload with purpose=batch, then the batch itself
    create = next(r for r in openai.requests if r.path == "/v1/batches")
    assert create.body["completion_window"] == "24h"
    assert create.body["endpoint"] == "/v1/chat/completions"
    lines = _uploaded_lines(openai)
    assert create.body["input_file_id"] in openai.batches.files
    assert len(lines) == 4
    assert {(line["method"], line["url"]) for line in lines} == {("POST", "/v1/chat/completions")}
    assert all("stream" not in line["body"] for line in lines)
    assert lines[0]["body"]["messages"] == [{"role": "user", "content": "Why is the sky blue?"}]
    assert lines[0]["body"]["max_tokens"] == 64
    assert len({line["custom_id"] for line in lines}) == 4
    assert len(_batch_gets(openai)) >= 3  # validating -> in_progress -> finalizing -> completed
    assert openai.batches.batches[create_id(openai)]["status"] == "completed"
    assert not openai.chat_requests()  # nothing went live
    # the rows: the run's schema plus batched, in prompt x target x repeat order
    assert list(df["prompt"]) == ["Why is the sky blue?"] * 2 + ["What is a prime?"] * 2
    assert list(df["repeat"]) == [0, 1, 0, 1]
    assert df["batched"].dtype == "boolean" and df["batched"].all()
    assert df["error"].isna().all()
    assert df["output"].iloc[0] == "Echo from gpt-4o-mini: Why is the sky blue?"
    assert df["latency_s"].isna().all() and df["ttft_s"].isna().all()
    assert list(df["prompt_tokens"]) == [5, 5, 4, 4]
    first = df.iloc[0]
    rates = price("openai", "gpt-4o-mini")
    full = (first["prompt_tokens"] * rates[0] + first["completion_tokens"] * rates[1]) / 1e6
    assert math.isclose(first["cost_usd"], full / 2)  # the batch price: half
    assert not df["tokens_estimated"].any()


def create_id(server) -> str:
    return server.batch_knobs.created[-1]


def test_mistral_batch_job_through_the_magic(ip, wired, capsys) -> None:
    _, mistral, _ = wired
    ip.run_cell("%%llm mistral:mistral-small-latest --batch --wait -q --seed 7\nName a colour.")
    df = ip.user_ns["_llm"]
    create = next(r for r in mistral.requests if r.path == "/v1/batch/jobs")
    assert create.body["model"] == "mistral-small-latest"
    assert create.body["input_files"] and create.body["endpoint"] == "/v1/chat/completions"
    (line,) = _uploaded_lines(mistral)
    assert set(line) == {"custom_id", "body"}
    assert line["body"]["random_seed"] == 7 and "stream" not in line["body"]
    assert df["output"].tolist() == ["Echo from mistral-small-latest: Name a colour."]
    assert df["batched"].tolist() == [True]
    assert mistral.batches.batches[create_id(mistral)]["status"] == "SUCCESS"
    assert "submitted 1 batch, 1 requests" in capsys.readouterr().out


def test_targets_without_a_batch_api_run_live_beside_and_the_cell_says_so(ip, wired, capsys):
    openai, _, ollama = wired
    ip.run_cell("%%llm openai:gpt-4o-mini ollama:llama3.2 --batch --wait -q\nHi")
    df = ip.user_ns["_llm"]
    out = capsys.readouterr().out
    assert "no batch API for ollama:llama3.2: asked live" in out
    assert list(df["target"]) == ["openai:gpt-4o-mini", "ollama:llama3.2"]
    assert list(df["batched"]) == [True, False]
    assert df["error"].isna().all()
    assert not math.isnan(df["latency_s"].iloc[1]) and math.isnan(df["latency_s"].iloc[0])
    assert len(ollama.chat_requests()) == 1 and not openai.chat_requests()
    assert df["run_id"].nunique() == 1  # live and batched rows are one run


def test_without_wait_the_cell_returns_and_collect_brings_the_rows(ip, wired, capsys) -> None:
    openai, _, _ = wired
    result = ip.run_cell("%%llm openai:gpt-4o-mini --batch\nHello there")
    assert result.result is None and "_llm" not in ip.user_ns
    out = capsys.readouterr().out
    assert "collect with %llm collect " in out
    run_id = out.rsplit("%llm collect ", 1)[1].split()[0]
    listed = ip.run_line_magic("llm", "batches")
    assert listed["id"].tolist() == [create_id(openai)]
    assert listed["status"].iloc[0] in ("in_progress", "finalizing", "completed")
    assert listed["total"].iloc[0] == 1 and not listed["collected"].iloc[0]
    df = None
    for _ in range(20):  # a few reads move it to its end
        df = ip.run_line_magic("llm", f"collect {run_id}")
        if df is not None:
            break
    assert df is not None and df["output"].tolist() == ["Echo from gpt-4o-mini: Hello there"]
    listed = ip.run_line_magic("llm", "batches")
    assert listed["status"].iloc[0] == "completed" and listed["collected"].iloc[0]
    assert listed["cost_usd"].iloc[0] == pytest.approx(df["cost_usd"].sum())
    # logged once, like any run, however often it is collected
    again = ip.run_line_magic("llm", f"collect {create_id(openai)}")
    assert again["output"].tolist() == df["output"].tolist()
    history = ip.run_line_magic("llm", "history")
    assert history["output"].tolist() == ["Echo from gpt-4o-mini: Hello there"]
    assert ip.run_line_magic("llm", "collect all") is None  # nothing left
    assert "no batch left to collect" in capsys.readouterr().out


def test_a_kernel_restart_between_submit_and_collect(ip, wired, isolated_env) -> None:
    openai, _, _ = wired
    df = llm_magic.compare(["one", "two"], "openai:gpt-4o-mini", batch=True)
    assert len(df) == 0 and list(df.columns)[-1] == "batched"
    batch_id = df.attrs["batches"][0]
    code = (
        "import llm_magic, json\n"
        "df = None\n"
        "for _ in range(50):\n"
        "    df = llm_magic.collect('all')\n"
        "    if df is not None: break\n"
        "print(json.dumps({'out': df['output'].tolist(), 'batched': df['batched'].tolist()}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(llm_magic.__file__).parent.parent)}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    said = json.loads(done.stdout.strip().splitlines()[-1])
    assert said == {
        "out": ["Echo from gpt-4o-mini: one", "Echo from gpt-4o-mini: two"],
        "batched": [True, True],
    }
    assert openai.batches.batches[batch_id]["status"] == "completed"


def test_ids_are_in_the_store_before_anything_is_submitted(wired) -> None:
    openai, _, _ = wired
    openai.batches.files.clear()
    # the batch cannot be created: the file was uploaded, its id recorded, the rows kept
    seen: list[tuple[str, str | None]] = []
    real_create = openai.routes[("POST", "/v1/batches")]

    def create(ex):
        (entry,) = find(default_store())
        seen.append((entry.status, entry.input_file))
        ex.send_json(503, {"error": {"message": "Batch API overloaded", "type": "server_error"}})

    openai.routes[("POST", "/v1/batches")] = create
    try:
        df = llm_magic.compare(["a", "b"], "openai:gpt-4o-mini", batch=True)
    finally:
        openai.routes[("POST", "/v1/batches")] = real_create
    assert seen and seen[0][0] == "uploaded" and seen[0][1] in openai.batches.files
    assert df["error"].str.startswith("batch not submitted: openai: HTTP 503").all()
    assert df["error"].str.contains("Batch API overloaded").all() and len(df) == 2
    (entry,) = find(default_store())
    assert entry.status == "not submitted" and entry.done
    assert len(rows_of(default_store(), entry)) == 2


def test_a_batch_that_fails_validation_gives_every_row_its_error(wired) -> None:
    openai, _, _ = wired
    openai.batch_knobs.fail_validation = True
    df = llm_magic.compare(["a", "b"], "openai:gpt-4o-mini", batch=True, wait=True)
    assert len(df) == 2
    assert df["error"].eq("the batch failed validation").all()
    (entry,) = find(default_store())
    assert entry.status == "failed" and "line 1: validation failed" in entry.problem


def test_a_batch_that_expires_half_done_keeps_what_it_answered(wired) -> None:
    _, mistral, _ = wired
    mistral.batch_knobs.expire_after = 2
    prompts = ["p1", "p2", "p3", "p4"]
    df = llm_magic.compare(prompts, "mistral:mistral-small-latest", batch=True, wait=True)
    assert mistral.batches.batches[create_id(mistral)]["status"] == "TIMEOUT_EXCEEDED"
    assert df["output"].tolist()[:2] == [
        f"Echo from mistral-small-latest: {p}" for p in prompts[:2]
    ]
    assert df["error"].isna().tolist() == [True, True, False, False]
    assert df["error"].iloc[2] == "the batch job timed out before this request was done"
    assert df["cost_usd"].iloc[:2].notna().all()


def test_error_lines_and_an_all_failed_batch(wired) -> None:
    openai, _, _ = wired
    df = llm_magic.compare(["fine", "[fail] this one"], "openai:gpt-4o-mini", batch=True, wait=True)
    assert pd.isna(df["error"].iloc[0])
    assert df["error"].iloc[1] == "HTTP 400: This request was refused."
    assert df["finish_reason"].iloc[1] == "error" and df["output"].iloc[1] == ""
    # every request failed: output_file_id null, only an error file (batch.md §1.6)
    df = llm_magic.compare(["[fail] a", "[fail] b"], "openai:gpt-4o-mini", batch=True, wait=True)
    last = openai.batches.batches[create_id(openai)]
    assert last["output_file"] is None and last["error_file"]
    assert df["error"].eq("HTTP 400: This request was refused.").all()


def test_inputs_over_the_limits_are_split_into_several_batches(wired, monkeypatch) -> None:
    openai, _, _ = wired
    from llm_magic.providers._batch_api import OpenAIBatches

    monkeypatch.setattr(OpenAIBatches, "max_requests", 2)
    prompts = [f"prompt {i}" for i in range(5)]
    df = llm_magic.compare(prompts, "openai:gpt-4o-mini", batch=True, wait=True)
    assert len(openai.batch_knobs.created) == 3
    sizes = [
        len(openai.batches.files[b["input_file_id"]][0].splitlines())
        for b in openai.batches.batches.values()
    ]
    assert sizes == [2, 2, 1]
    assert df["output"].tolist() == [f"Echo from gpt-4o-mini: {p}" for p in prompts]
    # and by bytes: a file never passes max_bytes
    monkeypatch.setattr(OpenAIBatches, "max_requests", 50_000)
    monkeypatch.setattr(OpenAIBatches, "max_bytes", 400)
    openai.reset()
    df = llm_magic.compare(prompts, "openai:gpt-4o-mini", batch=True, wait=True)
    files = [openai.batches.files[b["input_file_id"]][0] for b in openai.batches.batches.values()]
    assert len(files) > 1 and all(len(f) <= 400 for f in files)
    assert df["error"].isna().all() and len(df) == 5


def test_cancel_stops_the_batch_and_collect_keeps_every_row(ip, wired, capsys) -> None:
    openai, _, _ = wired
    openai.batch_knobs.steps = 100  # it stays in validating until cancelled
    ip.run_cell("%%llm openai:gpt-4o-mini --batch -q\nHi")
    batch_id = create_id(openai)
    ip.run_line_magic("llm", f"cancel {batch_id}")
    assert f"cancelling {batch_id} cancelling" in capsys.readouterr().out
    df = ip.run_line_magic("llm", f"collect {batch_id}")
    assert df["error"].tolist() == ["the batch was cancelled before this request was done"]
    assert openai.batches.batches[batch_id]["status"] == "cancelled"
    with pytest.raises(UsageError, match="no batch of it is still running"):
        ip.run_line_magic("llm", f"cancel {batch_id}")


def test_interrupting_the_wait_stops_the_waiting_not_the_batch(wired, interrupt_main) -> None:
    openai, _, _ = wired
    openai.batch_knobs.steps = 10_000

    def interrupt() -> None:
        deadline = time.monotonic() + 10
        while not _batch_gets(openai) and time.monotonic() < deadline:
            time.sleep(0.01)
        interrupt_main()

    threading.Thread(target=interrupt).start()
    with pytest.raises(
        KeyboardInterrupt, match=r"stopped waiting; the batches go on: %llm collect \w+"
    ):
        llm_magic.compare(["Hi"], "openai:gpt-4o-mini", batch=True, wait=True)
    assert not [r for r in openai.requests if r.path.endswith("/cancel")]
    assert openai.batches.batches[create_id(openai)]["status"] == "validating"


def test_collected_rows_fill_the_cache_and_a_cached_request_is_not_batched_again(wired) -> None:
    openai, _, _ = wired
    first = llm_magic.compare(["Hi"], "openai:gpt-4o-mini", batch=True, wait=True, cache=True)
    assert not first["cached"].iloc[0]
    again = llm_magic.compare(
        ["Hi", "new"], "openai:gpt-4o-mini", batch=True, wait=True, cache=True
    )
    assert again["cached"].tolist() == [True, False]
    assert again["batched"].tolist() == [False, True]  # served now, not from a batch
    assert again["output"].iloc[0] == first["output"].iloc[0]
    assert len(openai.batch_knobs.created) == 2
    assert len(_uploaded_lines_of(openai, -1)) == 1


def _uploaded_lines_of(server, which: int) -> list[bytes]:
    batch = server.batches.batches[server.batch_knobs.created[which]]
    return server.batches.files[batch["input_file_id"]][0].splitlines()


def test_an_openai_compatible_server_with_batch_true_in_its_table(wired, isolated_env, monkeypatch):
    openai, _, _ = wired
    config = isolated_env / "config.toml"
    config.write_text(
        f'[providers.work]\nbase_url = "{openai.url}"\napi_key_env = "OPENAI_API_KEY"\n'
        f'batch = true\n[providers.plain]\nbase_url = "{openai.url}"\n'
    )
    df = llm_magic.compare(["Hi"], "work:any-model", batch=True, wait=True)
    assert df["output"].tolist() == ["Echo from any-model: Hi"] and df["batched"].all()
    with pytest.raises(UsageProblem, match=r"--batch: no batch API for plain:m .*drop --batch"):
        llm_magic.compare(["Hi"], "plain:m", batch=True)


def test_bad_input_is_one_line_and_sends_nothing(ip, wired) -> None:
    openai, _, ollama = wired
    with pytest.raises(UsageError, match=r"--batch: no batch API for ollama:llama3.2 \(openai"):
        ip.run_cell("%%llm ollama:llama3.2 --batch\nHi")
    with pytest.raises(UsageError, match="--wait waits for --batch batches: add --batch"):
        ip.run_cell("%%llm openai:gpt-4o-mini --wait\nHi")
    with pytest.raises(UsageError, match="--batch cannot go with --chat"):
        ip.run_cell("%%llm openai:gpt-4o-mini --batch --chat\nHi")
    with pytest.raises(UsageError, match=r"--check is not taken with --batch"):
        ip.run_cell("%%llm openai:gpt-4o-mini --batch --check json\nHi")
    ip.user_ns["add"] = lambda a, b: a + b
    with pytest.raises(UsageError, match=r"--tools is not taken with --batch"):
        ip.run_cell("%%llm openai:gpt-4o-mini --batch --tools add\nHi")
    with pytest.raises(UsageProblem, match="complete\\(\\) asks once; batch= is compare\\(\\)'s"):
        llm_magic.complete("Hi", "openai:gpt-4o-mini", batch=True)
    assert ollama.request_count == 0 and openai.request_count == 0
    with pytest.raises(
        UsageError,
        match=r"^no batch or run 'batch_nope' in the store \(.*\); %llm batches lists them$",
    ):
        ip.run_line_magic("llm", "collect batch_nope")
    with pytest.raises(UsageError, match="usage: %llm collect ID | RUN_ID | all"):
        ip.run_line_magic("llm", "collect")


def test_a_batch_the_provider_no_longer_knows_and_an_output_file_of_another_format(ip, wired):
    openai, _, _ = wired
    openai.batch_knobs.garbage_output = True
    llm_magic.compare(["Hi"], "openai:gpt-4o-mini", batch=True)
    batch_id = create_id(openai)
    for _ in range(10):
        ip.run_line_magic("llm", "batches")  # each listing reads the batch: it ends
    with pytest.raises(UsageError, match=rf"^{batch_id}: .*line 1, is not a batch output line"):
        ip.run_line_magic("llm", f"collect {batch_id}")
    (entry,) = find(default_store())
    assert entry.collected_at is None  # nothing lost: it can be collected again
    openai.reset()  # the server forgets it
    with pytest.raises(UsageError, match=rf"^{batch_id}: openai: HTTP 404: No batch found with id"):
        ip.run_line_magic("llm", f"collect {batch_id}")


def test_an_older_store_gains_the_batch_tables_and_keeps_its_rows(wired, isolated_env) -> None:
    path = isolated_env / "home" / "log.db"
    llm_magic.compare(["live before"], "openai:gpt-4o-mini")
    import contextlib
    import sqlite3

    # closing(): sqlite3's own `with` commits but leaves the connection open (3.13 warns)
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        conn.execute("CREATE TABLE IF NOT EXISTS batches (key TEXT PRIMARY KEY, run_id TEXT)")
    assert "batch_rows" not in tables  # a store as an older llm_magic left it (an older
    # batches table too, with two columns of today's)
    default_store().reopen()
    df = llm_magic.compare(["later"], "openai:gpt-4o-mini", batch=True, wait=True)
    assert df["output"].tolist() == ["Echo from gpt-4o-mini: later"]
    history = Store(path).history()
    assert [r.prompt for r in history] == ["live before", "later"]
