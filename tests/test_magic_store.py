"""Run log and cache through the magic: %%llm against the loopback OpenAI server."""

from __future__ import annotations

from pathlib import Path

import pytest

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
    assert {c: str(t) for c, t in df.dtypes.items()} == DTYPES
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
