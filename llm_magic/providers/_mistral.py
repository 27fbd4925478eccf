"""Mistral's chat API over httpx2, streaming server-sent events.

Wire facts that shape this module (shared/protocols/mistral.md): the request schema is closed
(any field Mistral does not know, or a null where it wants a value, is a 422), so only known
fields with values go out, and the seed is `random_seed`; there is no `stream_options`, usage
rides on the last content chunk next to `finish_reason`; error bodies come in several shapes
(`message` as a string or an object, or a top-level `detail`), read by `_http_errors.error_text`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .. import errors
from ._batch_api import MistralBatches, ServiceTransport
from ._embeddings import data_list, read_json
from ._http import ADMIN_TIMEOUT, ServiceProvider, timeout_for, unix_time
from ._image_parts import mistral_message
from ._sse_chat import chat_chunks, whole_chunk
from ._structured import mistral_response_format
from ._tool_wire import is_tool_turn, openai_tool_turn, openai_tools
from .base import CancelToken, Chunk, Embeddings, Message, ModelInfo, Options

__all__ = ["DEFAULT_BASE_URL", "MistralProvider"]

DEFAULT_BASE_URL = "https://api.mistral.ai"
_CHAT = "/v1/chat/completions"
_MODELS = "/v1/models"
_EMBEDDINGS = "/v1/embeddings"
_CARD_DETAILS = ("owned_by", "type", "aliases", "capabilities", "description", "deprecation")


def _chat_body(messages: list[Message], model: str, options: Options) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "messages": [
            openai_tool_turn(m, tool_name=True) if is_tool_turn(m) else mistral_message(m)
            for m in messages
        ],
        "stream": bool(options.stream),
    }
    # Only fields of Mistral's ChatCompletionRequest, and never a null.
    for key, value in (
        ("temperature", options.temperature),
        ("top_p", options.top_p),
        ("max_tokens", options.max_tokens),
        ("random_seed", options.seed),
        ("stop", list(options.stop) if options.stop else None),
        ("tools", openai_tools(options.tools) if options.tools else None),
    ):
        if value is not None:
            body[key] = value
    if options.json_schema is not None:
        body["response_format"] = mistral_response_format(options.json_schema)
    return body


class MistralProvider(ServiceProvider):
    """Mistral's La Plateforme API. Thread-safe: one pooled client serves every caller."""

    server_label = "Mistral API"
    takes_images = takes_image_urls = True  # image_url parts (vision models)
    listing_path = _MODELS
    admin_timeout_s = ADMIN_TIMEOUT.read
    batch_wire = "mistral"

    def batches(self) -> MistralBatches:
        """Its batch jobs service (/v1/files + /v1/batch/jobs)."""
        self._require_key()
        return MistralBatches(self.name, ServiceTransport(self._http), _chat_body)

    @classmethod
    def normalise_base_url(cls, url: str | None) -> str:
        base = (url or DEFAULT_BASE_URL).rstrip("/")
        # An OpenAI-style base URL ending in /v1 would double the version in every path.
        return base.removesuffix("/v1")

    def stream(
        self,
        messages: list[Message],
        model: str,
        options: Options,
        cancel: CancelToken | None = None,
    ) -> Iterator[Chunk]:
        body = _chat_body(messages, model, options)
        yield from self._answer(_CHAT, body, options, cancel, chat_chunks, whole_chunk)

    def embed(
        self,
        texts: list[str],
        model: str,
        options: Options,
        cancel: CancelToken | None = None,
    ) -> Embeddings:
        """POST /v1/embeddings: one vector per text (the closed schema: model and input only)."""
        self._require_key()
        body = {"model": model, "input": list(texts)}
        timeouts = timeout_for(options)
        with self._http.exchange(
            "POST", _EMBEDDINGS, json_body=body, timeouts=timeouts, cancel=cancel
        ) as exchange:
            reply = read_json(exchange, _EMBEDDINGS)
        return data_list(reply, len(texts), self.name)

    def list_models(self) -> list[ModelInfo]:
        self._require_key()
        body = self._http.call_json("GET", _MODELS, timeouts=ADMIN_TIMEOUT)
        # The schema says {"object": "list", "data": [...]}; the rendered docs show a bare array.
        entries = body.get("data") if isinstance(body, dict) else body
        if not isinstance(entries, list):  # a listing of another shape: say so, never "none"
            raise errors.BadResponse(f'{_MODELS} replied without a "data" list', provider=self.name)
        models = []
        for entry in entries:
            if not isinstance(entry, dict) or not entry.get("id"):
                continue
            created = entry.get("created")
            context = entry.get("max_context_length")
            models.append(
                ModelInfo(
                    provider=self.name,
                    model=str(entry["id"]),
                    modified=unix_time(created),
                    context_length=context if isinstance(context, int) else None,
                    details={k: entry[k] for k in _CARD_DETAILS if k in entry},
                )
            )
        return models
