"""The Python API (compare, complete) and third-party providers (register, entry points)."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pandas as pd
import pytest

import llm_magic
from llm_magic import providers
from llm_magic._records import COLUMNS
from llm_magic.errors import AuthFailed, RateLimited, ServerFailed, UnknownProvider
from llm_magic.providers.base import Chunk, Health, Usage


@pytest.fixture
def wired(backends):
    return backends.openai, backends.ollama


def test_compare_gives_one_row_per_prompt_target_repeat(wired) -> None:
    df = llm_magic.compare(
        ["One?", "Two?"], ["openai:gpt-4o-mini", "ollama:llama3.2"], repeat=2, temperature=0.5
    )
    assert isinstance(df, pd.DataFrame) and list(df.columns) == list(COLUMNS)
    assert len(df) == 8 and df["error"].isna().all()
    assert list(df["prompt"][:4]) == ["One?"] * 4
    assert all(p == {"temperature": 0.5} for p in df["params"])


def test_compare_takes_targets_from_any_iterable(wired) -> None:
    df = llm_magic.compare("Hi", (t for t in ["openai:gpt-4o-mini", "ollama:llama3.2"]))
    assert list(df["target"]) == ["openai:gpt-4o-mini", "ollama:llama3.2"]


def test_compare_never_raises_for_a_failing_backend(wired) -> None:
    openai_server, _ = wired
    openai_server.status = 500
    df = llm_magic.compare("Hi", ["openai:gpt-4o-mini", "ollama:llama3.2"], retries=0)
    assert "500" in df["error"].iloc[0] and pd.isna(df["error"].iloc[1])


def test_complete_returns_the_text_and_the_record(wired) -> None:
    answer = llm_magic.complete("Hi there", "openai:gpt-4o-mini", system="Be brief.")
    assert str(answer) == answer.text == "Echo from gpt-4o-mini: Hi there"
    assert answer.record.target == "openai:gpt-4o-mini" and answer.record.latency_s > 0
    assert "Echo from" in repr(answer) and len(repr(answer)) < 120
    assert wired[0].requests[-1].body["messages"][0] == {"role": "system", "content": "Be brief."}


def test_complete_raises_the_providers_error(wired) -> None:
    wired[0].status, wired[0].error_message = 401, "bad key"
    with pytest.raises(AuthFailed, match="bad key") as info:
        llm_magic.complete("Hi", "openai:gpt-4o-mini")
    assert info.value.status == 401 and info.value.provider == "openai"
    wired[0].status, wired[0].retry_after = 429, 7
    with pytest.raises(RateLimited) as limited:
        llm_magic.complete("Hi", "openai:gpt-4o-mini", retries=0)
    assert limited.value.retry_after == 7.0
    wired[0].status, wired[0].retry_after = 503, 0
    with pytest.raises(ServerFailed, match=r"\(after 2 attempts\)$"):  # as the row says
        llm_magic.complete("Hi", "openai:gpt-4o-mini", retries=1)


def test_complete_keeps_a_partial_answer_when_the_stream_breaks(wired) -> None:
    wired[0].cut_after = 2  # chunks, then the connection drops
    answer = llm_magic.complete("Hi there", "openai:gpt-4o-mini")
    assert answer.text and answer.text != "Echo from gpt-4o-mini: Hi there"
    assert "Echo from gpt-4o-mini: Hi there".startswith(answer.text)
    assert answer.record.error and answer.record.finish_reason == "error"


def test_bad_targets_raise_before_sending(wired) -> None:
    with pytest.raises(UnknownProvider):
        llm_magic.compare("Hi", ["nosuch:model"])
    assert wired[0].request_count == 0


class EchoPlugin:
    """A third-party provider: repeats the prompt backwards."""

    base_url = None

    def __init__(self, name: str) -> None:
        self.name = name

    def stream(self, messages, model, options, cancel=None) -> Iterator[Chunk]:
        yield Chunk(text=messages[-1].content[::-1])
        yield Chunk(usage=Usage(1, 1), finish_reason="stop")

    def list_models(self):
        return []

    def health(self):
        return Health(self.name, None, True)


def test_register_adds_a_provider_at_run_time() -> None:
    providers.register("mirror", EchoPlugin)
    try:
        assert "mirror" in providers.known_providers()
        assert llm_magic.complete("abc", "mirror:any").text == "cba"
    finally:
        providers._registered.pop("mirror", None)


def test_entry_point_providers_are_found(tmp_path, monkeypatch) -> None:
    """A package that declares `llm_magic.providers` in its metadata becomes a provider."""
    package = tmp_path / "llm_magic_mirror"
    package.mkdir()
    (package / "__init__.py").write_text(
        "from llm_magic.providers.base import Chunk\n"
        "class Mirror:\n"
        "    base_url = None\n"
        "    def __init__(self, name): self.name = name\n"
        "    def stream(self, messages, model, options, cancel=None):\n"
        "        yield Chunk(text=messages[-1].content.upper())\n"
        "    def list_models(self): return []\n"
        "    def health(self): return None\n"
    )
    dist = tmp_path / "llm_magic_mirror-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: llm_magic_mirror\nVersion: 1.0\n")
    entry = "[llm_magic.providers]\nshout = llm_magic_mirror:Mirror\n"
    (dist / "entry_points.txt").write_text(entry)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(providers, "_entry_points", None)  # forget the cached scan
    try:
        assert "shout" in providers.known_providers()
        df = llm_magic.compare("quiet please", "shout:any")
        assert df["output"].iloc[0] == "QUIET PLEASE" and df["tokens_estimated"].iloc[0]
    finally:
        providers._instances.pop(("shout", None, None), None)
        sys.modules.pop("llm_magic_mirror", None)
        providers._entry_points = None
