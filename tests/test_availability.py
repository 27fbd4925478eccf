"""llm_magic._availability against real loopback servers and the installed embedded model."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from llm_magic._availability import available, check_targets
from llm_magic.errors import UsageProblem

needs_llama = pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python is not installed"
)


def reasons(*targets: str) -> dict[str, tuple[bool, str]]:
    return {a.target: (a.ok, a.reason) for a in check_targets(targets)}


@needs_llama
def test_embedded_model_is_available_without_key_or_server() -> None:
    assert available(["local:smollm2"]) == ["local:smollm2"]


@needs_llama  # without it, that is the reason given first
def test_missing_gguf_file_is_not_available(tmp_path: Path) -> None:
    missing = tmp_path / "nope.gguf"
    ok, reason = reasons(f"local:{missing}")[f"local:{missing}"]
    assert not ok
    assert str(missing) in reason


def test_key_missing_means_unavailable_and_nothing_is_sent(
    openai_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Even with the base URL on this machine, no key means no request at all.
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.url)
    ok, reason = reasons("openai:gpt-4o-mini")["openai:gpt-4o-mini"]
    assert not ok
    assert reason == "no API key: set OPENAI_API_KEY"
    assert openai_server.request_count == 0


def test_key_set_for_a_cloud_api_is_trusted_without_contact(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MISTRAL_API_KEY", "sk-secret-value-123456")
    ((target, ok, reason),) = [
        (a.target, a.ok, a.reason) for a in check_targets(["mistral:mistral-small-latest"])
    ]
    assert ok
    assert "MISTRAL_API_KEY is set" in reason
    assert "sk-secret" not in reason


def test_keyed_server_on_loopback_is_probed_with_the_key(
    openai_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    openai_server.api_key = "right-key-1234567890"
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.url)
    monkeypatch.setenv("OPENAI_API_KEY", "right-key-1234567890")
    ok, reason = reasons("openai:gpt-4o-mini")["openai:gpt-4o-mini"]
    # The probe sends the key as the provider does, so a server that wants it answers.
    assert ok, reason
    assert reason == f"server answers at {openai_server.url}"
    (probe,) = openai_server.requests
    assert probe.path == "/v1/models"
    assert probe.headers["authorization"] == "Bearer right-key-1234567890"


def test_a_refused_key_is_named_by_its_variable_never_shown(
    openai_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    openai_server.api_key = "right-key-1234567890"
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.url)
    monkeypatch.setenv("OPENAI_API_KEY", "wrong-key-1234567890")
    ok, reason = reasons("openai:gpt-4o-mini")["openai:gpt-4o-mini"]
    assert not ok
    refused = "refused the key in OPENAI_API_KEY (HTTP 401)"
    assert reason == f"the server at {openai_server.url} {refused}"
    assert "set OPENAI_API_KEY" not in reason  # it is set: the server turned it down
    assert "wrong-key" not in reason and "right-key" not in reason
    assert [r.headers["authorization"] for r in openai_server.requests] == [
        "Bearer wrong-key-1234567890"
    ]


def test_a_keyless_probe_refused_asks_for_the_unset_variable(
    openai_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    # vLLM's key is optional: not set, the probe goes without one and the 401 names the variable.
    openai_server.api_key = "right-key-1234567890"
    monkeypatch.setenv("VLLM_BASE_URL", openai_server.url)
    ok, reason = reasons("vllm:any-model")["vllm:any-model"]
    assert not ok
    assert reason == f"the server at {openai_server.url} refuses us (HTTP 401): set VLLM_API_KEY"
    # The check is the provider's own listing request: no key to send, so none is sent.
    sent = openai_server.requests[0].headers.get("authorization", "")
    assert "right-key" not in sent and sent in ("", "Bearer not-needed")


def test_keyless_endpoint_from_config_is_probed(
    openai_server, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (isolated_env / "config.toml").write_text(
        f'[providers.mine]\nkind = "openai"\nbase_url = "{openai_server.url}"\n'
    )
    assert available(["mine:any-model"]) == ["mine:any-model"]
    assert [r.path for r in openai_server.requests] == ["/v1/models"]


def test_a_base_url_without_the_api_is_not_taken_for_one(
    openai_server, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the server's root, not its /v1: a web server answers, but 404 for /models
    (isolated_env / "config.toml").write_text(
        f'[providers.mine]\nkind = "openai"\nbase_url = "{openai_server.root_url}"\n'
    )
    ((ok, reason),) = [(a.ok, a.reason) for a in check_targets(["mine:any-model"])]
    assert not ok
    assert reason == (
        f"{openai_server.root_url} has no /models (HTTP 404): is the base URL right?"
        " (an OpenAI-compatible one usually ends in /v1)"
    )


def test_ollama_needs_the_server_and_the_pulled_model(
    ollama_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OLLAMA_HOST", ollama_server.root_url)
    got = reasons("ollama:llama3.2", "ollama:qwen2.5:0.5b", "ollama:gemma3")
    assert got["ollama:llama3.2"][0]  # installed as llama3.2:latest
    assert got["ollama:qwen2.5:0.5b"][0]
    ok, reason = got["ollama:gemma3"]
    assert not ok
    assert "%llm pull ollama:gemma3" in reason
    # one probe serves every Ollama target
    assert [r.path for r in ollama_server.requests] == ["/api/tags"]


def test_no_ollama_running(refused_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_HOST", refused_url)
    ok, reason = reasons("ollama:llama3.2")["ollama:llama3.2"]
    assert not ok
    assert "no Ollama at" in reason and "ollama serve" in reason


def test_a_server_that_never_answers_is_unavailable(
    silent_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLAMACPP_BASE_URL", silent_url + "/v1")
    ok, reason = reasons("llamacpp:smollm2")["llamacpp:smollm2"]
    assert not ok
    # Something took the connection: it runs, it is silent. Not "nothing answers".
    assert reason == f"the server at {silent_url}/v1 did not answer within 0.5 s"


def test_a_silent_ollama_is_not_told_to_start(
    silent_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = silent_url  # a root URL, as OLLAMA_HOST / MISTRAL_BASE_URL take it
    monkeypatch.setenv("OLLAMA_HOST", host)
    (a,) = check_targets(["ollama:llama3.2"], timeout=0.3)
    assert not a.ok
    assert a.reason == f"the server at {host} did not answer within 0.3 s"
    assert "ollama serve" not in a.reason


def test_loopback_mistral_is_probed_where_the_provider_lists_models(
    mistral_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MISTRAL_API_KEY", "sk-test-000000000000")
    # The bare host (Mistral's own form) and a base URL with /v1 reach the same listing.
    for base in (mistral_server.url, mistral_server.url + "/v1"):
        monkeypatch.setenv("MISTRAL_BASE_URL", base)
        ok, reason = reasons("mistral:mistral-small-latest")["mistral:mistral-small-latest"]
        assert ok, reason
        assert reason == f"server answers at {mistral_server.url}"
    assert [r.path for r in mistral_server.requests] == ["/v1/models", "/v1/models"]
    assert mistral_server.requests[0].headers["authorization"] == "Bearer sk-test-000000000000"


def test_loopback_mistral_whose_listing_is_silent_is_unavailable(
    silent_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = silent_url  # a root URL, as OLLAMA_HOST / MISTRAL_BASE_URL take it
    monkeypatch.setenv("MISTRAL_API_KEY", "sk-test-000000000000")
    monkeypatch.setenv("MISTRAL_BASE_URL", host)
    ok, reason = reasons("mistral:mistral-small-latest")["mistral:mistral-small-latest"]
    assert not ok
    assert reason == f"the server at {host} did not answer within 0.5 s"


@needs_llama
def test_chain_is_available_when_any_link_is(
    refused_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OLLAMA_HOST", refused_url)
    (a,) = check_targets(["ollama:llama3.2|local:smollm2"])
    assert a.ok
    assert a.reason.startswith("ollama:llama3.2: no Ollama")
    assert "local:smollm2: embedded model" in a.reason
    assert str(a).startswith("yes  ollama:llama3.2|local:smollm2")


def test_aliases_resolve_and_order_is_kept(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (isolated_env / "config.toml").write_text('[aliases]\nsmart = "openai:gpt-4o"\n')
    monkeypatch.setenv("GROQ_API_KEY", "gsk-test-000000000000")
    assert available(["smart", "groq:llama3", "openai:gpt-4o-mini"]) == ["groq:llama3"]
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-000000000000")
    assert available(["smart", "groq:llama3", "openai:gpt-4o-mini"]) == [
        "smart",
        "groq:llama3",
        "openai:gpt-4o-mini",
    ]


def test_a_bad_target_is_a_usage_problem() -> None:
    with pytest.raises(UsageProblem, match="unknown provider 'nosuch'"):
        available(["nosuch:model"])
    with pytest.raises(UsageProblem, match="no model"):
        available(["ollama:"])
