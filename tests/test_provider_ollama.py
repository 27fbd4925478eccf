"""OllamaProvider against a loopback server speaking Ollama's native API on a real socket."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from provider_checks import KEY, MSGS, PLAIN_KEY, REPLY, drain, text_of

from llm_magic import errors
from llm_magic.providers import get_provider
from llm_magic.providers.base import CancelToken, Chunk, Message, Options, Usage
from llm_magic.providers.ollama import OllamaProvider, parse_ollama_host


@pytest.fixture
def ollama(ollama_server) -> Iterator[OllamaProvider]:
    with OllamaProvider(name="ollama", base_url=ollama_server.url, api_key=None) as provider:
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


@pytest.mark.parametrize(
    ("status", "cls", "words"),
    [
        (400, errors.StatusError, "invalid request"),
        (404, errors.NotFound, "model 'llama3.2' not found"),
        (429, errors.RateLimited, "too many requests"),
        (500, errors.ServerFailed, "an error was encountered while running the model"),
        (503, errors.ServerFailed, "server busy"),
    ],
)
def test_error_status_maps_to_class_with_server_message(
    ollama, ollama_server, status, cls, words
) -> None:
    ollama_server.status = status
    chunks, error = drain(ollama.stream(MSGS, "llama3.2", Options()))
    assert chunks == []
    assert type(error) is cls
    assert error.status == status
    assert words in error.message
    assert error.message.startswith(f"ollama: HTTP {status}: ")
    assert error.retryable == (status in (429, 500, 503))


def test_unknown_model_is_not_found(ollama) -> None:
    _, error = drain(ollama.stream(MSGS, "no-such-model", Options()))
    assert isinstance(error, errors.NotFound)
    assert "model 'no-such-model' not found" in error.message


def test_retry_after_is_read(ollama, ollama_server) -> None:
    ollama_server.status = 429
    ollama_server.retry_after = 7
    _, error = drain(ollama.stream(MSGS, "llama3.2", Options()))
    assert isinstance(error, errors.RateLimited)
    assert error.retry_after == 7.0


def test_connection_refused(refused_url) -> None:
    with OllamaProvider(name="ollama", base_url=refused_url, api_key=None) as provider:
        _, error = drain(provider.stream(MSGS, "llama3.2", Options()))
    assert isinstance(error, errors.ConnectFailed)
    assert error.retryable
    assert error.message.startswith("ollama: ")


def test_no_first_byte_within_read_timeout(ollama, ollama_server) -> None:
    ollama_server.delay = 5
    chunks, error = drain(ollama.stream(MSGS, "llama3.2", Options(read_timeout=0.5)))
    assert chunks == []
    assert isinstance(error, errors.TimedOut)
    assert "0.5 s" in error.message


def test_stall_mid_stream_is_broken_after_partial_text(ollama, ollama_server) -> None:
    ollama_server.stall_after = 2
    chunks, error = drain(ollama.stream(MSGS, "llama3.2", Options(read_timeout=0.5)))
    assert text_of(chunks) == "Echo from "
    assert isinstance(error, errors.StreamBroken)
    assert "read timeout" in error.message


def test_stall_before_any_text_is_a_timeout(ollama, ollama_server) -> None:
    ollama_server.stall_after = 0
    chunks, error = drain(ollama.stream(MSGS, "llama3.2", Options(read_timeout=0.5)))
    assert chunks == []
    assert isinstance(error, errors.TimedOut)
    assert error.retryable


def test_cut_mid_stream_keeps_partial_chunks(ollama, ollama_server) -> None:
    ollama_server.cut_after = 3
    chunks, error = drain(ollama.stream(MSGS, "llama3.2", Options()))
    assert text_of(chunks) == "Echo from llama3.2: "
    assert isinstance(error, errors.StreamBroken)
    assert not error.retryable


def test_cut_before_any_text_is_retryable(ollama, ollama_server) -> None:
    ollama_server.cut_after = 0
    chunks, error = drain(ollama.stream(MSGS, "llama3.2", Options()))
    assert chunks == []
    assert isinstance(error, errors.TransportError)
    assert error.retryable


def test_malformed_line_is_bad_response_quoting_it(ollama, ollama_server) -> None:
    ollama_server.malformed_after = 0
    chunks, error = drain(ollama.stream(MSGS, "llama3.2", Options()))
    assert chunks == []
    assert type(error) is errors.BadResponse
    assert "Ollama" in error.message
    assert "{not json" in error.message


def test_malformed_line_after_text_is_a_broken_stream(ollama, ollama_server) -> None:
    ollama_server.malformed_after = 2
    chunks, error = drain(ollama.stream(MSGS, "llama3.2", Options()))
    assert text_of(chunks) == "Echo from "
    assert isinstance(error, errors.StreamBroken)
    assert "{not json" in error.message


def test_error_line_after_200_before_text(ollama, ollama_server) -> None:
    ollama_server.error_after = 0
    ollama_server.error_message = "CUDA error: out of memory"
    chunks, error = drain(ollama.stream(MSGS, "llama3.2", Options()))
    assert chunks == []
    assert type(error) is errors.ProviderError
    assert error.message == "ollama: CUDA error: out of memory"


def test_error_line_mid_stream_is_broken_with_server_text(ollama, ollama_server) -> None:
    ollama_server.error_after = 2
    chunks, error = drain(ollama.stream(MSGS, "llama3.2", Options()))
    assert text_of(chunks) == "Echo from "
    assert isinstance(error, errors.StreamBroken)
    assert "an error was encountered while running the model" in error.message


def test_non_stream_errors(ollama, ollama_server) -> None:
    ollama_server.malformed_after = 0  # a 200 whose body is not JSON
    _, error = drain(ollama.stream(MSGS, "llama3.2", Options(stream=False)))
    assert isinstance(error, errors.BadResponse)
    ollama_server.reset()
    ollama_server.error_after = 0  # the server fails while collecting: an error status
    _, error = drain(ollama.stream(MSGS, "llama3.2", Options(stream=False)))
    assert isinstance(error, errors.ServerFailed)


# ----------------------------------------------------------------------------- cancellation


def test_cancel_closes_a_stalled_stream(ollama, ollama_server) -> None:
    ollama_server.stall_after = 1
    token = CancelToken()
    stream = ollama.stream(MSGS, "llama3.2", Options(read_timeout=60), token)
    first = next(stream)
    assert first.text == "Echo "
    timer = threading.Timer(0.2, token.cancel)
    start = time.monotonic()
    timer.start()
    chunks, error = drain(stream)
    elapsed = time.monotonic() - start
    timer.join()
    assert chunks == []
    assert isinstance(error, errors.Cancelled)
    assert elapsed < 10  # far below the 60 s read timeout: the blocked read was broken


def test_cancel_while_waiting_for_the_first_byte(ollama, ollama_server) -> None:
    ollama_server.delay = 60
    token = CancelToken()
    timer = threading.Timer(0.2, token.cancel)
    start = time.monotonic()
    timer.start()
    chunks, error = drain(ollama.stream(MSGS, "llama3.2", Options(read_timeout=60), token))
    timer.join()
    assert chunks == []
    assert isinstance(error, errors.Cancelled)
    assert time.monotonic() - start < 10


def test_cancelled_token_sends_nothing(ollama, ollama_server) -> None:
    token = CancelToken()
    token.cancel()
    _, error = drain(ollama.stream(MSGS, "llama3.2", Options(), token))
    assert isinstance(error, errors.Cancelled)
    assert ollama_server.requests == []


def test_provider_works_again_after_a_cancel(ollama, ollama_server) -> None:
    ollama_server.delay = 60
    token = CancelToken()
    threading.Timer(0.1, token.cancel).start()
    _, error = drain(ollama.stream(MSGS, "llama3.2", Options(), token))
    assert isinstance(error, errors.Cancelled)
    ollama_server.delay = 0
    chunks, error = drain(ollama.stream(MSGS, "llama3.2", Options(), CancelToken()))
    assert error is None and chunks[-1].finish_reason == "stop"


# ----------------------------------------------------------------------------- keys


def test_key_is_sent_as_bearer_and_never_shown(ollama_server) -> None:
    ollama_server.api_key = PLAIN_KEY  # an authenticating proxy in front of Ollama
    with OllamaProvider(name="ollama", base_url=ollama_server.url, api_key=PLAIN_KEY) as p:
        assert PLAIN_KEY not in repr(p)
        chunks, error = drain(p.stream(MSGS, "llama3.2", Options()))
        assert error is None and chunks
        assert ollama_server.requests[0].headers["authorization"] == f"Bearer {PLAIN_KEY}"
        # a server that echoes the key in its error must not get it into our message
        ollama_server.status = 500
        ollama_server.error_message = f"upstream rejected token {PLAIN_KEY}"
        _, error = drain(p.stream(MSGS, "llama3.2", Options()))
        assert isinstance(error, errors.ServerFailed)
        assert "upstream rejected token" in error.message
        assert PLAIN_KEY not in error.message and PLAIN_KEY not in repr(error)


def test_wrong_key_is_auth_failed_without_the_key(ollama_server) -> None:
    ollama_server.api_key = "the-right-one"
    with OllamaProvider(name="ollama", base_url=ollama_server.url, api_key=KEY) as p:
        _, error = drain(p.stream(MSGS, "llama3.2", Options()))
    assert isinstance(error, errors.AuthFailed)
    assert "unauthorized" in error.message
    assert KEY not in error.message


def test_missing_required_key_sends_nothing(ollama_server) -> None:
    with OllamaProvider(
        name="ollama", base_url=ollama_server.url, api_key=None, key_env="OLLAMA_API_KEY"
    ) as p:
        _, error = drain(p.stream(MSGS, "llama3.2", Options()))
    assert type(error) is errors.ProviderError
    assert error.message == "ollama: no API key: set OLLAMA_API_KEY"
    assert ollama_server.requests == []


# ----------------------------------------------------------------------------- sharing


def test_one_provider_serves_many_threads(ollama, ollama_server) -> None:
    ollama_server.token_delay = 0.01
    results: dict[int, str] = {}
    failures: list[BaseException] = []

    def ask(i: int) -> None:
        try:
            chunks, error = drain(ollama.stream([Message("user", f"q{i}")], "llama3.2", Options()))
            assert error is None
            results[i] = text_of(chunks)
        except BaseException as exc:  # reported below, in the test's thread
            failures.append(exc)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert results == {i: f"Echo from llama3.2: q{i}" for i in range(8)}
    assert ollama_server.max_in_flight > 1  # they really ran at the same time


def test_connections_are_reused(ollama, ollama_server) -> None:
    for _ in range(3):
        assert drain(ollama.stream(MSGS, "llama3.2", Options()))[1] is None
    assert ollama_server.connection_count == 1


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


def test_health(ollama, ollama_server) -> None:
    health = ollama.health()
    assert health.reachable and health.error is None
    assert health.version == "0.12.6"
    assert health.rtt_s is not None and health.rtt_s > 0
    assert health.base_url == ollama_server.root_url
    assert ollama_server.requests[-1].path == "/api/version"


def test_health_of_nothing_listening(refused_url) -> None:
    with OllamaProvider(name="ollama", base_url=refused_url, api_key=None) as provider:
        health = provider.health()
    assert not health.reachable
    assert health.rtt_s is None
    assert "cannot connect" in health.error


# ----------------------------------------------------------------------------- model management


def test_show(ollama) -> None:
    info = ollama.show("llama3.2")
    assert info["details"]["family"] == "llama"
    assert info["model_info"]["llama.context_length"] == 131072


def test_show_unknown_model(ollama) -> None:
    with pytest.raises(errors.NotFound, match="model 'nope' not found"):
        ollama.show("nope")


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
