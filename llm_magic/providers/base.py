"""What every provider speaks: messages in, chunks out.

A provider knows its wire protocol and nothing else. Timing, token estimation, retries,
fallbacks and records live in the runner, once, the same for every provider.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar, Protocol, runtime_checkable

from .._redaction import redact_url

__all__ = [
    "BatchState",
    "CancelToken",
    "Chunk",
    "Embeddings",
    "Health",
    "Image",
    "Message",
    "ModelInfo",
    "MODEL_COMMANDS",
    "Options",
    "Provider",
    "ProviderFacts",
    "ToolCall",
    "ToolCallPiece",
    "ToolSpec",
    "Usage",
]


@dataclass(frozen=True, repr=False)
class Image:
    """An image sent with a prompt: its bytes and media type (read from its first bytes), or
    an http(s) URL that the server fetches itself. Its repr, and what the run log and the cache
    key keep of it (`summary()`, `sha256`), never hold the bytes."""

    data: bytes = b""
    media_type: str = ""  # image/png, image/jpeg, image/gif or image/webp; "" for a URL
    url: str | None = None

    @cached_property
    def sha256(self) -> str:
        """Of the bytes, or of the URL's text for a URL (the server fetches it, we never do)."""
        return hashlib.sha256(self.data if self.url is None else self.url.encode()).hexdigest()

    @property
    def size(self) -> int:
        return len(self.data)

    def base64(self) -> str:
        return base64.b64encode(self.data).decode("ascii")

    def data_uri(self) -> str:
        """The URL as is, else a `data:` URI holding the bytes (OpenAI's and Mistral's form)."""
        if self.url is not None:
            return self.url
        return f"data:{self.media_type};base64,{self.base64()}"

    def summary(self) -> dict[str, Any]:
        """What the run log, the `params` column and the cache key keep of the image."""
        if self.url is not None:
            return {"url": self.url, "sha256": self.sha256}
        return {"media_type": self.media_type, "bytes": self.size, "sha256": self.sha256}

    def __repr__(self) -> str:
        what = self.url if self.url is not None else f"{self.media_type}, {self.size} bytes"
        return f"Image({what}, sha256={self.sha256[:12]}…)"


@dataclass(frozen=True)
class ToolSpec:
    """A function the model may call: its name, what it does, its arguments' JSON Schema."""

    name: str
    description: str
    parameters: str  # an object JSON Schema, as JSON text: Options stays frozen and hashable

    def schema(self) -> dict[str, Any]:
        return json.loads(self.parameters)


@dataclass(frozen=True)
class ToolCall:
    """A whole call the model asked for. `arguments` is the JSON text as the model wrote it
    (it may not parse); an id the server gave none of is made up by the provider."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class ToolCallPiece:
    """A piece of a tool call as it streams: pieces of one `index` make one call, their
    `arguments` fragments joined in order. A piece with another `id` at a used index starts a
    new call (Mistral sends whole calls without an index)."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(frozen=True, slots=True)  # one per prompt of a run that may have 100,000
class Message:
    role: str  # "system", "user", "assistant" or "tool" (a tool's result)
    content: str
    # Images that go with this (user) turn; each provider puts them on the wire its own way.
    images: tuple[Image, ...] = ()
    # An assistant turn that asked for tool calls; a "tool" turn answers one of them.
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None  # the tool's name, on a "tool" turn

    def to_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


@dataclass(frozen=True)
class Options:
    """Sampling and transport options of one request. None means: the server's default."""

    temperature: float | None = None
    max_tokens: int | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] | None = None
    stream: bool = True
    connect_timeout: float = 5.0
    read_timeout: float = 120.0
    # A JSON Schema (as JSON text) the answer must follow where the backend can make it so
    # (the embedded model: a llama.cpp grammar); the judge's verdict. None: free text.
    json_schema: str | None = None
    tools: tuple[ToolSpec, ...] = ()  # functions the model may call (--tools)

    def sampling(self) -> dict[str, Any]:
        """The sampling options actually set, as recorded in the `params` column."""
        values = {
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "top_p": self.top_p,
            "seed": self.seed,
            "stop": list(self.stop) if self.stop else None,
            "json_schema": self.json_schema,
            "tools": [t.name for t in self.tools] or None,
        }
        return {k: v for k, v in values.items() if v is not None}


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


@dataclass(frozen=True)
class Chunk:
    """One piece of a streamed answer. Any field may be empty; usage usually comes last."""

    text: str = ""
    usage: Usage | None = None
    finish_reason: str | None = None
    model: str | None = None  # the model name as the server reported it
    tool_calls: tuple[ToolCallPiece, ...] = ()  # the runner joins the pieces into calls
    endpoint: str | None = None  # the server that answered, when a pool of several chose it


@dataclass(frozen=True)
class Embeddings:
    """What an optional `embed()` returns: one vector per text, in the texts' order."""

    vectors: list[list[float]]
    prompt_tokens: int | None = None  # as the server counted them (None: it did not say)
    model: str | None = None  # the model name as the server reported it


@dataclass(frozen=True)
class ModelInfo:
    provider: str
    model: str
    size_bytes: int | None = None
    modified: str | None = None
    context_length: int | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Health:
    provider: str
    base_url: str | None
    reachable: bool
    rtt_s: float | None = None
    version: str | None = None
    error: str | None = None

    def __repr__(self) -> str:
        url = redact_url(self.base_url) if self.base_url else None
        return (
            f"Health(provider={self.provider!r}, base_url={url!r}, reachable={self.reachable!r},"
            f" rtt_s={self.rtt_s!r}, version={self.version!r}, error={self.error!r})"
        )


@dataclass(frozen=True)
class BatchState:
    """A provider batch as its server last described it, in one vocabulary for every wire.

    `status` is the provider's own word, lower-cased (OpenAI's `in_progress`, Mistral's
    `running`); `done` once it can change no more. Counts are None until the server gives them.
    `missing_reason` is what a request left unanswered by this end (expired, cancelled, failed)
    says; None when the batch answered every line it took.
    """

    id: str
    status: str
    done: bool
    total: int | None = None
    succeeded: int | None = None
    failed: int | None = None
    output_file: str | None = None
    error_file: str | None = None
    created_at: int | None = None  # Unix seconds
    problem: str | None = None  # why it failed (validation errors), as the server said
    missing_reason: str | None = None
    prompt_tokens: int | None = None  # the batch's usage so far, when the server reports it
    completion_tokens: int | None = None


class CancelToken:
    """Lets the main thread stop a request that a worker thread is blocked in.

    A provider registers a closer (close the HTTP response, set a flag between tokens) with
    `on_cancel`; `cancel()` runs every closer, so a blocked read raises at once.
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._closers: list[Callable[[], object]] = []

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float) -> bool:
        """Sleep up to `timeout` seconds; True at once if cancelled meanwhile."""
        return self._event.wait(timeout)

    def on_cancel(self, closer: Callable[[], object]) -> None:
        with self._lock:
            if not self._event.is_set():
                self._closers.append(closer)
                return
        _quietly(closer)

    def cancel(self) -> None:
        with self._lock:
            self._event.set()
            closers, self._closers = self._closers, []
        for closer in closers:
            _quietly(closer)


def _quietly(fn: Callable[[], object]) -> None:
    with contextlib.suppress(Exception):  # a closer failing must not stop the others
        fn()


@runtime_checkable
class Provider(Protocol):
    """The interface every backend implements.

    `stream` yields Chunks as they arrive. It raises only errors from llm_magic.errors: the
    provider maps its own failures (HTTP status, timeouts, malformed lines) into that tree.
    With `options.stream` False it may yield a single Chunk holding the whole answer.
    """

    name: str  # the provider's registered name, e.g. "openai", "vllm", "ollama"
    base_url: str | None  # None for in-process backends

    def stream(
        self,
        messages: list[Message],
        model: str,
        options: Options,
        cancel: CancelToken | None = None,
    ) -> Iterator[Chunk]: ...

    def list_models(self) -> list[ModelInfo]: ...

    def health(self) -> Health: ...

    # Optional: `prepare(model)` readies what a request to `model` needs in this process (the
    # embedded backend loads the model file). The runner calls it before its clock starts.
    # Optional: `embed(texts, model, options, cancel=None) -> Embeddings`, one vector per text
    # (similar: checks); it raises only llm_magic.errors, like `stream`, and reads a bounded
    # reply (`_embeddings.read_vectors`). A class without it says why in `no_embeddings`.


class ProviderFacts:
    """What a provider class says about itself, so that no module outside `providers/` has to
    know it. The built-in classes inherit it and override what differs; a plugin class may
    too, and one that does not is read with these defaults (see `providers.facts`).

    Optional model management: a class offers a `%llm` model command by having its method,
    named in MODEL_COMMANDS: `pull(model, cancel=None)` yields progress objects (`status`,
    `digest`, `total`, `completed`); `remove_model(model)` returns the line to show;
    `describe(model)` returns what `%llm show` shows; `running_models()` returns rows for `%llm
    ps` (`model`, `size_gb`, `vram_gb`, `context_length`, `expires_at`, `details`). And
    `list_models_in_detail()`, when present, is what `%llm models` lists (it may cost a request
    per model, which the plain `list_models()` of the panel's picker must not).
    """

    server_label: ClassVar[str] = "plugin"  # what `%llm status` calls its kind of server
    in_process: ClassVar[bool] = False  # runs in this process: no server to probe or discover
    default_concurrency: ClassVar[int | None] = None  # most requests at once; None: the run's
    lists_models: ClassVar[bool] = True  # list_models() says what it can answer with
    listed_models_only: ClassVar[bool] = False  # answers only models its listing names
    listing_path: ClassVar[str | None] = None  # where list_models() asks, below the base URL
    admin_timeout_s: ClassVar[float | None] = None  # a listing's or show's wait (None: its own)
    base_url_hint: ClassVar[str] = ""  # added when the base URL seems wrong (HTTP 404)
    # The request header that carries the API key: `Authorization` holds it as a bearer token,
    # a vendor's own header (Anthropic's x-api-key) holds the bare key.
    key_header: ClassVar[str] = "Authorization"
    start_hint: ClassVar[str | None] = None  # how to start its server when nothing answers
    # Whether its requests can carry images (--image), and images given as http(s) URLs; a
    # target that cannot gets a row error instead of a request without them.
    takes_images: ClassVar[bool] = False
    takes_image_urls: ClassVar[bool] = False
    # The batch API its class speaks ("openai", "mistral"), offered by `batches()`; None: none.
    # Whether a provider of the class has one is the registry's call (providers.batch_wire).
    batch_wire: ClassVar[str | None] = None
    # Why it cannot embed, when its class has no `embed()` (the planner refuses similar: so)
    no_embeddings: ClassVar[str] = "it offers no embeddings"

    @classmethod
    def normalise_base_url(cls, url: str | None) -> str | None:
        """The base URL requests go to, from the configured text (env, config file, default)."""
        return url.rstrip("/") if url else url

    @staticmethod
    def short_model_name(name: str) -> str:
        """The name people type for a model the listing names (one spelling per model)."""
        return name

    @classmethod
    def check_in_process(cls, model: str) -> tuple[bool, str]:
        """Whether an in-process provider can answer `model` here, with the reason in a line."""
        return True, "in-process"


# `%llm` model command -> the optional method of a provider that does it (see ProviderFacts).
MODEL_COMMANDS = {
    "pull": "pull",
    "rm": "remove_model",
    "show": "describe",
    "ps": "running_models",
}
