"""The `llamacpp` preset against the real llama_cpp.server serving SmolLM2 on 127.0.0.1."""

from __future__ import annotations

import pytest

from llm_magic.providers import get_provider
from llm_magic.providers.base import Message, Options

pytestmark = pytest.mark.local_model

HI = [Message("user", "Say hi.")]
COUNT = [Message("user", "Count from 1 to 30, separated by commas.")]


@pytest.fixture
def llamacpp(llamacpp_server: str, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("LLAMACPP_BASE_URL", llamacpp_server)
    provider = get_provider("llamacpp")
    assert provider.base_url == llamacpp_server
    return provider


def test_stream_brings_text_and_no_usage(llamacpp):
    chunks = list(llamacpp.stream(HI, "smollm2", Options(temperature=0.0, max_tokens=16)))
    text = "".join(c.text for c in chunks)
    assert text.strip()
    # llama_cpp.server ignores stream_options.include_usage: a stream carries no usage, so the
    # provider must yield none (the runner then estimates and flags the counts).
    assert all(c.usage is None for c in chunks)
    assert [c.finish_reason for c in chunks if c.finish_reason] in (["stop"], ["length"])
    assert {c.model for c in chunks if c.model} == {"smollm2"}


def test_without_streaming_the_server_reports_the_embedded_providers_counts(llamacpp):
    options = Options(temperature=0.0, max_tokens=8, stream=False)
    (whole,) = list(llamacpp.stream(COUNT, "smollm2", options))
    assert whole.text.strip() and whole.finish_reason == "length"
    local = list(get_provider("local").stream(COUNT, "smollm2", options))[-1]
    # Same GGUF, same chat template, both counted by llama.cpp's tokenizer: the numbers agree.
    assert whole.usage.prompt_tokens == local.usage.prompt_tokens
    assert whole.usage.completion_tokens == local.usage.completion_tokens == 8


def test_models_and_health(llamacpp, llamacpp_server):
    assert [m.model for m in llamacpp.list_models()] == ["smollm2"]
    health = llamacpp.health()
    assert health.reachable and health.error is None
    assert health.base_url == llamacpp_server
