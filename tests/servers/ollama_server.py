"""A loopback server speaking Ollama's native API (NDJSON) and its OpenAI-compatible /v1
(embeddings.py says where the /api/embed wire facts come from).

Tool calls on /api/chat (the `tool_call` knobs, tool_turns.py) come as Ollama sends them: whole,
`arguments` an object, one call per NDJSON line (`tool_parallel` lines) with empty content and
`done: false`, then the done line with `done_reason: "stop"` (ollama.md, "Streamed tool call
chunk"; structured-tools-images.md §2.3); ids are `call_` + 8 lowercase letters and digits.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import random
import re
import string
import time
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from typing import Any

from .base import Exchange, StreamShape, TestServer, dumps
from .embeddings import serve_embeddings, vector_of, word_count
from .images import ImageProblem, ollama_images
from .ollama_models import (
    DEFAULT_INSTALLED,
    DEFAULT_PULLABLE,
    generic_entry,
    layers,
    normalize_name,
    show_reply,
)
from .openai_wire import OllamaCompatChat
from .structured import ollama_format_problem
from .tool_rules import ollama_problem, openai_result, openai_rounds
from .tool_turns import ToolTurn, after_results, tool_turn
from .wire import Completion

__all__ = ["OllamaServer"]

_NDJSON = "application/x-ndjson"
_RUN_ERROR = "an error was encountered while running the model"
_STATUS_TEXT = {
    400: "invalid request",
    401: "unauthorized",
    429: "too many requests",
    500: _RUN_ERROR,
    502: "bad gateway",
    503: "server busy, please try again.  maximum pending requests exceeded",
}
_LOAD_NS = 1_500_000  # a constant "model already loaded" load_duration


def _now() -> str:
    """created_at as Go writes a UTC time.Time (RFC 3339 with fractional seconds)."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _catalogue(models: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {normalize_name(k): v for k, v in copy.deepcopy(models).items()}


def _unix(stamp: str) -> int:
    """Unix seconds of an RFC 3339 time with Go's nanoseconds (Python parses microseconds)."""
    return int(datetime.fromisoformat(re.sub(r"(\.\d{6})\d+", r"\1", stamp)).timestamp())


def _call_id() -> str:
    return "call_" + "".join(random.choices(string.ascii_lowercase + string.digits, k=8))


def _line(obj: Any) -> bytes:
    return dumps(obj) + b"\n"


class OllamaServer(TestServer):
    """Ollama on a random port; `.url` is the bare host URL like OLLAMA_HOST.

    models: installed models, name -> entry (see ollama_models.model_entry), or just names;
        restored by reset(). Default: llama3.2:latest and qwen2.5:0.5b.
    pullable: models /api/pull can fetch; anything else fails like an unknown registry model.
    any_model: True installs any model a chat asks for (benchmarks with made-up names);
        False (default) answers unknown models with 404 like Ollama.
    api_key: Ollama needs none; set one to emulate an authenticating proxy / ollama.com.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        models: dict[str, dict[str, Any]] | Iterable[str] | None = None,
        pullable: dict[str, dict[str, Any]] | None = None,
        any_model: bool = False,
        version: str = "0.12.6",
    ) -> None:
        if models is None:
            models = DEFAULT_INSTALLED
        elif not isinstance(models, dict):
            models = {name: generic_entry(name) for name in models}
        self._default_models = copy.deepcopy(models)
        self.any_model = any_model
        self._default_pullable = copy.deepcopy(DEFAULT_PULLABLE if pullable is None else pullable)
        self.version = version
        super().__init__(api_key)
        self.compat = OllamaCompatChat(self)
        self.routes.update(
            {
                ("GET", "/"): self._root,
                ("POST", "/api/chat"): self._chat,
                ("POST", "/api/embed"): self._embed,
                ("GET", "/api/tags"): self._tags,
                ("POST", "/api/show"): self._show,
                ("POST", "/api/pull"): self._pull,
                ("DELETE", "/api/delete"): self._delete,
                ("GET", "/api/ps"): self._ps,
                ("GET", "/api/version"): self._version,
                ("POST", "/v1/chat/completions"): self.compat.handle,
                ("GET", "/v1/models"): self._v1_models,
            }
        )

    def reset_state(self) -> None:
        self.models = _catalogue(self._default_models)
        self.pullable = _catalogue(self._default_pullable)
        self.loaded: dict[str, float] = {}  # name -> monotonic time of last use (for /api/ps)

    # -- model bookkeeping ----------------------------------------------------------------
    def install(self, name: str, **entry: Any) -> None:
        """Add an installed model (until the next reset); `entry` as in model_entry()."""
        self.models[normalize_name(name)] = generic_entry(name, **entry)

    def find_model(self, name: str) -> tuple[str, dict[str, Any]] | None:
        key = normalize_name(name)
        info = self.models.get(key)
        if info is None and self.any_model and key:
            info = self.models.setdefault(key, generic_entry(key))
        return None if info is None else (key, info)

    def mark_loaded(self, name: str) -> None:
        found = self.find_model(name)
        if found is not None:
            self.loaded[found[0]] = time.monotonic()

    # -- errors ---------------------------------------------------------------------------
    def _error(self, ex: Exchange, status: int, message: str) -> None:
        ex.send_error_json(status, {"error": message})

    def bad_json(self, ex: Exchange) -> None:
        if ex.request.path.startswith("/v1/"):
            return self.compat.handle(ex)
        self._error(ex, 400, "invalid character '{' looking for beginning of object key string")

    def _model_arg(self, ex: Exchange) -> str:
        body = ex.body if isinstance(ex.body, dict) else {}
        name = body.get("model") or body.get("name") or ""  # `name` is the deprecated spelling
        return name if isinstance(name, str) else ""

    def _auth_ok(self, ex: Exchange) -> bool:
        if self.bearer_ok(ex):
            return True
        self._error(ex, 401, "unauthorized")
        return False

    # -- /api/chat ------------------------------------------------------------------------
    def _chat(self, ex: Exchange) -> None:
        with self.chat_slot():
            self._chat_inner(ex)

    def _chat_inner(self, ex: Exchange) -> None:
        f = ex.faults
        ex.sleep(f.delay)
        if not self._auth_ok(ex):
            return
        model = self._model_arg(ex)
        status = self.next_error_status(ex)
        if status is not None:
            default = (
                f"model '{model}' not found" if status == 404 else _STATUS_TEXT.get(status, "error")
            )
            return self._error(ex, status, f.error_message or default)
        if ex.body is None:
            return self._error(ex, 400, "missing request body")
        body = ex.body
        if not model:
            return self._error(ex, 400, "model is required")
        found = self.find_model(model)
        if found is None:
            return self._error(ex, 404, f"model '{model}' not found")
        messages = body.get("messages") or []
        if not messages:
            return self._load_or_unload(ex, found[0], body.get("keep_alive"))
        problem = ollama_problem(body) or ollama_format_problem(body.get("format"))
        if problem is not None:
            return self._error(ex, 400, problem)
        options = body.get("options") if isinstance(body.get("options"), dict) else {}
        num_predict = options.get("num_predict")
        limit = num_predict if isinstance(num_predict, int) and num_predict >= 0 else None
        try:  # bare base64 in `images`, checked and noted in the echo (servers/images.py)
            messages = ollama_images(messages)
        except ImageProblem as exc:
            return self._error(ex, 400, str(exc))
        reply = after_results(f, openai_result(messages))
        c = self.completion(ex, model, messages, limit, reply)
        self.mark_loaded(model)
        turn = tool_turn(f, body.get("tools"), openai_rounds(messages), _call_id)
        if turn is not None:
            c = dataclasses.replace(c, words=[""] * len(turn.ids))  # a line per call
        shape = _NativeShape(ex, c, turn)
        if body.get("stream") is False:  # streaming is the default when `stream` is omitted
            if ex.broken_plain_reply(lambda: self._error(ex, 500, f.error_message or _RUN_ERROR)):
                return
            shape.first_token = time.monotonic()
            ex.wait_generation(c)
            final = shape.final(c.text)
            if turn is not None:
                final["message"]["tool_calls"] = [shape.call(i) for i in range(len(turn.ids))]
            return ex.send_json(200, final)
        ex.start_stream(_NDJSON)
        ex.stream(shape, c)

    # -- /api/embed (the fault knobs apply as to chat) -------------------------------------
    def _embed(self, ex: Exchange) -> None:
        def refuse(status: int, message: str | None) -> None:
            default = f"model '{model}' not found" if status == 404 else None
            self._error(ex, status, message or default or _STATUS_TEXT.get(status, "error"))

        def check(body: dict[str, Any], model: str, texts: list[str]) -> tuple[int, str] | None:
            if not model:
                return 400, "model is required"
            if self.find_model(model) is None:
                return 404, f"model '{model}' not found"
            return None

        def answer(model: str, texts: list[str]) -> None:
            self.mark_loaded(model)
            reply: dict[str, Any] = {
                "model": ex.faults.report_model or model,
                "embeddings": [vector_of(t) for t in texts],
                "total_duration": _LOAD_NS + 1_000_000,
                "load_duration": _LOAD_NS,
            }
            tokens = word_count(texts)
            if ex.faults.usage and tokens:  # Go's omitempty
                reply["prompt_eval_count"] = tokens
            ex.send_json(200, reply)

        model = self._model_arg(ex)
        serve_embeddings(self, ex, auth=self._auth_ok, refuse=refuse, answer=answer, check=check)

    def _load_or_unload(self, ex: Exchange, name: str, keep_alive: Any) -> None:
        unload = keep_alive in (0, 0.0, "0", "0s")
        if unload:
            self.loaded.pop(name, None)
        else:
            self.loaded[name] = time.monotonic()
        ex.send_json(
            200,
            {
                "model": ex.faults.report_model or self._model_arg(ex),
                "created_at": _now(),
                "message": {"role": "assistant", "content": ""},
                "done_reason": "unload" if unload else "load",
                "done": True,
            },
        )

    # -- model management -----------------------------------------------------------------
    def _tags(self, ex: Exchange) -> None:
        if self._auth_ok(ex):
            models = [self._listing(n, i) for n, i in list(self.models.items())]
            ex.send_json(200, {"models": models})

    def _listing(self, name: str, info: dict[str, Any]) -> dict[str, Any]:
        return {
            "name": name,
            "model": name,
            "modified_at": info["modified_at"],
            "size": info["size"],
            "digest": info["digest"],
            "details": info["details"],
        }

    def _required_name(self, ex: Exchange) -> str | None:
        """The model a management request names; None when it was refused (answer sent)."""
        if not self._auth_ok(ex):
            return None
        name = self._model_arg(ex)
        if not name:
            self._error(ex, 400, "model is required")
            return None
        return name

    def _installed(self, ex: Exchange) -> tuple[str, dict[str, Any]] | None:
        """The installed model a request names; None when there is none (answer sent)."""
        name = self._required_name(ex)
        if name is None:
            return None
        found = self.find_model(name)
        if found is None:
            self._error(ex, 404, f"model '{name}' not found")
        return found

    def _show(self, ex: Exchange) -> None:
        found = self._installed(ex)
        if found is not None:
            ex.send_json(200, show_reply(*found))

    def _pull(self, ex: Exchange) -> None:
        name = self._required_name(ex)
        if name is None:
            return
        key = normalize_name(name)
        info = self.pullable.get(key) or self.models.get(key)
        missing = "pull model manifest: file does not exist"
        if ex.body.get("stream") is False:
            if info is None:
                return self._error(ex, 500, missing)
            self.models[key] = copy.deepcopy(info)
            return ex.send_json(200, {"status": "success"})
        ex.start_stream(_NDJSON)
        ex.write(_line({"status": "pulling manifest"}))
        if info is None:
            ex.write(_line({"error": missing}))
            return ex.end_stream()
        for digest, total in layers(key, info):
            status = f"pulling {digest[7:19]}"
            # `completed` is omitted until it is non-zero, like Go's omitempty
            for progress in ({}, {"completed": total // 2}, {"completed": total}):
                ex.sleep(ex.faults.token_delay)
                ex.write(_line({"status": status, "digest": digest, "total": total, **progress}))
        for status in ("verifying sha256 digest", "writing manifest", "success"):
            ex.write(_line({"status": status}))
        self.models[key] = copy.deepcopy(info)
        ex.end_stream()

    def _delete(self, ex: Exchange) -> None:
        found = self._installed(ex)
        if found is None:
            return
        self.models.pop(found[0], None)
        self.loaded.pop(found[0], None)
        ex.send(200, b"", content_type=None)  # success is an empty 200

    def _ps(self, ex: Exchange) -> None:
        if not self._auth_ok(ex):
            return
        expires = (datetime.now(timezone.utc) + timedelta(minutes=5)).isoformat()
        running = []
        for name in sorted(self.loaded, key=self.loaded.__getitem__, reverse=True):
            info = self.models.get(name)
            if info is not None:
                running.append(
                    {
                        **self._listing(name, info),
                        "expires_at": expires,
                        "size_vram": info["size"],
                        "context_length": min(4096, info["context_length"]),
                    }
                )
        ex.send_json(200, {"models": running})

    def _version(self, ex: Exchange) -> None:
        ex.send_json(200, {"version": self.version})

    def _root(self, ex: Exchange) -> None:
        ex.send(200, b"Ollama is running", "text/plain; charset=utf-8")

    def _v1_models(self, ex: Exchange) -> None:
        data = [
            {
                "id": name,
                "object": "model",
                "created": _unix(info["modified_at"]),
                "owned_by": name.split("/")[0] if "/" in name else "library",
            }
            for name, info in list(self.models.items())
        ]
        ex.send_json(200, {"object": "list", "data": data or None})  # null, not [], when empty


class _NativeShape(StreamShape):
    """NDJSON: one {"message": ..., "done": false} line per word, then the done:true line."""

    def __init__(self, ex: Exchange, c: Completion, turn: ToolTurn | None = None) -> None:
        self.ex, self.c, self.turn = ex, c, turn
        self.first_token: float | None = None

    def call(self, n: int) -> dict[str, Any]:
        assert self.turn is not None
        arguments = json.loads(self.turn.arguments)  # an object, never text
        function = {"index": n, "name": self.turn.name, "arguments": arguments}
        return {"id": self.turn.ids[n], "function": function}

    def content(self, index: int, word: str, last: bool) -> bytes:
        if self.first_token is None:
            self.first_token = time.monotonic()
        message: dict[str, Any] = {"role": "assistant", "content": word}
        if self.turn is not None:
            message["tool_calls"] = [self.call(index)]
        return _line(
            {
                "model": self.c.model,
                "created_at": _now(),
                "message": message,
                "done": False,
            }
        )

    def malformed(self) -> bytes:
        return b"{not json\n"

    def error(self) -> bytes:
        return _line({"error": self.ex.faults.error_message or _RUN_ERROR})  # no done:true after

    def tail(self) -> bytes:
        return _line(self.final(""))

    def final(self, text: str) -> dict[str, Any]:
        """The done:true object; durations are integer nanoseconds measured on this request."""
        end = time.monotonic()
        first = self.first_token or end
        prompt_ns = max(1, int((first - self.ex.started) * 1e9))
        eval_ns = max(1, int((end - first) * 1e9))
        out: dict[str, Any] = {
            "model": self.c.model,
            "created_at": _now(),
            "message": {"role": "assistant", "content": text},
            "done_reason": self.c.finish_reason,
            "done": True,
            "total_duration": _LOAD_NS + prompt_ns + eval_ns,
            "load_duration": _LOAD_NS,
            "prompt_eval_count": self.c.prompt_tokens,
            "prompt_eval_duration": prompt_ns,
            "eval_count": self.c.completion_tokens,
            "eval_duration": eval_ns,
        }
        for key in ("prompt_eval_count", "eval_count"):
            if not self.ex.faults.usage or not out[key]:
                del out[key]  # Go's omitempty: absent, not 0
        return out
