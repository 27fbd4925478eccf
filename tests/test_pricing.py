"""Price table lookups, snapshot names, overrides and local backends."""

from __future__ import annotations

import pytest

from llm_magic._pricing import LOCAL_PROVIDERS, PRICES, cost_usd, price
from llm_magic.errors import ConfigProblem


def test_exact_names() -> None:
    assert price("openai", "gpt-4o-mini") == (0.15, 0.60)
    assert price("mistral", "mistral-small-latest") == PRICES["mistral"]["mistral-small-latest"]
    assert price("deepseek", "deepseek-reasoner") == PRICES["deepseek"]["deepseek-reasoner"]
    assert price("OpenAI", " GPT-4o-mini ") == (0.15, 0.60)  # case and stray spaces


def test_cost_arithmetic_is_per_million_tokens() -> None:
    assert cost_usd("openai", "gpt-4o-mini", 1000, 500) == pytest.approx(
        (1000 * 0.15 + 500 * 0.60) / 1_000_000
    )
    assert cost_usd("openai", "gpt-4o", 1_000_000, 0) == pytest.approx(2.50)


@pytest.mark.parametrize(
    ("provider", "model", "priced_as"),
    [
        ("openai", "gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("openai", "gpt-4.1-nano-2025-04-14", "gpt-4.1-nano"),
        ("openai", "gpt-3.5-turbo-0125", "gpt-3.5-turbo"),
        ("openai", "o3-mini-2025-01-31", "o3-mini"),
        ("mistral", "mistral-large-2411", "mistral-large-latest"),
        ("mistral", "codestral-2501", "codestral-latest"),
        ("mistral", "open-mistral-nemo-2407", "open-mistral-nemo"),
        ("xai", "grok-2-1212", "grok-2"),
        ("gemini", "models/gemini-1.5-flash-002", "gemini-1.5-flash"),
        ("gemini", "gemini-2.5-pro-preview-05-06", "gemini-2.5-pro"),
    ],
)
def test_snapshot_names_take_the_base_price(provider: str, model: str, priced_as: str) -> None:
    assert price(provider, model) == PRICES[provider][priced_as]


def test_an_exact_snapshot_entry_beats_its_base_name() -> None:
    assert price("openai", "gpt-4o-2024-05-13") == (5.00, 15.00)
    assert price("openai", "gpt-4o-2024-08-06") == (2.50, 10.00)


def test_unpriced_and_unknown_tokens_give_none() -> None:
    assert price("openai", "my-finetune") is None
    assert cost_usd("openai", "my-finetune", 10, 10) is None
    assert cost_usd("someprovider", "gpt-4o", 10, 10) is None  # the table is per provider
    assert cost_usd("openai", "gpt-4o", None, 10) is None
    assert cost_usd("openai", "gpt-4o", 10, None) is None


@pytest.mark.parametrize("provider", sorted(LOCAL_PROVIDERS))
def test_local_backends_are_free_even_without_counts(provider: str) -> None:
    assert cost_usd(provider, "llama3.2:1b", 100, 200) == 0.0
    assert cost_usd(provider, "anything", None, None) == 0.0


def test_local_providers_set() -> None:
    assert {"local", "ollama", "llamacpp", "localai", "vllm", "lmstudio"} == LOCAL_PROVIDERS
    assert "openai" not in LOCAL_PROVIDERS


def test_overrides_win_and_cover_snapshots() -> None:
    overrides = {"openai:gpt-4o-mini": {"input": 1.0, "output": 2.0}}
    assert cost_usd("openai", "gpt-4o-mini", 1_000_000, 1_000_000, overrides) == pytest.approx(3.0)
    assert price("openai", "gpt-4o-mini-2024-07-18", overrides) == (1.0, 2.0)
    assert price("openai", "gpt-4o", overrides) == (2.50, 10.00)  # others keep the table


def test_override_prices_an_unknown_model_and_a_whole_provider() -> None:
    assert price("myserver", "m1", {"myserver:m1": {"input": 0.5, "output": 1.5}}) == (0.5, 1.5)
    everything = {"myserver:*": {"input": 0.1, "output": 0.2}}
    assert cost_usd("myserver", "whatever", 10**6, 10**6, everything) == pytest.approx(0.3)
    assert price("ollama", "llama3.2", {"ollama:*": {"input": 0.01, "output": 0.02}}) == (
        0.01,
        0.02,
    )


def test_override_missing_half_is_zero_and_bad_values_are_config_problems() -> None:
    assert price("x", "y", {"x:y": {"output": 4}}) == (0.0, 4.0)
    with pytest.raises(ConfigProblem, match='"x:y"'):
        price("x", "y", {"x:y": {"input": "cheap"}})
    with pytest.raises(ConfigProblem):
        price("x", "y", {"x:y": 3.0})  # type: ignore[dict-item]


def test_openrouter_vendor_names_use_the_vendor_table() -> None:
    assert price("openrouter", "openai/gpt-4o-mini") == (0.15, 0.60)
    assert price("openrouter", "mistralai/mistral-large-2411") == (2.00, 6.00)
    assert price("openrouter", "unknownvendor/model") is None


def test_table_is_sane() -> None:
    for provider, models in PRICES.items():
        assert provider not in LOCAL_PROVIDERS
        for model, (inp, out) in models.items():
            assert model == model.lower()
            assert 0 < inp <= out, (provider, model)
