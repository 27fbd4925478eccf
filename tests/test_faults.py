"""Fault injection at the magic: each fault on one backend, a healthy backend beside it.

For every fault: the faulty target's row carries the right error (and any partial text), the
healthy target's row is intact, and the number of requests shows what was retried.
"""

from __future__ import annotations

import time

import pandas as pd
import pytest
from servers.fixtures import TEST_KEY

from tests.cells import run_frame

TARGETS = {
    "openai": "openai:gpt-4o-mini",
    "ollama": "ollama:llama3.2",
    "mistral": "mistral:mistral-small-latest",
    "anthropic": "anthropic:claude-haiku-4-5",
}


@pytest.fixture
def servers(backends):
    return backends._asdict()


def healthy_partner(name: str) -> str:
    return "ollama" if name != "ollama" else "openai"


def run_pair(ip, servers, faulty: str, options: str = "") -> tuple[pd.Series, pd.Series]:
    """Run the faulty backend beside a healthy one; return (faulty row, healthy row)."""
    other = healthy_partner(faulty)
    df = run_frame(ip, f"%%llm {TARGETS[faulty]} {TARGETS[other]} {options}\nCount to five.")
    assert len(df) == 2
    healthy = df.iloc[1]
    assert pd.isna(healthy["error"]), healthy["error"]
    assert healthy["output"].startswith("Echo from")
    return df.iloc[0], healthy


PROTOCOLS = ["openai", "ollama", "mistral", "anthropic"]


@pytest.mark.parametrize("name", PROTOCOLS)
def test_429_with_retry_after_is_waited_out(ip, servers, name) -> None:
    server = servers[name]
    server.status, server.fail_times, server.retry_after = 429, 1, 0.4
    start = time.perf_counter()
    row, _ = run_pair(ip, servers, name, "--retries 2")
    assert time.perf_counter() - start >= 0.4
    assert pd.isna(row["error"]) and row["output"].startswith("Echo from")
    assert server.request_count == 2


@pytest.mark.parametrize("name", PROTOCOLS)
def test_burst_of_500_and_503_is_retried_through(ip, servers, name) -> None:
    server = servers[name]
    server.statuses = [500, 503, 200]
    row, _ = run_pair(ip, servers, name, "--retries 2")
    assert pd.isna(row["error"]) and server.request_count == 3


@pytest.mark.parametrize("name", PROTOCOLS)
def test_503_beyond_the_retries_is_an_error_row(ip, servers, name) -> None:
    server = servers[name]
    server.status = 503
    row, _ = run_pair(ip, servers, name, "--retries 1")
    assert "503" in row["error"] and row["error"].startswith(f"{name}:")
    assert row["finish_reason"] == "error" and server.request_count == 2


@pytest.mark.parametrize("name", PROTOCOLS)
def test_401_shows_the_servers_message_and_is_not_retried(ip, servers, name) -> None:
    server = servers[name]
    server.status, server.error_message = 401, "Incorrect API key provided"
    row, _ = run_pair(ip, servers, name, "--retries 2")
    assert "401" in row["error"] and "Incorrect API key provided" in row["error"]
    assert TEST_KEY not in row["error"] and server.request_count == 1


@pytest.mark.parametrize("name", PROTOCOLS)
def test_stream_cut_midway_keeps_partial_text(ip, servers, name) -> None:
    server = servers[name]
    server.reply, server.cut_after = "one two three four five six", 3
    row, _ = run_pair(ip, servers, name, "--retries 2")
    assert row["output"] == "one two three "
    assert isinstance(row["error"], str) and row["error"].startswith(f"{name}:")
    assert server.request_count == 1  # partial text was shown: not silently replaced by a retry


@pytest.mark.parametrize("name", PROTOCOLS)
def test_malformed_line_is_a_clear_error(ip, servers, name) -> None:
    server = servers[name]
    server.reply, server.malformed_after = "alpha beta gamma delta", 2
    row, _ = run_pair(ip, servers, name)
    assert row["output"] == "alpha beta "
    error = row["error"]
    assert error.startswith(f"{name}:") and (
        "malformed" in error.lower() or "json" in error.lower()
    )


@pytest.mark.parametrize("name", PROTOCOLS)
def test_stall_past_the_read_timeout(ip, servers, name) -> None:
    server = servers[name]
    server.reply, server.stall_after = "slow and then nothing more", 2
    start = time.perf_counter()
    row, _ = run_pair(ip, servers, name, "--timeout 0.5 --retries 0")
    assert time.perf_counter() - start < 5
    assert row["output"] == "slow and "
    assert "time" in row["error"].lower()


@pytest.mark.parametrize("name", ["openai", "ollama", "anthropic"])
def test_in_stream_error_after_200(ip, servers, name) -> None:
    server = servers[name]
    server.reply, server.error_after = "first second third", 1
    row, _ = run_pair(ip, servers, name)
    assert row["output"] == "first "
    assert row["error"].startswith(f"{name}:")


@pytest.mark.parametrize("name", PROTOCOLS)
def test_refused_connection(ip, servers, name, refused_url, monkeypatch) -> None:
    env = {
        "openai": "OPENAI_BASE_URL",
        "ollama": "OLLAMA_HOST",
        "mistral": "MISTRAL_BASE_URL",
        "anthropic": "ANTHROPIC_BASE_URL",
    }
    monkeypatch.setenv(env[name], refused_url + ("/v1" if name == "openai" else ""))
    row, _ = run_pair(ip, servers, name, "--retries 1")
    assert row["error"].startswith(f"{name}:") and row["output"] == ""
    assert "connect" in row["error"].lower()


def test_all_three_fail_differently_and_nothing_is_lost(ip, servers) -> None:
    servers["openai"].status = 401
    servers["ollama"].reply, servers["ollama"].cut_after = "a b c d", 2
    servers["mistral"].status = 503
    df = run_frame(
        ip,
        "%%llm openai:gpt-4o-mini ollama:llama3.2 mistral:mistral-small-latest local:nosuch.gguf"
        " --retries 0\nHi",
    )
    assert len(df) == 4 and df["error"].notna().all()
    assert df.iloc[1]["output"] == "a b "
    assert TEST_KEY not in df.to_string()
