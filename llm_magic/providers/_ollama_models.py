"""Ollama's model management: show, pull, delete and the models in memory (`/api/show`,
`/api/pull`, `/api/delete`, `/api/ps`), and what the `%llm` model commands make of them.
`OllamaProvider` (_ollama.py) takes it in as a mixin; the chat and embeddings stay there.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import httpx2

from .. import errors
from ._http import ADMIN_TIMEOUT, Exchange, HTTPService
from .base import CancelToken, ModelInfo

__all__ = ["OllamaModels", "context_from_show"]

# A pull reports progress every 60 ms while it downloads, so a minute without a line is a stall
# (PULL_STALL_S, read at each pull). Verifying a large blob sends nothing until it is done, for
# minutes on a slow disk: while Ollama verifies, only the read timeout below applies.
PULL_STALL_S = 60.0
_PULL_TIMEOUT = httpx2.Timeout(600.0, connect=5.0)
# Deleting unlinks the model's blobs: no listing, so it keeps the longer admin limit.
_DELETE_TIMEOUT = httpx2.Timeout(30.0, connect=5.0)


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


class OllamaModels:
    """The model commands of an Ollama provider (see ProviderFacts for what each is for)."""

    name: str
    _http: HTTPService

    if TYPE_CHECKING:  # the provider's own, used here (declared for the type checker only)

        def _parse(self, exchange: Exchange, line: str) -> dict[str, Any]: ...

        def _with_pull_hint(self, exc: errors.NotFound, model: str) -> errors.NotFound: ...

        def list_models(self) -> list[ModelInfo]: ...

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
