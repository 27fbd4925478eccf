"""A loopback server speaking the OpenAI Chat Completions and Embeddings APIs (what
api.openai.com sends; embeddings.py says where the embeddings wire facts come from)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .base import Exchange, TestServer
from .batch_server import OpenAIBatchWire
from .embeddings import float32_base64, serve_embeddings, vector_of, word_count
from .openai_wire import OpenAIChat, openai_error

__all__ = ["DEFAULT_OPENAI_MODELS", "OpenAIServer"]

DEFAULT_OPENAI_MODELS = ("gpt-4o-mini", "gpt-4o", "gpt-4.1-mini", "gpt-4.1-nano", "o4-mini")


class OpenAIServer(TestServer):
    """POST /v1/chat/completions (JSON or SSE), POST /v1/embeddings and GET /v1/models; `.url`
    ends in /v1. The fault knobs apply to embeddings requests too.
    The Batch API too: /v1/files and /v1/batches (batch_server.py; knobs in `.batch_knobs`).

    api_key: when set, requests need `Authorization: Bearer <api_key>` (else 401).
    usage: False emulates servers that never report usage (llama.cpp's Python server),
        whatever the request asks.
    models: ids listed by /v1/models; check_models=True makes other models a 404.
    """

    url_suffix = "/v1"

    def __init__(
        self,
        api_key: str | None = None,
        *,
        usage: bool = True,
        models: Iterable[str] = DEFAULT_OPENAI_MODELS,
        check_models: bool = False,
    ) -> None:
        self._default_models = list(models)
        super().__init__(api_key)
        self.check_models = check_models
        self.chat = OpenAIChat(self, send_usage=usage)
        self.routes[("POST", "/v1/chat/completions")] = self.chat.handle
        self.routes[("GET", "/v1/models")] = self._models
        self.batches = OpenAIBatchWire(self)  # /v1/files + /v1/batches (batch_server.py)
        self.routes[("POST", "/v1/embeddings")] = self._embeddings

    def reset_state(self) -> None:
        self.models = list(self._default_models)
        if hasattr(self, "batches"):
            self.batches.reset()

    def model_ids(self) -> list[str]:
        return list(self.models)

    def _models(self, ex: Exchange) -> None:
        err = self.chat.auth_error(ex)
        if err is not None:
            return ex.send_error_json(401, err)
        data = [
            {"id": m, "object": "model", "created": 1715367049, "owned_by": "system"}
            for m in self.models
        ]
        ex.send_json(200, {"object": "list", "data": data})

    def _embeddings(self, ex: Exchange) -> None:
        def auth(ex: Exchange) -> bool:
            err = self.chat.auth_error(ex)
            if err is not None:
                ex.send_error_json(401, err)
            return err is None

        def refuse(status: int, message: str | None) -> None:
            ex.send_error_json(status, openai_error(status, message, model))

        def check(body: dict[str, Any], model: str, texts: list[str]) -> tuple[int, str] | None:
            if not model:
                return 400, "you must provide a model parameter"
            if not texts or any(t == "" for t in texts):  # the API refuses empty input
                return 400, "'$.input' is invalid. Please check the API reference."
            if body.get("encoding_format") not in (None, "float", "base64"):
                return 400, "'encoding_format' must be 'float' or 'base64'."
            if not self.chat.knows_model(model):
                return 404, openai_error(404, model=model)["error"]["message"]
            return None

        def answer(model: str, texts: list[str]) -> None:
            as_text = ex.body.get("encoding_format") == "base64"
            data = []
            for i, text in enumerate(texts):
                vector = vector_of(text)
                shown = float32_base64(vector) if as_text else vector
                data.append({"object": "embedding", "index": i, "embedding": shown})
            reply: dict[str, Any] = {"object": "list", "data": data}
            reply["model"] = ex.faults.report_model or model
            tokens = word_count(texts)
            if ex.faults.usage:
                reply["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens}
            ex.send_json(200, reply, self.chat.extra_headers())

        body = ex.body if isinstance(ex.body, dict) else {}
        model = body.get("model") if isinstance(body.get("model"), str) else ""
        serve_embeddings(self, ex, auth=auth, refuse=refuse, answer=answer, check=check)

    def not_found(self, ex: Exchange) -> None:
        message = f"Invalid URL ({ex.request.method} {ex.request.path})"
        body = openai_error(404, message)
        body["error"]["code"] = None
        ex.send_json(404, body)

    def bad_json(self, ex: Exchange) -> None:
        self.chat.handle(ex)  # the chat flow answers unparsable bodies in OpenAI's words
