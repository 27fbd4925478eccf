"""A loopback server speaking Anthropic's Messages API (api.anthropic.com), per
shared/protocols/anthropic.md: `POST /v1/messages` (JSON, or named SSE events when `stream` is
true) and `GET /v1/models` (paged by `limit`, `after_id`, `before_id`).

What it insists on, as the real API does: a key in `x-api-key` (or `Authorization: Bearer`,
which SDK 2.x sends, per the notes' "observed on the wire"), an `anthropic-version` header
(the docs say it is required on every request; the 400's wording here is ours), `model`,
`max_tokens` and `messages`, roles `user`/`assistant` only (the system prompt is the top-level
`system`), `temperature` and `top_p` within 0-1. Two rules are ours, not documented: a
top-level field outside the request table of the notes (§2) is a 400, so that a field the
client should not send (`seed`, `stop`) shows; and every error message's wording, except
"Overloaded" (observed, §5). Structured output (`output_config`) is checked as structured.py
says, with its sources. Errors are `{"type": "error", "error": {"type", "message"},
"request_id"}` with the `request-id` header, the type the docs' table gives each status.

Tool calls (the `tool_call` knobs, tool_turns.py) as §5 and §7 of the notes describe them: a
`tool_use` block per call (`toolu_` ids) opened by content_block_start with `input: {}`, its
input in `input_json_delta` fragments (`partial_json`; the first one empty, as in the SDK's
recorded fixture), closed by content_block_stop; then message_delta with stop_reason
"tool_use". A non-streamed reply has the `tool_use` blocks with the whole `input` object.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from typing import Any

from .base import Exchange, StreamShape, TestServer, dumps
from .images import ImageProblem, anthropic_images
from .structured import anthropic_output_problem
from .tool_rules import anthropic_problem, anthropic_result, anthropic_rounds
from .tool_turns import ToolTurn, after_results, tool_completion, tool_turn
from .wire import Completion, split_words

__all__ = ["ANTHROPIC_VERSION", "DEFAULT_ANTHROPIC_MODELS", "AnthropicServer", "anthropic_error"]

ANTHROPIC_VERSION = "2023-06-01"
DEFAULT_ANTHROPIC_MODELS: dict[str, int] = {  # id -> max_input_tokens, newest first
    "claude-sonnet-4-5": 200000,
    "claude-haiku-4-5": 200000,
    "claude-opus-4-1": 200000,
}
# The request fields of the notes' §2 table.
_FIELDS = {
    "model",
    "max_tokens",
    "messages",
    "system",
    "stream",
    "temperature",
    "top_p",
    "top_k",
    "stop_sequences",
    "tools",
    "tool_choice",
    "output_config",
    "thinking",
    "metadata",
    "service_tier",
    "cache_control",
    "container",
    "inference_geo",
}
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
_WORDS = {
    400: "Your request was malformed.",
    401: "invalid x-api-key",
    403: "Your API key does not have permission to use the specified resource.",
    413: "Request exceeds the maximum allowed number of bytes.",
    429: "Number of requests has exceeded your rate limit.",
    500: "Internal server error",
    529: "Overloaded",
}
_STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}


def anthropic_error(status: int, message: str | None = None, model: str = "") -> dict[str, Any]:
    """The error body for `status`: the type the docs' table gives it, a message in words."""
    kind = _TYPES.get(status) or ("api_error" if status >= 500 else "invalid_request_error")
    words = message or (f"model: {model}" if status == 404 else _WORDS.get(status, "Error"))
    return {
        "type": "error",
        "error": {"type": kind, "message": words},
        "request_id": f"req_{uuid.uuid4().hex[:24]}",
    }


def _json_delta(piece: str) -> dict[str, str]:
    return {"type": "input_json_delta", "partial_json": piece}


def _event(name: str, obj: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + dumps({"type": name, **obj}) + b"\n\n"


def _problem(body: Any) -> str | None:
    """Why a Messages request breaks the documented rules, or None."""
    if not isinstance(body, dict):
        return "request body must be a JSON object"
    extra = sorted(set(body) - _FIELDS)
    if extra:
        return f"{extra[0]}: Extra inputs are not permitted"
    if not isinstance(body.get("model"), str):
        return "model: Field required"
    tokens = body.get("max_tokens")
    if not isinstance(tokens, int) or isinstance(tokens, bool) or tokens < 0:
        return "max_tokens: Field required"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages: at least one message is required"
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ("user", "assistant"):
            role = m.get("role") if isinstance(m, dict) else None
            return f'messages.{i}.role: Input should be "user" or "assistant", got {role!r}'
        if not isinstance(m.get("content"), (str, list)):
            return f"messages.{i}.content: Field required"
    if not isinstance(body.get("system", ""), (str, list)):
        return "system: Input should be a valid string or list of text blocks"
    for key in ("temperature", "top_p"):
        value = body.get(key, 0.5)
        if not isinstance(value, (int, float)) or not 0 <= value <= 1:
            return f"{key}: Input should be between 0 and 1"
    stops = body.get("stop_sequences", [])
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        return "stop_sequences: Input should be a list of strings"
    return anthropic_output_problem(body.get("output_config"))


class AnthropicServer(TestServer):
    """POST /v1/messages and GET /v1/models; `.url` is the bare host, as ANTHROPIC_BASE_URL.

    api_key: when set, requests need it (else 401 authentication_error).
    State a test may change, restored by `reset()`: `models` (id -> max_input_tokens, what
    /v1/models lists), `check_models`, `stream_error_type`, `cache_read_tokens`.
    """

    chat_marker = "/v1/messages"

    def __init__(self, api_key: str | None = None) -> None:
        super().__init__(api_key)
        self.routes[("POST", "/v1/messages")] = self._messages
        self.routes[("GET", "/v1/models")] = self._models

    def reset_state(self) -> None:
        self.models = dict(DEFAULT_ANTHROPIC_MODELS)  # a test may put others in
        self.check_models = False  # True: a model not in `models` is a 404 not_found_error
        self.stream_error_type = "overloaded_error"  # error.type of the error_after event
        self.cache_read_tokens = 0  # prompt tokens reported as read from the prompt cache

    def _error(
        self, ex: Exchange, status: int, message: str | None = None, model: str = ""
    ) -> None:
        body = anthropic_error(status, message, model)
        headers = {"request-id": body["request_id"]}
        if ex.faults.retry_after is not None:
            headers["retry-after"] = f"{ex.faults.retry_after:g}"
        ex.send_json(status, body, headers=headers)

    def not_found(self, ex: Exchange) -> None:
        self._error(ex, 404, "Not Found")

    def bad_json(self, ex: Exchange) -> None:
        self._error(ex, 400, "There was an error parsing the body of your request")

    def _refused(self, ex: Exchange) -> bool:
        """Answered with an error already: a missing or wrong key, no version header."""
        headers = ex.request.headers
        if self.api_key is not None:
            sent = headers.get("x-api-key") or headers.get("authorization", "").removeprefix(
                "Bearer "
            )
            if sent != self.api_key:
                self._error(ex, 401, None if sent else "x-api-key header is required")
                return True
        if not headers.get("anthropic-version"):
            self._error(ex, 400, "anthropic-version: header is required")
            return True
        return False

    # -- messages -------------------------------------------------------------------------
    def _messages(self, ex: Exchange) -> None:
        with self.chat_slot():
            self._answer(ex)

    def _answer(self, ex: Exchange) -> None:
        f = ex.faults
        body = ex.body if isinstance(ex.body, dict) else {}
        model = body.get("model") if isinstance(body.get("model"), str) else ""
        ex.sleep(f.delay)
        if self._refused(ex):
            return
        status = self.next_error_status(ex)
        if status is not None:
            return self._error(ex, status, f.error_message, model)
        problem = _problem(ex.body) or anthropic_problem(body)
        if problem:
            return self._error(ex, 400, problem)
        if self.check_models and model not in self.models:
            return self._error(ex, 404, model=model)
        try:  # image blocks checked and noted in the echo (servers/images.py)
            messages = anthropic_images(body["messages"])
        except ImageProblem as exc:
            return self._error(ex, 400, str(exc))
        system = body.get("system")
        turns = messages + ([{"role": "system", "content": system}] if system else [])
        reply = after_results(f, anthropic_result(body["messages"]))
        c = self.completion(ex, model, turns, body["max_tokens"], reply)
        c, matched = _stopped(c, body.get("stop_sequences") or [])
        turn = tool_turn(f, body.get("tools"), anthropic_rounds(body["messages"]), _tool_id)
        if turn is not None:
            c, matched = tool_completion(turn, c.model, c.prompt_tokens), None
        if body.get("stream") is not True:
            return self._whole(ex, c, matched, turn)
        ex.start_stream("text/event-stream; charset=utf-8", {"request-id": _request_id()})
        ex.stream(_MessageEvents(ex, c, matched, turn), c)

    def _whole(
        self, ex: Exchange, c: Completion, matched: str | None, turn: ToolTurn | None = None
    ) -> None:
        if ex.broken_plain_reply(lambda: self._error(ex, 500, ex.faults.error_message)):
            return
        ex.wait_generation(c)
        content = [{"type": "text", "text": c.text}]
        if turn is not None:
            given = json.loads(turn.arguments)
            content = [
                {"type": "tool_use", "id": i, "name": turn.name, "input": given} for i in turn.ids
            ]
        reply = {
            **_message(c, matched, ex.faults.usage, True, self.cache_read_tokens),
            "content": content,
        }
        ex.send_json(200, reply, headers={"request-id": _request_id()})

    # -- models ---------------------------------------------------------------------------
    def _models(self, ex: Exchange) -> None:
        if self._refused(ex):
            return
        query = dict(p.partition("=")[::2] for p in ex.request.query.split("&") if p)
        try:
            limit = int(query.get("limit", "20"))
        except ValueError:
            limit = -1
        if not 1 <= limit <= 1000:
            return self._error(ex, 400, "limit: Input should be between 1 and 1000")
        ids = list(self.models)
        start, end = 0, len(ids)
        if query.get("after_id") in ids:
            start = ids.index(query["after_id"]) + 1
        if query.get("before_id") in ids:
            end = ids.index(query["before_id"])
            start = max(start, end - limit)
        page = ids[start : min(end, start + limit)]
        ex.send_json(
            200,
            {
                "data": [_card(m, self.models[m], i) for i, m in enumerate(page, start)],
                "has_more": (start + len(page) < end) if "before_id" not in query else start > 0,
                "first_id": page[0] if page else None,
                "last_id": page[-1] if page else None,
            },
        )


def _tool_id() -> str:
    return f"toolu_01{uuid.uuid4().hex[:22]}"


def _request_id() -> str:
    return f"req_{uuid.uuid4().hex[:24]}"


def _stopped(c: Completion, stops: list[str]) -> tuple[Completion, str | None]:
    """The answer cut before the first stop sequence it holds, and which one matched."""
    hits = [(c.text.find(s), s) for s in stops if s and s in c.text]
    if not hits:
        return c, None
    at, matched = min(hits)
    return dataclasses.replace(c, words=split_words(c.text[:at])), matched


def _usage(c: Completion, done: bool, cached: int) -> dict[str, int]:
    # message_start carries the real input count and a placeholder output count of 1; tokens
    # read from the cache are counted apart from input_tokens.
    return {
        "input_tokens": c.prompt_tokens - cached,
        "cache_read_input_tokens": cached,
        "output_tokens": c.completion_tokens if done else 1,
    }


def _message(
    c: Completion, matched: str | None, usage: bool, done: bool, cached: int = 0
) -> dict[str, Any]:
    reason = ("stop_sequence" if matched else _STOP[c.finish_reason]) if done else None
    obj: dict[str, Any] = {
        "id": f"msg_{c.id_hex[:24]}",
        "type": "message",
        "role": "assistant",
        "model": c.model,
        "content": [],
        "stop_reason": reason,
        "stop_sequence": matched if done else None,
    }
    if usage:
        obj["usage"] = _usage(c, done, cached)
    return obj


def _card(model: str, context: int, rank: int) -> dict[str, Any]:
    return {
        "type": "model",
        "id": model,
        "display_name": model.replace("-", " ").title(),
        "created_at": f"2025-{12 - rank % 12:02d}-01T00:00:00Z",
        "max_input_tokens": context,
        "max_tokens": 64000,
    }


class _MessageEvents(StreamShape):
    """message_start, content_block_start, a ping (where the SDK's recorded fixtures have one),
    one content_block_delta per word, then content_block_stop, message_delta (stop_reason and
    the cumulative output count) and message_stop. No [DONE]."""

    def __init__(
        self, ex: Exchange, c: Completion, matched: str | None, turn: ToolTurn | None = None
    ) -> None:
        self.ex, self.c, self.matched, self.turn = ex, c, matched, turn

    def _blocks(self) -> list[dict[str, Any]]:
        if self.turn is None:
            return [{"type": "text", "text": ""}]
        name = self.turn.name
        return [{"type": "tool_use", "id": i, "name": name, "input": {}} for i in self.turn.ids]

    def head(self) -> bytes:
        cached = self.ex.server.cache_read_tokens  # type: ignore[attr-defined]
        start = _message(self.c, None, self.ex.faults.usage, False, cached)
        out = _event("message_start", {"message": start})
        first, *others = self._blocks()
        out += _event("content_block_start", {"index": 0, "content_block": first})
        out += _event("ping", {})
        if self.turn is not None:  # the fixture's first input fragment is empty
            out += _event("content_block_delta", {"index": 0, "delta": _json_delta("")})
        return out

    def content(self, index: int, word: str, last: bool) -> bytes:
        if self.turn is None:
            delta = {"type": "text_delta", "text": word}
            return _event("content_block_delta", {"index": 0, "delta": delta})
        out = _event("content_block_delta", {"index": 0, "delta": _json_delta(word)})
        if last:  # each further call is a block of its own, one after another
            for n, block in enumerate(self._blocks()[1:], 1):
                out += _event("content_block_stop", {"index": n - 1})
                out += _event("content_block_start", {"index": n, "content_block": block})
                for piece in self.turn.pieces:
                    out += _event("content_block_delta", {"index": n, "delta": _json_delta(piece)})
        return out

    def malformed(self) -> bytes:
        return b"event: content_block_delta\ndata: {not json\n\n"

    def error(self) -> bytes:
        # Observed: an overload mid-stream, after the 200 (Helicone#4678, anthropic-sdk-go#200).
        words = self.ex.faults.error_message or "Overloaded"
        kind = self.ex.server.stream_error_type  # type: ignore[attr-defined]
        error = {"details": None, "type": kind, "message": words}
        return _event("error", {"error": error})

    def tail(self) -> bytes:
        done = _message(self.c, self.matched, self.ex.faults.usage, done=True)
        delta: dict[str, Any] = {"stop_reason": done["stop_reason"], "stop_sequence": self.matched}
        end: dict[str, Any] = {"delta": delta}
        if self.ex.faults.usage:
            end["usage"] = {"output_tokens": self.c.completion_tokens}
        return (
            _event("content_block_stop", {"index": len(self._blocks()) - 1})
            + _event("message_delta", end)
            + _event("message_stop", {})
        )
