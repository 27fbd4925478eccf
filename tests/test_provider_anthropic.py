"""AnthropicProvider against a loopback server that speaks Anthropic's Messages API on a real
socket: named SSE events, `x-api-key` and `anthropic-version`, a top-level system prompt, a
required `max_tokens`, typed error bodies, a paged model listing. The behaviour all HTTP
providers share is tested once, in test_provider_contract.py."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx2
import pytest
from cells import run_frame
from provider_checks import KEY, MSGS, REPLY, contract, drain, text_of

from llm_magic import errors, providers
from llm_magic._availability import check_targets
from llm_magic.providers._anthropic import DEFAULT_MAX_TOKENS, AnthropicProvider
from llm_magic.providers.base import Chunk, Message, Options, Usage

MODEL = "claude-haiku-4-5"


@pytest.fixture
def anthropic(anthropic_server) -> Iterator[AnthropicProvider]:
    with contract("anthropic", anthropic_server).configured() as provider:  # with KEY
        yield provider


# ----------------------------------------------------------------------------- streaming


def test_stream_gives_model_then_words_then_stop_reason_and_usage(anthropic, anthropic_server):
    anthropic_server.reply = REPLY
    chunks, error = drain(anthropic.stream(MSGS, MODEL, Options()))
    assert error is None
    assert chunks[0] == Chunk(model=MODEL)  # from message_start; the ping is skipped
    assert [c.text for c in chunks[1:-1]] == ["Because ", "of ", "Rayleigh ", "scattering."]
    # message_delta: end_turn said as the other providers say it, the input count of
    # message_start beside the cumulative output count
    assert chunks[-1] == Chunk(usage=Usage(7, 4), finish_reason="stop")


def test_request_on_the_wire(anthropic, anthropic_server):
    options = Options(temperature=0.2, top_p=0.9, seed=42, max_tokens=3, stop=("\n", "END"))
    chunks, error = drain(anthropic.stream(MSGS, MODEL, options))
    assert error is None  # the server refuses any field outside the documented request
    (request,) = anthropic_server.requests
    assert (request.method, request.path) == ("POST", "/v1/messages")
    assert request.headers["x-api-key"] == KEY
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in request.headers
    assert request.body == {
        "model": MODEL,
        "max_tokens": 3,
        "system": "be brief",  # top level: messages hold user and assistant turns only
        "messages": [{"role": "user", "content": "why is the sky blue"}],
        "stream": True,
        "temperature": 0.2,
        "top_p": 0.9,
        "stop_sequences": ["\n", "END"],
    }  # no seed: the API has none
    assert chunks[-1] == Chunk(usage=Usage(7, 3), finish_reason="length")  # max_tokens


def test_max_tokens_is_always_sent_and_unset_options_are_left_out(anthropic, anthropic_server):
    assert drain(anthropic.stream([Message("user", "Hi")], MODEL, Options()))[1] is None
    body = anthropic_server.requests[0].body
    assert body == {
        "model": MODEL,
        "max_tokens": DEFAULT_MAX_TOKENS,
        "messages": [{"role": "user", "content": "Hi"}],
        "stream": True,
    }
    assert DEFAULT_MAX_TOKENS == 4096


def test_several_system_messages_become_one_system_text(anthropic, anthropic_server):
    msgs = [Message("system", "be brief"), Message("system", "be kind"), Message("user", "Hi")]
    assert drain(anthropic.stream(msgs, MODEL, Options()))[1] is None
    assert anthropic_server.requests[0].body["system"] == "be brief\n\nbe kind"


def test_a_stop_sequence_ends_the_answer_as_stop(anthropic, anthropic_server):
    anthropic_server.reply = REPLY
    chunks, error = drain(anthropic.stream(MSGS, MODEL, Options(stop=("Rayleigh",))))
    assert error is None
    assert text_of(chunks) == "Because of "
    assert chunks[-1].finish_reason == "stop"


def test_prompt_tokens_count_what_the_cache_served(anthropic, anthropic_server):
    anthropic_server.cache_read_tokens = 5  # input_tokens 2 + cache_read_input_tokens 5
    for stream in (True, False):
        chunks, error = drain(anthropic.stream(MSGS, MODEL, Options(stream=stream)))
        assert error is None
        assert chunks[-1].usage.prompt_tokens == 7


def test_without_usage_the_stream_still_ends_well(anthropic, anthropic_server):
    anthropic_server.usage = False
    chunks, error = drain(anthropic.stream(MSGS, MODEL, Options()))
    assert error is None
    assert chunks[-1] == Chunk(finish_reason="stop")


def test_non_stream_mode_is_one_chunk(anthropic, anthropic_server):
    anthropic_server.reply = REPLY
    anthropic_server.report_model = dated = "claude-haiku-4-5-20251001"
    chunks, error = drain(anthropic.stream(MSGS, MODEL, Options(stream=False)))
    assert error is None
    assert chunks == [Chunk(text=REPLY, usage=Usage(7, 4), finish_reason="stop", model=dated)]
    assert anthropic_server.requests[0].body["stream"] is False


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("kind", "cls", "status"),
    [
        ("overloaded_error", errors.ServerFailed, 529),
        ("rate_limit_error", errors.RateLimited, 429),
        ("api_error", errors.ServerFailed, 500),
        ("invalid_request_error", errors.StatusError, 400),
    ],
)
def test_an_error_event_before_text_is_the_status_its_type_stands_for(
    anthropic, anthropic_server, kind, cls, status
):
    anthropic_server.stream_error_type = kind
    anthropic_server.error_after = 0
    anthropic_server.error_message = "try later"
    chunks, error = drain(anthropic.stream(MSGS, MODEL, Options()))
    assert chunks == [Chunk(model=MODEL)]
    assert type(error) is cls
    assert error.message == f"anthropic: HTTP {status}: try later"
    assert error.retryable == (status >= 429)


def test_an_error_event_of_an_unknown_type_is_a_plain_failure(anthropic, anthropic_server):
    anthropic_server.stream_error_type = "brand_new_error"
    anthropic_server.error_after = 0
    _, error = drain(anthropic.stream(MSGS, MODEL, Options()))
    assert type(error) is errors.ProviderError
    assert error.message == "anthropic: Overloaded"
    assert not error.retryable


def test_an_error_event_after_text_breaks_the_stream(anthropic, anthropic_server):
    anthropic_server.error_after = 2
    chunks, error = drain(anthropic.stream(MSGS, MODEL, Options()))
    assert text_of(chunks) == "Echo from "
    assert type(error) is errors.StreamBroken
    assert error.message == "anthropic: stream broken: Overloaded"


def test_529_overloaded_is_retried_by_the_runner(ip, backends):
    backends.anthropic.status, backends.anthropic.fail_times = 529, 1
    df = run_frame(ip, f"%%llm anthropic:{MODEL} --retries 1\nHi")
    assert df["error"].isna().all()
    assert df["output"].iloc[0] == f"Echo from {MODEL}: Hi"
    assert backends.anthropic.request_count == 2


def test_an_unknown_model_is_not_found_in_the_servers_words(anthropic, anthropic_server):
    anthropic_server.check_models = True
    _, error = drain(anthropic.stream(MSGS, "claude-nope", Options()))
    assert type(error) is errors.NotFound
    assert error.message == "anthropic: HTTP 404: model: claude-nope"


def test_the_server_wants_the_version_header(anthropic_server):
    reply = httpx2.post(
        anthropic_server.url + "/v1/messages",
        json={"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": "Hi"}]},
    )
    assert reply.status_code == 400
    assert reply.json()["error"] == {
        "type": "invalid_request_error",
        "message": "anthropic-version: header is required",
    }


def test_the_server_refuses_a_system_role_and_a_missing_max_tokens(anthropic_server):
    headers = {"anthropic-version": "2023-06-01"}
    url = anthropic_server.url + "/v1/messages"
    openai_style = {"model": MODEL, "messages": [m.to_dict() for m in MSGS]}
    reply = httpx2.post(url, json=openai_style, headers=headers)
    assert (reply.status_code, reply.json()["error"]["message"]) == (
        400,
        "max_tokens: Field required",
    )
    reply = httpx2.post(url, json={**openai_style, "max_tokens": 9}, headers=headers)
    assert "messages.0.role" in reply.json()["error"]["message"]


# ----------------------------------------------------------------------------- base URL


@pytest.mark.parametrize("suffix", ["", "/", "/v1", "/v1/"])
def test_base_url_is_the_host_with_or_without_v1(anthropic_server, suffix):
    with AnthropicProvider(
        name="anthropic", base_url=anthropic_server.url + suffix, api_key=None
    ) as provider:
        assert provider.base_url == anthropic_server.url
        assert drain(provider.stream(MSGS, MODEL, Options()))[1] is None
    assert anthropic_server.requests[0].path == "/v1/messages"


def test_the_registry_reads_anthropic_variables(backends, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_BASE_URL", backends.anthropic.url + "/v1")
    spec = providers.spec_for("anthropic")
    assert (spec.key_env, spec.url_env, spec.key_required) == (
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_BASE_URL",
        True,
    )
    assert providers.base_url_of(spec) == backends.anthropic.url
    assert providers.facts("anthropic").server_label == "Anthropic API"
    assert providers.default_concurrency("anthropic") is None


def test_a_cell_compares_anthropic_with_another_provider(ip, backends):
    df = run_frame(
        ip, f"%%llm anthropic:{MODEL} mistral:mistral-small-latest -t 0.2 -n 50\nWhy blue?"
    )
    row = df.set_index("target").loc[f"anthropic:{MODEL}"]
    assert row["output"] == f"Echo from {MODEL}: Why blue?"
    assert (row["prompt_tokens"], row["completion_tokens"]) == (2, 5)
    assert row["finish_reason"] == "stop"
    body = backends.anthropic.chat_requests()[0].body
    assert (body["temperature"], body["max_tokens"]) == (0.2, 50)


# ----------------------------------------------------------------------------- listing


def test_models_are_listed_with_context_and_dates(anthropic, anthropic_server):
    models = anthropic.list_models()
    assert [m.model for m in models] == ["claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-1"]
    first = models[0]
    assert (first.provider, first.context_length, first.modified) == (
        "anthropic",
        200000,
        "2025-12-01T00:00:00Z",
    )
    assert first.details == {"display_name": "Claude Sonnet 4 5", "max_tokens": 64000}
    (request,) = anthropic_server.requests
    assert (request.path, request.headers["x-api-key"]) == ("/v1/models", KEY)


def test_a_long_listing_is_followed_page_by_page(anthropic_server):
    anthropic_server.models = {f"claude-test-{i:04d}": 1000 for i in range(2500)}
    with AnthropicProvider(name="anthropic", base_url=anthropic_server.url, api_key=None) as p:
        models = p.list_models()
    assert [m.model for m in models] == list(anthropic_server.models)
    queries = [r.query for r in anthropic_server.requests]
    assert queries == [
        "limit=1000",
        "limit=1000&after_id=claude-test-0999",
        "limit=1000&after_id=claude-test-1999",
    ]


def test_availability_asks_a_loopback_anthropic_with_its_key_header(anthropic_server, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_BASE_URL", anthropic_server.url + "/v1")
    (a,) = check_targets([f"anthropic:{MODEL}"])
    assert (a.ok, a.reason) == (False, "no API key: set ANTHROPIC_API_KEY")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test-000000000000")
    anthropic_server.api_key = "sk-test-000000000000"
    (a,) = check_targets([f"anthropic:{MODEL}"])
    assert (a.ok, a.reason) == (True, f"server answers at {anthropic_server.url}")
    assert anthropic_server.requests[0].headers["x-api-key"] == "sk-test-000000000000"


# ----------------------------------------------------------------------------- the server


def test_the_server_streams_named_events_in_the_documented_order(anthropic_server):
    headers = {"anthropic-version": "2023-06-01"}
    turns = [{"role": "user", "content": "Hi"}]
    body = {"model": MODEL, "max_tokens": 9, "stream": True, "messages": turns}
    reply = httpx2.post(anthropic_server.url + "/v1/messages", json=body, headers=headers)
    assert reply.headers["content-type"].startswith("text/event-stream")
    assert reply.headers["request-id"].startswith("req_")
    events = [block.split("\n") for block in reply.text.strip().split("\n\n")]
    names = [lines[0].removeprefix("event: ") for lines in events]
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        *["content_block_delta"] * 4,  # "Echo ", "from ", "claude-haiku-4-5: ", "Hi"
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    datas = [json.loads(lines[1].removeprefix("data: ")) for lines in events]
    assert [d["type"] for d in datas] == names  # each data's type repeats its event's name
    assert datas[0]["message"]["usage"] == {
        "input_tokens": 1,
        "cache_read_input_tokens": 0,
        "output_tokens": 1,
    }
    assert datas[-2]["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert datas[-2]["usage"] == {"output_tokens": 4}
    assert "[DONE]" not in reply.text
