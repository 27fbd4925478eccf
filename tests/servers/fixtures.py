"""pytest fixtures: one server per protocol for the whole session, reset before every test.

Wire them up in tests/conftest.py with `from servers.fixtures import *  # noqa`.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import NamedTuple

import pytest

from .anthropic_server import AnthropicServer
from .mistral_server import MistralServer
from .ollama_server import OllamaServer
from .openai_server import OpenAIServer

__all__ = [
    "TEST_KEY",
    "Backends",
    "anthropic_server",
    "anthropic_server_session",
    "backends",
    "mistral_server",
    "mistral_server_session",
    "ollama_server",
    "ollama_server_session",
    "openai_server",
    "openai_server_session",
    "refused_url",
    "silent_url",
]


@pytest.fixture(scope="session")
def openai_server_session() -> Iterator[OpenAIServer]:
    with OpenAIServer() as server:
        yield server


@pytest.fixture(scope="session")
def ollama_server_session() -> Iterator[OllamaServer]:
    with OllamaServer() as server:
        yield server


@pytest.fixture(scope="session")
def mistral_server_session() -> Iterator[MistralServer]:
    with MistralServer() as server:
        yield server


@pytest.fixture(scope="session")
def anthropic_server_session() -> Iterator[AnthropicServer]:
    with AnthropicServer() as server:
        yield server


# Starting a server takes a thread and a socket; resetting one is nearly free, so tests share
# one server per protocol and each test starts from default knobs and an empty request log.
@pytest.fixture
def openai_server(openai_server_session: OpenAIServer) -> OpenAIServer:
    openai_server_session.reset()
    return openai_server_session


@pytest.fixture
def ollama_server(ollama_server_session: OllamaServer) -> OllamaServer:
    ollama_server_session.reset()
    return ollama_server_session


@pytest.fixture
def mistral_server(mistral_server_session: MistralServer) -> MistralServer:
    mistral_server_session.reset()
    return mistral_server_session


@pytest.fixture
def anthropic_server(anthropic_server_session: AnthropicServer) -> AnthropicServer:
    anthropic_server_session.reset()
    return anthropic_server_session


@pytest.fixture
def refused_url() -> str:
    """http://127.0.0.1:PORT where nothing listens (the port was bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def silent_url() -> Iterator[str]:
    """http://127.0.0.1:PORT that takes connections and never answers (a wedged server)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


TEST_KEY = "sk-test-not-real-000000"


class Backends(NamedTuple):
    openai: OpenAIServer
    ollama: OllamaServer
    mistral: MistralServer
    anthropic: AnthropicServer


@pytest.fixture
def backends(
    monkeypatch: pytest.MonkeyPatch,
    openai_server: OpenAIServer,
    ollama_server: OllamaServer,
    mistral_server: MistralServer,
    anthropic_server: AnthropicServer,
) -> Backends:
    """The openai, ollama, mistral and anthropic providers pointed at their loopback servers
    (made-up keys)."""
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.url)
    monkeypatch.setenv("OPENAI_API_KEY", TEST_KEY)
    monkeypatch.setenv("OLLAMA_HOST", ollama_server.url)
    monkeypatch.setenv("MISTRAL_BASE_URL", mistral_server.url)
    monkeypatch.setenv("MISTRAL_API_KEY", TEST_KEY)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", anthropic_server.url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", TEST_KEY)
    return Backends(openai_server, ollama_server, mistral_server, anthropic_server)
