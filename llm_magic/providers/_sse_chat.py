"""Chat completions in OpenAI's shape, streamed as server-sent events or sent whole.

OpenAI, every OpenAI-compatible server and Mistral share this shape: `choices[0].delta.content`
pieces, a `finish_reason`, a `usage` object somewhere near the end (OpenAI: an extra chunk whose
`choices` is empty; Mistral: on the last content chunk), then `data: [DONE]`. Their quirks are
all accepted here, so both providers read their streams with the same code:
- an error can arrive as an event after the 200 (`{"error": ...}`, Mistral's
  `{"object": "error", ...}`, or `finish_reason: "error"`);
- `content` may be a string, null, or a list of typed parts (only `text` parts are answer text);
- a server that ignores `stream: true` and answers with one JSON object is read as that object.
Anthropic's named events have another shape; its module reads them with the SSE pieces here
(`sse_events`, `event_object`, `sent_whole`, `stream_ended`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from .. import errors
from ._http import Exchange
from ._http_errors import error_text
from ._tool_wire import openai_pieces
from .base import Chunk, Usage

__all__ = [
    "chat_chunks",
    "event_object",
    "preview",
    "sent_whole",
    "sse_events",
    "stream_ended",
    "whole_chunk",
]


def preview(text: str) -> str:
    """The start of a text that did not parse, quoted for an error message."""
    return repr(text[:60] + ("…" if len(text) > 60 else ""))


def text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part.get("text") or ""
            for part in content
            if isinstance(part, dict)
            and part.get("type", "text") == "text"
            and isinstance(part.get("text"), str)
        )
    return ""


def usage_of(obj: dict[str, Any]) -> Usage | None:
    usage = obj.get("usage")
    if not isinstance(usage, dict):
        return None

    def count(key: str) -> int | None:
        value = usage.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    return Usage(prompt_tokens=count("prompt_tokens"), completion_tokens=count("completion_tokens"))


def sse_events(lines: Iterator[str]) -> Iterator[tuple[str, str]]:
    """(event name, data) per `data:` line.

    Each data line is taken as one event even without the blank line after it: chat servers
    never split their JSON over several data lines, and some forget the blank line.
    """
    event = ""
    for line in lines:
        if not line:
            event = ""
            continue
        if line.startswith(":"):  # a comment, used as keep-alive
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            event = value.strip()
        elif name == "data":
            yield event, value


def event_object(exchange: Exchange, data: str) -> dict[str, Any]:
    """The JSON object an event's data holds; BadResponse quoting it when it holds none."""
    try:
        obj = json.loads(data)
    except ValueError:
        raise exchange.error(errors.BadResponse, f"malformed event: {preview(data)}") from None
    if not isinstance(obj, dict):
        raise exchange.error(errors.BadResponse, f"unexpected event: {preview(data)}")
    return obj


def _decode(exchange: Exchange, data: str, event: str = "") -> dict[str, Any]:
    obj = event_object(exchange, data)
    inner = obj.get("error")
    if event == "error" or obj.get("object") == "error" or inner not in (None, "", {}):
        message = error_text(data, "error event without a message")
        code = inner.get("code") if isinstance(inner, dict) else obj.get("code")
        if not exchange.started and isinstance(code, int) and 400 <= code < 600:
            # Routers such as OpenRouter put the upstream status here: keep it (and retries).
            raise errors.status_error(code, message, provider=exchange.name)
        raise exchange.error(errors.ProviderError, message)
    return obj


def _first_choice(obj: dict[str, Any]) -> dict[str, Any]:
    choices = obj.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        return choices[0]
    return {}


def whole_chunk(exchange: Exchange, raw: bytes) -> Chunk:
    """The one Chunk of a non-streamed reply."""
    data = raw.decode("utf-8", "replace")
    if not data.strip():
        raise exchange.error(errors.BadResponse, "empty reply")
    obj = _decode(exchange, data)
    choice = _first_choice(obj)
    if not choice:
        raise exchange.error(errors.BadResponse, f"reply without choices: {preview(data)}")
    message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
    return Chunk(
        text=text_of(message.get("content")),
        usage=usage_of(obj),
        finish_reason=choice.get("finish_reason") or None,
        model=obj.get("model") or None,
        tool_calls=openai_pieces(message),
    )


def sent_whole(exchange: Exchange) -> bool:
    """The server ignored `stream: true` and answered with one JSON object."""
    content_type = exchange.response.headers.get("content-type", "")
    return "json" in content_type and "event-stream" not in content_type


def stream_ended(exchange: Exchange, seen_any: bool, finished: bool, missing: str) -> None:
    """After the last event: raise if the run was cancelled, if the reply was no event stream
    at all, or if it ended before `missing` (what a finished answer ends with) came."""
    exchange.check_cancelled()
    content_type = exchange.response.headers.get("content-type", "")
    if not seen_any and "event-stream" not in content_type:
        raise errors.BadResponse(
            f"expected server-sent events, got {content_type or 'a reply without a type'}",
            provider=exchange.name,
        )
    if not finished:
        # A clean close before the end and before any stop reason: the answer was cut.
        raise errors.StreamBroken(f"stream ended before {missing}", provider=exchange.name)


def chat_chunks(exchange: Exchange) -> Iterator[Chunk]:
    """The Chunks of a streamed reply, as they arrive."""
    if sent_whole(exchange):
        yield whole_chunk(exchange, exchange.body())
        return
    model_seen = finished = seen_any = False
    for event, data in sse_events(exchange.lines()):
        seen_any = True
        if data.strip() == "[DONE]":
            finished = True
            exchange.finish()  # read the chunked terminator: the connection stays pooled
            break
        if not data.strip():
            continue
        obj = _decode(exchange, data, event)
        choice = _first_choice(obj)  # {} on OpenAI's final usage chunk (choices: [])
        delta = choice.get("delta") if isinstance(choice.get("delta"), dict) else {}
        text = text_of(delta.get("content"))
        calls = openai_pieces(delta) if "tool_calls" in delta else ()
        finish = choice.get("finish_reason") or None
        usage = usage_of(obj)
        reported = obj.get("model") if not model_seen else None
        reported = reported if isinstance(reported, str) and reported else None
        model_seen = model_seen or reported is not None
        if finish == "error":  # Mistral's in-stream failure: keep what came, then fail
            if text or usage or reported:
                exchange.started = exchange.started or bool(text)
                yield Chunk(text=text, usage=usage, model=reported)
            raise exchange.error(
                errors.ProviderError, "the server ended the answer with finish_reason 'error'"
            )
        finished = finished or finish is not None
        if text or finish or usage or reported or calls:
            exchange.started = exchange.started or bool(text)
            yield Chunk(
                text=text, usage=usage, finish_reason=finish, model=reported, tool_calls=calls
            )
    stream_ended(exchange, seen_any, finished, "[DONE] or a finish_reason")
