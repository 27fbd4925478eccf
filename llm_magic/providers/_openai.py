"""OpenAI and every OpenAI-compatible server, through the official `openai` SDK.

The same class serves `openai` and the compatible presets (vllm, groq, llamacpp, ...): only the
name, base URL and key differ. Wire facts that shape it (shared/protocols/openai.md): usage in a
stream needs `stream_options.include_usage` and then comes in an extra chunk whose `choices`
is empty; an `{"error": ...}` event can arrive after a 200; the SDK retries and waits 10
minutes by default, so its retries are off (the runner retries) and timeouts are set here.

The SDK builds and sends the request (auth, headers, timeouts) and raises for error statuses.
The body is read through `with_raw_response` by `_sse_chat`, which Mistral shares: the SDK's
own stream closes the connection right after `data: [DONE]` without reading the end of the
chunked body, so every request would pay a new TCP (and TLS) handshake and skew TTFT.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from typing import Any

import httpx2

from .. import errors
from .._redaction import NO_KEY
from ..errors import ProviderError
from ._batch_api import BATCH_TIMEOUT, OpenAIBatches
from ._embeddings import data_list, read_json
from ._http import (
    ADMIN_TIMEOUT,
    HEALTH_TIMEOUT,
    Exchange,
    KeyedProvider,
    timeout_for,
    unix_time,
)
from ._http_errors import error_text, retry_after
from ._image_parts import openai_message
from ._sockets import make_client
from ._sse_chat import chat_chunks, whole_chunk
from ._structured import openai_response_format
from ._tool_wire import is_tool_turn, openai_tool_turn, openai_tools
from .base import (
    CancelToken,
    Chunk,
    Embeddings,
    Health,
    Message,
    ModelInfo,
    Options,
    ProviderFacts,
)

__all__ = ["DEFAULT_BASE_URL", "OpenAIProvider"]

DEFAULT_BASE_URL = "https://api.openai.com/v1"
# Where compatible servers put the context window in /models entries.
_CONTEXT_KEYS = ("context_length", "context_window", "max_context_length", "max_model_len")
_DEFAULT_TIMEOUT = httpx2.Timeout(120.0, connect=5.0)


def _sdk_error(exchange: Exchange, exc: BaseException) -> ProviderError:
    """The llm_magic error for what the SDK raised while sending a request."""
    import openai  # loaded by the time a request was sent: a dictionary lookup
    name = exchange.name
    if isinstance(exc, openai.APIStatusError):
        response = exc.response
        try:
            text = error_text(response.content, exc.message)
        except httpx2.HTTPError:
            text = exc.message
        return errors.status_error(
            response.status_code,
            text,
            provider=name,
            retry_after=retry_after(response.headers),
        )
    if isinstance(exc, openai.APIConnectionError):  # also APITimeoutError
        cause = exc.__cause__
        if isinstance(cause, (httpx2.HTTPError, httpx2.StreamError, OSError)):
            return exchange.mapped(cause)
        if isinstance(exc, openai.APITimeoutError):
            return exchange.error(errors.TimedOut, "timed out")
        return exchange.error(errors.ConnectFailed, exc.message)
    if isinstance(exc, (httpx2.HTTPError, httpx2.StreamError, OSError)):
        return exchange.mapped(exc)
    if isinstance(exc, openai.OpenAIError):
        return exchange.error(errors.ProviderError, str(exc))
    return exchange.error(errors.BadResponse, f"unexpected failure: {type(exc).__name__}: {exc}")


class OpenAIProvider(KeyedProvider, ProviderFacts):
    """An OpenAI-protocol endpoint. Thread-safe: the SDK client and its pool are shared."""

    server_label = "OpenAI-compatible"
    batch_wire = "openai"
    listing_path = "/models"
    admin_timeout_s = ADMIN_TIMEOUT.read
    base_url_hint = " (an OpenAI-compatible one usually ends in /v1)"
    takes_images = takes_image_urls = True  # image_url parts; a text-only model says no itself

    def __init__(
        self, *, name: str, base_url: str | None, api_key: str | None, key_env: str | None = None
    ) -> None:
        self.name = name
        self.base_url = (base_url or DEFAULT_BASE_URL).rstrip("/")
        self._key_env = key_env
        self._missing_key = api_key is None and key_env is not None
        # The SDK (half a second to import) loads when a provider is built, not when the class
        # is read for its facts (`%llm providers`, the panel's list, a run's plan).
        import openai

        self._client = openai.OpenAI(
            api_key=api_key or NO_KEY,  # the SDK refuses to start without a key
            base_url=self.base_url,
            max_retries=0,  # the runner retries; two policies must not stack
            timeout=_DEFAULT_TIMEOUT,
            http_client=make_client(
                name=name, base_url=self.base_url, secret=api_key, timeout=_DEFAULT_TIMEOUT
            ),
            **_openai_only_headers(name),
        )
        # The SDK works out its platform headers on first use (a few ms, cached for good): do
        # it now, while the provider is built, not inside the first request's timing.
        _ = self._client.default_headers

    def _exchange(self, timeouts: httpx2.Timeout, cancel: CancelToken | None = None) -> Exchange:
        return Exchange(self.name, timeouts, cancel)

    @staticmethod
    def _arguments(
        messages: list[Message], model: str, options: Options, provider: str = "openai"
    ) -> dict[str, Any]:
        """The request body; `provider` (the preset's name) picks the structured-output shape."""
        args: dict[str, Any] = {
            "model": model,
            "messages": [
                openai_tool_turn(m) if is_tool_turn(m) else openai_message(m) for m in messages
            ],
            "stream": options.stream,
        }
        # max_tokens rather than max_completion_tokens: compatible servers know only the former.
        for key, value in (
            ("temperature", options.temperature),
            ("top_p", options.top_p),
            ("max_tokens", options.max_tokens),
            ("seed", options.seed),
        ):
            if value is not None:
                args[key] = value
        if options.stop:
            args["stop"] = list(options.stop)
        if options.tools:
            args["tools"] = openai_tools(options.tools)
        if options.stream:
            args["stream_options"] = {"include_usage": True}
        if options.json_schema is not None:
            args["response_format"] = openai_response_format(options.json_schema, provider)
        return args

    def stream(
        self,
        messages: list[Message],
        model: str,
        options: Options,
        cancel: CancelToken | None = None,
    ) -> Iterator[Chunk]:
        self._require_key()
        body = self._arguments(messages, model, options, self.name)
        with self._exchange(timeout_for(options), cancel) as exchange:
            self._post(exchange, "/chat/completions", body, stream=options.stream)
            if options.stream:
                yield from chat_chunks(exchange)
            else:
                yield whole_chunk(exchange, exchange.body())

    def embed(
        self,
        texts: list[str],
        model: str,
        options: Options,
        cancel: CancelToken | None = None,
    ) -> Embeddings:
        """POST /embeddings: one vector per text. Floats asked for by name: the SDK would ask
        for base64, which not every compatible server speaks."""
        self._require_key()
        body = {"model": model, "input": list(texts), "encoding_format": "float"}
        with self._exchange(timeout_for(options), cancel) as exchange:
            self._post(exchange, "/embeddings", body, stream=True)  # read by us, bounded
            reply = read_json(exchange, "/embeddings")
        return data_list(reply, len(texts), self.name)

    def _post(self, exchange: Exchange, path: str, body: dict[str, Any], *, stream: bool) -> None:
        """POST `body` through the SDK's own `post` (its documented route for raw requests):
        auth, headers and error mapping as in create(), without re-validating a body we built
        to the spec ourselves, which is most of the SDK's per-call cost. `exchange` reads it."""
        post, timeout = self._client.post, exchange.timeouts
        response = exchange.call(
            lambda: post(
                path,
                cast_to=httpx2.Response,
                body=body,
                options={"timeout": timeout},
                stream=stream,
            ),
            lambda exc: _sdk_error(exchange, exc),
        )
        exchange.adopt(response)

    def _models_page(
        self, exchange: Exchange, timeout: httpx2.Timeout | float
    ) -> list[dict[str, Any]]:
        """The entries of GET /models. Read raw and parsed here, not by the SDK's models.list():
        an HTML page at the URL (a web UI, a proxy's login) must be one clear line, not the
        SDK's internal error."""
        response = exchange.call(
            lambda: self._client.get(
                self.listing_path, cast_to=httpx2.Response, options={"timeout": timeout}
            ),
            lambda exc: _sdk_error(exchange, exc),
        )
        body = response.content
        try:
            page = json.loads(body)
        except ValueError:
            shown = body[:60].decode("utf-8", "replace")
            raise exchange.error(
                errors.BadResponse, f"/models replied with something that is not JSON: {shown!r}"
            ) from None
        data = page.get("data", ()) if isinstance(page, dict) else ()
        if data is None:
            return []  # Ollama's /v1 says "data": null when it has no model
        if not isinstance(data, list):
            raise exchange.error(errors.BadResponse, '/models replied without a "data" list')
        return [entry for entry in data if isinstance(entry, dict)]

    def list_models(self) -> list[ModelInfo]:
        self._require_key()
        with self._exchange(ADMIN_TIMEOUT) as exchange:
            page = self._models_page(exchange, ADMIN_TIMEOUT)
        models = []
        for raw in page:
            if not raw.get("id"):
                continue
            created = raw.get("created")
            context = next((raw[k] for k in _CONTEXT_KEYS if isinstance(raw.get(k), int)), None)
            models.append(
                ModelInfo(
                    provider=self.name,
                    model=str(raw["id"]),
                    modified=unix_time(created),
                    context_length=context,
                    details={k: v for k, v in raw.items() if k in ("owned_by", "object")},
                )
            )
        return models

    def health(self) -> Health:
        reachable, rtt, error = True, None, None
        start = time.perf_counter()
        try:
            with self._exchange(httpx2.Timeout(HEALTH_TIMEOUT)) as exchange:
                self._models_page(exchange, HEALTH_TIMEOUT)
            rtt = time.perf_counter() - start
        except errors.TransportError as exc:
            reachable, error = False, exc.message
        except ProviderError as exc:  # it answered, but not well (401 without a key, ...)
            rtt, error = time.perf_counter() - start, exc.message
        error = self._key_problem() or error
        return Health(
            provider=self.name, base_url=self.base_url, reachable=reachable, rtt_s=rtt, error=error
        )

    @staticmethod
    def batch_line(custom_id: str, messages: list[Message], model: str, options: Options) -> bytes:
        """One batch input line, its body built as `stream` builds a request's."""
        body = OpenAIProvider._arguments(messages, model, options)
        return OpenAIBatches.line_for(custom_id, body)

    def batches(self) -> OpenAIBatches:
        """Its Batch API (/files + /batches), spoken through the same SDK client."""
        self._require_key()
        return OpenAIBatches(self.name, _SDKTransport(self), self._arguments)

    def close(self) -> None:
        """Close the pooled connections (the registry keeps providers for the whole session)."""
        self._client.close()


class _SDKTransport:
    """The batch calls through the SDK's client: its auth, headers and multipart encoding,
    our error mapping, the reply read raw."""

    def __init__(self, provider: OpenAIProvider) -> None:
        self._provider = provider
        self._client = provider._client

    def _send(self, send: Any, limit: int | None = None) -> bytes:
        with self._provider._exchange(BATCH_TIMEOUT) as exchange:
            response = exchange.call(send, lambda exc: _sdk_error(exchange, exc))
            exchange.adopt(response)
            return exchange.body(limit)

    def json(self, method: str, path: str, body: Any = None) -> Any:
        call = self._client.post if method == "POST" else self._client.get
        extra = {"body": body} if method == "POST" else {}
        options = {"timeout": BATCH_TIMEOUT}
        raw = self._send(
            lambda: call(path, cast_to=httpx2.Response, options=options, stream=True, **extra)
        )
        return _parsed(raw, path, self._provider.name)

    def upload(self, path: str, data: bytes, filename: str, fields: Mapping[str, str]) -> Any:
        files = self._client.files.with_raw_response
        raw = self._send(
            lambda: files.create(
                file=(filename, data, "application/jsonl"),
                purpose=fields.get("purpose", "batch"),  # type: ignore[arg-type]
                timeout=BATCH_TIMEOUT,
            ).http_response
        )
        return _parsed(raw, path, self._provider.name)

    def download(self, path: str, limit: int) -> bytes:
        return self._send(
            lambda: self._client.get(
                path, cast_to=httpx2.Response, options={"timeout": BATCH_TIMEOUT}, stream=True
            ),
            limit,
        )


def _parsed(raw: bytes, path: str, name: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        shown = raw[:60].decode("utf-8", "replace")
        raise errors.BadResponse(
            f"{path} replied with something that is not JSON: {shown!r}", provider=name
        ) from None


def _openai_only_headers(name: str) -> dict[str, object]:
    """OPENAI_ORG_ID / OPENAI_PROJECT_ID belong to OpenAI: never send them to another vendor."""
    import openai

    omit = getattr(openai, "omit", None)
    if name == "openai" or omit is None:
        return {}
    return {"organization": omit, "project": omit}
