"""`embed()` of every provider that has one, on the wire: OpenAI's and Mistral's /v1/embeddings,
Ollama's /api/embed against their loopback servers, an OpenAI-compatible preset, and the
embedded model through llama.cpp. Anthropic has no embeddings endpoint and says so."""

from __future__ import annotations

import math

import pytest
from provider_checks import KEY, contract
from servers.embeddings import DIMENSIONS, vector_of

from llm_magic import errors
from llm_magic.providers import _embeddings, embedding_problem, get_provider
from llm_magic.providers._embeddings import read_vectors
from llm_magic.providers.base import CancelToken, Options

TEXTS = ["Paris is the capital of France", "bananas are yellow", "Paris is the capital of France"]
FAST = Options(stream=False, read_timeout=5.0, connect_timeout=2.0)

# kind -> (server fixture, model, path the request goes to)
WIRE = {
    "openai": ("openai_server", "text-embedding-3-small", "/v1/embeddings"),
    "mistral": ("mistral_server", "mistral-embed", "/v1/embeddings"),
    "ollama": ("ollama_server", "llama3.2", "/api/embed"),
}


@pytest.fixture(params=sorted(WIRE))
def wired(request):
    kind = request.param
    fixture, model, path = WIRE[kind]
    server = request.getfixturevalue(fixture)
    with contract(kind, server).configured() as provider:
        yield kind, provider, server, model, path


def _close(a: list[float], b: list[float]) -> bool:
    return all(math.isclose(x, y, abs_tol=1e-12) for x, y in zip(a, b, strict=True))


def test_each_provider_embeds_a_batch_in_one_request(wired) -> None:
    kind, provider, server, model, path = wired
    result = provider.embed(TEXTS, model, FAST)
    assert len(result.vectors) == 3 and all(len(v) == DIMENSIONS for v in result.vectors)
    for text, vector in zip(TEXTS, result.vectors, strict=True):
        assert _close(vector, vector_of(text))
    assert result.prompt_tokens == sum(len(t.split()) for t in TEXTS)
    assert result.model == model
    (sent,) = server.requests
    assert sent.path == path and sent.body["input"] == TEXTS and sent.body["model"] == model
    expected_fields = {
        "openai": {"model", "input", "encoding_format"},  # floats by name: not the SDK's base64
        "mistral": {"model", "input"},  # the schema is closed
        "ollama": {"model", "input"},
    }[kind]
    assert set(sent.body) == expected_fields
    if kind == "openai":
        assert sent.body["encoding_format"] == "float"
    if kind != "ollama":
        assert sent.headers["authorization"] == f"Bearer {KEY}"


def test_a_server_error_is_a_status_error_naming_the_provider(wired) -> None:
    kind, provider, server, model, _ = wired
    server.faults.status = 500
    with pytest.raises(errors.StatusError) as info:
        provider.embed(["hi"], model, FAST)
    assert info.value.status == 500 and info.value.retryable
    assert str(info.value).startswith(f"{kind}: ")


def test_a_reply_that_is_not_json_is_a_bad_response(wired) -> None:
    kind, provider, server, model, _ = wired
    server.faults.malformed_after = 0
    with pytest.raises(errors.BadResponse, match="not JSON"):
        provider.embed(["hi"], model, FAST)


def test_a_reply_larger_than_the_bound_is_refused(wired, monkeypatch) -> None:
    kind, provider, server, model, _ = wired
    monkeypatch.setattr(_embeddings, "MAX_BODY_BYTES", 2_000)
    with pytest.raises(errors.BadResponse, match="over 2,000 bytes"):
        provider.embed([f"text number {i}" for i in range(20)], model, FAST)


def test_a_silent_server_times_out(wired) -> None:
    kind, provider, server, model, _ = wired
    server.faults.stall_after = 0
    with pytest.raises(errors.TimedOut):
        provider.embed(["hi"], model, Options(stream=False, read_timeout=0.3))


def test_cancel_ends_a_request_in_flight(wired) -> None:
    import threading

    kind, provider, server, model, _ = wired
    server.faults.stall_after = 0
    token = CancelToken()
    threading.Timer(0.2, token.cancel).start()
    with pytest.raises(errors.Cancelled):
        provider.embed(["hi"], model, Options(stream=False, read_timeout=30.0), token)


def test_openai_keeps_the_order_of_the_texts_when_data_comes_back_shuffled() -> None:
    reply = {
        "data": [
            {"object": "embedding", "index": 1, "embedding": [0.0, 1.0]},
            {"object": "embedding", "index": 0, "embedding": [1.0, 0.0]},
        ],
        "usage": {"prompt_tokens": 3, "total_tokens": 3},
        "model": "m",
    }
    result = _embeddings.data_list(reply, 2, "openai")
    assert result.vectors == [[1.0, 0.0], [0.0, 1.0]] and result.prompt_tokens == 3


@pytest.mark.parametrize(
    ("raw", "count", "why"),
    [
        ({"a": 1}, 1, "no list of vectors"),
        ([[1.0]], 2, "1 vectors for 2 texts"),
        ([[1.0, 2.0], [1.0]], 2, "vectors of 2 and 1 dimensions"),
        ([[1.0, "x"]], 1, "not a number"),
        ([[True, 1.0]], 1, "not a number"),
        ([[1e999]], 1, "NaN or infinity"),
        ([[]], 1, "not a list of numbers"),
        ([[0.0] * 20_000], 1, "20,000 dimensions"),
    ],
)
def test_vectors_that_break_a_rule_are_one_bad_response_line(raw, count, why) -> None:
    with pytest.raises(errors.BadResponse, match=why):
        read_vectors(raw, count, "openai")


def test_an_unknown_ollama_model_names_the_pull_command(ollama_server) -> None:
    provider = contract("ollama", ollama_server).configured()
    with provider, pytest.raises(errors.NotFound, match=r"%llm pull ollama:nosuch"):
        provider.embed(["hi"], "nosuch", FAST)


def test_mistral_refuses_fields_its_schema_does_not_have(mistral_server) -> None:
    # the double's closed schema, as the real one's: what we send passes it (the test above)
    import json
    import urllib.error
    import urllib.request

    body = {"model": "mistral-embed", "input": ["a"], "encoding_format": "float", "x": 1}
    request = urllib.request.Request(
        mistral_server.url + "/v1/embeddings",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=5)
    info.value.close()  # the error holds the response's socket
    assert info.value.code == 422


def test_an_openai_compatible_preset_embeds_through_the_same_class(monkeypatch, openai_server):
    monkeypatch.setenv("VLLM_BASE_URL", openai_server.url)
    provider = get_provider("vllm")
    result = provider.embed(["hello there"], "bge-small", FAST)
    assert _close(result.vectors[0], vector_of("hello there"))
    assert openai_server.requests[-1].path == "/v1/embeddings"
    assert embedding_problem("vllm") is None


def test_which_providers_can_embed() -> None:
    for name in ("openai", "mistral", "ollama", "local", "groq"):
        assert embedding_problem(name) is None
    assert embedding_problem("anthropic") == "Anthropic's API has no embeddings endpoint"


@pytest.mark.local_model
def test_the_embedded_model_embeds_with_llama_cpp(capfd) -> None:
    pytest.importorskip("llama_cpp")
    from llm_magic.providers._local import loaded, unload

    provider = get_provider("local")
    unload("smollm2")  # so that this test loads the embedding instance, quietly
    capfd.readouterr()
    provider.prepare_embeddings("smollm2")
    assert capfd.readouterr().err == ""  # llama.cpp says nothing on stderr
    assert "smollm2 (embeddings)" in [m.model for m in loaded()]
    result = provider.embed(["The capital of France is Paris.", "hello"], "smollm2", FAST)
    first, second = result.vectors
    assert len(first) == len(second) == 576  # SmolLM2-135M's hidden size
    assert result.prompt_tokens and result.prompt_tokens > 2
    again = provider.embed(["The capital of France is Paris."], "smollm2", FAST)
    assert again.vectors[0] == pytest.approx(first, abs=1e-5)  # one instance, deterministic
    assert unload("smollm2")  # the embedding instance goes with the model
    assert not [m for m in loaded() if m.model.startswith("smollm2")]
