"""MistralProvider against a loopback server that speaks Mistral's API on a real socket and,
like the real one, rejects any request field outside its closed schema with a 422."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx2
import pytest
from provider_checks import KEY, MSGS, PLAIN_KEY, REPLY, drain, text_of

from llm_magic import errors
from llm_magic.providers._http import error_text
from llm_magic.providers.base import CancelToken, Chunk, Options, Usage
from llm_magic.providers.mistral import MistralProvider

MODEL = "mistral-small-latest"


@pytest.fixture
def mistral(mistral_server) -> Iterator[MistralProvider]:
    mistral_server.api_key = KEY
    with MistralProvider(
        name="mistral", base_url=mistral_server.url, api_key=KEY, key_env="MISTRAL_API_KEY"
    ) as provider:
        yield provider


# ----------------------------------------------------------------------------- streaming


def test_stream_usage_rides_on_the_last_content_chunk(mistral, mistral_server) -> None:
    mistral_server.reply = REPLY
    chunks, error = drain(mistral.stream(MSGS, MODEL, Options()))
    assert error is None
    assert chunks[0] == Chunk(model=MODEL)  # the role chunk
    assert [c.text for c in chunks[1:]] == ["Because ", "of ", "Rayleigh ", "scattering."]
    assert all(c.usage is None and c.finish_reason is None for c in chunks[:-1])
    assert chunks[-1] == Chunk(
        text="scattering.", finish_reason="stop", usage=Usage(prompt_tokens=7, completion_tokens=4)
    )


def test_request_on_the_wire_fits_the_closed_schema(mistral, mistral_server) -> None:
    options = Options(temperature=0.2, top_p=0.9, seed=42, max_tokens=3, stop=("\n", "END"))
    chunks, error = drain(mistral.stream(MSGS, MODEL, options))
    assert error is None  # the server answers 422 to any field it does not know
    (request,) = mistral_server.requests
    assert (request.method, request.path) == ("POST", "/v1/chat/completions")
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.body == {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "why is the sky blue"},
        ],
        "stream": True,
        "temperature": 0.2,
        "top_p": 0.9,
        "max_tokens": 3,
        "random_seed": 42,
        "stop": ["\n", "END"],
    }
    assert chunks[-1].finish_reason == "length"
    assert chunks[-1].usage == Usage(prompt_tokens=7, completion_tokens=3)


def test_unset_options_are_left_out_not_null(mistral, mistral_server) -> None:
    assert drain(mistral.stream(MSGS, MODEL, Options()))[1] is None
    body = mistral_server.requests[0].body
    assert set(body) == {"model", "messages", "stream"}
    assert None not in body.values()


def test_non_stream_mode_is_one_chunk(mistral, mistral_server) -> None:
    mistral_server.reply = REPLY
    mistral_server.report_model = "mistral-small-2503"
    chunks, error = drain(mistral.stream(MSGS, MODEL, Options(stream=False, seed=7)))
    assert error is None
    assert chunks == [
        Chunk(text=REPLY, usage=Usage(7, 4), finish_reason="stop", model="mistral-small-2503")
    ]
    body = mistral_server.requests[0].body
    assert body["stream"] is False
    assert body["random_seed"] == 7


def test_base_url_with_v1_is_accepted(mistral_server) -> None:
    with MistralProvider(
        name="mistral", base_url=mistral_server.url + "/v1/", api_key=None
    ) as provider:
        assert provider.base_url == mistral_server.url
        assert drain(provider.stream(MSGS, MODEL, Options()))[1] is None
    assert mistral_server.requests[0].path == "/v1/chat/completions"


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("status", "cls", "expected"),
    [
        (400, errors.StatusError, f"Invalid model: {MODEL}"),  # {"message": "..."}
        (401, errors.AuthFailed, "Unauthorized"),  # {"message": ..., "request_id": ...}
        (422, errors.StatusError, "body: Value error (value_error)"),  # message: {detail: []}
        (429, errors.RateLimited, "Rate limit exceeded"),
        (500, errors.ServerFailed, "Internal server error"),
    ],
)
def test_error_bodies_of_every_shape_give_a_readable_line(
    mistral, mistral_server, status, cls, expected
) -> None:
    mistral_server.status = status
    chunks, error = drain(mistral.stream(MSGS, MODEL, Options()))
    assert chunks == []
    assert type(error) is cls
    assert error.status == status
    assert error.message == f"mistral: HTTP {status}: {expected}"


def test_unknown_field_422_names_the_field(mistral_server) -> None:
    # What Mistral says to an OpenAI-style client: the detail list becomes one readable line.
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hi"}],
        "seed": 1,
        "stream_options": {"include_usage": True},
    }
    reply = httpx2.post(mistral_server.url + "/v1/chat/completions", json=body)
    assert reply.status_code == 422
    text = error_text(reply.content)
    assert "body.seed: Extra inputs are not permitted (extra_forbidden)" in text
    assert "body.stream_options: Extra inputs are not permitted" in text


def test_wrong_path_404_with_top_level_detail(mistral_server) -> None:
    with MistralProvider(
        name="mistral", base_url=mistral_server.url + "/proxy", api_key=None
    ) as provider:
        _, error = drain(provider.stream(MSGS, MODEL, Options()))
    assert isinstance(error, errors.NotFound)
    assert error.message == "mistral: HTTP 404: Not Found"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('{"detail":"Unauthorized"}', "Unauthorized"),
        ('{"message":"Requests rate limit exceeded"}', "Requests rate limit exceeded"),
        (
            '{"object":"error","message":"Invalid model: x","type":"invalid_model","code":"1500"}',
            "Invalid model: x",
        ),
        (
            '{"detail":[{"loc":["body","messages",0,"name"],"msg":"Extra inputs are not '
            'permitted","type":"extra_forbidden"}]}',
            "body.messages.0.name: Extra inputs are not permitted (extra_forbidden)",
        ),
        ('{"object":"Error","detail":[{"loc":["body"],"msg":"bad"}],"code":3001}', "body: bad"),
        (
            '{"error":{"message":"Incorrect API key","type":"invalid_request_error"}}',
            "Incorrect API key",
        ),
        ('{"error":"model \'x\' not found"}', "model 'x' not found"),
        ("upstream connect error\n or disconnect", "upstream connect error or disconnect"),
        ("", "Bad Gateway"),
        (
            "<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1>"
            "<hr><center>nginx</center></body></html>",
            "502 Bad Gateway",
        ),
        ('{"unexpected":true}', '{"unexpected": true}'),
    ],
)
def test_error_text_shapes(body: str, expected: str) -> None:
    assert error_text(body, "Bad Gateway") == expected


def test_retry_after_is_read(mistral, mistral_server) -> None:
    mistral_server.status = 429
    mistral_server.retry_after = 4
    _, error = drain(mistral.stream(MSGS, MODEL, Options()))
    assert isinstance(error, errors.RateLimited)
    assert error.retry_after == 4.0
    assert error.retryable


def test_connection_refused(refused_url) -> None:
    with MistralProvider(name="mistral", base_url=refused_url, api_key=KEY) as provider:
        _, error = drain(provider.stream(MSGS, MODEL, Options()))
    assert isinstance(error, errors.ConnectFailed)
    assert error.retryable


def test_no_first_byte_within_read_timeout(mistral, mistral_server) -> None:
    mistral_server.delay = 5
    chunks, error = drain(mistral.stream(MSGS, MODEL, Options(read_timeout=0.5)))
    assert chunks == []
    assert isinstance(error, errors.TimedOut)


def test_stall_mid_stream_is_broken_after_partial_text(mistral, mistral_server) -> None:
    mistral_server.stall_after = 2
    chunks, error = drain(mistral.stream(MSGS, MODEL, Options(read_timeout=0.5)))
    assert text_of(chunks) == "Echo from "
    assert isinstance(error, errors.StreamBroken)
    assert "read timeout" in error.message


def test_cut_mid_stream_keeps_partial_chunks(mistral, mistral_server) -> None:
    mistral_server.cut_after = 3
    chunks, error = drain(mistral.stream(MSGS, MODEL, Options()))
    assert text_of(chunks) == f"Echo from {MODEL}: "
    assert isinstance(error, errors.StreamBroken)


def test_malformed_event_is_bad_response(mistral, mistral_server) -> None:
    mistral_server.malformed_after = 0
    chunks, error = drain(mistral.stream(MSGS, MODEL, Options()))
    assert text_of(chunks) == ""
    assert type(error) is errors.BadResponse
    assert error.message.startswith("mistral: malformed event")
    assert "{not json" in error.message


def test_malformed_event_after_text_is_a_broken_stream(mistral, mistral_server) -> None:
    mistral_server.malformed_after = 1
    chunks, error = drain(mistral.stream(MSGS, MODEL, Options()))
    assert text_of(chunks) == "Echo "
    assert isinstance(error, errors.StreamBroken)


def test_finish_reason_error_mid_stream(mistral, mistral_server) -> None:
    mistral_server.error_after = 2  # a chunk with finish_reason "error", then [DONE]
    chunks, error = drain(mistral.stream(MSGS, MODEL, Options()))
    assert text_of(chunks) == "Echo from "
    assert isinstance(error, errors.StreamBroken)
    assert "finish_reason 'error'" in error.message
    # the usage that came with the failing chunk is still passed on
    assert chunks[-1].usage is not None


def test_finish_reason_error_before_text(mistral, mistral_server) -> None:
    mistral_server.error_after = 0
    chunks, error = drain(mistral.stream(MSGS, MODEL, Options()))
    assert text_of(chunks) == ""
    assert type(error) is errors.ProviderError


def test_non_stream_errors(mistral, mistral_server) -> None:
    mistral_server.malformed_after = 0  # a 200 whose body is not JSON
    _, error = drain(mistral.stream(MSGS, MODEL, Options(stream=False)))
    assert isinstance(error, errors.BadResponse)
    mistral_server.reset()
    mistral_server.api_key = KEY
    mistral_server.error_after = 0
    mistral_server.error_message = "model overloaded"
    _, error = drain(mistral.stream(MSGS, MODEL, Options(stream=False)))
    assert isinstance(error, errors.ServerFailed)
    assert error.message == "mistral: HTTP 500: model overloaded"


# ----------------------------------------------------------------------------- cancellation


def test_cancel_closes_a_stalled_stream(mistral, mistral_server) -> None:
    mistral_server.stall_after = 1
    token = CancelToken()
    stream = mistral.stream(MSGS, MODEL, Options(read_timeout=60), token)
    assert next(stream).model == MODEL
    assert next(stream).text == "Echo "
    timer = threading.Timer(0.2, token.cancel)
    start = time.monotonic()
    timer.start()
    chunks, error = drain(stream)
    timer.join()
    assert chunks == []
    assert isinstance(error, errors.Cancelled)
    assert time.monotonic() - start < 10  # far below the 60 s read timeout


def test_cancel_while_waiting_for_the_first_byte(mistral, mistral_server) -> None:
    mistral_server.delay = 60
    token = CancelToken()
    threading.Timer(0.2, token.cancel).start()
    start = time.monotonic()
    chunks, error = drain(mistral.stream(MSGS, MODEL, Options(read_timeout=60), token))
    assert chunks == []
    assert isinstance(error, errors.Cancelled)
    assert time.monotonic() - start < 10


# ----------------------------------------------------------------------------- keys


def test_key_never_in_repr_or_errors(mistral_server) -> None:
    mistral_server.api_key = PLAIN_KEY
    with MistralProvider(
        name="mistral", base_url=mistral_server.url, api_key=PLAIN_KEY, key_env="MISTRAL_API_KEY"
    ) as provider:
        assert PLAIN_KEY not in repr(provider)
        assert drain(provider.stream(MSGS, MODEL, Options()))[1] is None
        assert mistral_server.requests[0].headers["authorization"] == f"Bearer {PLAIN_KEY}"
        mistral_server.status = 401
        mistral_server.error_message = f"Key {PLAIN_KEY} is revoked"
        _, error = drain(provider.stream(MSGS, MODEL, Options()))
    assert isinstance(error, errors.AuthFailed)
    assert "is revoked" in error.message
    assert PLAIN_KEY not in error.message and PLAIN_KEY not in repr(error)


def test_missing_key_sends_nothing(mistral_server) -> None:
    with MistralProvider(
        name="mistral", base_url=mistral_server.url, api_key=None, key_env="MISTRAL_API_KEY"
    ) as provider:
        _, error = drain(provider.stream(MSGS, MODEL, Options()))
        assert type(error) is errors.ProviderError
        assert error.message == "mistral: no API key: set MISTRAL_API_KEY"
        assert provider.health().error == "no API key: set MISTRAL_API_KEY"
    assert all(r.path != "/v1/chat/completions" for r in mistral_server.requests)


def test_connections_are_reused(mistral, mistral_server) -> None:
    for _ in range(3):
        assert drain(mistral.stream(MSGS, MODEL, Options()))[1] is None
    assert mistral_server.connection_count == 1


# ----------------------------------------------------------------------------- listing, health


def test_list_models(mistral, mistral_server) -> None:
    models = {m.model: m for m in mistral.list_models()}
    assert set(models) == set(mistral_server.models)
    codestral = models["codestral-latest"]
    assert codestral.provider == "mistral"
    assert codestral.context_length == 262144
    assert codestral.modified == "2025-06-15T15:06:40+00:00"  # created 1750000000
    assert codestral.details["capabilities"]["completion_fim"] is True
    assert mistral_server.requests[-1].path == "/v1/models"


def test_list_models_tolerates_a_bare_array(mistral, mistral_server, monkeypatch) -> None:
    def bare(ex) -> None:  # the shape of the rendered docs' example
        ex.send_json(
            200,
            [
                {
                    "id": "ft:open-mistral-7b:abc",
                    "object": "model",
                    "created": 1750000000,
                    "max_context_length": 32768,
                }
            ],
        )

    monkeypatch.setitem(mistral_server.routes, ("GET", "/v1/models"), bare)
    (model,) = mistral.list_models()
    assert (model.model, model.context_length) == ("ft:open-mistral-7b:abc", 32768)


def test_health(mistral, mistral_server) -> None:
    health = mistral.health()
    assert health.reachable and health.error is None
    assert health.rtt_s is not None and health.rtt_s > 0
    assert health.base_url == mistral_server.url


def test_health_of_nothing_listening(refused_url) -> None:
    with MistralProvider(name="mistral", base_url=refused_url, api_key=KEY) as provider:
        health = provider.health()
    assert not health.reachable
    assert "cannot connect" in health.error
