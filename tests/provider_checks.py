"""What the provider test files share: the sentinel keys, the conversation, how a stream is
drained into its chunks and the error that ended it, and the `Contract` that lets one test check
the same behaviour of every HTTP provider against its own loopback server."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from servers.base import TestServer

from llm_magic import errors
from llm_magic.providers._anthropic import AnthropicProvider
from llm_magic.providers._http import KeyedProvider
from llm_magic.providers._mistral import MistralProvider
from llm_magic.providers._ollama import OllamaProvider
from llm_magic.providers._openai import OpenAIProvider
from llm_magic.providers.base import Chunk, Message

KEY = "sk-SENTINEL-abc123456789"
PLAIN_KEY = "SENTINEL0plain0key0123"  # no well-known key shape: only our own scrubbing hides it
MSGS = [Message("system", "be brief"), Message("user", "why is the sky blue")]
REPLY = "Because of Rayleigh scattering."


def drain(it: Iterator[Chunk]) -> tuple[list[Chunk], errors.ProviderError | None]:
    """Every chunk a stream yields, and the error that ended it (None when it ended well)."""
    chunks: list[Chunk] = []
    try:
        for chunk in it:
            chunks.append(chunk)
    except errors.ProviderError as exc:
        return chunks, exc
    return chunks, None


def text_of(chunks: list[Chunk]) -> str:
    return "".join(c.text for c in chunks)


@dataclass(frozen=True)
class Contract:
    """A provider class, the loopback server that speaks its protocol, and the few facts in
    which the protocols differ, so that a behaviour they share is written down once."""

    kind: str  # the provider's name, which starts each of its error messages
    provider_class: type[KeyedProvider]
    server: TestServer
    model: str
    key: str | None  # what the usual provider sends (a local Ollama needs none)
    key_env: str | None
    chat_path: str
    head: tuple[Chunk, ...]  # what a stream yields before its first word
    stream_error: str  # words of the server's default failure in the middle of a stream
    health_path: str  # what health() asks
    version: str | None  # what health() reports
    key_header: str = "authorization"  # the request header that carries the key
    key_shape: str = "Bearer {key}"  # how the key is written in it

    def sent_key(self, request: Any) -> str | None:
        """The key a recorded request carried, read from where this protocol puts it."""
        value = request.headers.get(self.key_header)
        prefix, _, suffix = self.key_shape.partition("{key}")
        if value is None or not (value.startswith(prefix) and value.endswith(suffix)):
            return None
        return value[len(prefix) : len(value) - len(suffix)]

    def open(
        self,
        *,
        name: str | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        key_env: str | None = None,
    ) -> KeyedProvider:
        """A provider of this kind, pointed at the loopback server unless told otherwise."""
        return self.provider_class(
            name=name or self.kind,
            base_url=base_url or self.server.url,
            api_key=api_key,
            key_env=key_env,
        )

    def configured(self) -> KeyedProvider:
        """The provider as a user sets it up, with a key where the service wants one (which
        the server then insists on)."""
        self.server.api_key = self.key
        return self.open(api_key=self.key, key_env=self.key_env)


_FACTS: dict[str, dict[str, Any]] = {
    "openai": {
        "provider_class": OpenAIProvider,
        "model": "gpt-4o-mini",
        "key": KEY,
        "key_env": "OPENAI_API_KEY",
        "chat_path": "/v1/chat/completions",
        "head": (Chunk(model="gpt-4o-mini"),),  # the role chunk
        "stream_error": "The server had an error while processing your request",
        "health_path": "/v1/models",
        "version": None,
    },
    "mistral": {
        "provider_class": MistralProvider,
        "model": "mistral-small-latest",
        "key": KEY,
        "key_env": "MISTRAL_API_KEY",
        "chat_path": "/v1/chat/completions",
        "head": (Chunk(model="mistral-small-latest"),),
        "stream_error": "finish_reason 'error'",  # how Mistral ends a stream that failed
        "health_path": "/v1/models",
        "version": None,
    },
    "ollama": {
        "provider_class": OllamaProvider,
        "model": "llama3.2",
        "key": None,
        "key_env": None,
        "chat_path": "/api/chat",
        "head": (),  # the model rides on the first word
        "stream_error": "an error was encountered while running the model",
        "health_path": "/api/version",
        "version": "0.12.6",
    },
    "anthropic": {
        "provider_class": AnthropicProvider,
        "model": "claude-haiku-4-5",
        "key": KEY,
        "key_env": "ANTHROPIC_API_KEY",
        "chat_path": "/v1/messages",
        "head": (Chunk(model="claude-haiku-4-5"),),  # from message_start
        "stream_error": "Overloaded",  # the error event's overloaded_error
        "health_path": "/v1/models",
        "version": None,
        "key_header": "x-api-key",
        "key_shape": "{key}",
    },
}
KINDS = tuple(_FACTS)


def contract(kind: str, server: TestServer) -> Contract:
    """The contract of `kind` (one of KINDS) served by `server`."""
    return Contract(kind=kind, server=server, **_FACTS[kind])
