"""Ollama over its native API: `/api/chat` streaming NDJSON, plus model management.

Wire facts that shape this module (shared/protocols/ollama.md): the server streams unless told
`"stream": false`, so `stream` is always sent; sampling options go inside `options`
(`num_predict` is max tokens); the stream is one JSON object per line and ends with the
`done: true` object, which alone carries the token counts (`prompt_eval_count`, `eval_count`,
absent when zero); an error can arrive as an `{"error": ...}` line after a 200.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from .. import errors
from ._embeddings import read_json, read_vectors, token_count
from ._http import ADMIN_TIMEOUT, Exchange, HTTPService, KeyedProvider, timeout_for
from ._image_parts import ollama_message
from ._ollama_models import OllamaModels, context_from_show
from ._structured import ollama_format
from ._tool_wire import is_tool_turn, ollama_pieces, ollama_tool_turn, openai_tools
from .base import (
    CancelToken,
    Chunk,
    Embeddings,
    Health,
    Message,
    ModelInfo,
    Options,
    ProviderFacts,
    Usage,
)

__all__ = ["DEFAULT_HOST", "OllamaProvider", "context_from_show", "parse_ollama_host"]

DEFAULT_PORT = 11434
DEFAULT_HOST = f"http://127.0.0.1:{DEFAULT_PORT}"


def parse_ollama_host(value: str | None) -> str:
    """The base URL for an OLLAMA_HOST value, read the way Ollama's own clients read it.

    Bare host: port 11434; `http://host`: port 80; `https://host`: port 443; `:PORT`:
    127.0.0.1; the bind-all addresses 0.0.0.0 and :: become loopback; quotes and spaces are
    stripped; a path prefix is kept without its trailing slash.
    """
    value = (value or "").strip().strip("\"'").strip()
    if not value:
        return DEFAULT_HOST
    scheme, sep, rest = value.partition("://")
    if sep:
        scheme = scheme.lower()
        default_port = {"http": 80, "https": 443}.get(scheme, DEFAULT_PORT)
    else:
        scheme, rest, default_port = "http", value, DEFAULT_PORT
    hostport, slash, path = rest.partition("/")
    path = ("/" + path).rstrip("/") if slash else ""

    if hostport.startswith("["):  # [v6] or [v6]:port
        host, _, after = hostport[1:].partition("]")
        port_text = after[1:] if after.startswith(":") else ""
    elif hostport.count(":") > 1:  # a bare IPv6 address has no room for a port
        host, port_text = hostport, ""
    else:
        host, _, port_text = hostport.partition(":")

    if not sep and host == "ollama.com" and not port_text:
        scheme, default_port = "https", 443  # Ollama's own special case for its cloud
    try:
        port = int(port_text)
        if not 0 < port <= 65535:
            port = default_port
    except ValueError:
        port = default_port

    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}{path}"


def _chat_body(messages: list[Message], model: str, options: Options) -> dict[str, Any]:
    sampling: dict[str, Any] = {}
    if options.temperature is not None:
        sampling["temperature"] = options.temperature
    if options.top_p is not None:
        sampling["top_p"] = options.top_p
    if options.seed is not None:
        sampling["seed"] = options.seed
    if options.max_tokens is not None:
        sampling["num_predict"] = options.max_tokens
    if options.stop:
        sampling["stop"] = list(options.stop)
    body: dict[str, Any] = {
        "model": model,
        "messages": [
            ollama_tool_turn(m) if is_tool_turn(m) else ollama_message(m) for m in messages
        ],
        "stream": bool(options.stream),  # omitted means "stream" to Ollama: always say it
    }
    if options.tools:  # the same wrapper as OpenAI's
        body["tools"] = openai_tools(options.tools)
    if sampling:
        body["options"] = sampling
    if options.json_schema is not None:
        body["format"] = ollama_format(options.json_schema)
    return body


def _usage(obj: dict[str, Any]) -> Usage:
    def count(key: str) -> int | None:
        value = obj.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    return Usage(prompt_tokens=count("prompt_eval_count"), completion_tokens=count("eval_count"))


def _done_reason(obj: dict[str, Any], calls: int) -> str:
    """Ollama says "stop" natively even after tool calls; name them as the others do."""
    reason = obj.get("done_reason") or "stop"
    return "tool_calls" if calls and reason == "stop" else reason


def _preview(line: str) -> str:
    return repr(line[:60] + ("…" if len(line) > 60 else ""))


class OllamaProvider(OllamaModels, KeyedProvider, ProviderFacts):
    """Ollama's native API. Thread-safe: one pooled client serves every caller."""

    server_label = "Ollama"
    listed_models_only = True  # it answers only the models pulled into it
    listing_path = "/api/tags"
    admin_timeout_s = ADMIN_TIMEOUT.read
    start_hint = "start it with `ollama serve`"
    takes_images = True  # base64 in the message's `images`; the REST API takes no URL

    @classmethod
    def normalise_base_url(cls, url: str | None) -> str:
        return parse_ollama_host(url)

    @staticmethod
    def short_model_name(name: str) -> str:
        # No tag means `latest`: "llama3.2" is what people type for "llama3.2:latest".
        return name.removesuffix(":latest")

    def __init__(
        self, *, name: str, base_url: str | None, api_key: str | None, key_env: str | None = None
    ) -> None:
        self.name = name
        self.base_url = parse_ollama_host(base_url)
        self._key_env = key_env
        self._missing_key = api_key is None and key_env is not None
        # ollama.com's hosted API takes a Bearer key; a local server needs none.
        self._http = HTTPService(name, self.base_url, api_key)

    def _parse(self, exchange: Exchange, line: str) -> dict[str, Any]:
        try:
            obj = json.loads(line)
        except ValueError:
            raise exchange.error(
                errors.BadResponse, f"malformed line from Ollama: {_preview(line)}"
            ) from None
        return self._checked(exchange, obj, line)

    def _checked(self, exchange: Exchange, obj: Any, line: str) -> dict[str, Any]:
        if not isinstance(obj, dict):
            raise exchange.error(
                errors.BadResponse, f"unexpected line from Ollama: {_preview(line)}"
            )
        if obj.get("error") not in (None, ""):  # an error after the 200: no status to say it
            message = obj["error"] if isinstance(obj["error"], str) else json.dumps(obj["error"])
            raise exchange.error(errors.ProviderError, str(message))
        return obj

    # ------------------------------------------------------------------ chat

    def stream(
        self,
        messages: list[Message],
        model: str,
        options: Options,
        cancel: CancelToken | None = None,
    ) -> Iterator[Chunk]:
        self._require_key()
        try:
            yield from self._chat(messages, model, options, cancel)
        except errors.NotFound as exc:
            raise self._with_pull_hint(exc, model) from None

    def _with_pull_hint(self, exc: errors.NotFound, model: str) -> errors.NotFound:
        """Ollama's words for a model it lacks, and the command that fixes it."""
        exc.extended(f" (%llm pull {self.name}:{model})")
        return exc

    def _chat(
        self, messages: list[Message], model: str, options: Options, cancel: CancelToken | None
    ) -> Iterator[Chunk]:
        body = _chat_body(messages, model, options)
        exchange = self._http.exchange(
            "POST",
            "/api/chat",
            json_body=body,
            timeouts=timeout_for(options),
            cancel=cancel,
            accept="application/x-ndjson",
        )
        with exchange:
            if not options.stream:
                yield self._whole(exchange)
                return
            model_seen = False
            calls_seen = 0  # whole calls come on any line: each gets the next index
            for line in exchange.lines():
                if not line.strip():
                    continue
                obj = self._parse(exchange, line)
                message = obj.get("message") if isinstance(obj.get("message"), dict) else {}
                text = message.get("content")
                text = text if isinstance(text, str) else ""
                calls = ollama_pieces(message, calls_seen) if "tool_calls" in message else ()
                calls_seen += len(calls)
                reported = obj.get("model") if not model_seen else None
                model_seen = model_seen or bool(reported)
                if obj.get("done") is True:
                    yield Chunk(
                        text=text,
                        model=reported or None,
                        usage=_usage(obj),
                        finish_reason=_done_reason(obj, calls_seen),
                        tool_calls=calls,
                    )
                    exchange.finish()
                    return
                if text or reported or calls:
                    exchange.started = exchange.started or bool(text)
                    yield Chunk(text=text, model=reported or None, tool_calls=calls)
            exchange.check_cancelled()
            raise errors.StreamBroken("stream ended before done", provider=self.name)

    # ------------------------------------------------------------------ embeddings

    def embed(
        self,
        texts: list[str],
        model: str,
        options: Options,
        cancel: CancelToken | None = None,
    ) -> Embeddings:
        """POST /api/embed: one vector per text (Ollama cuts a text longer than the model's
        context to fit, its default `truncate`)."""
        self._require_key()
        body = {"model": model, "input": list(texts)}
        try:
            with self._http.exchange(
                "POST", "/api/embed", json_body=body, timeouts=timeout_for(options), cancel=cancel
            ) as exchange:
                reply = read_json(exchange, "/api/embed")
        except errors.NotFound as exc:
            raise self._with_pull_hint(exc, model) from None
        if not isinstance(reply, dict):
            raise errors.BadResponse("/api/embed replied without an object", provider=self.name)
        if reply.get("error") not in (None, ""):  # an error inside a 200
            raise errors.ProviderError(str(reply["error"])[:240], provider=self.name)
        vectors = read_vectors(reply.get("embeddings"), len(texts), self.name)
        reported = reply.get("model")
        return Embeddings(
            vectors,
            token_count(reply.get("prompt_eval_count")),
            reported if isinstance(reported, str) else None,
        )

    def _whole(self, exchange: Exchange) -> Chunk:
        raw = exchange.body().decode("utf-8", "replace").strip()
        if not raw:
            raise errors.BadResponse("empty reply from Ollama", provider=self.name)
        try:
            objs = [self._checked(exchange, json.loads(raw), raw)]
        except ValueError:
            # A server that streamed anyway gives one object per line: join their text.
            objs = [self._parse(exchange, line) for line in raw.splitlines() if line.strip()]
        last = objs[-1]
        messages = [o["message"] for o in objs if isinstance(o.get("message"), dict)]
        text = "".join(m.get("content") or "" for m in messages)
        calls: tuple = ()
        for message in messages:
            calls += ollama_pieces(message, len(calls))
        if last.get("done") is not True:
            raise errors.StreamBroken("reply ended before done", provider=self.name)
        return Chunk(
            text=text,
            usage=_usage(last),
            model=last.get("model") or None,
            finish_reason=_done_reason(last, len(calls)),
            tool_calls=calls,
        )

    # ------------------------------------------------------------------ listing and health

    def list_models(self) -> list[ModelInfo]:
        self._require_key()
        body = self._http.call_json("GET", self.listing_path, timeouts=ADMIN_TIMEOUT)
        entries = body.get("models") if isinstance(body, dict) else None
        models = []
        for entry in entries or []:
            if not isinstance(entry, dict):
                continue
            name = entry.get("model") or entry.get("name")
            if not name:
                continue
            details = entry.get("details") if isinstance(entry.get("details"), dict) else {}
            size = entry.get("size")
            models.append(
                ModelInfo(
                    provider=self.name,
                    model=str(name),
                    size_bytes=size if isinstance(size, int) else None,
                    modified=entry.get("modified_at"),
                    details=dict(details),
                )
            )
        return models

    def health(self) -> Health:
        reachable, rtt, body, error = self._http.ping("GET", "/api/version")
        version = body.get("version") if isinstance(body, dict) else None
        # /api/version needs no key, but chat does when a key variable was configured.
        error = self._key_problem() or error
        return Health(
            provider=self.name,
            base_url=self.base_url,
            reachable=reachable,
            rtt_s=rtt,
            version=version,
            error=error,
        )

    def close(self) -> None:
        """Close the pooled connections (the registry keeps providers for the whole session)."""
        self._http.close()
