"""--chat keeps one conversation per target across cells; %llm reset forgets it."""

from __future__ import annotations

import pytest
from IPython.core.error import UsageError


@pytest.fixture
def wired(ip, backends):
    return ip, backends.openai, backends.ollama


def test_each_target_sees_its_own_history(wired) -> None:
    ip, openai_server, ollama_server = wired
    ip.run_cell("%%llm openai:gpt-4o-mini ollama:llama3.2 --chat\nMy name is Ada.")
    ip.run_cell("%%llm openai:gpt-4o-mini ollama:llama3.2 --chat\nWhat is my name?")
    sent = openai_server.requests[-1].body["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert sent[0]["content"] == "My name is Ada."
    assert sent[1]["content"] == "Echo from gpt-4o-mini: My name is Ada."
    ollama_sent = ollama_server.requests[-1].body["messages"]
    assert ollama_sent[1]["content"] == "Echo from llama3.2: My name is Ada."


def test_without_chat_no_history_is_sent(wired) -> None:
    ip, openai_server, _ = wired
    ip.run_cell("%%llm openai:gpt-4o-mini --chat\nFirst.")
    ip.run_cell("%%llm openai:gpt-4o-mini\nSecond.")
    assert len(openai_server.requests[-1].body["messages"]) == 1


def test_a_failed_turn_is_not_remembered(wired) -> None:
    ip, openai_server, _ = wired
    openai_server.status = 400
    ip.run_cell("%%llm openai:gpt-4o-mini --chat --retries 0\nLost.")
    openai_server.status = None
    ip.run_cell("%%llm openai:gpt-4o-mini --chat\nKept.")
    assert [m["content"] for m in openai_server.requests[-1].body["messages"]] == ["Kept."]


def test_reset_forgets_all_or_one(wired, capsys) -> None:
    ip, openai_server, ollama_server = wired
    ip.run_cell("%%llm openai:gpt-4o-mini ollama:llama3.2 --chat\nOne.")
    with pytest.raises(UsageError, match="no --chat conversation with 'nosuch:target'"):
        ip.run_line_magic("llm", "reset ollama:llama3.2 nosuch:target")  # all or nothing
    capsys.readouterr()
    ip.run_line_magic("llm", "reset ollama:llama3.2")
    assert capsys.readouterr().out == "forgot 1 conversation: ollama:llama3.2\n"
    ip.run_cell("%%llm openai:gpt-4o-mini ollama:llama3.2 --chat\nTwo.")
    assert len(openai_server.requests[-1].body["messages"]) == 3
    assert len(ollama_server.requests[-1].body["messages"]) == 1
    ip.run_line_magic("llm", "reset")
    assert "forgot 2 conversations" in capsys.readouterr().out
    ip.run_cell("%%llm openai:gpt-4o-mini --chat\nThree.")
    assert len(openai_server.requests[-1].body["messages"]) == 1
    with pytest.raises(UsageError):
        ip.run_line_magic("llm", "reset nosuch:target")
