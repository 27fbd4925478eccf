"""What every HTTP provider (OpenAI through the SDK, Mistral, Ollama, Anthropic) must do
alike, each checked against the loopback server of its own protocol on a real socket: errors
become the right class with the server's words, faults mid-stream keep what arrived, cancelling
is prompt, keys never show. What only one protocol does stays in that provider's own test file."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from provider_checks import KEY, KINDS, MSGS, PLAIN_KEY, Contract, contract, drain, text_of

from llm_magic import errors
from llm_magic.providers._http import KeyedProvider
from llm_magic.providers.base import CancelToken, Message, Options


@pytest.fixture(params=KINDS)
def case(request: pytest.FixtureRequest) -> Contract:
    """One provider kind with its server (only that server is started and reset)."""
    kind = request.param
    return contract(kind, request.getfixturevalue(f"{kind}_server"))


@pytest.fixture
def provider(case: Contract) -> Iterator[KeyedProvider]:
    with case.configured() as configured:
        yield configured


def ask(
    provider: KeyedProvider,
    case: Contract,
    options: Options | None = None,
    token: CancelToken | None = None,
):
    """Drain one answer to MSGS from the case's model."""
    return drain(provider.stream(MSGS, case.model, options or Options(), token))


# ----------------------------------------------------------------------------- error statuses


@pytest.mark.parametrize(
    ("case", "status", "cls", "words"),
    [
        # the server's whole message, its runs of white space folded
        ("openai", 400, errors.StatusError, "Invalid request."),
        ("openai", 401, errors.AuthFailed, "Incorrect API key provided."),
        ("openai", 403, errors.AuthFailed, "You are not allowed to sample from this model."),
        (
            "openai",
            404,
            errors.NotFound,
            "The model `gpt-4o-mini` does not exist or you do not have access to it.",
        ),
        ("openai", 408, errors.StatusError, "Request timed out."),
        ("openai", 409, errors.StatusError, "Conflict."),
        (
            "openai",
            429,
            errors.RateLimited,
            "Rate limit reached for requests. Please try again later.",
        ),
        (
            "openai",
            500,
            errors.ServerFailed,
            "The server had an error while processing your request. Sorry about that!",
        ),
        (
            "openai",
            503,
            errors.ServerFailed,
            "The engine is currently overloaded, please try again later.",
        ),
        # Mistral's error bodies come in several shapes; each must give one readable line
        ("mistral", 400, errors.StatusError, "Invalid model: mistral-small-latest"),
        ("mistral", 401, errors.AuthFailed, "Unauthorized"),  # {"message", "request_id"}
        ("mistral", 422, errors.StatusError, "body: Value error (value_error)"),  # {detail: []}
        ("mistral", 429, errors.RateLimited, "Rate limit exceeded"),
        ("mistral", 500, errors.ServerFailed, "Internal server error"),
        ("ollama", 400, errors.StatusError, "invalid request"),
        ("ollama", 404, errors.NotFound, "model 'llama3.2' not found (%llm pull ollama:llama3.2)"),
        ("ollama", 429, errors.RateLimited, "too many requests"),
        ("ollama", 500, errors.ServerFailed, "an error was encountered while running the model"),
        (
            "ollama",
            503,
            errors.ServerFailed,
            "server busy, please try again. maximum pending requests exceeded",
        ),
        # {"type": "error", "error": {"type", "message"}}; 529 is Anthropic's overload
        ("anthropic", 400, errors.StatusError, "Your request was malformed."),
        ("anthropic", 401, errors.AuthFailed, "invalid x-api-key"),
        (
            "anthropic",
            403,
            errors.AuthFailed,
            "Your API key does not have permission to use the specified resource.",
        ),
        ("anthropic", 404, errors.NotFound, "model: claude-haiku-4-5"),
        ("anthropic", 429, errors.RateLimited, "Number of requests has exceeded your rate limit."),
        ("anthropic", 500, errors.ServerFailed, "Internal server error"),
        ("anthropic", 529, errors.ServerFailed, "Overloaded"),
    ],
    indirect=["case"],
)
def test_error_status_maps_to_class_with_server_message(provider, case, status, cls, words) -> None:
    case.server.status = status
    chunks, error = ask(provider, case)
    assert chunks == []
    assert type(error) is cls
    assert error.status == status
    assert error.message == f"{case.kind}: HTTP {status}: {words}"
    assert error.retryable == (status in (408, 409, 429, 500, 503, 529))
    assert len(case.server.requests) == 1  # no retries of its own: the runner retries


def test_retry_after_is_read(provider, case) -> None:
    case.server.status = 429
    case.server.retry_after = 2.5
    _, error = ask(provider, case)
    assert isinstance(error, errors.RateLimited)
    assert error.retry_after == 2.5
    assert error.retryable


# ----------------------------------------------------------------------------- transport faults


def test_connection_refused(case, refused_url) -> None:
    # the URL as a user would write it for this kind (OpenAI-style ones end in /v1)
    with case.open(name="vllm", base_url=refused_url + case.server.url_suffix) as provider:
        _, error = ask(provider, case)
    assert isinstance(error, errors.ConnectFailed)
    assert error.retryable
    assert error.message.startswith("vllm: ")


def test_no_first_byte_within_read_timeout(provider, case) -> None:
    case.server.delay = 5
    chunks, error = ask(provider, case, Options(read_timeout=0.5))
    assert chunks == []
    assert isinstance(error, errors.TimedOut)
    assert "0.5 s" in error.message
    assert len(case.server.requests) == 1


@pytest.mark.parametrize(
    ("fault", "words"),
    [
        ("stall_after", "no data for 0.5 s (read timeout)"),  # the socket stays open, silent
        ("cut_after", "peer closed connection"),
        ("malformed_after", "{not json"),
        ("error_after", None),  # the protocol's own failure: the case's stream_error
    ],
)
def test_fault_after_text_breaks_the_stream_keeping_the_text(provider, case, fault, words) -> None:
    setattr(case.server, fault, 2)
    chunks, error = ask(provider, case, Options(read_timeout=0.5))
    assert text_of(chunks) == "Echo from "
    assert isinstance(error, errors.StreamBroken)
    assert not error.retryable  # part of the answer is already out: a retry would repeat it
    assert (words or case.stream_error) in error.message


def test_cut_before_any_text_is_retryable(provider, case) -> None:
    case.server.cut_after = 0
    chunks, error = ask(provider, case)
    assert chunks == list(case.head)
    assert isinstance(error, errors.TransportError)
    assert error.retryable


# ----------------------------------------------------------------------------- bad answers


@pytest.mark.parametrize(
    ("case", "shown"),
    [
        ("openai", "malformed event: '{not json'"),
        ("mistral", "malformed event: '{not json'"),
        ("ollama", "malformed line from Ollama: '{not json'"),  # NDJSON has lines, not events
        ("anthropic", "malformed event: '{not json'"),
    ],
    indirect=["case"],
)
def test_malformed_event_is_bad_response_quoting_it(provider, case, shown) -> None:
    case.server.malformed_after = 0
    chunks, error = ask(provider, case)
    assert chunks == list(case.head)
    assert type(error) is errors.BadResponse
    assert error.message == f"{case.kind}: {shown}"


@pytest.mark.parametrize(
    ("case", "shown", "with_usage", "cls"),
    [
        ("openai", "The model produced invalid content.", False, errors.ProviderError),
        # a chunk with finish_reason "error" carries no words of the server's, but the usage
        (
            "mistral",
            "the server ended the answer with finish_reason 'error'",
            True,
            errors.ProviderError,
        ),
        ("ollama", "The model produced invalid content.", False, errors.ProviderError),
        # the event's error.type is overloaded_error: the status the docs give it, retryable
        ("anthropic", "HTTP 529: The model produced invalid content.", False, errors.ServerFailed),
    ],
    indirect=["case"],
)
def test_error_event_before_text(provider, case, shown, with_usage, cls) -> None:
    case.server.error_after = 0
    case.server.error_message = "The model produced invalid content."
    chunks, error = ask(provider, case)
    if with_usage:
        last = chunks.pop()
        assert (last.text, last.usage is None) == ("", False)
    assert chunks == list(case.head)
    assert type(error) is cls
    assert error.message == f"{case.kind}: {shown}"


def test_non_stream_errors(provider, case) -> None:
    case.server.malformed_after = 0  # a 200 whose body is not JSON
    _, error = ask(provider, case, Options(stream=False))
    assert isinstance(error, errors.BadResponse)
    case.server.malformed_after = None
    case.server.error_after = 0  # the server fails while it collects the answer
    case.server.error_message = "model overloaded"
    _, error = ask(provider, case, Options(stream=False))
    assert isinstance(error, errors.ServerFailed)
    assert error.message == f"{case.kind}: HTTP 500: model overloaded"
    case.server.error_after = None
    case.server.delay = 5
    _, error = ask(provider, case, Options(stream=False, read_timeout=0.5))
    assert isinstance(error, errors.TimedOut)


# ----------------------------------------------------------------------------- cancellation


def test_cancel_closes_a_stalled_stream(provider, case) -> None:
    case.server.stall_after = 1
    token = CancelToken()
    stream = provider.stream(MSGS, case.model, Options(read_timeout=60), token)
    for expected in case.head:
        assert next(stream) == expected
    assert next(stream).text == "Echo "
    timer = threading.Timer(0.2, token.cancel)
    start = time.monotonic()
    timer.start()
    chunks, error = drain(stream)
    elapsed = time.monotonic() - start
    timer.join()
    assert chunks == []
    assert isinstance(error, errors.Cancelled)
    assert elapsed < 10  # far below the 60 s read timeout: the blocked read was broken


def test_cancel_while_waiting_for_the_first_byte(provider, case) -> None:
    case.server.delay = 60
    token = CancelToken()
    timer = threading.Timer(0.2, token.cancel)
    start = time.monotonic()
    timer.start()
    chunks, error = ask(provider, case, Options(read_timeout=60), token)
    timer.join()
    assert chunks == []
    assert isinstance(error, errors.Cancelled)
    assert time.monotonic() - start < 10


def test_cancelled_token_sends_nothing(provider, case) -> None:
    token = CancelToken()
    token.cancel()
    _, error = ask(provider, case, Options(), token)
    assert isinstance(error, errors.Cancelled)
    assert case.server.requests == []


# ----------------------------------------------------------------------------- keys


@pytest.mark.parametrize(
    ("case", "status", "cls", "echo", "kept"),
    [
        (
            "openai",
            401,
            errors.AuthFailed,
            "Incorrect API key provided: {key}.",
            "Incorrect API key provided",
        ),
        ("mistral", 401, errors.AuthFailed, "Key {key} is revoked", "is revoked"),
        # an authenticating proxy in front of Ollama that fails and quotes the token
        (
            "ollama",
            500,
            errors.ServerFailed,
            "upstream rejected token {key}",
            "upstream rejected token",
        ),
        ("anthropic", 401, errors.AuthFailed, "invalid x-api-key: {key}", "invalid x-api-key"),
    ],
    indirect=["case"],
)
def test_key_never_in_repr_or_errors(case, status, cls, echo, kept) -> None:
    case.server.api_key = PLAIN_KEY
    with case.open(name="work", api_key=PLAIN_KEY, key_env="WORK_LLM_KEY") as provider:
        assert PLAIN_KEY not in repr(provider)
        chunks, error = ask(provider, case)
        assert error is None and chunks
        assert case.sent_key(case.server.requests[0]) == PLAIN_KEY
        # a server that echoes the key in its error must not get it into our message
        case.server.status = status
        case.server.error_message = echo.format(key=PLAIN_KEY)
        _, error = ask(provider, case)
        assert isinstance(error, cls)
        assert kept in error.message
        assert PLAIN_KEY not in error.message and PLAIN_KEY not in repr(error)
        assert PLAIN_KEY not in repr(provider.health())


@pytest.mark.parametrize(
    ("case", "words"),
    [
        ("openai", "Incorrect API key"),
        ("mistral", "Unauthorized"),
        ("ollama", "unauthorized"),
        ("anthropic", "invalid x-api-key"),
    ],
    indirect=["case"],
)
def test_wrong_key_is_auth_failed_without_the_key(case, words) -> None:
    case.server.api_key = "the-right-one"
    with case.open(api_key=KEY) as provider:
        _, error = ask(provider, case)
    assert isinstance(error, errors.AuthFailed)
    assert words in error.message
    assert KEY not in error.message and KEY not in repr(error)


def test_missing_required_key_sends_nothing(case) -> None:
    with case.open(name="work", key_env="WORK_LLM_KEY") as provider:
        _, error = ask(provider, case)
        assert type(error) is errors.ProviderError
        assert error.message == "work: no API key: set WORK_LLM_KEY"
        assert case.server.requests == []
        with pytest.raises(errors.ProviderError, match="no API key: set WORK_LLM_KEY"):
            provider.list_models()
        assert case.server.requests == []
        # Reachable or not, health names the missing key (Ollama's /api/version needs none).
        assert provider.health().error == "no API key: set WORK_LLM_KEY"
    assert all(r.path != case.chat_path for r in case.server.requests)


# ----------------------------------------------------------------------------- sharing


def test_one_provider_serves_many_threads(provider, case) -> None:
    case.server.token_delay = 0.01
    results: dict[int, str] = {}
    failures: list[BaseException] = []

    def one(i: int) -> None:
        try:
            chunks, error = drain(
                provider.stream([Message("user", f"q{i}")], case.model, Options())
            )
            assert error is None
            results[i] = text_of(chunks)
        except BaseException as exc:  # reported below, in the test's thread
            failures.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert results == {i: f"Echo from {case.model}: q{i}" for i in range(8)}
    assert case.server.max_in_flight > 1  # they really ran at the same time


def test_connections_are_reused(provider, case) -> None:
    for _ in range(3):
        assert ask(provider, case)[1] is None
    assert case.server.connection_count == 1


# ----------------------------------------------------------------------------- health


def test_health(provider, case) -> None:
    health = provider.health()
    assert health.reachable and health.error is None
    assert health.rtt_s is not None and health.rtt_s > 0
    assert health.base_url == case.server.url
    assert health.version == case.version
    assert case.server.requests[-1].path == case.health_path


def test_health_of_nothing_listening(case, refused_url) -> None:
    with case.open(base_url=refused_url + case.server.url_suffix) as provider:
        health = provider.health()
    assert not health.reachable
    assert health.rtt_s is None
    assert "cannot connect" in health.error
