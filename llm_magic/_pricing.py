"""Price table and the cost of one answer.

Figures are USD per 1M tokens (input, output), standard tier, no cache discount, short-context
tier where a vendor has two. They were written down from public price pages as known around
mid-2025 and WILL go out of date: override them in the config file (`[prices]` with
"provider:model" = {input = ..., output = ...}) instead of trusting them for billing.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping

from llm_magic.errors import ConfigProblem

__all__ = ["BATCH_PRICE_FACTOR", "LOCAL_PROVIDERS", "PRICES", "cost_usd", "price"]

# A provider batch costs this share of the synchronous price: OpenAI and Mistral both take
# half (shared/protocols/batch.md §1.7, §2.4). Applied to the table's and [prices]' figures.
BATCH_PRICE_FACTOR = 0.5

# Backends that run on the user's machine: their answers cost nothing.
LOCAL_PROVIDERS: frozenset[str] = frozenset(
    {"local", "ollama", "llamacpp", "localai", "vllm", "lmstudio"}
)

PRICES: dict[str, dict[str, tuple[float, float]]] = {
    "openai": {
        "gpt-5": (1.25, 10.00),
        "gpt-5-mini": (0.25, 2.00),
        "gpt-5-nano": (0.05, 0.40),
        "gpt-4.1": (2.00, 8.00),
        "gpt-4.1-mini": (0.40, 1.60),
        "gpt-4.1-nano": (0.10, 0.40),
        "gpt-4o": (2.50, 10.00),
        "gpt-4o-2024-05-13": (5.00, 15.00),  # the first gpt-4o snapshot kept its launch price
        "chatgpt-4o-latest": (5.00, 15.00),
        "gpt-4o-mini": (0.15, 0.60),
        "gpt-4.5-preview": (75.00, 150.00),
        "gpt-4-turbo": (10.00, 30.00),
        "gpt-4-0125-preview": (10.00, 30.00),  # turbo previews, not gpt-4 prices
        "gpt-4-1106-preview": (10.00, 30.00),
        "gpt-4": (30.00, 60.00),
        "gpt-3.5-turbo": (0.50, 1.50),
        "o1": (15.00, 60.00),
        "o1-mini": (1.10, 4.40),
        "o3": (2.00, 8.00),
        "o3-mini": (1.10, 4.40),
        "o4-mini": (1.10, 4.40),
        # embeddings: input only (an embedding has no output tokens; the second figure is unused)
        "text-embedding-3-small": (0.02, 0.02),
        "text-embedding-3-large": (0.13, 0.13),
        "text-embedding-ada-002": (0.10, 0.10),
    },
    "mistral": {
        "mistral-large-latest": (2.00, 6.00),
        "mistral-medium-latest": (0.40, 2.00),
        "mistral-small-latest": (0.10, 0.30),
        "magistral-medium-latest": (2.00, 5.00),
        "magistral-small-latest": (0.50, 1.50),
        "codestral-latest": (0.30, 0.90),
        "devstral-small-latest": (0.10, 0.30),
        "pixtral-large-latest": (2.00, 6.00),
        "pixtral-12b-latest": (0.15, 0.15),
        "ministral-8b-latest": (0.10, 0.10),
        "ministral-3b-latest": (0.04, 0.04),
        "open-mistral-nemo": (0.15, 0.15),
        "open-mistral-7b": (0.25, 0.25),
        "open-mixtral-8x7b": (0.70, 0.70),
        "open-mixtral-8x22b": (2.00, 6.00),
        "mistral-embed": (0.10, 0.10),  # embeddings: input only, as above
    },
    "deepseek": {
        "deepseek-chat": (0.27, 1.10),
        "deepseek-reasoner": (0.55, 2.19),
    },
    "groq": {
        "llama-3.1-8b-instant": (0.05, 0.08),
        "llama-3.3-70b-versatile": (0.59, 0.79),
        "meta-llama/llama-4-scout-17b-16e-instruct": (0.11, 0.34),
        "meta-llama/llama-4-maverick-17b-128e-instruct": (0.20, 0.60),
        "deepseek-r1-distill-llama-70b": (0.75, 0.99),
        "qwen/qwen3-32b": (0.29, 0.59),
        "openai/gpt-oss-120b": (0.15, 0.75),
        "openai/gpt-oss-20b": (0.10, 0.50),
        "gemma2-9b-it": (0.20, 0.20),
        "mixtral-8x7b-32768": (0.24, 0.24),
    },
    "xai": {
        "grok-4": (3.00, 15.00),
        "grok-3": (3.00, 15.00),
        "grok-3-fast": (5.00, 25.00),
        "grok-3-mini": (0.30, 0.50),
        "grok-3-mini-fast": (0.60, 4.00),
        "grok-2": (2.00, 10.00),
        "grok-2-vision": (2.00, 10.00),
        "grok-beta": (5.00, 15.00),
    },
    "gemini": {
        "gemini-2.5-pro": (1.25, 10.00),
        "gemini-2.5-flash": (0.30, 2.50),
        "gemini-2.5-flash-lite": (0.10, 0.40),
        "gemini-2.0-flash": (0.10, 0.40),
        "gemini-2.0-flash-lite": (0.075, 0.30),
        "gemini-1.5-pro": (1.25, 5.00),
        "gemini-1.5-flash": (0.075, 0.30),
        "gemini-1.5-flash-8b": (0.0375, 0.15),
    },
}

# OpenRouter names models "vendor/model" and passes the vendor's price through.
_OPENROUTER_VENDORS = {
    "openai": "openai",
    "mistralai": "mistral",
    "deepseek": "deepseek",
    "x-ai": "xai",
    "google": "gemini",
}

# Suffixes that name a snapshot or a version of a priced model: gpt-4o-mini-2024-07-18,
# claude-style -20240620, gpt-4-0613, mistral-large-2411, gemini-1.5-flash-002,
# gemini-2.5-pro-preview-05-06. Stripped one at a time, longest first.
_SNAPSHOT = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|\d{8}|\d{2}-\d{2}|\d{4}|\d{3}|preview|latest)$")


@functools.lru_cache(maxsize=4096)  # a 100,000-row batch asks for one model's names each row
def _candidates(model: str) -> tuple[str, ...]:
    """Names to look a model up under, most specific first."""
    name = model.strip().lower().removeprefix("models/")  # Gemini reports "models/gemini-..."
    names = [name]
    while True:
        shorter = _SNAPSHOT.sub("", name)
        if shorter == name or not shorter:
            break
        name = shorter
        names.append(name)
    # Mistral prices its "-latest" alias; a dated name like mistral-large-2411 is the same model.
    names.extend([n + "-latest" for n in names[1:] if not n.endswith("-latest")])
    return tuple(names)


def _override(overrides: Mapping[str, Mapping[str, float]], key: str) -> tuple[float, float] | None:
    entry = overrides.get(key)
    if entry is None:
        return None
    try:
        return float(entry.get("input", 0.0)), float(entry.get("output", 0.0))
    except (TypeError, ValueError, AttributeError):
        raise ConfigProblem(
            f'price override "{key}" must look like {{input = 0.15, output = 0.6}} '
            "(USD per 1M tokens)"
        ) from None


def price(
    provider: str, model: str, overrides: Mapping[str, Mapping[str, float]] | None = None
) -> tuple[float, float] | None:
    """(input, output) USD per 1M tokens, or None when unpriced. Local backends are (0, 0).

    Overrides are keyed "provider:model" (or "provider:*" for every model of a provider) and
    win over the table; both are tried with the exact name first, then without a snapshot suffix.
    """
    provider = provider.strip().lower()
    names = _candidates(model)
    if overrides:
        lowered = {str(k).strip().lower(): v for k, v in overrides.items()}
        for key in [f"{provider}:{n}" for n in names] + [f"{provider}:*"]:
            found = _override(lowered, key)
            if found is not None:
                return found
    if provider in LOCAL_PROVIDERS:
        return (0.0, 0.0)
    table = PRICES.get(provider, {})
    if provider == "openrouter" and "/" in names[0]:
        vendor, _, rest = names[0].partition("/")
        table = PRICES.get(_OPENROUTER_VENDORS.get(vendor, ""), {})
        names = _candidates(rest)
    for name in names:
        if name in table:
            return table[name]
    return None


def cost_usd(
    provider: str,
    model: str,
    prompt_tokens: int | None,
    completion_tokens: int | None,
    overrides: Mapping[str, Mapping[str, float]] | None = None,
) -> float | None:
    """Cost of one answer in USD: 0.0 for local backends, None when unpriced or tokens unknown."""
    rates = price(provider, model, overrides)
    if rates == (0.0, 0.0) and provider.strip().lower() in LOCAL_PROVIDERS:
        return 0.0  # free whether or not the tokens were counted
    if rates is None or prompt_tokens is None or completion_tokens is None:
        return None
    return (prompt_tokens * rates[0] + completion_tokens * rates[1]) / 1_000_000
