"""Run log and cache through the magic: %%llm against the loopback OpenAI server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from IPython.core.error import UsageError

from llm_magic.results import DTYPES
from llm_magic.store import default_store

KEY = "sk-SENTINEL-store-123456789"


@pytest.fixture
def openai(monkeypatch, openai_server):
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.url)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    return openai_server


def test_every_run_is_logged_and_history_shows_it(ip, openai) -> None:
    ip.run_cell("%%llm openai:gpt-4o-mini -q\nfirst")
    ip.run_cell("%%llm openai:gpt-4o-mini openai:gpt-4o -q\nsecond")
    df = ip.run_line_magic("llm", "history")
    assert list(df["prompt"]) == ["first", "second", "second"]
    assert df["run_id"].nunique() == 2
    assert {c: str(t) for c, t in df.dtypes.items()} == {**DTYPES, "truncated": "boolean"}
    assert list(ip.run_line_magic("llm", "history 1")["target"]) == ["openai:gpt-4o"]


def test_cache_serves_the_second_run_without_a_request(ip, openai) -> None:
    ip.run_cell("%%llm openai:gpt-4o-mini -t 0 --cache -q\nWhy is the sky blue?")
    first = ip.user_ns["_llm"]
    ip.run_cell("%%llm openai:gpt-4o-mini -t 0 --cache -q\nWhy is the sky blue?")
    second = ip.user_ns["_llm"]
    assert len(openai.chat_requests()) == 1
    assert not first["cached"].iloc[0] and second["cached"].iloc[0]
    assert second["output"].iloc[0] == first["output"].iloc[0]
    assert second["run_id"].iloc[0] != first["run_id"].iloc[0]
    ip.run_cell("%%llm openai:gpt-4o-mini -t 0 --no-cache -q\nWhy is the sky blue?")
    ip.run_cell("%%llm openai:gpt-4o-mini -t 0.5 --cache -q\nWhy is the sky blue?")
    assert len(openai.chat_requests()) == 3  # --no-cache and a new temperature both ask again


def test_cache_setting_from_config_and_errors_not_cached(ip, openai) -> None:
    ip.run_line_magic("config", "LLMMagics.cache = True")
    openai.status, openai.fail_times = 400, 1
    ip.run_cell("%%llm openai:gpt-4o-mini -q\nhello")
    assert ip.user_ns["_llm"]["error"].notna().all()
    ip.run_cell("%%llm openai:gpt-4o-mini -q\nhello")
    ip.run_cell("%%llm openai:gpt-4o-mini -q\nhello")
    assert [bool(c) for c in ip.run_line_magic("llm", "history")["cached"]] == [False, False, True]
    assert len(openai.chat_requests()) == 2


def test_identical_requests_in_one_run_are_sent_once(ip, openai) -> None:
    openai.delay = 0.2  # long enough that all four would be in flight together
    ip.user_ns["drinks"] = ["tea", "tea", "coffee", "tea"]
    ip.run_cell("%%llm openai:gpt-4o-mini --over drinks --cache -c 8 -q\nPraise {item}.")
    df = ip.user_ns["_llm"]
    assert len(openai.chat_requests()) == 2  # one "tea", one "coffee"
    assert df["error"].isna().all()
    assert sorted(df["cached"].tolist()) == [False, False, True, True]
    assert df["output"].tolist()[:2] == [df["output"].iloc[0]] * 2


def test_the_key_never_reaches_the_log_file(ip, openai, isolated_env: Path) -> None:
    openai.reply = f"your key is {KEY}"  # a careless server echoes the key
    ip.run_cell("%%llm openai:gpt-4o-mini --cache -q\nhello")
    ip.run_line_magic("config", "LLMMagics.cache = True")
    ip.run_cell("%%llm openai:gpt-4o-mini -q\nhello")
    raw = b"".join(p.read_bytes() for p in (isolated_env / "home").iterdir())
    assert b"your key is" in raw and KEY.encode() not in raw


def test_an_unwritable_log_never_breaks_the_run(ip, openai, isolated_env, monkeypatch, capsys):
    blocker = isolated_env / "a-file"
    blocker.write_text("x")
    monkeypatch.setenv("LLM_MAGIC_HOME", str(blocker / "home"))
    ip.run_cell("%%llm openai:gpt-4o-mini --cache -q\nhello")
    assert ip.user_ns["_llm"]["error"].isna().all()
    assert "run log/cache skipped" in capsys.readouterr().err
    assert default_store().problem is not None


# -- what servers send back ---------------------------------------------------------------------

OTHER_PROCESS = (
    "from llm_magic._records import RunRecord\n"
    "from llm_magic.store import default_store\n"
    "default_store().log([RunRecord(run_id='other', target='a:b', provider='a', model='b',"
    " prompt='p')])\n"
    "print(len(default_store().history()))\n"
)


def another_process_logs() -> int:
    """A second process (LLM_MAGIC_HOME inherited) appends a row; how many rows it then sees."""
    out = subprocess.run(
        [sys.executable, "-c", OTHER_PROCESS], capture_output=True, text=True, timeout=120
    )
    assert (out.returncode, out.stderr) == (0, ""), out.stderr
    return int(out.stdout)


def test_text_utf8_cannot_hold_is_logged_with_u_fffd_and_the_log_goes_on(ip, openai, capsys):
    ip.user_ns["odd"] = "\ud800"  # a lone surrogate, as a JSON escape gives one
    ip.run_cell("%%llm openai:gpt-4o-mini -q\nsay {odd}")
    first = ip.user_ns["_llm"].iloc[0]  # mended before the send, so the request goes out
    assert first["prompt"] == "say \ufffd" and pd.isna(first["error"])
    assert openai.chat_requests()[-1].body["messages"][-1]["content"] == "say \ufffd"
    ip.run_cell("%%llm openai:gpt-4o-mini -q\nnext")
    assert "run log" not in capsys.readouterr().err
    assert another_process_logs() == 3
    df = ip.run_line_magic("llm", "history")
    assert df["prompt"].tolist() == ["say \ufffd", "next", "p"]


def test_a_long_answer_is_cut_in_the_log_kept_whole_in_the_frame_and_not_cached(ip, openai):
    openai.reply = "long " * 20  # 100 characters
    ip.run_line_magic("config", "LLMMagics.max_log_chars = 30")
    ip.run_cell("%%llm openai:gpt-4o-mini --cache -q\nhello")
    ip.run_cell("%%llm openai:gpt-4o-mini --cache -q\nhello")
    assert len(openai.chat_requests()) == 2  # a cut answer is never replayed
    assert ip.user_ns["_llm"]["output"].iloc[0] == "long " * 20  # the run keeps it all
    df = ip.run_line_magic("llm", "history")
    assert df["truncated"].tolist() == [True, True]
    assert df["output"].tolist() == [("long " * 20)[:30]] * 2
    assert not df["cached"].any()


def test_max_log_chars_follows_the_settings_and_zero_keeps_all(
    ip, openai, isolated_env: Path, monkeypatch
) -> None:
    openai.reply = "x" * 40
    (isolated_env / "config.toml").write_text("max_log_chars = 10\n")
    ip.run_cell("%%llm openai:gpt-4o-mini -q\nfile")
    monkeypatch.setenv("LLM_MAGIC_MAX_LOG_CHARS", "0")  # the environment over the file
    ip.run_cell("%%llm openai:gpt-4o-mini --cache -q\nenvironment")
    ip.run_line_magic("config", "LLMMagics.max_log_chars = 20")  # %config over both
    ip.run_cell("%%llm openai:gpt-4o-mini -q\nconfig")
    df = ip.run_line_magic("llm", "history")
    assert [len(o) for o in df["output"]] == [10, 40, 20]
    assert df["truncated"].tolist() == [True, False, True]
    assert len(openai.chat_requests()) == 3
    table = ip.run_line_magic("llm", "config").set_index("setting")
    assert (table.loc["max_log_chars", "value"], table.loc["max_log_chars", "source"]) == (
        20,
        "%config",
    )


@pytest.mark.parametrize("where", ["%config", "environment", "config file"])
def test_a_bad_max_log_chars_is_refused_before_anything_is_sent(
    ip, openai, isolated_env: Path, monkeypatch, where: str
) -> None:
    if where == "%config":
        ip.run_line_magic("config", "LLMMagics.max_log_chars = -1")
    elif where == "environment":
        monkeypatch.setenv("LLM_MAGIC_MAX_LOG_CHARS", "-1")
    else:
        (isolated_env / "config.toml").write_text("max_log_chars = -1\n")
    with pytest.raises(UsageError, match="max_log_chars -1 is out of range; allowed: 0 or more"):
        ip.run_cell("%%llm openai:gpt-4o-mini -q\nhello")
    assert openai.chat_requests() == []
