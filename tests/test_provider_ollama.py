"""OllamaProvider against a loopback server speaking Ollama's native API on a real socket.
Errors, faults, keys and cancelling as every provider has them: test_provider_contract.py."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from provider_checks import MSGS, REPLY, contract, drain, text_of
from servers.base import Exchange, TestServer

from llm_magic import errors
from llm_magic.providers import _ollama_models as ollama_module
from llm_magic.providers import get_provider
from llm_magic.providers._ollama import OllamaProvider, parse_ollama_host
from llm_magic.providers.base import CancelToken, Chunk, Options, Usage


@pytest.fixture
def ollama(ollama_server) -> Iterator[OllamaProvider]:
    with contract("ollama", ollama_server).configured() as provider:  # no key, like a local one
        yield provider


# ----------------------------------------------------------------------------- OLLAMA_HOST


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # ollama/ollama envconfig/config_test.go TestHost (":PORT" as the Python client reads it)
        (None, "http://127.0.0.1:11434"),
        ("", "http://127.0.0.1:11434"),
        ("1.2.3.4", "http://1.2.3.4:11434"),
        (":1234", "http://127.0.0.1:1234"),
        ("1.2.3.4:1234", "http://1.2.3.4:1234"),
        ("example.com", "http://example.com:11434"),
        (":66000", "http://127.0.0.1:11434"),
        ("::1", "http://[::1]:11434"),
        ('"1.2.3.4"', "http://1.2.3.4:11434"),
        ("http://1.2.3.4", "http://1.2.3.4:80"),
        ("https://1.2.3.4", "https://1.2.3.4:443"),
        ("https://example.com/ollama", "https://example.com:443/ollama"),
        ("ollama.com", "https://ollama.com:443"),
        # ConnectableHost: bind-all addresses are not something to connect to
        ("0.0.0.0", "http://127.0.0.1:11434"),
        ("0.0.0.0:8080", "http://127.0.0.1:8080"),
        ("[::]:9000", "http://[::1]:9000"),
        # ollama-python _parse_host doctests
        ("example.com/path", "http://example.com:11434/path"),
        ("example.com:56789/path/", "http://example.com:56789/path"),
        ("[0001:002:003:0004::1]", "http://[0001:002:003:0004::1]:11434"),
        ("[0001:002:003:0004::1]:56789", "http://[0001:002:003:0004::1]:56789"),
        # spaces and quotes around the value
        ("  'http://10.0.0.2:8000/'  ", "http://10.0.0.2:8000"),
        ("HTTP://Host:1", "http://Host:1"),
    ],
)
def test_parse_ollama_host(value: str | None, expected: str) -> None:
    assert parse_ollama_host(value) == expected


def test_ollama_host_from_the_environment_reaches_the_server(ollama_server, monkeypatch) -> None:
    # The registry hands OLLAMA_HOST over raw; ":PORT" must become 127.0.0.1:PORT.
    monkeypatch.setenv("OLLAMA_HOST", f":{ollama_server.port}")
    provider = get_provider("ollama")
    assert provider.base_url == ollama_server.root_url
    chunks, error = drain(provider.stream(MSGS, "llama3.2", Options()))
    assert error is None
    assert text_of(chunks) == "Echo from llama3.2: why is the sky blue"


# ----------------------------------------------------------------------------- streaming


def test_stream_yields_words_then_usage_and_finish(ollama, ollama_server) -> None:
    ollama_server.reply = REPLY
    chunks, error = drain(ollama.stream(MSGS, "llama3.2", Options()))
    assert error is None
    assert [c.text for c in chunks[:-1]] == ["Because ", "of ", "Rayleigh ", "scattering."]
    assert chunks[0].model == "llama3.2"
    assert all(c.model is None for c in chunks[1:])
    assert all(c.usage is None and c.finish_reason is None for c in chunks[:-1])
    last = chunks[-1]
    assert last.finish_reason == "stop"
    # prompt words over all messages (2 + 5), one completion token per streamed word
    assert last.usage == Usage(prompt_tokens=7, completion_tokens=4)


def test_request_on_the_wire(ollama, ollama_server) -> None:
    options = Options(temperature=0.2, top_p=0.9, seed=42, max_tokens=3, stop=("\n", "END"))
    chunks, error = drain(ollama.stream(MSGS, "llama3.2", options))
    assert error is None
    (request,) = ollama_server.requests
    assert (request.method, request.path) == ("POST", "/api/chat")
    assert request.body == {
        "model": "llama3.2",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "why is the sky blue"},
        ],
        "stream": True,  # explicit: Ollama streams when it is omitted, and we say what we mean
        "options": {
            "temperature": 0.2,
            "top_p": 0.9,
            "seed": 42,
            "num_predict": 3,
            "stop": ["\n", "END"],
        },
    }
    assert "authorization" not in request.headers  # a local Ollama needs no key
    assert chunks[-1].finish_reason == "length"
    assert chunks[-1].usage == Usage(prompt_tokens=7, completion_tokens=3)
    assert text_of(chunks) == "Echo from llama3.2: "


def test_no_options_sends_no_options_object(ollama, ollama_server) -> None:
    drain(ollama.stream(MSGS, "llama3.2", Options()))
    assert "options" not in ollama_server.requests[0].body


def test_non_stream_mode_is_one_chunk(ollama, ollama_server) -> None:
    ollama_server.reply = REPLY
    ollama_server.report_model = "llama3.2:latest"
    chunks, error = drain(ollama.stream(MSGS, "llama3.2", Options(stream=False)))
    assert error is None
    assert chunks == [
        Chunk(text=REPLY, usage=Usage(7, 4), finish_reason="stop", model="llama3.2:latest")
    ]
    assert ollama_server.requests[0].body["stream"] is False


def test_missing_counts_are_none_not_zero(ollama, ollama_server) -> None:
    ollama_server.usage = False  # the server omits prompt_eval_count/eval_count
    chunks, error = drain(ollama.stream(MSGS, "llama3.2", Options()))
    assert error is None
    assert chunks[-1].usage == Usage(prompt_tokens=None, completion_tokens=None)


def test_reported_model_is_passed_on(ollama, ollama_server) -> None:
    ollama_server.report_model = "llama3.2:3b-instruct-q4_K_M"
    chunks, _ = drain(ollama.stream(MSGS, "llama3.2", Options()))
    assert [c.model for c in chunks if c.model] == ["llama3.2:3b-instruct-q4_K_M"]


# ----------------------------------------------------------------------------- errors


def test_unknown_model_is_not_found(ollama) -> None:
    _, error = drain(ollama.stream(MSGS, "no-such-model", Options()))
    assert isinstance(error, errors.NotFound)
    assert "model 'no-such-model' not found" in error.message
    assert error.message.endswith("(%llm pull ollama:no-such-model)")  # the fix, ready to run
    assert error.status == 404


def test_stall_before_any_text_is_a_timeout(ollama, ollama_server) -> None:
    ollama_server.stall_after = 0
    chunks, error = drain(ollama.stream(MSGS, "llama3.2", Options(read_timeout=0.5)))
    assert chunks == []
    assert isinstance(error, errors.TimedOut)
    assert error.retryable


# ----------------------------------------------------------------------------- cancellation


def test_provider_works_again_after_a_cancel(ollama, ollama_server) -> None:
    ollama_server.delay = 60
    token = CancelToken()
    threading.Timer(0.1, token.cancel).start()
    _, error = drain(ollama.stream(MSGS, "llama3.2", Options(), token))
    assert isinstance(error, errors.Cancelled)
    ollama_server.delay = 0
    chunks, error = drain(ollama.stream(MSGS, "llama3.2", Options(), CancelToken()))
    assert error is None and chunks[-1].finish_reason == "stop"


# ----------------------------------------------------------------------------- listing, health


def test_list_models(ollama) -> None:
    models = {m.model: m for m in ollama.list_models()}
    assert set(models) == {"llama3.2:latest", "qwen2.5:0.5b"}
    llama = models["llama3.2:latest"]
    assert llama.provider == "ollama"
    assert llama.size_bytes == 2019393189
    assert llama.modified == "2025-05-04T17:37:44.706015396-07:00"
    assert llama.details["parameter_size"] == "3.2B"
    assert llama.details["family"] == "llama"


# ----------------------------------------------------------------------------- model management


def test_show(ollama) -> None:
    info = ollama.show("llama3.2")
    assert info["details"]["family"] == "llama"
    assert info["model_info"]["llama.context_length"] == 131072


def test_show_unknown_model(ollama) -> None:
    with pytest.raises(errors.NotFound) as err:
        ollama.show("nope")
    # Ollama's words, then the command that fixes it, as a chat row gives them.
    assert err.value.message == "ollama: HTTP 404: model 'nope' not found (%llm pull ollama:nope)"
    assert err.value.status == 404


def test_pull_yields_progress_then_the_model_is_there(ollama, ollama_server) -> None:
    progress = list(ollama.pull("smollm2:135m"))
    assert progress[0] == {"status": "pulling manifest"}
    assert progress[-1] == {"status": "success"}
    layers = [p for p in progress if "digest" in p]
    assert layers and all(p["status"].startswith("pulling ") for p in layers)
    assert any(p.get("completed") == p["total"] for p in layers)
    assert ollama_server.requests[-1].body == {"model": "smollm2:135m", "stream": True}
    assert "smollm2:135m" in {m.model for m in ollama.list_models()}


def test_pull_of_unknown_model_raises_with_server_text(ollama) -> None:
    pulled = ollama.pull("no-such/model")
    assert next(pulled) == {"status": "pulling manifest"}
    with pytest.raises(errors.ProviderError, match="pull model manifest: file does not exist"):
        next(pulled)


class ScriptedPull(TestServer):
    """/api/pull answering with `script`: (seconds of silence, then this progress object)."""

    def __init__(self) -> None:
        super().__init__()
        self.script: list[tuple[float, dict[str, Any]]] = []
        self.routes[("POST", "/api/pull")] = self._pull

    def _pull(self, ex: Exchange) -> None:
        ex.start_stream("application/x-ndjson")
        for pause, progress in self.script:
            ex.sleep(pause)
            ex.write(json.dumps(progress).encode() + b"\n")
        ex.end_stream()


LAYER = {"status": "pulling 0123456789ab", "digest": "sha256:0123456789ab", "total": 1000}


@pytest.fixture
def scripted(monkeypatch) -> Iterator[tuple[ScriptedPull, OllamaProvider]]:
    monkeypatch.setattr(ollama_module, "PULL_STALL_S", 0.3)
    with (
        ScriptedPull() as server,
        OllamaProvider(name="ollama", base_url=server.url, api_key=None) as provider,
    ):
        yield server, provider


def test_a_pull_without_progress_stops_with_a_clear_timeout(scripted) -> None:
    server, provider = scripted
    server.script = [(0, {"status": "pulling manifest"}), (30, LAYER)]
    started = time.monotonic()
    with pytest.raises(errors.TimedOut) as err:
        list(provider.pull("smollm2:135m"))
    assert time.monotonic() - started < 5  # not the 600 s read timeout
    assert err.value.message == (
        "ollama: no progress for 0.3 s (last status: 'pulling manifest'); "
        "pull stopped, run it again to resume"
    )


def test_verifying_may_be_quiet_longer_than_the_stall_limit(scripted) -> None:
    # Ollama hashes every blob after the download and says nothing until it is done.
    server, provider = scripted
    server.script = [
        (0, {"status": "pulling manifest"}),
        (0, {**LAYER, "completed": 1000}),
        (0, {"status": "verifying sha256 digest"}),
        (1.0, {"status": "writing manifest"}),
        (0, {"status": "success"}),
    ]
    assert [p["status"] for p in provider.pull("smollm2:135m")][-1] == "success"


def test_a_cancelled_pull_is_cancelled_not_stalled(scripted, monkeypatch) -> None:
    monkeypatch.setattr(ollama_module, "PULL_STALL_S", 60.0)
    server, provider = scripted
    server.script = [(0, {"status": "pulling manifest"}), (30, LAYER)]
    token = CancelToken()
    threading.Timer(0.2, token.cancel).start()
    started = time.monotonic()
    with pytest.raises(errors.Cancelled):
        list(provider.pull("smollm2:135m", cancel=token))
    assert time.monotonic() - started < 5


def test_delete(ollama, ollama_server) -> None:
    ollama.delete("qwen2.5:0.5b")
    request = ollama_server.requests[-1]
    assert (request.method, request.path, request.body) == (
        "DELETE",
        "/api/delete",
        {"model": "qwen2.5:0.5b"},
    )
    assert {m.model for m in ollama.list_models()} == {"llama3.2:latest"}
    with pytest.raises(errors.NotFound, match="model 'qwen2.5:0.5b' not found"):
        ollama.delete("qwen2.5:0.5b")


def test_running(ollama) -> None:
    assert ollama.running() == []
    drain(ollama.stream(MSGS, "llama3.2", Options()))
    (running,) = ollama.running()
    assert running["model"] == "llama3.2:latest"
    assert running["size_vram"] == 2019393189
