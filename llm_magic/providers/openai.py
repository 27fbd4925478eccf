"""OpenAI and every OpenAI-compatible server, through the official `openai` SDK.

The same class serves `openai` and the compatible presets (vllm, groq, llamacpp, ...): only the
name, base URL and key differ. Wire facts that shape it (shared/protocols/openai.md): usage in a
stream needs `stream_options.include_usage` and then comes in an extra chunk whose `choices`
is empty; an `{"error": ...}` event can arrive after a 200; the SDK retries and waits 10
minutes by default, so retries are switched off (the runner retries) and timeouts set here.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any, TypeVar

import httpx2
import openai

from .. import errors
from ..errors import ProviderError
from ._http import (
    ADMIN_TIMEOUT,
    HEALTH_TIMEOUT,
    IOSlot,
    error_text,
    make_client,
    map_exception,
    retry_after,
    scrub,
    timeout_for,
)
from .base import CancelToken, Chunk, Health, Message, ModelInfo, Options, Usage

__all__ = ["DEFAULT_BASE_URL", "OpenAIProvider"]

DEFAULT_BASE_URL = "https://api.openai.com/v1"
# Local OpenAI-compatible servers want no key, but the SDK refuses to start without one.
_NO_KEY = "not-needed"
# Where compatible servers put the context window in /models entries.
_CONTEXT_KEYS = ("context_length", "context_window", "max_context_length", "max_model_len")

T = TypeVar("T")


class _Call:
    """The state of one request: its abortable socket, whether text has been handed out."""

    def __init__(self, provider: OpenAIProvider, cancel: CancelToken | None,
                 timeouts: httpx2.Timeout | None) -> None:
        self.provider = provider
        self.cancel = cancel
        self.timeouts = timeouts
        self.started = False
        self.slot = IOSlot()
        if cancel is not None:
            cancel.on_cancel(self.slot.abort)

    @property
    def cancelled(self) -> bool:
        return self.cancel is not None and self.cancel.cancelled

    def error(self, cls: type[ProviderError], message: str) -> ProviderError:
        message = scrub(message, self.provider._secret)
        if self.started:
            return errors.StreamBroken(f"stream broken: {message}", provider=self.provider.name)
        return cls(message, provider=self.provider.name)

    def run(self, fn: Callable[[], T]) -> T:
        """Call into the SDK with this request's socket watched, mapping what it raises."""
        if self.cancelled:
            raise errors.Cancelled("cancelled", provider=self.provider.name)
        try:
            with self.slot.active():
                return fn()
        except ProviderError:
            raise
        except (openai.OpenAIError, httpx2.HTTPError, httpx2.StreamError, ValueError,
                OSError) as exc:
            raise self.mapped(exc) from None

    def mapped(self, exc: BaseException) -> ProviderError:
        name, secret = self.provider.name, self.provider._secret
        if self.cancelled:
            return errors.Cancelled("cancelled", provider=name)
        if isinstance(exc, openai.APIStatusError):
            response = exc.response
            try:
                text = error_text(response.content, exc.message)
            except httpx2.HTTPError:
                text = exc.message
            return errors.status_error(response.status_code, scrub(text, secret), provider=name,
                                       retry_after=retry_after(response.headers))
        if isinstance(exc, openai.APIConnectionError):  # also APITimeoutError
            cause = exc.__cause__
            if isinstance(cause, (httpx2.HTTPError, httpx2.StreamError)):
                return map_exception(name, cause, started=self.started, cancelled=False,
                                     secret=secret, timeouts=self.timeouts)
            if isinstance(exc, openai.APITimeoutError):
                return self.error(errors.TimedOut, "timed out")
            return self.error(errors.ConnectFailed, exc.message)
        if isinstance(exc, openai.APIResponseValidationError):
            return self.error(errors.BadResponse, f"reply does not fit the schema: {exc.message}")
        if isinstance(exc, openai.APIError):  # an {"error": ...} event after the 200
            body = exc.body if isinstance(exc.body, dict) else {}
            code = body.get("code")
            if not self.started and isinstance(code, int) and 400 <= code < 600:
                # Some routers (OpenRouter) put the real status in the event: keep it retryable.
                return errors.status_error(code, scrub(exc.message, secret), provider=name)
            return self.error(errors.ProviderError, exc.message)
        if isinstance(exc, json.JSONDecodeError):
            doc = exc.doc if isinstance(exc.doc, str) else ""
            preview = doc[:60] + ("…" if len(doc) > 60 else "")
            return self.error(errors.BadResponse, f"malformed event in the reply: {preview!r}")
        if isinstance(exc, (httpx2.HTTPError, httpx2.StreamError, OSError)):
            return map_exception(name, exc, started=self.started, cancelled=False,
                                 secret=secret, timeouts=self.timeouts)
        return self.error(errors.BadResponse, f"unexpected reply: {type(exc).__name__}: {exc}")


def _usage(raw: Any) -> Usage | None:
    if raw is None:
        return None
    return Usage(prompt_tokens=getattr(raw, "prompt_tokens", None),
                 completion_tokens=getattr(raw, "completion_tokens", None))


class OpenAIProvider:
    """An OpenAI-protocol endpoint. Thread-safe: the SDK client and its pool are shared."""

    def __init__(self, *, name: str, base_url: str | None, api_key: str | None,
                 key_env: str | None = None) -> None:
        self.name = name
        self.base_url = (base_url or DEFAULT_BASE_URL).rstrip("/")
        self._key_env = key_env
        self._missing_key = api_key is None and key_env is not None
        self._secret = api_key
        self._client = openai.OpenAI(
            api_key=api_key or _NO_KEY,
            base_url=self.base_url,
            max_retries=0,  # the runner retries; two policies must not stack
            timeout=httpx2.Timeout(120.0, connect=5.0),
            http_client=make_client(timeout=httpx2.Timeout(120.0, connect=5.0)),
        )

    def __repr__(self) -> str:
        return f"OpenAIProvider(name={self.name!r}, base_url={self.base_url!r})"

    def _require_key(self) -> None:
        if self._missing_key:
            raise errors.ProviderError(f"no API key: set {self._key_env}", provider=self.name)

    def _arguments(self, messages: list[Message], model: str, options: Options) -> dict[str, Any]:
        args: dict[str, Any] = {
            "model": model,
            "messages": [m.to_dict() for m in messages],
            "timeout": timeout_for(options),
        }
        # max_tokens rather than max_completion_tokens: compatible servers know only the former.
        for key, value in (("temperature", options.temperature), ("top_p", options.top_p),
                           ("max_tokens", options.max_tokens), ("seed", options.seed)):
            if value is not None:
                args[key] = value
        if options.stop:
            args["stop"] = list(options.stop)
        return args

    def stream(self, messages: list[Message], model: str, options: Options,
               cancel: CancelToken | None = None) -> Iterator[Chunk]:
        self._require_key()
        call = _Call(self, cancel, timeout_for(options))
        args = self._arguments(messages, model, options)
        try:
            if not options.stream:
                completion = call.run(lambda: self._client.chat.completions.create(
                    stream=False, **args))
                yield self._whole(call, completion)
                return
            sdk_stream = call.run(lambda: self._client.chat.completions.create(
                stream=True, stream_options={"include_usage": True}, **args))
            try:
                yield from self._chunks(call, iter(sdk_stream))
            finally:
                sdk_stream.close()
        finally:
            call.slot.release()

    def _chunks(self, call: _Call, events: Iterator[Any]) -> Iterator[Chunk]:
        model_seen = finished = False
        end = object()
        while True:
            event = call.run(lambda: next(events, end))
            if event is end:
                break
            choices = getattr(event, "choices", None) or []  # [] on the final usage chunk
            choice = choices[0] if choices else None
            delta = getattr(choice, "delta", None)
            text = getattr(delta, "content", None) or ""
            finish = getattr(choice, "finish_reason", None) or None
            usage = _usage(getattr(event, "usage", None))
            reported = getattr(event, "model", None) if not model_seen else None
            model_seen = model_seen or bool(reported)
            finished = finished or finish is not None
            if text or finish or usage or reported:
                call.started = call.started or bool(text)
                yield Chunk(text=text, usage=usage, finish_reason=finish, model=reported or None)
        if call.cancelled:
            raise errors.Cancelled("cancelled", provider=self.name)
        if not finished:
            # The SDK ends quietly when the connection closes early; a real answer always
            # carries a finish_reason, so its absence means the answer was cut.
            raise errors.StreamBroken("stream ended before a finish_reason", provider=self.name)

    def _whole(self, call: _Call, completion: Any) -> Chunk:
        choices = getattr(completion, "choices", None) or []
        if not choices:
            raise call.error(errors.BadResponse, "reply without choices")
        message = getattr(choices[0], "message", None)
        return Chunk(
            text=getattr(message, "content", None) or "",
            usage=_usage(getattr(completion, "usage", None)),
            finish_reason=getattr(choices[0], "finish_reason", None) or None,
            model=getattr(completion, "model", None) or None,
        )

    def list_models(self) -> list[ModelInfo]:
        self._require_key()
        call = _Call(self, None, ADMIN_TIMEOUT)
        page = call.run(lambda: self._client.models.list(timeout=ADMIN_TIMEOUT))
        models = []
        for entry in getattr(page, "data", None) or []:  # Ollama's /v1 says "data": null
            raw = entry.to_dict() if hasattr(entry, "to_dict") else dict(entry)
            if not raw.get("id"):
                continue
            created = raw.get("created")
            context = next((raw[k] for k in _CONTEXT_KEYS if isinstance(raw.get(k), int)), None)
            models.append(ModelInfo(
                provider=self.name,
                model=str(raw["id"]),
                modified=(datetime.fromtimestamp(created, timezone.utc).isoformat()
                          if isinstance(created, (int, float)) and created > 0 else None),
                context_length=context,
                details={k: v for k, v in raw.items() if k in ("owned_by", "object")},
            ))
        return models

    def health(self) -> Health:
        call = _Call(self, None, httpx2.Timeout(HEALTH_TIMEOUT))
        reachable, error, rtt = True, None, None
        start = time.perf_counter()
        try:
            call.run(lambda: self._client.models.list(timeout=HEALTH_TIMEOUT))
            rtt = time.perf_counter() - start
        except errors.TransportError as exc:
            reachable, error = False, exc.message
        except ProviderError as exc:  # it answered, but not well (401 without a key, ...)
            rtt, error = time.perf_counter() - start, exc.message
        if self._missing_key:
            error = f"no API key: set {self._key_env}"
        return Health(provider=self.name, base_url=self.base_url, reachable=reachable,
                      rtt_s=rtt, error=error)

    def close(self) -> None:
        """Close the pooled connections (the registry keeps providers for the whole session)."""
        self._client.close()

    def __enter__(self) -> OpenAIProvider:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
