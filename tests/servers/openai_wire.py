"""POST /v1/chat/completions as OpenAI sends it, and as Ollama's OpenAI-compat layer sends it.

The two differ in small ways a client can trip on, so one class holds the common flow and the
Ollama flavour overrides the details (ids, fingerprint, error types, role on every delta).
"""

from __future__ import annotations

import random
import uuid
from typing import Any

from .base import Exchange, StreamShape, TestServer, dumps
from .images import ImageProblem, ollama_compat_images, openai_images
from .structured import ollama_format_problem, openai_response_format_problem
from .tool_rules import openai_problem, openai_result, openai_rounds
from .tool_turns import ToolTurn, after_results, tool_completion, tool_turn
from .wire import Completion, sse

__all__ = ["OllamaCompatChat", "OpenAIChat", "openai_error"]

_DONE = b"data: [DONE]\n\n"

_OPENAI_ERRORS: dict[int, tuple[str, str, str | None]] = {
    # status: (type, default message, code) as the OpenAI API answers them
    400: ("invalid_request_error", "Invalid request.", None),
    401: ("invalid_request_error", "Incorrect API key provided.", "invalid_api_key"),
    403: ("invalid_request_error", "You are not allowed to sample from this model.", None),
    404: (
        "invalid_request_error",
        "The model `{model}` does not exist or you do not have access to it.",
        "model_not_found",
    ),
    408: ("server_error", "Request timed out.", None),
    409: ("server_error", "Conflict.", None),
    429: (
        "requests",
        "Rate limit reached for requests. Please try again later.",
        "rate_limit_exceeded",
    ),
    500: (
        "server_error",
        "The server had an error while processing your request. Sorry about that!",
        None,
    ),
    502: ("server_error", "Bad gateway.", None),
    503: ("server_error", "The engine is currently overloaded, please try again later.", None),
}


def openai_error(
    status: int,
    message: str | None = None,
    model: str = "",
    param: str | None = None,
    code: str | None = None,
) -> dict[str, Any]:
    """{"error": {message, type, param, code}} with OpenAI's type/code for the status."""
    etype, default, default_code = _OPENAI_ERRORS.get(status, ("api_error", "Error.", None))
    return {
        "error": {
            "message": message or default.format(model=model),
            "type": etype,
            "param": param,
            "code": code if code is not None else default_code,
        }
    }


def _token_counts(c: Completion) -> dict[str, Any]:
    return {
        "prompt_tokens": c.prompt_tokens,
        "completion_tokens": c.completion_tokens,
        "total_tokens": c.total_tokens,
    }


class OpenAIChat:
    """The chat completions endpoint of api.openai.com."""

    system_fingerprint = "fp_7568d46099"
    honours_max_completion_tokens = True

    def __init__(self, server: TestServer, send_usage: bool = True) -> None:
        self.server = server
        self.send_usage = send_usage  # False: behave like servers that never report usage

    # -- flavour details ------------------------------------------------------------------
    error_body = staticmethod(openai_error)
    read_images = staticmethod(openai_images)

    def completion_id(self, c: Completion) -> str:
        return f"chatcmpl-{c.id_hex[:29]}"

    def auth_error(self, ex: Exchange) -> dict[str, Any] | None:
        if self.server.bearer_ok(ex):
            return None
        if "authorization" not in ex.request.headers:
            body = self.error_body(
                401,
                "You didn't provide an API key. You need to provide "
                "your API key in an Authorization header using Bearer auth "
                "(i.e. Authorization: Bearer YOUR_KEY).",
            )
            body["error"]["code"] = None
            return body
        return self.error_body(401)

    def knows_model(self, model: str) -> bool:
        if not getattr(self.server, "check_models", False):
            return True  # like most compatible servers: any model answers
        return model in self.server.model_ids()  # type: ignore[attr-defined]

    def model_error(self, model: str) -> tuple[int, dict[str, Any]] | None:
        return None if self.knows_model(model) else (404, self.error_body(404, model=model))

    def messages_error(self, messages: Any) -> dict[str, Any] | None:
        if messages is None:
            return self.error_body(
                400,
                "Missing required parameter: 'messages'.",
                param="messages",
                code="missing_required_parameter",
            )
        if not isinstance(messages, list) or not messages:
            return self.error_body(
                400,
                "Invalid 'messages': empty array. Expected an array "
                "with minimum length 1, but got an empty array instead.",
                param="messages",
                code="empty_array",
            )
        return None

    def response_format_error(self, fmt: Any) -> dict[str, Any] | None:
        """OpenAI's 400 for a `response_format` it refuses (structured.py says which)."""
        problem = openai_response_format_problem(fmt)
        if problem is None:
            return None
        message, param, code = problem
        body = self.error_body(400, message, param=param)
        body["error"]["code"] = code
        return body

    def choice(self, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}

    def head_delta(self) -> dict[str, Any] | None:
        return {"role": "assistant", "content": "", "refusal": None}

    def content_delta(self, word: str) -> dict[str, Any]:
        return {"content": word}

    def message(self, text: str) -> dict[str, Any]:
        return {"role": "assistant", "content": text, "refusal": None, "annotations": []}

    def usage(self, c: Completion) -> dict[str, Any]:
        return {
            **_token_counts(c),
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    def stream_error(self, shape: _ChatShape) -> bytes:
        body = self.error_body(500, self.server_error_text(shape.ex))
        return sse(dumps(body))

    def server_error_text(self, ex: Exchange) -> str:
        return (
            ex.faults.error_message
            or "The server had an error while processing your request. Sorry about that!"
        )

    def extra_headers(self) -> dict[str, str]:
        return {"x-request-id": f"req_{uuid.uuid4().hex}"}

    def call_id(self) -> str:
        return f"call_{uuid.uuid4().hex[:24]}"  # OpenAI's shape: call_ + 24 characters

    def call_message(self, turn: ToolTurn) -> dict[str, Any]:
        """A non-streamed reply's assistant message asking for the calls."""
        function = {"name": turn.name, "arguments": turn.arguments}
        calls = [{"id": i, "type": "function", "function": function} for i in turn.ids]
        return {**self.message(""), "content": None, "tool_calls": calls}

    # -- the common flow ------------------------------------------------------------------
    def handle(self, ex: Exchange) -> None:
        with self.server.chat_slot():
            self._handle(ex)

    def _handle(self, ex: Exchange) -> None:
        f = ex.faults
        body = ex.body if isinstance(ex.body, dict) else {}
        model = body.get("model") if isinstance(body.get("model"), str) else ""
        ex.sleep(f.delay)
        err = self.auth_error(ex)
        if err is not None:
            return ex.send_error_json(401, err)
        status = self.server.next_error_status(ex)
        if status is not None:
            return ex.send_error_json(status, self.error_body(status, f.error_message, model))
        if not isinstance(ex.body, dict):
            return ex.send_error_json(
                400, self.error_body(400, "We could not parse the JSON body of your request.")
            )
        if not model:
            return ex.send_error_json(
                400, self.error_body(400, "you must provide a model parameter")
            )
        err = self.messages_error(body.get("messages"))
        if err is not None:
            return ex.send_error_json(400, err)
        bad_model = self.model_error(model)
        if bad_model is not None:
            return ex.send_error_json(*bad_model)
        try:  # image parts checked, and noted in the echo (servers/images.py)
            messages = self.read_images(body["messages"])
        except ImageProblem as exc:
            bad = self.error_body(400, str(exc), param="messages", code="invalid_image_format")
            return ex.send_error_json(400, bad)
        err = self.response_format_error(body.get("response_format"))
        if err is not None:
            return ex.send_error_json(400, err)
        stream = body.get("stream") is True  # OpenAI's default is *not* to stream
        if body.get("stream_options") is not None and not stream:
            return ex.send_error_json(
                400,
                self.error_body(
                    400,
                    "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                    param="stream_options",
                ),
            )
        problem = openai_problem(body)
        if problem is not None:
            return ex.send_error_json(400, self.error_body(400, problem))
        max_tokens = body.get("max_tokens")
        if self.honours_max_completion_tokens and body.get("max_completion_tokens") is not None:
            max_tokens = body["max_completion_tokens"]
        reply = after_results(f, openai_result(body["messages"]))
        c = self.server.completion(ex, model, messages, max_tokens, reply)
        turn = tool_turn(f, body.get("tools"), openai_rounds(body["messages"]), self.call_id)
        if turn is not None:
            c = tool_completion(turn, c.model, c.prompt_tokens)
        reports_usage = f.usage and self.send_usage
        if not stream:
            return self._plain(ex, c, reports_usage, turn)
        options = body.get("stream_options") or {}
        include_usage = reports_usage and options.get("include_usage") is True
        ex.start_stream("text/event-stream; charset=utf-8", self.extra_headers())
        if turn is not None:
            return ex.stream(_ToolCallShape(self, ex, c, include_usage, turn), c)
        ex.stream(_ChatShape(self, ex, c, include_usage), c)

    def _plain(
        self, ex: Exchange, c: Completion, reports_usage: bool, turn: ToolTurn | None = None
    ) -> None:
        def send_error() -> None:
            ex.send_error_json(500, self.error_body(500, self.server_error_text(ex)))

        if ex.broken_plain_reply(send_error):
            return
        ex.wait_generation(c)
        reply: dict[str, Any] = {
            "id": self.completion_id(c),
            "object": "chat.completion",
            "created": c.created,
            "model": c.model,
            "choices": [
                {
                    "index": 0,
                    "message": self.message(c.text) if turn is None else self.call_message(turn),
                    "logprobs": None,
                    "finish_reason": c.finish_reason,
                }
            ],
        }
        if reports_usage:
            reply["usage"] = self.usage(c)
        reply["system_fingerprint"] = self.system_fingerprint
        ex.send_json(200, reply, self.extra_headers())


class _ChatShape(StreamShape):
    """SSE framing of one answer: role chunk, content chunks, finish chunk, usage, [DONE]."""

    def __init__(self, chat: OpenAIChat, ex: Exchange, c: Completion, include_usage: bool):
        self.chat, self.ex, self.c, self.include_usage = chat, ex, c, include_usage
        self.prefix = {
            "id": chat.completion_id(c),
            "object": "chat.completion.chunk",
            "created": c.created,
            "model": c.model,
            "system_fingerprint": chat.system_fingerprint,
        }

    def _chunk(self, choices: list[dict[str, Any]], **extra: Any) -> bytes:
        return sse(dumps({**self.prefix, "choices": choices, **extra}))

    def head(self) -> bytes:
        delta = self.chat.head_delta()
        return b"" if delta is None else self._chunk([self.chat.choice(delta, None)])

    def content(self, index: int, word: str, last: bool) -> bytes:
        return self._chunk([self.chat.choice(self.chat.content_delta(word), None)])

    def malformed(self) -> bytes:
        return b"data: {not json\n\n"

    def error(self) -> bytes:
        return self.chat.stream_error(self)

    def tail(self) -> bytes:
        out = self._chunk([self.chat.choice({}, self.c.finish_reason)])
        if self.include_usage:
            out += self._chunk([], usage=self.chat.usage(self.c))
        return out + _DONE


class _ToolCallShape(_ChatShape):
    """A streamed tool call, as OpenAI's recorded stream has it: the first chunk carries each
    call's index, id, type, name and `arguments: ""`; then one chunk per arguments fragment
    (index and the fragment only); the finish chunk says "tool_calls"."""

    def __init__(
        self, chat: OpenAIChat, ex: Exchange, c: Completion, include_usage: bool, turn: ToolTurn
    ):
        super().__init__(chat, ex, c, include_usage)
        self.turn = turn

    def head(self) -> bytes:
        calls = [
            {
                "index": n,
                "id": ident,
                "type": "function",
                "function": {"name": self.turn.name, "arguments": ""},
            }
            for n, ident in enumerate(self.turn.ids)
        ]
        delta = {"role": "assistant", "content": None, "tool_calls": calls, "refusal": None}
        return self._chunk([self.chat.choice(delta, None)])

    def content(self, index: int, word: str, last: bool) -> bytes:
        calls = [{"index": n, "function": {"arguments": word}} for n in range(len(self.turn.ids))]
        return self._chunk([self.chat.choice({"tool_calls": calls}, None)])


class OllamaCompatChat(OpenAIChat):
    """Ollama's /v1/chat/completions (middleware/openai.go), which is OpenAI with accents."""

    system_fingerprint = "fp_ollama"
    read_images = staticmethod(ollama_compat_images)
    honours_max_completion_tokens = False  # not a field of Ollama's request struct: ignored

    def error_body(
        self, status: int, message: str | None = None, model: str = "", **_: Any
    ) -> dict[str, Any]:
        # Ollama names no param and no code, whatever OpenAI would say
        etype = {400: "invalid_request_error", 404: "not_found_error"}.get(status, "api_error")
        text = message or (
            f"model '{model}' not found"
            if status == 404
            else "an error was encountered while running the model"
        )
        return {"error": {"message": text, "type": etype, "param": None, "code": None}}

    def completion_id(self, c: Completion) -> str:
        return f"chatcmpl-{random.randrange(999)}"  # Ollama's ids are not unique either

    def auth_error(self, ex: Exchange) -> dict[str, Any] | None:
        ok = self.server.bearer_ok(ex)  # only when the test configured a key (a proxy)
        return None if ok else self.error_body(401, "unauthorized")

    def knows_model(self, model: str) -> bool:
        return self.server.find_model(model) is not None  # type: ignore[attr-defined]

    def messages_error(self, messages: Any) -> dict[str, Any] | None:
        if not isinstance(messages, list) or not messages:
            return self.error_body(400, "[] is too short - 'messages'")
        return None

    def response_format_error(self, fmt: Any) -> dict[str, Any] | None:
        # The compat layer maps json_object to format "json" and json_schema to format =
        # json_schema.schema, then checks what the native API checks (ollama.md §OpenAI
        # compatibility): no name or strict rules.
        if fmt is None:
            return None
        spec = fmt.get("json_schema") if isinstance(fmt, dict) else None
        native = {"json_object": "json", "json_schema": (spec or {}).get("schema")}
        kind = fmt.get("type") if isinstance(fmt, dict) else None
        problem = ollama_format_problem(native.get(kind, "")) if kind != "text" else None
        return None if problem is None else self.error_body(400, problem)

    def choice(self, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        return {"index": 0, "delta": delta, "finish_reason": finish}

    def head_delta(self) -> dict[str, Any] | None:
        return None  # no separate role chunk: every content delta carries the role

    def content_delta(self, word: str) -> dict[str, Any]:
        return {"role": "assistant", "content": word}

    def message(self, text: str) -> dict[str, Any]:
        return {"role": "assistant", "content": text}

    def usage(self, c: Completion) -> dict[str, Any]:
        return _token_counts(c)  # no details

    def stream_error(self, shape: _ChatShape) -> bytes:
        # The native {"error": ...} line goes through Ollama's ChatWriter, which decodes it as
        # an empty response: the client sees one empty chunk and the stream ends, no [DONE].
        return shape._chunk([self.choice({"content": ""}, None)])

    def extra_headers(self) -> dict[str, str]:
        return {}

    def _handle(self, ex: Exchange) -> None:
        super()._handle(ex)
        body = ex.body if isinstance(ex.body, dict) else {}
        if isinstance(body.get("model"), str):
            self.server.mark_loaded(body["model"])  # type: ignore[attr-defined]
