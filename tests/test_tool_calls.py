"""Tool calls on the wire, for every HTTP provider against its loopback server: the tools sent
in the provider's own shape, calls streamed in pieces and assembled, and with run_tools the
loop that runs them in this process and sends the results back the way each protocol wants
them (each server refuses a result that does not answer its call)."""

from __future__ import annotations

import json
import time
from typing import Any

import pandas as pd
import pytest

import llm_magic

TARGETS = {
    "openai": "openai:gpt-4o-mini",
    "ollama": "ollama:llama3.2",
    "mistral": "mistral:mistral-small-latest",
    "anthropic": "anthropic:claude-haiku-4-5",
}
CALL = ("get_weather", '{"city": "Paris", "unit": "C"}')
ANSWER = "18 C in Paris"

calls_made: list[dict[str, Any]] = []


def get_weather(city: str, unit: str = "C") -> str:
    """Today's weather in a city."""
    calls_made.append({"city": city, "unit": unit})
    return f"18 {unit} in {city}"


def no_city(city: str) -> str:
    """Fails, as tools do."""
    raise ValueError(f"no such city: {city}")


@pytest.fixture(autouse=True)
def _fresh_calls() -> None:
    calls_made.clear()


def server_of(backends: Any, provider: str) -> Any:
    return getattr(backends, provider)


def bodies(server: Any) -> list[dict[str, Any]]:
    return [r.body for r in server.chat_requests()]


def sent_tools(provider: str, body: dict[str, Any]) -> list[str]:
    """The names of the tools a request carried, read in the provider's own shape."""
    if provider == "anthropic":
        assert all(set(t) == {"name", "description", "input_schema"} for t in body["tools"])
        return [t["name"] for t in body["tools"]]
    assert all(t["type"] == "function" for t in body["tools"])
    assert all("parameters" in t["function"] for t in body["tools"])
    return [t["function"]["name"] for t in body["tools"]]


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
@pytest.mark.parametrize("provider", TARGETS)
def test_a_call_comes_back_as_the_column(backends, provider: str, stream: bool) -> None:
    server = server_of(backends, provider)
    server.tool_call = CALL
    server.tool_pieces = 4
    df = llm_magic.compare(
        "Weather in Paris?", TARGETS[provider], tools=[get_weather], stream=stream
    )
    row = df.iloc[0]
    assert pd.isna(row["error"])
    assert row["tool_calls"] == [
        {"name": "get_weather", "arguments": {"city": "Paris", "unit": "C"}}
    ]
    assert row["finish_reason"] == "tool_calls"
    assert row["output"] == ""
    (body,) = bodies(server)
    assert sent_tools(provider, body) == ["get_weather"]
    assert calls_made == []  # nothing runs without run_tools


def result_turn(provider: str, body: dict[str, Any]) -> tuple[str, str]:
    """(the id or name the result answers, its text) from the last turn of a request."""
    last = body["messages"][-1]
    if provider == "anthropic":
        (block,) = last["content"]
        assert last["role"] == "user" and block["type"] == "tool_result"
        return block["tool_use_id"], block["content"]
    assert last["role"] == "tool"
    if provider == "ollama":
        return last["tool_name"], last["content"]
    if provider == "mistral":
        assert last["name"] == "get_weather"
    return last["tool_call_id"], last["content"]


def call_ids(provider: str, body: dict[str, Any]) -> list[str]:
    """The ids (Ollama: names) of the calls the assistant turn echoed back."""
    turn = body["messages"][-2]
    assert turn["role"] == "assistant"
    if provider == "anthropic":
        uses = [b for b in turn["content"] if b["type"] == "tool_use"]
        assert all(isinstance(b["input"], dict) for b in uses)
        return [b["id"] for b in uses]
    if provider == "ollama":
        assert all(isinstance(c["function"]["arguments"], dict) for c in turn["tool_calls"])
        return [c["function"]["name"] for c in turn["tool_calls"]]
    assert all(isinstance(c["function"]["arguments"], str) for c in turn["tool_calls"])
    return [c["id"] for c in turn["tool_calls"]]


def run_loop(
    backends: Any, provider: str, tool: Any = get_weather, max_steps: int = 5, **knobs: Any
) -> tuple[Any, Any]:
    """Script the provider's server (`tool_call` defaults to CALL), run the tools; (server,
    row)."""
    server = server_of(backends, provider)
    server.tool_call = CALL
    for name, value in knobs.items():
        setattr(server, name, value)
    df = llm_magic.compare(
        "Weather in Paris?", TARGETS[provider], tools=[tool], run_tools=True, max_steps=max_steps
    )
    return server, df.iloc[0]


# completion tokens of step 1 as each server counts them (argument pieces; Ollama: its calls'
# lines), then the 6 words of "Tool said: 18 C in Paris"
STEP_ONE = {"openai": 3, "mistral": 3, "anthropic": 3, "ollama": 1}


@pytest.mark.parametrize("provider", TARGETS)
def test_run_tools_sends_results_back_until_the_model_answers(backends, provider: str) -> None:
    server, row = run_loop(backends, provider, delay=0.15)
    assert row["output"] == f"Tool said: {ANSWER}"
    assert row["finish_reason"] == "stop"
    assert row["params"]["steps"] == 2
    assert calls_made == [{"city": "Paris", "unit": "C"}]
    (entry,) = row["tool_calls"]
    assert entry == {
        "name": "get_weather",
        "arguments": {"city": "Paris", "unit": "C"},
        "result": ANSWER,
        "step": 1,
    }
    first, second = bodies(server)
    answered, text = result_turn(provider, second)
    assert text == ANSWER
    assert answered in call_ids(provider, second)
    if provider == "mistral":
        assert len(answered) == 9 and answered.isalnum()
    # the whole loop is one row: latency over both requests, tokens summed
    assert row["latency_s"] >= 0.3
    assert row["completion_tokens"] == STEP_ONE[provider] + 6
    assert not row["tokens_estimated"]
    # generated across the whole loop: tokens/s over its latency, not after the first text
    assert row["tokens_per_s"] == pytest.approx(row["completion_tokens"] / row["latency_s"])
    assert 0.15 <= row["ttft_s"] < row["latency_s"]


@pytest.mark.parametrize("provider", TARGETS)
def test_parallel_calls_all_run_and_all_answered(backends, provider: str) -> None:
    server, row = run_loop(backends, provider, tool_parallel=2)
    assert pd.isna(row["error"]), row["error"]
    assert len(calls_made) == 2 and len(row["tool_calls"]) == 2
    second = bodies(server)[1]
    if provider == "anthropic":  # both results in one user turn
        assert [b["type"] for b in second["messages"][-1]["content"]] == ["tool_result"] * 2
    else:
        assert [m["role"] for m in second["messages"][-2:]] == ["tool", "tool"]


@pytest.mark.parametrize("provider", TARGETS)
def test_max_steps_bounds_the_loop(backends, provider: str) -> None:
    server, row = run_loop(backends, provider, max_steps=3, tool_rounds=100)  # it never stops
    assert server.request_count == 3
    assert row["params"]["steps"] == 3
    assert row["finish_reason"] == "tool_calls"
    assert any("max_steps=3" in note for note in row["params"]["notes"])
    assert [("result" in e) for e in row["tool_calls"]] == [True, True, False]
    assert len(calls_made) == 2


@pytest.mark.parametrize("provider", TARGETS)
def test_a_tool_that_raises_sends_its_error_back(backends, provider: str) -> None:
    _, row = run_loop(backends, provider, no_city, tool_call=("no_city", '{"city": "Atlantis"}'))
    (entry,) = row["tool_calls"]
    assert entry["error"] == "ValueError: no such city: Atlantis"
    assert row["output"] == "Tool said: error: ValueError: no such city: Atlantis"
    assert pd.isna(row["error"])
    assert any("failed" in note for note in row["params"]["notes"])


@pytest.mark.parametrize("provider", ["openai", "mistral", "anthropic"])
def test_arguments_that_are_not_json_are_flagged_not_run(backends, provider: str) -> None:
    server = server_of(backends, provider)
    if provider == "anthropic":  # its input is an object: only a cut stream can break it
        server.tool_call = CALL
        server.tool_pieces = 4
        server.cut_after = 3
    else:
        server.tool_call = ("get_weather", '{"city": "Par')
    df = llm_magic.compare("Weather?", TARGETS[provider], tools=[get_weather], retries=0)
    row = df.iloc[0]
    if provider == "anthropic":  # a broken stream: an error row, no half call in the column
        assert not pd.isna(row["error"]) and row["tool_calls"] == []
        return
    (entry,) = row["tool_calls"]
    assert entry["arguments"] == '{"city": "Par'
    assert entry["error"].startswith("arguments are not JSON")
    ran = llm_magic.compare("Weather?", TARGETS[provider], tools=[get_weather], run_tools=True)
    assert ran.loc[0, "output"].startswith("Tool said: error: arguments are not JSON")
    assert calls_made == []


def test_mistral_whole_call_without_index(backends) -> None:
    backends.mistral.tool_call = CALL
    backends.mistral.tool_pieces = 1  # as observed: one chunk, no index, ends the stream
    df = llm_magic.compare("Weather?", TARGETS["mistral"], tools=[get_weather], run_tools=True)
    assert df.loc[0, "output"] == f"Tool said: {ANSWER}"


def test_the_deadline_stops_the_loop(backends) -> None:
    backends.openai.tool_call = CALL
    backends.openai.tool_rounds = 100
    backends.openai.delay = 0.3
    started = time.monotonic()
    df = llm_magic.compare(
        "Weather?",
        TARGETS["openai"],
        tools=[get_weather],
        run_tools=True,
        max_steps=50,
        deadline=1.0,
    )
    assert time.monotonic() - started < 3.0
    assert df.loc[0, "finish_reason"] == "deadline"
    assert backends.openai.request_count < 6


def test_complete_and_the_magic_take_tools(ip, backends) -> None:
    backends.ollama.tool_call = CALL
    answer = llm_magic.complete("Weather?", TARGETS["ollama"], tools=get_weather, run_tools=True)
    assert answer.text == f"Tool said: {ANSWER}"
    assert answer.record.tool_calls[0]["result"] == ANSWER
    ip.user_ns["get_weather"] = get_weather
    ip.run_cell_magic(
        "llm",
        f"{TARGETS['ollama']} {TARGETS['openai']} --tools get_weather --run-tools -q",
        "Weather in Paris?",
    )
    df = ip.user_ns["_llm"]
    assert df["output"].tolist() == [
        f"Tool said: {ANSWER}",
        "Echo from gpt-4o-mini: Weather in Paris?",
    ]
    assert df["tool_calls"].map(len).tolist() == [1, 0]
    assert json.loads(json.dumps(df.loc[0, "tool_calls"]))  # plain JSON values


def test_rows_that_run_tools_are_not_cached(backends) -> None:
    backends.openai.tool_call = CALL
    for _ in range(2):
        llm_magic.compare(
            "Weather?", TARGETS["openai"], tools=[get_weather], run_tools=True, cache=True
        )
    assert len(calls_made) == 2
    for _ in range(2):
        df = llm_magic.compare("Weather?", TARGETS["openai"], tools=[get_weather], cache=True)
    assert df.loc[0, "cached"] and df.loc[0, "tool_calls"][0]["name"] == "get_weather"


# What the servers refuse: so that the loop tests above passing means the results went back
# in each protocol's own shape.
BAD_RESULTS = {
    "openai": (
        "/v1/chat/completions",
        [{"role": "user", "content": "hi"}, {"role": "tool", "tool_call_id": "x", "content": "1"}],
    ),
    "mistral": (
        "/v1/chat/completions",
        [
            {"role": "user", "content": "hi"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {"id": "call_abcdefgh", "function": {"name": "f", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": "call_abcdefgh", "content": "1"},
        ],
    ),
    "ollama": (
        "/api/chat",
        [
            {"role": "user", "content": "hi"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"function": {"name": "f", "arguments": "{}"}}],
            },
            {"role": "tool", "tool_name": "f", "content": "1"},
        ],
    ),
    "anthropic": (
        "/v1/messages",
        [
            {"role": "user", "content": "hi"},
            {"role": "tool", "content": "1"},
        ],
    ),
}


@pytest.mark.parametrize("provider", TARGETS)
def test_servers_refuse_results_in_the_wrong_shape(backends, provider: str) -> None:
    import httpx2

    server = server_of(backends, provider)
    path, messages = BAD_RESULTS[provider]
    body = {"model": TARGETS[provider].split(":", 1)[1], "messages": messages, "max_tokens": 9}
    headers = {"anthropic-version": "2023-06-01"} if provider == "anthropic" else {}
    reply = httpx2.post(server.root_url + path, json=body, headers=headers, timeout=5)
    assert reply.status_code == 400, reply.text


@pytest.mark.parametrize("provider", ["openai", "anthropic", "mistral"])
def test_an_image_and_tools_in_one_loop(backends, provider: str) -> None:
    from test_images import PNG

    server = server_of(backends, provider)
    server.tool_call = CALL
    df = llm_magic.compare(
        "Weather where this was taken?",
        TARGETS[provider],
        images=[PNG],
        tools=[get_weather],
        run_tools=True,
    )
    assert df.loc[0, "output"] == f"Tool said: {ANSWER}", df.loc[0, "error"]
    second = bodies(server)[1]
    user = second["messages"][0]
    assert isinstance(user["content"], list)  # the image parts went again with the prompt


def test_a_flood_of_calls_runs_32_and_the_log_stays_bounded(backends, monkeypatch) -> None:
    from llm_magic.store import default_store

    monkeypatch.setenv("LLM_MAGIC_MAX_LOG_CHARS", "2000")
    _, row = run_loop(backends, "openai", tool_parallel=40)
    assert len(calls_made) == 32 and len(row["tool_calls"]) == 40
    assert row["tool_calls"][-1]["error"] == "not run: over 32 calls"
    assert row["output"] == "Tool said: error: not run: over 32 calls"
    (logged,) = default_store().history(1)
    assert logged.tool_calls == [{"name": "get_weather"}] * 40
    assert "only the names of the tool calls" in logged.params["notes"][-1]


@pytest.mark.local_model
def test_the_real_llama_cpp_server_takes_tools_and_answers_in_text(llamacpp_server, monkeypatch):
    # llama-cpp-python's server makes a call only with a function-calling chat format or a
    # named tool_choice (shared/protocols/structured-tools-images.md §4); asked with `auto`
    # it answers in text: a row like any other, with no calls.
    monkeypatch.setenv("LLAMACPP_BASE_URL", llamacpp_server)
    df = llm_magic.compare(
        "What is the weather in Paris?", "llamacpp:smollm2", tools=[get_weather], max_tokens=16
    )
    row = df.iloc[0]
    assert pd.isna(row["error"]) and row["output"] and row["tool_calls"] == []


def test_a_stop_while_a_tool_runs_ends_the_row_before_the_next_request(backends) -> None:
    import threading

    from llm_magic._api import run
    from llm_magic._plan import make_plan
    from llm_magic._request import Request
    from llm_magic._session import Session
    from llm_magic.errors import RunInterrupted

    stop = threading.Event()

    def slow_weather(city: str) -> str:
        """Weather, slowly; the user presses Stop meanwhile."""
        stop.set()
        time.sleep(0.3)
        return "18 C"

    backends.openai.tool_call = ("slow_weather", '{"city": "Paris"}')
    request = Request(("Weather?",), (TARGETS["openai"],), tools=(slow_weather,), run_tools=True)
    with pytest.raises(RunInterrupted) as stopped:
        run(make_plan(request, Session()), stop=stop)
    (record,) = stopped.value.records
    assert record.finish_reason == "interrupted"
    assert backends.openai.request_count == 1  # the result was never sent
