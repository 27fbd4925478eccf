"""OpenAIProvider (the official SDK underneath) against loopback servers on real sockets:
an OpenAI-shaped server, and Ollama's OpenAI-compatible /v1 with its small differences.
Faults, keys, cancelling and health, shared by all providers: test_provider_contract.py."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest
from provider_checks import KEY, MSGS, REPLY, contract, drain, text_of

from llm_magic import errors
from llm_magic.providers._http_errors import retry_after
from llm_magic.providers._openai import OpenAIProvider
from llm_magic.providers.base import Chunk, Message, Options, Usage

MODEL = "gpt-4o-mini"


@pytest.fixture
def openai_p(openai_server) -> Iterator[OpenAIProvider]:
    with contract("openai", openai_server).configured() as provider:  # with KEY
        yield provider


# ----------------------------------------------------------------------------- streaming


def test_stream_order_text_then_finish_then_usage(openai_p, openai_server) -> None:
    openai_server.reply = REPLY
    chunks, error = drain(openai_p.stream(MSGS, MODEL, Options()))
    assert error is None
    assert text_of(chunks) == REPLY
    # the role chunk carries only the model; words; the finish chunk; the usage chunk
    assert chunks[0] == Chunk(model=MODEL)
    assert [c.text for c in chunks[1:-2]] == ["Because ", "of ", "Rayleigh ", "scattering."]
    assert chunks[-2] == Chunk(finish_reason="stop")
    assert chunks[-1] == Chunk(usage=Usage(prompt_tokens=7, completion_tokens=4))


def test_request_on_the_wire(openai_p, openai_server) -> None:
    options = Options(
        temperature=0.2, top_p=0.9, seed=42, max_tokens=3, stop=("\n", "END"), read_timeout=33
    )
    chunks, error = drain(openai_p.stream(MSGS, MODEL, options))
    assert error is None
    (request,) = openai_server.requests
    assert (request.method, request.path) == ("POST", "/v1/chat/completions")
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.body == {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "why is the sky blue"},
        ],
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0.2,
        "top_p": 0.9,
        "seed": 42,
        "max_tokens": 3,  # not max_completion_tokens: compatible servers know only this one
        "stop": ["\n", "END"],
    }
    assert request.headers["x-stainless-retry-count"] == "0"
    assert float(request.headers["x-stainless-read-timeout"]) == 33
    assert chunks[-2].finish_reason == "length"
    assert chunks[-1].usage == Usage(prompt_tokens=7, completion_tokens=3)


def test_non_stream_mode_is_one_chunk(openai_p, openai_server) -> None:
    openai_server.reply = REPLY
    openai_server.report_model = "gpt-4o-mini-2024-07-18"
    chunks, error = drain(openai_p.stream(MSGS, MODEL, Options(stream=False)))
    assert error is None
    assert chunks == [
        Chunk(text=REPLY, usage=Usage(7, 4), finish_reason="stop", model="gpt-4o-mini-2024-07-18")
    ]
    body = openai_server.requests[0].body
    assert body["stream"] is False
    assert "stream_options" not in body


def test_server_without_usage(openai_p, openai_server) -> None:
    openai_server.usage = False  # like llama.cpp's Python server: no usage chunk at all
    chunks, error = drain(openai_p.stream(MSGS, MODEL, Options()))
    assert error is None
    assert all(c.usage is None for c in chunks)
    assert chunks[-1].finish_reason == "stop"


def test_no_key_needed_for_local_servers(openai_server) -> None:
    with OpenAIProvider(name="llamacpp", base_url=openai_server.url, api_key=None) as provider:
        chunks, error = drain(provider.stream(MSGS, MODEL, Options()))
    assert error is None
    assert text_of(chunks) == f"Echo from {MODEL}: why is the sky blue"


# ----------------------------------------------------------------------------- errors


def test_retry_after_header_forms() -> None:
    assert retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert retry_after({"retry-after": "3"}) == 3.0
    assert retry_after({"retry-after": "0.25"}) == 0.25
    later = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=30), usegmt=True)
    assert 20 < retry_after({"retry-after": later}) <= 30
    past = format_datetime(datetime.now(timezone.utc) - timedelta(seconds=30), usegmt=True)
    assert retry_after({"retry-after": past}) == 0.0
    assert retry_after({"retry-after": "soon"}) is None
    assert retry_after({}) is None


# ----------------------------------------------------------------------------- listing, health


def test_list_models(openai_p, openai_server) -> None:
    models = openai_p.list_models()
    assert [m.model for m in models] == list(openai_server.model_ids())
    first = models[0]
    assert first.provider == "openai"
    assert first.modified == "2024-05-10T18:50:49+00:00"  # from `created` 1715367049
    assert first.details["owned_by"] == "system"
    assert openai_server.requests[-1].path == "/v1/models"


@pytest.mark.parametrize(
    ("reply", "words"),
    [
        ((b"<html><body>proxy login</body></html>", "text/html"), "not JSON: '<html><body>proxy"),
        ((b'{"data": [ {"id": "x"', "application/json"), 'not JSON: \'{"data": ['),
        ((b'{"models": "not a list"}', "application/json"), 'without a "data" list'),
    ],
)
def test_a_model_list_that_is_not_one_is_a_clear_line(
    openai_p, openai_server, monkeypatch, reply, words
) -> None:
    body, kind = reply
    handler = lambda ex: ex.send(200, body, kind)  # noqa: E731 - a route of the shared server
    monkeypatch.setitem(openai_server.routes, ("GET", "/v1/models"), handler)
    with pytest.raises(errors.BadResponse) as info:
        openai_p.list_models()
    assert info.value.message.startswith("openai: /models replied") and words in info.value.message
    health = openai_p.health()  # the server answered, not well: reachable, with the reason
    assert health.reachable and health.error == info.value.message


def test_health_with_a_rejected_key(openai_server) -> None:
    openai_server.api_key = "the-right-one"
    with OpenAIProvider(name="openai", base_url=openai_server.url, api_key=KEY) as provider:
        health = provider.health()
    assert health.reachable  # it answered
    assert "HTTP 401" in health.error


# ----------------------------------------------------------------------------- Ollama's /v1


@pytest.fixture
def compat(ollama_server) -> Iterator[OpenAIProvider]:
    with OpenAIProvider(
        name="ollama-v1", base_url=ollama_server.url + "/v1", api_key=None
    ) as provider:
        yield provider


def test_ollama_compat_stream(compat, ollama_server) -> None:
    ollama_server.reply = REPLY
    chunks, error = drain(compat.stream(MSGS, "llama3.2", Options(max_tokens=10)))
    assert error is None
    assert text_of(chunks) == REPLY
    assert chunks[0].model == "llama3.2"
    assert [c.finish_reason for c in chunks if c.finish_reason] == ["stop"]
    assert chunks[-1].usage == Usage(prompt_tokens=7, completion_tokens=4)


def test_ollama_compat_error_ends_without_done(compat, ollama_server) -> None:
    # Ollama's /v1 turns a mid-stream error into an empty chunk and stops: no finish, no [DONE]
    ollama_server.error_after = 2
    chunks, error = drain(compat.stream(MSGS, "llama3.2", Options()))
    assert text_of(chunks) == "Echo from "
    assert isinstance(error, errors.StreamBroken)
    assert "finish_reason" in error.message


def test_ollama_compat_unknown_model(compat) -> None:
    _, error = drain(compat.stream(MSGS, "nope", Options()))
    assert isinstance(error, errors.NotFound)
    assert "model 'nope' not found" in error.message


def test_ollama_compat_lists_null_data_as_empty(compat, ollama_server) -> None:
    assert {m.model for m in compat.list_models()} == {"llama3.2:latest", "qwen2.5:0.5b"}
    ollama_server.models.clear()  # Ollama then answers "data": null
    assert compat.list_models() == []


# ----------------------------------------------------------------------------- odd servers


def test_server_that_ignores_stream_true_is_read_whole(
    openai_p, openai_server, monkeypatch
) -> None:
    def whole(ex) -> None:
        ex.send_json(
            200,
            {
                "id": "x",
                "object": "chat.completion",
                "model": "m-1",
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": "all"},
                    }
                ],
                "usage": {"prompt_tokens": 2, "completion_tokens": 1},
            },
        )

    monkeypatch.setitem(openai_server.routes, ("POST", "/v1/chat/completions"), whole)
    chunks, error = drain(openai_p.stream(MSGS, MODEL, Options()))
    assert error is None
    assert chunks == [Chunk(text="all", usage=Usage(2, 1), finish_reason="stop", model="m-1")]


def test_html_page_instead_of_events_is_bad_response(openai_p, openai_server, monkeypatch) -> None:
    def portal(ex) -> None:
        ex.send(200, b"<html><title>Sign in to Wi-Fi</title></html>", "text/html")

    monkeypatch.setitem(openai_server.routes, ("POST", "/v1/chat/completions"), portal)
    chunks, error = drain(openai_p.stream(MSGS, MODEL, Options()))
    assert chunks == []
    assert type(error) is errors.BadResponse
    assert "expected server-sent events, got text/html" in error.message


def test_error_event_with_a_status_code_keeps_the_status(
    openai_p, openai_server, monkeypatch
) -> None:
    # OpenRouter reports an upstream failure inside a 200 stream, with the status as `code`.
    def router(ex) -> None:
        ex.start_stream("text/event-stream")
        ex.write(b": OPENROUTER PROCESSING\n\n")
        ex.write(b'data: {"error":{"code":429,"message":"Provider rate limited"}}\n\n')
        ex.end_stream()

    monkeypatch.setitem(openai_server.routes, ("POST", "/v1/chat/completions"), router)
    _, error = drain(openai_p.stream(MSGS, MODEL, Options()))
    assert isinstance(error, errors.RateLimited)
    assert error.message == "openai: HTTP 429: Provider rate limited"


def test_openai_org_and_project_never_reach_another_vendor(monkeypatch, openai_server) -> None:
    from llm_magic.providers._openai import OpenAIProvider
    from llm_magic.providers.base import Options

    monkeypatch.setenv("OPENAI_ORG_ID", "org-private")
    monkeypatch.setenv("OPENAI_PROJECT_ID", "proj-private")
    messages = [Message("user", "hi")]
    for name in ("groq", "openai"):
        with OpenAIProvider(name=name, base_url=openai_server.url, api_key="k-123456") as provider:
            list(provider.stream(messages, "m", Options()))
        headers = openai_server.requests[-1].headers
        sent = (headers.get("openai-organization"), headers.get("openai-project"))
        assert sent == ((None, None) if name == "groq" else ("org-private", "proj-private"))
