"""A loopback server speaking Mistral's chat and embeddings API (api.mistral.ai), closed schema
included (embeddings.py says where the embeddings wire facts come from).

Tool calls (the `tool_call` knobs, tool_turns.py): with `tool_pieces` 1 the call comes whole in
one chunk without `index` or `type`, on the chunk that ends the stream with finish_reason
"tool_calls" and the usage, as the notes' observed stream has it (mistral.md §4); with more
pieces its arguments come in fragments carrying `index` (the spec's ToolCall has `index`,
default 0), which the notes advise a client to accept like OpenAI's. Ids are 9 letters and
digits, the only ids Mistral takes back (tool_rules.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from .base import Exchange, StreamShape, TestServer, dumps
from .batch_server import MistralBatchWire
from .embeddings import serve_embeddings, vector_of, word_count
from .images import ImageProblem, mistral_images
from .mistral_schema import validation_errors
from .tool_rules import openai_problem, openai_result, openai_rounds
from .tool_turns import ToolTurn, after_results, tool_completion, tool_turn
from .wire import Completion, sse

__all__ = ["DEFAULT_MISTRAL_MODELS", "MistralServer", "mistral_error"]

DEFAULT_MISTRAL_MODELS: dict[str, int] = {  # id -> max_context_length
    "mistral-small-latest": 131072,
    "mistral-large-latest": 131072,
    "open-mistral-nemo": 131072,
    "codestral-latest": 262144,
    "ministral-3b-latest": 131072,
}


def mistral_error(status: int, message: str | None = None, model: str = "") -> dict[str, Any]:
    """The error body api.mistral.ai has been observed to send for `status` (shapes differ!)."""
    if status == 401:
        return {"message": message or "Unauthorized", "request_id": uuid.uuid4().hex}
    if status == 422:
        detail = [
            {"type": "value_error", "loc": ["body"], "msg": message or "Value error", "input": None}
        ]
        return _envelope({"detail": detail}, "invalid_request_error", None)
    if status == 429:
        return _envelope(message or "Rate limit exceeded", "rate_limited", "1300")
    if status == 400:
        return _envelope(message or f"Invalid model: {model}", "invalid_model", "1500")
    return _envelope(message or "Internal server error", "internal_server_error", "3000")


def _envelope(message: Any, etype: str, code: str | None) -> dict[str, Any]:
    return {"object": "error", "message": message, "type": etype, "param": None, "code": code}


class MistralServer(TestServer):
    """POST /v1/chat/completions (JSON or SSE), POST /v1/embeddings and GET /v1/models; `.url`
    is the bare host. The fault knobs apply to embeddings requests too.
    Batch jobs too: /v1/files and /v1/batch/jobs (batch_server.py; knobs in `.batch_knobs`).

    api_key: when set, requests need `Authorization: Bearer <api_key>` (else 401).
    models: id -> max_context_length for /v1/models; check_models=True makes other models a 400
        "Invalid model" like the real API (default: any model answers).
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        models: dict[str, int] | Iterable[str] | None = None,
        check_models: bool = False,
    ) -> None:
        if models is None:
            models = DEFAULT_MISTRAL_MODELS
        self._default_models = (
            dict(models) if isinstance(models, dict) else {m: 32768 for m in models}
        )
        super().__init__(api_key)
        self.check_models = check_models
        self.routes[("POST", "/v1/chat/completions")] = self._chat
        self.routes[("GET", "/v1/models")] = self._models
        self.batches = MistralBatchWire(self)  # /v1/files + /v1/batch/jobs (batch_server.py)
        self.routes[("POST", "/v1/embeddings")] = self._embeddings

    def reset_state(self) -> None:
        self.models = dict(self._default_models)
        if hasattr(self, "batches"):
            self.batches.reset()

    def not_found(self, ex: Exchange) -> None:
        ex.send_json(404, {"detail": "Not Found"})

    def bad_json(self, ex: Exchange) -> None:
        self._chat(ex)

    def _auth_ok(self, ex: Exchange) -> bool:
        if self.bearer_ok(ex):
            return True
        ex.send_error_json(401, mistral_error(401))
        return False

    # -- chat -----------------------------------------------------------------------------
    def _chat(self, ex: Exchange) -> None:
        with self.chat_slot():
            self._chat_inner(ex)

    def _chat_inner(self, ex: Exchange) -> None:
        f = ex.faults
        body = ex.body if isinstance(ex.body, dict) else None
        model = body.get("model") if body and isinstance(body.get("model"), str) else ""
        ex.sleep(f.delay)
        if not self._auth_ok(ex):
            return
        status = self.next_error_status(ex)
        if status is not None:
            return ex.send_error_json(status, mistral_error(status, f.error_message, model))
        problems = validation_errors(ex.body)
        if problems:
            return ex.send_error_json(
                422, _envelope({"detail": problems}, "invalid_request_error", None)
            )
        assert body is not None
        problem = openai_problem(body, mistral=True)
        if problem is not None:
            return ex.send_error_json(400, _envelope(problem, "invalid_request_error", "3280"))
        if self.check_models and model not in self.models:
            return ex.send_error_json(400, mistral_error(400, model=model))
        try:  # image_url parts checked and noted in the echo (servers/images.py)
            messages = mistral_images(body["messages"])
        except ImageProblem as exc:  # the wording and type are ours: the docs show none
            return ex.send_error_json(400, _envelope(str(exc), "invalid_request_error", None))
        reply = after_results(f, openai_result(body["messages"]))
        c = self.completion(ex, model, messages, body.get("max_tokens"), reply)
        turn = tool_turn(f, body.get("tools"), openai_rounds(body["messages"]), _call_id)
        if turn is not None:
            c = tool_completion(turn, c.model, c.prompt_tokens)
        if body.get("stream") is not True:
            return self._plain(ex, c, turn)
        ex.start_stream("text/event-stream; charset=utf-8")
        ex.stream(_MistralShape(ex, c, turn), c)

    def _plain(self, ex: Exchange, c: Completion, turn: ToolTurn | None = None) -> None:
        error = ex.faults.error_message
        if ex.broken_plain_reply(lambda: ex.send_error_json(500, mistral_error(500, error))):
            return
        ex.wait_generation(c)
        reply: dict[str, Any] = {"id": c.id_hex, "object": "chat.completion", "model": c.model}
        if ex.faults.usage:
            reply["usage"] = _usage(c)
        reply["created"] = c.created
        reply["choices"] = [
            {
                "index": 0,
                "message": {
                    "content": c.text if turn is None else "",
                    "tool_calls": None if turn is None else _calls(turn, turn.arguments),
                    "prefix": False,
                    "role": "assistant",
                },
                "finish_reason": c.finish_reason,
            }
        ]
        ex.send_json(200, reply)

    # -- embeddings -----------------------------------------------------------------------
    def _embeddings(self, ex: Exchange) -> None:
        def refuse(status: int, message: str | None) -> None:
            ex.send_error_json(status, mistral_error(status, message, model))

        def check(body: dict[str, Any], model: str, texts: list[str]) -> tuple[int, str] | None:
            extra = sorted(set(body) - _EMBEDDING_FIELDS)
            if extra:
                return 422, f"Extra inputs are not permitted: {extra[0]}"
            if not model:
                return 422, "Field required: model"
            if self.check_models and model not in self.models:
                return 400, f"Invalid model: {model}"
            return None

        def answer(model: str, texts: list[str]) -> None:
            data = [
                {"object": "embedding", "embedding": vector_of(t), "index": i}
                for i, t in enumerate(texts)
            ]
            reply: dict[str, Any] = {"id": uuid.uuid4().hex, "object": "list", "data": data}
            reply["model"] = ex.faults.report_model or model
            tokens = word_count(texts)
            if ex.faults.usage:
                reply["usage"] = {
                    "prompt_tokens": tokens,
                    "total_tokens": tokens,
                    "completion_tokens": 0,
                }
            ex.send_json(200, reply)

        body = ex.body if isinstance(ex.body, dict) else {}
        model = body.get("model") if isinstance(body.get("model"), str) else ""
        serve_embeddings(self, ex, auth=self._auth_ok, refuse=refuse, answer=answer, check=check)

    # -- models ---------------------------------------------------------------------------
    def _models(self, ex: Exchange) -> None:
        if not self._auth_ok(ex):
            return
        ex.send_json(200, {"object": "list", "data": [_card(m, n) for m, n in self.models.items()]})


def _call_id() -> str:
    return uuid.uuid4().hex[:9]


def _calls(turn: ToolTurn, arguments: str, indexed: bool = False) -> list[dict[str, Any]]:
    calls = []
    for n, ident in enumerate(turn.ids):
        function = {"name": turn.name, "arguments": arguments}
        call: dict[str, Any] = {"id": ident, "function": function}
        if indexed:
            call = {**call, "type": "function", "index": n}
        calls.append(call)
    return calls


_EMBEDDING_FIELDS = frozenset(
    ("model", "input", "output_dimension", "output_dtype", "encoding_format", "metadata")
)


def _usage(c: Completion) -> dict[str, int]:
    return {
        "prompt_tokens": c.prompt_tokens,
        "total_tokens": c.total_tokens,
        "completion_tokens": c.completion_tokens,
    }


def _card(model: str, context: int) -> dict[str, Any]:
    return {
        "id": model,
        "object": "model",
        "created": 1750000000,
        "owned_by": "mistralai",
        "capabilities": {
            "completion_chat": True,
            "completion_fim": model.startswith("codestral"),
            "function_calling": True,
            "fine_tuning": False,
            "vision": False,
            "classification": False,
        },
        "name": model,
        "description": f"Test double of {model}",
        "max_context_length": context,
        "aliases": [],
        "deprecation": None,
        "deprecation_replacement_model": None,
        "default_model_temperature": 0.3,
        "type": "base",
    }


class _MistralShape(StreamShape):
    """Role chunk, one chunk per word; the last word's chunk also carries finish_reason and
    usage (there is no separate usage chunk and no stream_options); then data: [DONE]."""

    def __init__(self, ex: Exchange, c: Completion, turn: ToolTurn | None = None) -> None:
        self.ex, self.c, self.turn = ex, c, turn
        self.prefix = {
            "id": c.id_hex,
            "object": "chat.completion.chunk",
            "created": c.created,
            "model": c.model,
        }

    def _chunk(self, delta: dict[str, Any], finish: str | None, usage: bool) -> bytes:
        obj: dict[str, Any] = {
            **self.prefix,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
        }
        if usage and self.ex.faults.usage:
            obj["usage"] = _usage(self.c)
        return sse(dumps(obj))

    def head(self) -> bytes:
        return self._chunk({"role": "assistant", "content": ""}, None, False)

    def content(self, index: int, word: str, last: bool) -> bytes:
        finish = self.c.finish_reason if last else None
        if self.turn is None:
            return self._chunk({"content": word}, finish, last)
        if len(self.turn.pieces) == 1:  # observed: the whole call, no index, ending the stream
            whole = {"content": None, "tool_calls": _calls(self.turn, word)}
            return self._chunk(whole, finish, last)
        calls = _calls(self.turn, word, indexed=True)
        if index:  # later fragments: the index and the arguments piece only
            calls = [{"index": c["index"], "function": {"arguments": word}} for c in calls]
        return self._chunk({"content": None, "tool_calls": calls}, finish, last)

    def malformed(self) -> bytes:
        return b"data: {not json\n\n"

    def error(self) -> bytes:
        # The schema's in-stream failure: a chunk whose finish_reason is "error", then [DONE].
        return self._chunk({"content": ""}, "error", True) + b"data: [DONE]\n\n"

    def tail(self) -> bytes:
        end = b"" if self.c.words else self._chunk({"content": ""}, self.c.finish_reason, True)
        return end + b"data: [DONE]\n\n"
