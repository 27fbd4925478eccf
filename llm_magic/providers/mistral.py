"""Mistral's chat API over httpx2, streaming server-sent events.

Wire facts that shape this module (shared/protocols/mistral.md): the request schema is closed
(any field Mistral does not know, or a null where it wants a value, is a 422), so only known
fields with values go out, and the seed is `random_seed`; there is no `stream_options`, usage
rides on the last content chunk next to `finish_reason`; error bodies come in several shapes
(`message` as a string or an object, or a top-level `detail`), handled by `_http.error_text`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

from .. import errors
from ._http import ADMIN_TIMEOUT, Exchange, HTTPService, error_text, timeout_for
from .base import CancelToken, Chunk, Health, Message, ModelInfo, Options, Usage

__all__ = ["DEFAULT_BASE_URL", "MistralProvider"]

DEFAULT_BASE_URL = "https://api.mistral.ai"
_CHAT = "/v1/chat/completions"
_MODELS = "/v1/models"


def _chat_body(messages: list[Message], model: str, options: Options) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": m.role, "content": m.content} for m in messages],
        "stream": bool(options.stream),
    }
    # Only fields of Mistral's ChatCompletionRequest, and never a null.
    for key, value in (
        ("temperature", options.temperature),
        ("top_p", options.top_p),
        ("max_tokens", options.max_tokens),
        ("random_seed", options.seed),
        ("stop", list(options.stop) if options.stop else None),
    ):
        if value is not None:
            body[key] = value
    return body


def _text_of(content: Any) -> str:
    """Message content: a string, null, or a list of typed chunks (only `text` ones count)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part.get("text") or ""
            for part in content
            if isinstance(part, dict) and part.get("type", "text") == "text"
        )
    return ""


def _usage(obj: dict[str, Any]) -> Usage | None:
    usage = obj.get("usage")
    if not isinstance(usage, dict):
        return None

    def count(key: str) -> int | None:
        value = usage.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    return Usage(prompt_tokens=count("prompt_tokens"), completion_tokens=count("completion_tokens"))


def _preview(text: str) -> str:
    return repr(text[:60] + ("…" if len(text) > 60 else ""))


def _in_band_error(obj: dict[str, Any]) -> str | None:
    """The message of an error sent as an event or a body with status 200, else None."""
    if obj.get("object") == "error" or obj.get("error") not in (None, ""):
        return error_text(json.dumps(obj), "error event")
    return None


class MistralProvider:
    """Mistral's La Plateforme API. Thread-safe: one pooled client serves every caller."""

    def __init__(self, *, name: str, base_url: str | None, api_key: str | None,
                 key_env: str | None = None) -> None:
        self.name = name
        self.base_url = (base_url or DEFAULT_BASE_URL).rstrip("/")
        # An OpenAI-style base URL ending in /v1 would double the version in every path.
        if self.base_url.endswith("/v1"):
            self.base_url = self.base_url[: -len("/v1")]
        self._key_env = key_env
        self._missing_key = api_key is None and key_env is not None
        self._http = HTTPService(name, self.base_url, api_key)

    def __repr__(self) -> str:
        return f"MistralProvider(name={self.name!r}, base_url={self.base_url!r})"

    def _require_key(self) -> None:
        if self._missing_key:
            raise errors.ProviderError(f"no API key: set {self._key_env}", provider=self.name)

    def _decode(self, exchange: Exchange, data: str) -> dict[str, Any]:
        try:
            obj = json.loads(data)
        except ValueError:
            raise exchange.error(errors.BadResponse,
                                 f"malformed event from Mistral: {_preview(data)}") from None
        if not isinstance(obj, dict):
            raise exchange.error(errors.BadResponse,
                                 f"unexpected event from Mistral: {_preview(data)}")
        message = _in_band_error(obj)
        if message is not None:
            raise exchange.error(errors.ProviderError, message)
        return obj

    def stream(self, messages: list[Message], model: str, options: Options,
               cancel: CancelToken | None = None) -> Iterator[Chunk]:
        self._require_key()
        exchange = self._http.exchange(
            "POST", _CHAT, json_body=_chat_body(messages, model, options),
            timeouts=timeout_for(options), cancel=cancel,
            accept="text/event-stream" if options.stream else "application/json",
        )
        with exchange:
            if not options.stream:
                yield self._whole(exchange)
                return
            model_seen = finished = False
            for event in exchange.events():
                if event.data.strip() == "[DONE]":
                    finished = True
                    break
                if not event.data.strip():
                    continue
                obj = self._decode(exchange, event.data)
                choices = obj.get("choices") if isinstance(obj.get("choices"), list) else []
                choice = choices[0] if choices and isinstance(choices[0], dict) else {}
                delta = choice.get("delta") if isinstance(choice.get("delta"), dict) else {}
                text = _text_of(delta.get("content"))
                finish = choice.get("finish_reason") or None
                reported = obj.get("model") if not model_seen else None
                model_seen = model_seen or bool(reported)
                usage = _usage(obj)
                if finish == "error":  # Mistral's in-stream failure: keep what came, then fail
                    if text or usage:
                        exchange.started = exchange.started or bool(text)
                        yield Chunk(text=text, usage=usage, model=reported or None)
                    raise exchange.error(errors.ProviderError,
                                         "Mistral ended the answer with finish_reason 'error'")
                finished = finished or finish is not None
                if text or finish or usage or reported:
                    exchange.started = exchange.started or bool(text)
                    yield Chunk(text=text, usage=usage, finish_reason=finish,
                                model=reported or None)
            exchange.check_cancelled()
            if not finished:  # neither [DONE] nor a finish_reason: the answer was cut
                raise errors.StreamBroken("stream ended before [DONE]", provider=self.name)

    def _whole(self, exchange: Exchange) -> Chunk:
        raw = exchange.body().decode("utf-8", "replace")
        obj = self._decode(exchange, raw)
        choices = obj.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise errors.BadResponse(f"reply without choices: {_preview(raw)}",
                                     provider=self.name)
        message = choices[0].get("message")
        text = _text_of(message.get("content") if isinstance(message, dict) else None)
        return Chunk(text=text, usage=_usage(obj), model=obj.get("model") or None,
                     finish_reason=choices[0].get("finish_reason") or None)

    def list_models(self) -> list[ModelInfo]:
        self._require_key()
        body = self._http.call_json("GET", _MODELS, timeouts=ADMIN_TIMEOUT)
        # The schema says {"object": "list", "data": [...]}; the rendered docs show a bare array.
        entries = body.get("data") if isinstance(body, dict) else body
        models = []
        for entry in entries if isinstance(entries, list) else []:
            if not isinstance(entry, dict) or not entry.get("id"):
                continue
            created = entry.get("created")
            context = entry.get("max_context_length")
            details = {k: entry[k] for k in ("owned_by", "type", "aliases", "capabilities",
                                               "description", "deprecation") if k in entry}
            models.append(ModelInfo(
                provider=self.name,
                model=str(entry["id"]),
                modified=(datetime.fromtimestamp(created, timezone.utc).isoformat()
                          if isinstance(created, (int, float)) else None),
                context_length=context if isinstance(context, int) else None,
                details=details,
            ))
        return models

    def health(self) -> Health:
        reachable, rtt, _, error = self._http.ping("GET", _MODELS)
        if self._missing_key:
            error = f"no API key: set {self._key_env}"
        return Health(provider=self.name, base_url=self.base_url, reachable=reachable,
                      rtt_s=rtt, error=error)

    def close(self) -> None:
        """Close the pooled connections (the registry keeps providers for the whole session)."""
        self._http.close()

    def __enter__(self) -> MistralProvider:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
