"""Anthropic's Messages API (`POST /v1/messages`) over httpx2, streamed as named SSE events.

Wire facts that shape this module (shared/protocols/anthropic.md):
- the key goes in `x-api-key`, and every request carries `anthropic-version`. We send
  `2023-06-01`, under which `temperature` and `top_p` are accepted (`2026-10-21` refuses them);
- the base URL is the host: every path starts with `/v1`, so a base ending in `/v1` is trimmed;
- `max_tokens` is required, the system prompt is the top-level `system` field, and there is no
  seed; stop strings are `stop_sequences`;
- a stream is `message_start` (model, input tokens), per content block `content_block_start`,
  `content_block_delta`s and `content_block_stop`, then `message_delta` (stop_reason and the
  cumulative output tokens) and `message_stop`; `ping`s and unknown events come anywhere and
  are skipped; there is no `[DONE]`;
- an `error` event can arrive after the 200; its `error.type` is one of the documented types,
  each of which the docs tie to an HTTP status, so before any text it is raised as that status
  (an overload is retried like a 529), after text it breaks the stream like any other failure.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

from .. import errors
from ._http import ADMIN_TIMEOUT, Exchange, ServiceProvider
from ._http_errors import error_text
from ._image_parts import anthropic_message
from ._sse_chat import event_object, preview, sent_whole, sse_events, stream_ended
from ._structured import anthropic_output_config
from ._tool_wire import anthropic_messages, anthropic_pieces, anthropic_tools
from .base import CancelToken, Chunk, Message, ModelInfo, Options, ToolCallPiece, Usage

__all__ = ["API_VERSION", "DEFAULT_BASE_URL", "DEFAULT_MAX_TOKENS", "AnthropicProvider"]

DEFAULT_BASE_URL = "https://api.anthropic.com"
API_VERSION = "2023-06-01"
# Sent when no -n/--max-tokens is given (the field is required). At 4096 a non-streamed answer
# stays inside the default read timeout by the SDK's own estimate (3600 s per 128k tokens).
DEFAULT_MAX_TOKENS = 4096
_MESSAGES = "/v1/messages"
_MODELS = "/v1/models"
_PAGE = 1000  # the most models one listing page may hold
_MOST_PAGES = 50  # a listing that never says has_more: false still ends
_MODEL_DETAILS = ("display_name", "max_tokens", "capabilities")
# error.type -> the HTTP status the docs' error table gives it (billing_error and timeout_error
# have none there: they stay plain failures).
_STATUS_OF = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 529,
}
# stop_reason -> the word the other providers use, so the finish_reason column compares.
_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def messages_body(messages: list[Message], model: str, options: Options) -> dict[str, Any]:
    """The request body: system text on top, the turns below, only the fields we set."""
    system = "\n\n".join(m.content for m in messages if m.role == "system")
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": options.max_tokens if options.max_tokens is not None else DEFAULT_MAX_TOKENS,
        "messages": anthropic_messages(messages, anthropic_message),
        "stream": bool(options.stream),
    }
    if options.tools:
        body["tools"] = anthropic_tools(options.tools)
    if system:
        body["system"] = system
    for key, value in (("temperature", options.temperature), ("top_p", options.top_p)):
        if value is not None:
            body[key] = value
    if options.stop:
        body["stop_sequences"] = list(options.stop)
    if options.json_schema is not None:
        body["output_config"] = anthropic_output_config(options.json_schema)
    return body


def _count(usage: dict[str, Any], key: str) -> int | None:
    value = usage.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _input_tokens(usage: dict[str, Any]) -> int | None:
    """Every prompt token: cache writes and reads are counted apart from `input_tokens`."""
    parts = [
        _count(usage, k)
        for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    ]
    return None if parts[0] is None else sum(p or 0 for p in parts)


def _finish(reason: Any) -> str | None:
    return _FINISH.get(reason, reason) if isinstance(reason, str) and reason else None


def _failure(exchange: Exchange, obj: dict[str, Any], data: str) -> errors.ProviderError:
    """The error an `error` event (or a 200 body of type "error") stands for."""
    inner = obj.get("error")
    kind = inner.get("type") if isinstance(inner, dict) else None
    message = error_text(data, "error event without a message")
    status = _STATUS_OF.get(kind) if isinstance(kind, str) else None
    if status is not None and not exchange.started:
        return errors.status_error(status, message, provider=exchange.name)
    return exchange.error(errors.ProviderError, message)


def whole_message(exchange: Exchange, raw: bytes) -> Chunk:
    """The one Chunk of a non-streamed reply (a `Message` object)."""
    data = raw.decode("utf-8", "replace")
    if not data.strip():
        raise exchange.error(errors.BadResponse, "empty reply")
    obj = event_object(exchange, data)
    if obj.get("type") == "error":
        raise _failure(exchange, obj, data)
    content = obj.get("content")
    if not isinstance(content, list):
        raise exchange.error(errors.BadResponse, f"reply without content: {preview(data)}")
    usage = obj.get("usage") if isinstance(obj.get("usage"), dict) else None
    model = obj.get("model")
    return Chunk(
        text=_text_of(content),
        usage=Usage(_input_tokens(usage), _count(usage, "output_tokens")) if usage else None,
        finish_reason=_finish(obj.get("stop_reason")),
        model=model if isinstance(model, str) and model else None,
        tool_calls=tuple(anthropic_pieces(content)),
    )


def _text_of(blocks: list[Any]) -> str:
    """The answer text: text blocks only (thinking and tool blocks are not the answer)."""
    return "".join(
        b["text"]
        for b in blocks
        if isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str)
    )


def _tool_start(obj: dict[str, Any]) -> ToolCallPiece | None:
    """A `tool_use` block's start: its id and name (its input streams in the deltas)."""
    block, index = obj.get("content_block"), obj.get("index")
    if not isinstance(block, dict) or block.get("type") != "tool_use" or not isinstance(index, int):
        return None
    ident, name, given = block.get("id"), block.get("name"), block.get("input")
    return ToolCallPiece(
        index,
        ident if isinstance(ident, str) and ident else None,
        name if isinstance(name, str) and name else None,
        # it starts as {} and streams in deltas; a server that sends it whole here is read too
        json.dumps(given) if isinstance(given, dict) and given else "",
    )


def message_chunks(exchange: Exchange) -> Iterator[Chunk]:
    """The Chunks of a streamed reply, as its events arrive."""
    if sent_whole(exchange):
        yield whole_message(exchange, exchange.body())
        return
    prompt_tokens: int | None = None
    finished = seen_any = False
    for event, data in sse_events(exchange.lines()):
        seen_any = True
        if not data.strip():
            continue
        obj = event_object(exchange, data)
        kind = obj.get("type") or event
        if kind == "error" or event == "error":
            raise _failure(exchange, obj, data)
        if kind == "message_start":
            message = obj.get("message") if isinstance(obj.get("message"), dict) else {}
            usage = message.get("usage")
            prompt_tokens = _input_tokens(usage) if isinstance(usage, dict) else None
            model = message.get("model")
            if isinstance(model, str) and model:
                yield Chunk(model=model)
        elif kind == "content_block_start":
            piece = _tool_start(obj)
            if piece is not None:
                yield Chunk(tool_calls=(piece,))
        elif kind == "content_block_delta":
            delta = obj.get("delta")
            if isinstance(delta, dict) and delta.get("type") == "text_delta":
                text = delta.get("text")
                if isinstance(text, str) and text:
                    exchange.started = True
                    yield Chunk(text=text)
            elif isinstance(delta, dict) and delta.get("type") == "input_json_delta":
                part, index = delta.get("partial_json"), obj.get("index")
                if isinstance(part, str) and part and isinstance(index, int):
                    yield Chunk(tool_calls=(ToolCallPiece(index, arguments=part),))
        elif kind == "message_delta":
            delta = obj.get("delta") if isinstance(obj.get("delta"), dict) else {}
            finish = _finish(delta.get("stop_reason"))
            usage = obj.get("usage")
            counted = None
            if isinstance(usage, dict):  # cumulative counts: they replace, never add up
                prompt_tokens = _input_tokens(usage) or prompt_tokens
                counted = Usage(prompt_tokens, _count(usage, "output_tokens"))
            finished = finished or finish is not None
            if finish or counted:
                yield Chunk(usage=counted, finish_reason=finish)
        elif kind == "message_stop":
            finished = True
            exchange.finish()  # read the chunked terminator: the connection stays pooled
            break
    stream_ended(exchange, seen_any, finished, "message_stop or a stop_reason")


class AnthropicProvider(ServiceProvider):
    """Anthropic's Messages API. Thread-safe: one pooled client serves every caller."""

    server_label = "Anthropic API"
    listing_path = _MODELS
    admin_timeout_s = ADMIN_TIMEOUT.read
    base_url_hint = " (Anthropic's is the host alone, e.g. https://api.anthropic.com)"
    key_header = "x-api-key"
    extra_headers = {"anthropic-version": API_VERSION}
    health_query = "?limit=1"
    takes_images = takes_image_urls = True  # image blocks: a base64 or a url source
    no_embeddings = "Anthropic's API has no embeddings endpoint"

    @classmethod
    def normalise_base_url(cls, url: str | None) -> str:
        # The paths carry /v1 themselves; an OpenAI-style base ending in /v1 would double it.
        return (url or DEFAULT_BASE_URL).rstrip("/").removesuffix("/v1")

    def stream(
        self,
        messages: list[Message],
        model: str,
        options: Options,
        cancel: CancelToken | None = None,
    ) -> Iterator[Chunk]:
        body = messages_body(messages, model, options)
        yield from self._answer(_MESSAGES, body, options, cancel, message_chunks, whole_message)

    def list_models(self) -> list[ModelInfo]:
        """Every page of /v1/models (newest first), following `last_id` while `has_more`."""
        self._require_key()
        models: list[ModelInfo] = []
        after: str | None = None
        for _ in range(_MOST_PAGES):
            query = f"?limit={_PAGE}" + (f"&after_id={quote(after)}" if after else "")
            page = self._http.call_json("GET", _MODELS + query, timeouts=ADMIN_TIMEOUT)
            entries = page.get("data") if isinstance(page, dict) else None
            if not isinstance(entries, list):
                raise errors.BadResponse(
                    f'{_MODELS} replied without a "data" list', provider=self.name
                )
            models.extend(self._model(e) for e in entries if isinstance(e, dict) and e.get("id"))
            last = page.get("last_id")
            if page.get("has_more") is not True or not isinstance(last, str) or last == after:
                break
            after = last
        return models

    def _model(self, entry: dict[str, Any]) -> ModelInfo:
        created = entry.get("created_at")
        context = entry.get("max_input_tokens")
        return ModelInfo(
            provider=self.name,
            model=str(entry["id"]),
            modified=created if isinstance(created, str) and created else None,
            context_length=context if isinstance(context, int) else None,
            details={k: entry[k] for k in _MODEL_DETAILS if k in entry},
        )
