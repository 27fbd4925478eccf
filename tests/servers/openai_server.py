"""A loopback server speaking the OpenAI Chat Completions API (what api.openai.com sends)."""

from __future__ import annotations

from collections.abc import Iterable

from .base import Exchange, TestServer
from .batch_server import OpenAIBatchWire
from .openai_wire import OpenAIChat, openai_error

__all__ = ["DEFAULT_OPENAI_MODELS", "OpenAIServer"]

DEFAULT_OPENAI_MODELS = ("gpt-4o-mini", "gpt-4o", "gpt-4.1-mini", "gpt-4.1-nano", "o4-mini")


class OpenAIServer(TestServer):
    """POST /v1/chat/completions (JSON or SSE) and GET /v1/models; `.url` ends in /v1.
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

    def not_found(self, ex: Exchange) -> None:
        message = f"Invalid URL ({ex.request.method} {ex.request.path})"
        body = openai_error(404, message)
        body["error"]["code"] = None
        ex.send_json(404, body)

    def bad_json(self, ex: Exchange) -> None:
        self.chat.handle(ex)  # the chat flow answers unparsable bodies in OpenAI's words
