"""MistralProvider against a loopback server that speaks Mistral's API on a real socket and,
like the real one, rejects any request field outside its closed schema with a 422.
The behaviour all HTTP providers share is tested once, in test_provider_contract.py."""

from __future__ import annotations

from collections.abc import Iterator

import httpx2
import pytest
from provider_checks import KEY, MSGS, REPLY, contract, drain

from llm_magic import errors
from llm_magic.providers._http_errors import error_text
from llm_magic.providers._mistral import MistralProvider
from llm_magic.providers.base import Chunk, Options, Usage

MODEL = "mistral-small-latest"


@pytest.fixture
def mistral(mistral_server) -> Iterator[MistralProvider]:
    with contract("mistral", mistral_server).configured() as provider:  # with KEY
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


def test_finish_reason_error_still_passes_on_the_usage(mistral, mistral_server) -> None:
    mistral_server.error_after = 2  # a chunk with finish_reason "error", then [DONE]
    chunks, error = drain(mistral.stream(MSGS, MODEL, Options()))
    assert isinstance(error, errors.StreamBroken)
    assert chunks[-1].usage is not None  # it came with the failing chunk


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


def test_a_listing_of_another_shape_is_a_clear_line(mistral, mistral_server, monkeypatch):
    monkeypatch.setitem(
        mistral_server.routes, ("GET", "/v1/models"), lambda ex: ex.send_json(200, {"models": 1})
    )
    with pytest.raises(errors.BadResponse, match='mistral: /v1/models replied without a "data"'):
        mistral.list_models()


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
