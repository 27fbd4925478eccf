"""Mistral's chat API over httpx2, streaming server-sent events.

Wire facts that shape this module (shared/protocols/mistral.md): the request schema is closed
(any field Mistral does not know, or a null where it wants a value, is a 422), so only known
fields with values go out, and the seed is `random_seed`; there is no `stream_options`, usage
rides on the last content chunk next to `finish_reason`; error bodies come in several shapes
(`message` as a string or an object, or a top-level `detail`), read by `_http.error_text`.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

from .. import errors
from ._http import ADMIN_TIMEOUT, HTTPService, KeyedProvider, timeout_for
from ._sse_chat import chat_chunks, whole_chunk
from .base import CancelToken, Chunk, Health, Message, ModelInfo, Options, ProviderFacts

__all__ = ["DEFAULT_BASE_URL", "MistralProvider"]

DEFAULT_BASE_URL = "https://api.mistral.ai"
_CHAT = "/v1/chat/completions"
_MODELS = "/v1/models"
_CARD_DETAILS = ("owned_by", "type", "aliases", "capabilities", "description", "deprecation")


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


class MistralProvider(KeyedProvider, ProviderFacts):
    """Mistral's La Plateforme API. Thread-safe: one pooled client serves every caller."""

    server_label = "Mistral API"
    listing_path = _MODELS
    admin_timeout_s = ADMIN_TIMEOUT.read

    @classmethod
    def normalise_base_url(cls, url: str | None) -> str:
        base = (url or DEFAULT_BASE_URL).rstrip("/")
        # An OpenAI-style base URL ending in /v1 would double the version in every path.
        return base.removesuffix("/v1")

    def __init__(
        self, *, name: str, base_url: str | None, api_key: str | None, key_env: str | None = None
    ) -> None:
        self.name = name
        self.base_url = self.normalise_base_url(base_url)
        self._key_env = key_env
        self._missing_key = api_key is None and key_env is not None
        self._http = HTTPService(name, self.base_url, api_key)

    def stream(
        self,
        messages: list[Message],
        model: str,
        options: Options,
        cancel: CancelToken | None = None,
    ) -> Iterator[Chunk]:
        self._require_key()
        exchange = self._http.exchange(
            "POST",
            _CHAT,
            json_body=_chat_body(messages, model, options),
            timeouts=timeout_for(options),
            cancel=cancel,
            accept="text/event-stream" if options.stream else "application/json",
        )
        with exchange:
            if options.stream:
                yield from chat_chunks(exchange)
            else:
                yield whole_chunk(exchange, exchange.body())

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
                    modified=(
                        datetime.fromtimestamp(created, timezone.utc).isoformat()
                        if isinstance(created, (int, float)) and created > 0
                        else None
                    ),
                    context_length=context if isinstance(context, int) else None,
                    details={k: entry[k] for k in _CARD_DETAILS if k in entry},
                )
            )
        return models

    def health(self) -> Health:
        reachable, rtt, _, error = self._http.ping("GET", _MODELS)
        error = self._key_problem() or error
        return Health(
            provider=self.name, base_url=self.base_url, reachable=reachable, rtt_s=rtt, error=error
        )

    def close(self) -> None:
        """Close the pooled connections (the registry keeps providers for the whole session)."""
        self._http.close()
