"""Structured output on the wire, per provider: the field and shape each API documents, seen
by loopback servers that check them as the API does (tests/servers/structured.py) — and the
servers' own refusals of malformed fields, in each API's error shape."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pydantic
import pytest

import llm_magic
from llm_magic._judge import VERDICT_SCHEMA

CITY = {
    "title": "City facts",
    "type": "object",
    "properties": {
        "city": {"type": "string", "minLength": 1},
        "population": {"type": "integer", "minimum": 0},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["city", "population"],
}
GOOD = '{"city": "Paris", "population": 2102650, "tags": []}'
TARGETS = [
    "openai:gpt-4o-mini",
    "ollama:llama3.2",
    "mistral:mistral-small-latest",
    "anthropic:claude-haiku-4-5",
]


class Address(pydantic.BaseModel):
    street: str
    number: int | None = None


class Person(pydantic.BaseModel):
    """Someone with an address."""

    name: str
    home: Address = pydantic.Field(description="where they live")


def _body(server) -> dict[str, Any]:
    (request,) = server.chat_requests()
    return request.body


@pytest.fixture
def everyone(backends):
    for server in backends:
        server.faults.reply = GOOD
    return backends


def test_every_provider_gets_the_schema_its_own_way_and_every_answer_is_read(everyone) -> None:
    df = llm_magic.compare("France's largest city?", TARGETS, schema=CITY)
    assert df["error"].isna().all(), df["error"].tolist()  # no server refused its field
    assert df["schema_valid"].all()
    assert df["parsed"].tolist() == [json.loads(GOOD)] * 4

    closed = {**CITY, "additionalProperties": False}
    openai = _body(everyone.openai)["response_format"]
    assert openai == {
        "type": "json_schema",
        "json_schema": {
            "name": "City_facts",  # a-z A-Z 0-9 _ - only
            # strict mode: closed, and every property required (tags too)
            "schema": {**closed, "required": ["city", "population", "tags"]},
            "strict": True,
        },
    }
    assert _body(everyone.ollama)["format"] == CITY  # the schema itself, as written
    assert _body(everyone.mistral)["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "City_facts", "schema": closed, "strict": True},
    }
    anthropic = _body(everyone.anthropic)["output_config"]["format"]
    assert anthropic["type"] == "json_schema" and set(anthropic) == {"type", "schema"}
    sent = anthropic["schema"]
    # closed, and the bounds it does not take told to the model in the description
    assert sent["additionalProperties"] is False and sent["required"] == ["city", "population"]
    assert sent["properties"]["population"] == {"type": "integer", "description": "{minimum: 0}"}
    assert sent["properties"]["city"] == {"type": "string", "description": "{minLength: 1}"}


def test_no_schema_sends_no_structured_field(everyone) -> None:
    llm_magic.compare("hi", TARGETS)
    assert "response_format" not in _body(everyone.openai)
    assert "format" not in _body(everyone.ollama)
    assert "response_format" not in _body(everyone.mistral)
    assert "output_config" not in _body(everyone.anthropic)


def test_a_pydantic_schema_with_refs_is_made_strict_for_openai(everyone) -> None:
    everyone.openai.faults.reply = '{"name": "Ada", "home": {"street": "Main", "number": null}}'
    df = llm_magic.compare("Who?", "openai:gpt-4o-mini", schema=Person)
    assert df["error"].isna().all() and bool(df["schema_valid"][0])
    assert df["parsed"][0] == Person(name="Ada", home=Address(street="Main"))
    fmt = _body(everyone.openai)["response_format"]["json_schema"]
    assert fmt["name"] == "Person" and fmt["strict"] is True
    home = fmt["schema"]["properties"]["home"]
    # the $ref with a description beside it is inlined, as the openai SDK does
    assert "$ref" not in home and home["description"] == "where they live"
    assert home["required"] == ["street", "number"] and home["additionalProperties"] is False
    assert "default" not in home["properties"]["number"]  # Optional's null default dropped


@pytest.mark.parametrize(
    ("schema", "reply"),
    [
        ({"type": "object", "additionalProperties": {"type": "number"}}, '{"a": 1, "b": 2.5}'),
        ({"type": "object"}, '{"anything": [1]}'),
        ({"type": "array", "items": {"type": "object", "properties": {"a": {"type": "integer"}}}},
         '[{"a": 1}, {}]'),
    ],
)  # fmt: skip
def test_a_schema_strict_mode_cannot_say_goes_as_written_without_strict(
    everyone, schema, reply
) -> None:
    everyone.openai.faults.reply = reply
    df = llm_magic.compare("Numbers?", "openai:gpt-4o-mini", schema=schema)
    assert bool(df["schema_valid"][0]) and df["parsed"][0] == json.loads(reply)
    fmt = _body(everyone.openai)["response_format"]["json_schema"]
    assert fmt == {"name": "answer", "schema": schema, "strict": False}


def test_the_llamacpp_preset_gets_the_shape_both_llama_servers_read(
    openai_server, monkeypatch
) -> None:
    monkeypatch.setenv("LLAMACPP_BASE_URL", openai_server.url)
    openai_server.faults.reply = GOOD
    df = llm_magic.compare("France?", "llamacpp:smollm2", schema=CITY)
    assert bool(df["schema_valid"][0])
    assert _body(openai_server)["response_format"] == {"type": "json_object", "schema": CITY}


def test_an_off_schema_answer_from_each_provider_is_a_row_not_an_error(everyone) -> None:
    for server in everyone:
        server.faults.reply = '{"city": "Paris"}'
    df = llm_magic.compare("France?", TARGETS, schema=CITY)
    assert df["error"].isna().all() and not df["schema_valid"].any()
    assert set(df["schema_error"]) == {"'population' is a required property"}


def test_an_http_judge_is_held_to_the_verdict_schema_on_the_wire(everyone) -> None:
    everyone.openai.faults.reply = '{"score": 1, "reason": "right"}'
    df = llm_magic.compare(
        "Capital of France?", "ollama:llama3.2", checks=["judge:names Paris"],
        judge="openai:gpt-4o-mini",
    )  # fmt: skip
    assert df["score_judge"][0] == 1.0
    fmt = _body(everyone.openai)["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
    verdict = json.loads(VERDICT_SCHEMA)
    assert fmt["json_schema"]["schema"] == {**verdict, "additionalProperties": False}
    # the answer itself was asked without one
    assert "format" not in _body(everyone.ollama)


# ---- the servers refuse malformed fields as the APIs do ------------------------------------------
def _post(url: str, body: dict[str, Any], headers: dict[str, str]) -> tuple[int, Any]:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"content-type": "application/json", **headers}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(
    ("fmt", "message", "param"),
    [
        ({"type": "yaml"}, "Invalid value: \"yaml\". Supported values are: 'text', "
         "'json_object' and 'json_schema'.", "response_format.type"),
        ({"type": "json_schema"}, "Missing required parameter: 'response_format.json_schema'.",
         "response_format.json_schema"),
        ({"type": "json_schema", "json_schema": {"schema": CITY}},
         "Missing required parameter: 'response_format.json_schema.name'.",
         "response_format.json_schema.name"),
        ({"type": "json_schema", "json_schema": {"name": "a b", "schema": CITY}},
         "Invalid 'response_format.json_schema.name': string does not match pattern.",
         "response_format.json_schema.name"),
        ({"type": "json_schema", "json_schema": {"name": "c", "schema": CITY, "strict": True}},
         "Invalid schema for response_format 'c': In context=(), 'additionalProperties' is "
         "required to be supplied and to be false.", "response_format"),
        ({"type": "json_schema", "json_schema": {"name": "c", "strict": True, "schema":
          {**CITY, "additionalProperties": False}}},
         "Invalid schema for response_format 'c': In context=(), 'required' is required to be "
         "supplied and to be an array including every key in properties. Missing 'tags'.",
         "response_format"),
    ],
)  # fmt: skip
def test_the_openai_server_refuses_a_malformed_response_format(
    openai_server, fmt, message, param
) -> None:
    status, body = _post(
        openai_server.url + "/chat/completions", {**CHAT, "response_format": fmt}, {}
    )
    assert status == 400
    assert body["error"]["message"].startswith(message)
    assert body["error"]["type"] == "invalid_request_error" and body["error"]["param"] == param


def test_the_openai_server_takes_what_strict_mode_takes(openai_server) -> None:
    nested = {"type": "object", "properties": {"x": {"type": "object", "properties": {
        "y": {"type": "string"}}, "required": ["y"]}}, "required": ["x"],
        "additionalProperties": False}  # fmt: skip
    fmt = {"type": "json_schema", "json_schema": {"name": "n", "schema": nested, "strict": True}}
    url = openai_server.url + "/chat/completions"
    status, body = _post(url, {**CHAT, "response_format": fmt}, {})
    assert status == 400
    assert "In context=('properties', 'x'), 'additionalProperties'" in body["error"]["message"]
    fmt["json_schema"]["strict"] = False  # without strict, any schema is taken
    status, _ = _post(url, {**CHAT, "response_format": fmt}, {})
    assert status == 200


def test_the_ollama_server_refuses_a_format_that_is_neither_json_nor_a_schema(
    ollama_server,
) -> None:
    body = {**CHAT, "model": "llama3.2", "stream": False}
    status, reply = _post(ollama_server.url + "/api/chat", {**body, "format": "yaml"}, {})
    assert (status, reply) == (
        400, {"error": 'invalid format: "yaml"; expected "json" or a valid JSON Schema object'}
    )  # fmt: skip
    for fine in ("json", CITY):
        status, _ = _post(ollama_server.url + "/api/chat", {**body, "format": fine}, {})
        assert status == 200
    # its OpenAI-compatible layer maps json_schema onto the same field
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": CITY}}
    status, _ = _post(ollama_server.url + "/v1/chat/completions",
                      {**body, "response_format": fmt}, {})  # fmt: skip
    assert status == 200


def test_the_mistral_server_refuses_what_its_closed_schema_does_not_have(mistral_server) -> None:
    auth = {"authorization": "Bearer k"}
    fmt = {"type": "json_schema", "json_schema": {"schema": CITY, "strictly": True}}
    status, body = _post(
        mistral_server.url + "/v1/chat/completions", {**CHAT, "response_format": fmt}, auth
    )
    assert status == 422
    problems = {(tuple(p["loc"]), p["type"]) for p in body["message"]["detail"]}
    assert problems == {
        (("body", "response_format", "json_schema", "name"), "missing"),
        (("body", "response_format", "json_schema", "strictly"), "extra_forbidden"),
    }
    fmt = {"type": "json", "schema": CITY}
    status, body = _post(
        mistral_server.url + "/v1/chat/completions", {**CHAT, "response_format": fmt}, auth
    )
    assert status == 422
    assert {p["type"] for p in body["message"]["detail"]} == {"enum", "extra_forbidden"}


@pytest.mark.parametrize(
    ("config", "words"),
    [
        ({"format": {"type": "json_schema", "name": "x", "schema": CITY}},
         "output_config.format.name: Extra inputs are not permitted"),
        ({"format": {"type": "json", "schema": CITY}},
         "output_config.format.type: Input should be 'json_schema'"),
        ({"format": {"type": "json_schema", "schema": CITY}},
         "objects must set additionalProperties to false"),
        ({"format": {"type": "json_schema", "schema": {**CITY, "additionalProperties": False}}},
         "properties.city: 'minLength' is not supported"),
    ],
)  # fmt: skip
def test_the_anthropic_server_refuses_what_structured_output_does_not_take(
    anthropic_server, config, words
) -> None:
    headers = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
    body = {**CHAT, "max_tokens": 16, "output_config": config}
    status, reply = _post(anthropic_server.url + "/v1/messages", body, headers)
    assert status == 400 and reply["type"] == "error"
    assert reply["error"]["type"] == "invalid_request_error"
    assert words in reply["error"]["message"]
