"""Ollama over its native API: `/api/chat` streaming NDJSON, plus model management.

Wire facts that shape this module (shared/protocols/ollama.md): the server streams unless told
`"stream": false`, so `stream` is always sent; sampling options go inside `options`
(`num_predict` is max tokens); the stream is one JSON object per line and ends with the
`done: true` object, which alone carries the token counts (`prompt_eval_count`, `eval_count`,
absent when zero); an error can arrive as an `{"error": ...}` line after a 200.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import replace
from typing import Any

import httpx2

from .. import errors
from ._embeddings import read_json, read_vectors, token_count
from ._http import ADMIN_TIMEOUT, Exchange, HTTPService, KeyedProvider, timeout_for
from ._image_parts import ollama_message
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
# A pull reports progress every 60 ms while it downloads, so a minute without a line is a stall
# (PULL_STALL_S, read at each pull). Verifying a large blob sends nothing until it is done, for
# minutes on a slow disk: while Ollama verifies, only the read timeout below applies.
PULL_STALL_S = 60.0
_PULL_TIMEOUT = httpx2.Timeout(600.0, connect=5.0)
# Deleting unlinks the model's blobs: no listing, so it keeps the longer admin limit.
_DELETE_TIMEOUT = httpx2.Timeout(30.0, connect=5.0)


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


class _StallWatch:
    """Cancels `token` when no progress line came for `limit` seconds (None: no limit for now).

    A read timeout is fixed when the request is sent, and a pull needs another limit while it
    verifies: so a thread keeps the time, and cancelling wakes the blocked read at once.
    """

    def __init__(self, token: CancelToken, limit: float | None) -> None:
        self.stalled_for: float | None = None  # the limit that ran out, once it has
        self._token = token
        self._limit = limit
        self._last = time.monotonic()
        self._closed = threading.Event()
        threading.Thread(target=self._watch, name="llm-pull-watch", daemon=True).start()

    def heard(self, limit: float | None) -> None:
        self._last, self._limit = time.monotonic(), limit

    def close(self) -> None:
        self._closed.set()

    def _watch(self) -> None:
        while True:
            limit = self._limit
            left = 1.0 if limit is None else self._last + limit - time.monotonic()
            if left <= 0:
                self.stalled_for = limit
                self._token.cancel()
                return
            if self._closed.wait(left):
                return


def context_from_show(body: dict[str, Any]) -> int | None:
    """The context length in an /api/show reply (`model_info`, keyed by architecture)."""
    info = body.get("model_info") if isinstance(body.get("model_info"), dict) else {}
    arch = info.get("general.architecture")
    value = info.get(f"{arch}.context_length")
    if not isinstance(value, int):  # architecture missing: any *.context_length will do
        value = next((v for k, v in info.items() if k.endswith(".context_length")), None)
    return value if isinstance(value, int) else None


def _parameters(text: Any) -> dict[str, Any]:
    """Ollama's Modelfile parameters ("stop  \"<|eot_id|>\"" lines) as a dict; repeats -> list."""
    out: dict[str, Any] = {}
    for line in str(text or "").splitlines():
        key, _, value = line.strip().partition(" ")
        if not key:
            continue
        value = value.strip().strip('"')
        if key in out:
            out[key] = [*out[key], value] if isinstance(out[key], list) else [out[key], value]
        else:
            out[key] = value
    return out


def _gb(value: Any) -> float | None:
    return round(value / 1e9, 3) if isinstance(value, (int, float)) else None


# /api/show for every listed model, at once, within this many seconds (`%llm models`).
_SHOW_ALL_DEADLINE = 30.0


class OllamaProvider(KeyedProvider, ProviderFacts):
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

    # ------------------------------------------------------------------ model management

    def show(self, model: str) -> dict[str, Any]:
        """Everything `/api/show` knows about a local model (details, model_info, template...)."""
        try:
            body = self._http.call_json(
                "POST", "/api/show", json_body={"model": model}, timeouts=ADMIN_TIMEOUT
            )
        except errors.NotFound as exc:
            raise self._with_pull_hint(exc, model) from None
        if not isinstance(body, dict):
            raise errors.BadResponse("/api/show did not reply with an object", provider=self.name)
        return body

    def pull(self, model: str, cancel: CancelToken | None = None) -> Iterator[dict[str, Any]]:
        """Progress objects of a pull ({"status", "digest", "total", "completed"}), as they come.

        A failed pull (unknown model, registry down) arrives as an error line after a 200
        and is raised as ProviderError with Ollama's own words. No progress line for
        PULL_STALL_S seconds (outside verification) stops the pull with TimedOut.
        """
        stop = CancelToken()  # cancelled by the caller's token or by the stall watch
        if cancel is not None:
            cancel.on_cancel(stop.cancel)
        exchange = self._http.exchange(
            "POST",
            "/api/pull",
            json_body={"model": model, "stream": True},
            timeouts=_PULL_TIMEOUT,
            cancel=stop,
            accept="application/x-ndjson",
        )
        watch = _StallWatch(stop, PULL_STALL_S)
        status = ""
        try:
            with exchange:
                for line in exchange.lines():
                    if line.strip():
                        progress = self._parse(exchange, line)
                        status = str(progress.get("status") or status)
                        watch.heard(None if status.startswith("verifying") else PULL_STALL_S)
                        yield progress
        except errors.Cancelled:
            if watch.stalled_for is None:
                raise  # the caller cancelled
            last = f"last status: {status!r}" if status else "nothing received"
            raise errors.TimedOut(
                f"no progress for {watch.stalled_for:g} s ({last}); "
                "pull stopped, run it again to resume",
                provider=self.name,
            ) from None
        finally:
            watch.close()

    def delete(self, model: str) -> None:
        """Remove a local model (404 NotFound when there is no such model)."""
        self._http.call_json(
            "DELETE", "/api/delete", json_body={"model": model}, timeouts=_DELETE_TIMEOUT
        )

    def running(self) -> list[dict[str, Any]]:
        """The models loaded in memory right now (`/api/ps`)."""
        body = self._http.call_json("GET", "/api/ps", timeouts=ADMIN_TIMEOUT)
        models = body.get("models") if isinstance(body, dict) else None
        return [m for m in models or [] if isinstance(m, dict)]

    # ------------------------------------------------------------------ %llm model commands

    def list_models_in_detail(self) -> list[ModelInfo]:
        """The listing with context lengths: /api/tags has none, /api/show has it, one request
        per model, all at once. A model whose show fails or is late keeps None."""
        models = self.list_models()
        if not models:
            return models
        pool = ThreadPoolExecutor(max_workers=min(8, len(models)), thread_name_prefix="llm-show")
        futures = [pool.submit(self.show, m.model) for m in models]
        try:
            wait(futures, timeout=_SHOW_ALL_DEADLINE)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        detailed = []
        for m, future in zip(models, futures, strict=True):
            ok = future.done() and not future.cancelled() and future.exception() is None
            context = context_from_show(future.result()) if ok else None
            detailed.append(m if context is None else replace(m, context_length=context))
        return detailed

    def describe(self, model: str) -> dict[str, Any]:
        """What `%llm show` shows: /api/show's facts, the Modelfile parameters as a dict."""
        body = self.show(model)
        details = body.get("details") if isinstance(body.get("details"), dict) else {}
        info = body.get("model_info") if isinstance(body.get("model_info"), dict) else {}
        return {
            "target": f"{self.name}:{model}",
            "family": details.get("family"),
            "parameter_size": details.get("parameter_size"),
            "quantization": details.get("quantization_level"),
            "format": details.get("format"),
            "context_length": context_from_show(body),
            "capabilities": body.get("capabilities"),
            "parameters": _parameters(body.get("parameters")),
            "template": body.get("template"),
            "modified_at": body.get("modified_at"),
            "model_info": {k: v for k, v in info.items() if not isinstance(v, (list, dict))},
        }

    def remove_model(self, model: str) -> str:
        self.delete(model)
        return f"deleted {self.name}:{model}"

    def running_models(self) -> list[dict[str, Any]]:
        """`%llm ps` rows for the models Ollama holds in memory."""
        rows = []
        for m in self.running():
            details = m.get("details") if isinstance(m.get("details"), dict) else {}
            rows.append(
                {
                    "model": m.get("model") or m.get("name"),
                    "size_gb": _gb(m.get("size")),
                    "vram_gb": _gb(m.get("size_vram")),
                    "context_length": m.get("context_length"),
                    "expires_at": m.get("expires_at"),
                    "details": dict(details),
                }
            )
        return rows

    def close(self) -> None:
        """Close the pooled connections (the registry keeps providers for the whole session)."""
        self._http.close()
