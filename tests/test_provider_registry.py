"""What providers declare about themselves (base.ProviderFacts), read through the registry:
the facts other modules used to hard-code (Ollama's host rule, Mistral's /v1, the embedded
model's concurrency of 1, who can pull, remove, show and list running models)."""

from __future__ import annotations

from pathlib import Path

import pytest

from llm_magic import providers
from llm_magic.providers.base import Chunk, Health, ProviderFacts


class Plain:
    """A plugin that declares nothing: it is read with ProviderFacts' defaults."""

    base_url = None

    def __init__(self, name: str) -> None:
        self.name = name

    def stream(self, messages, model, options, cancel=None):
        yield Chunk(text="x")

    def list_models(self):
        return []

    def health(self):
        return Health(self.name, None, True)


class Declaring(Plain, ProviderFacts):
    default_concurrency = 3
    server_label = "Declaring server"


@pytest.fixture
def plugins(monkeypatch):
    monkeypatch.setattr(providers, "_instances", {})
    monkeypatch.setitem(providers._registered, "plain", Plain)
    monkeypatch.setitem(providers._registered, "declaring", Declaring)


def test_the_embedded_model_takes_one_request_at_a_time_and_servers_declare_no_limit():
    assert providers.default_concurrency("local") == 1
    assert providers.default_concurrency("openai") is None
    assert providers.default_concurrency("ollama") is None
    assert providers.default_concurrency("mistral") is None


def test_default_limits_name_only_the_providers_that_declare_one(plugins):
    names = ["openai", "local", "plain", "declaring", "local"]
    assert providers.default_limits(names) == {"local": 1, "declaring": 3}


def test_a_config_file_endpoint_has_the_facts_of_its_kind(isolated_env: Path):
    (isolated_env / "config.toml").write_text(
        '[providers.box]\nkind = "local"\n\n[providers.lab]\nkind = "ollama"\n'
        'base_url = "0.0.0.0:7000"\n'
    )
    assert providers.default_concurrency("box") == 1
    assert providers.base_url_of(providers.spec_for("lab")) == "http://127.0.0.1:7000"
    assert providers.facts("lab").server_label == "Ollama"


def test_plugins_are_read_with_defaults_unless_they_declare(plugins):
    assert providers.facts("plain").server_label == "plugin"
    assert providers.facts("plain").default_concurrency is None
    assert providers.facts("plain").short_model_name("m:latest") == "m:latest"
    assert providers.facts("declaring").server_label == "Declaring server"
    assert providers.kind_facts("http") is ProviderFacts


@pytest.mark.parametrize(
    ("name", "env", "value", "expected"),
    [
        ("ollama", "OLLAMA_HOST", "0.0.0.0:1234", "http://127.0.0.1:1234"),
        ("ollama", "OLLAMA_HOST", "", "http://127.0.0.1:11434"),
        ("mistral", "MISTRAL_BASE_URL", "http://127.0.0.1:9/v1/", "http://127.0.0.1:9"),
        ("anthropic", "ANTHROPIC_BASE_URL", "http://127.0.0.1:9/v1/", "http://127.0.0.1:9"),
        ("anthropic", "ANTHROPIC_BASE_URL", "", "https://api.anthropic.com"),
        ("vllm", "VLLM_BASE_URL", "http://127.0.0.1:8000/v1/", "http://127.0.0.1:8000/v1"),
    ],
)
def test_each_class_normalises_its_base_url(monkeypatch, name, env, value, expected):
    monkeypatch.setenv(env, value)
    spec = providers.spec_for(name)
    assert providers.base_url_of(spec) == expected
    # ...and the provider built by the registry sends its requests there.
    assert providers.get_provider(name).base_url == expected


def test_an_in_process_provider_has_no_base_url():
    facts = providers.facts("local")
    assert facts.in_process and providers.base_url_of(providers.spec_for("local")) is None


def test_model_names_are_offered_as_people_type_them():
    assert providers.facts("ollama").short_model_name("llama3.2:latest") == "llama3.2"
    assert providers.facts("ollama").short_model_name("qwen2.5:0.5b") == "qwen2.5:0.5b"
    assert providers.facts("openai").short_model_name("gpt-4o:latest") == "gpt-4o:latest"


def test_model_commands_are_found_by_what_a_provider_can_do(isolated_env: Path):
    (isolated_env / "config.toml").write_text('[providers.lab]\nkind = "ollama"\n')
    assert providers.providers_with("pull") == ["lab", "ollama"]
    assert providers.providers_with("rm") == ["lab", "local", "ollama"]
    assert providers.providers_with("ps") == ["lab", "local", "ollama"]
    ollama, openai = providers.get_provider("ollama"), providers.get_provider("vllm")
    assert providers.model_command(ollama, "pull") == ollama.pull
    assert providers.model_command(openai, "pull") is None
    assert providers.model_command(openai, "show") is None


def test_a_discovered_server_gets_a_keyless_provider_of_its_kind():
    provider = providers.adhoc_provider("ollama", "ollama@11434", "127.0.0.1:11434")
    try:
        assert provider.base_url == "http://127.0.0.1:11434"
        assert providers.kind_facts("ollama").listed_models_only
    finally:
        provider.close()
