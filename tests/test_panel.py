"""The ipywidgets panel, built in plain Python: set values, click buttons, read the widgets.

Runs go to the loopback servers (real sockets, real providers) and, in one test, to the
embedded model. Each run is on the panel's background thread; `panel.wait()` joins it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import datetime, timezone

import pandas as pd
import pytest

from llm_magic._panel import Panel
from llm_magic._session import Session
from llm_magic._view_text import SHOWN_HEAD

RUN_TIMEOUT = 60.0


def until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll until predicate() holds; False when the timeout passes first."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


@pytest.fixture
def openai_env(openai_server, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-panel-0123456789")
    return openai_server


def make_panel(targets: list[str], prompt: str = "", **kwargs) -> Panel:
    kwargs.setdefault("discover", False)  # discovery has its own test
    return Panel(targets, prompt=prompt, session=Session(), **kwargs)


def run(panel: Panel) -> None:
    panel.run_button.click()
    assert panel.wait(RUN_TIMEOUT), "the run did not finish"


def test_run_streams_each_target_into_its_own_escaped_column(openai_env) -> None:
    panel = make_panel(["openai:gpt-4o-mini", "openai:gpt-4o"], "<b>bold</b> & co", max_tokens=50)
    run(panel)
    assert not panel.running and not panel.run_button.disabled and panel.stop_button.disabled
    mini, big = (c.value for c in panel.outputs.children)
    assert "Echo from gpt-4o-mini: &lt;b&gt;bold&lt;/b&gt; &amp; co" in mini
    assert "Echo from gpt-4o: &lt;b&gt;bold&lt;/b&gt; &amp; co" in big
    assert "<b>bold</b>" not in mini + big
    df = panel.result
    assert list(df["target"]) == ["openai:gpt-4o-mini", "openai:gpt-4o"]
    assert df["output"].str.startswith("Echo from").all() and df["error"].isna().all()
    assert (df["latency_s"] > 0).all() and df["completion_tokens"].notna().all()
    assert Session().last == []  # the panel's own session got the rows, not a new one
    metrics = panel.metrics.value
    assert "<table" in metrics and "openai:gpt-4o-mini" in metrics and "tokens/s" in metrics
    assert panel.chart.value[:8] == b"\x89PNG\r\n\x1a\n" and panel.chart.layout.display == "block"
    assert "done" in panel.status.value and "2 answers" in panel.status.value
    body = openai_env.chat_requests()[0].body
    assert body["max_tokens"] == 50 and body["temperature"] == pytest.approx(0.7)


def test_system_prompt_and_repeat_reach_the_server_and_the_columns(openai_env) -> None:
    panel = make_panel(["openai:gpt-4o-mini"], "hi")
    panel.system.value = "You are terse."
    panel.repeat.value = 2
    panel.temperature.value = 0.2
    run(panel)
    assert len(panel.result) == 2 and list(panel.result["repeat"]) == [0, 1]
    requests = openai_env.chat_requests()
    assert len(requests) == 2
    assert requests[0].body["messages"][0] == {"role": "system", "content": "You are terse."}
    assert requests[0].body["temperature"] == pytest.approx(0.2)
    (column,) = panel.columns
    assert "run 1" in column.value and "run 2" in column.value
    assert ">#</th>" in panel.metrics.value  # a repeat column when a target answered twice


def test_a_failing_target_keeps_the_other_column(openai_env, ollama_server, monkeypatch) -> None:
    monkeypatch.setenv("OLLAMA_HOST", ollama_server.root_url)
    openai_env.status = 400
    openai_env.error_message = "bad <request> & stuff"
    panel = make_panel(["openai:gpt-4o-mini", "ollama:llama3.2"], "hello")
    run(panel)
    bad, good = panel.result.itertuples()
    assert bad.error is not None and "bad" in bad.error
    assert pd.isna(good.error)
    assert good.output.startswith("Echo from llama3.2")
    assert "bad &lt;request&gt; &amp; stuff" in panel.columns[0].value
    assert "bad &lt;request&gt; &amp; stuff" in panel.metrics.value
    assert "<request>" not in panel.metrics.value + panel.columns[0].value
    assert "1 with errors" in panel.status.value and "✓ done" in panel.status.value
    assert "sk-test-panel" not in panel.metrics.value + panel.status.value
    ollama_server.status = 500  # now no target answers: that is not a green tick
    run(panel)
    assert "✕ all failed" in panel.status.value and "2 with errors" in panel.status.value


def test_stop_cancels_a_slow_run_and_keeps_the_rows(openai_env) -> None:
    openai_env.delay = 30.0  # the server sits on the request; only Stop ends it
    panel = make_panel(["openai:gpt-4o-mini", "openai:gpt-4o"], "slow please")
    panel.run_button.click()
    assert panel.running and panel.run_button.disabled and not panel.stop_button.disabled
    assert until(lambda: openai_env.in_flight == 2)
    assert "running" in panel.status.value
    panel.stop_button.click()
    assert panel.wait(10), "Stop did not end the run"
    df = panel.result
    assert len(df) == 2 and (df["finish_reason"] == "interrupted").all()
    assert "stopped" in panel.status.value and "interrupted" in panel.columns[0].value
    assert not panel.running and not panel.run_button.disabled


def test_bad_inputs_are_reported_in_the_status_line_and_nothing_is_sent(openai_env) -> None:
    panel = make_panel(["openai:gpt-4o-mini"], "   ")
    panel.run_button.click()
    assert "write a prompt" in panel.status.value and panel._thread is None
    panel.prompt.value = "hi"
    panel.targets.value = ["nosuch:model"]
    panel.run_button.click()
    assert "unknown provider &#x27;nosuch&#x27;" in panel.status.value
    panel.targets.value = []
    panel.run_button.click()
    assert "add at least one target" in panel.status.value
    assert panel.result is None and openai_env.request_count == 0


def test_picker_adds_checked_targets_and_rejects_bad_ones() -> None:
    panel = make_panel(["local:smollm2"])
    panel.picker.value = "ollama:llama3.2:1b"
    assert panel.targets.value == ["local:smollm2", "ollama:llama3.2:1b"]
    assert panel.picker.value == ""  # ready for the next one
    panel.picker.value = "local:smollm2"  # already chosen: not twice
    assert panel.targets.value == ["local:smollm2", "ollama:llama3.2:1b"]
    panel.picker.value = "llama3"
    assert "neither provider:model nor a known alias" in panel.status.value
    assert panel.targets.value == ["local:smollm2", "ollama:llama3.2:1b"]
    panel._add("  mistral:mistral-small-latest ")  # what the Add button does with the box
    assert panel.targets.value[-1] == "mistral:mistral-small-latest"


def test_no_targets_means_the_default_target() -> None:
    assert make_panel(None).targets.value == ["local:smollm2"]
    session = Session(settings=lambda: {"default_target": "ollama:llama3.2"})  # as %config
    assert Panel(discover=False, session=session).targets.value == ["ollama:llama3.2"]


def test_discovery_lists_models_of_configured_providers(
    openai_env, refused_url, monkeypatch
) -> None:
    monkeypatch.setenv("OLLAMA_HOST", refused_url)
    panel = Panel(["local:smollm2"], session=Session())
    assert panel.discovery.finished.wait(15)
    options = panel.picker.options
    assert options[0] == "local:smollm2"
    assert "openai:gpt-4o-mini" in options and "openai:o4-mini" in options
    note = panel.discovery_note.value
    assert "openai 5" in note and "not running: " in note and "ollama" in note
    assert not any(o.startswith("ollama:") for o in options)
    assert "sk-test-panel" not in note


def test_ollama_models_are_offered_as_they_are_typed(openai_env, ollama_server, monkeypatch):
    monkeypatch.setenv("OLLAMA_HOST", ollama_server.root_url)
    panel = Panel(["ollama:llama3.2"], session=Session())
    assert panel.discovery.finished.wait(15)
    ollama = [o for o in panel.picker.options if o.startswith("ollama:")]
    assert "ollama:llama3.2" in ollama and "ollama:qwen2.5:0.5b" in ollama  # tags kept
    assert not any(o.endswith(":latest") for o in ollama)  # not a second name for llama3.2


def test_llm_panel_magic_builds_a_panel(ip, refused_url, monkeypatch) -> None:
    from IPython.core.error import UsageError

    monkeypatch.setenv("OLLAMA_HOST", refused_url)
    panel = ip.run_line_magic("llm", "panel local:smollm2 ollama:llama3.2")
    assert isinstance(panel, Panel)
    assert panel.targets.value == ["local:smollm2", "ollama:llama3.2"]
    assert panel.discovery.finished.wait(15)
    with pytest.raises(UsageError, match="unknown provider"):
        ip.run_line_magic("llm", "panel nosuch:model")


@pytest.mark.local_model
def test_the_embedded_model_streams_into_the_panel() -> None:
    panel = make_panel(["local:smollm2"], "Name one colour.", max_tokens=16)
    panel.temperature.value = 0.0
    run(panel)
    (row,) = panel.result.itertuples()
    assert pd.isna(row.error) and row.output.strip()
    assert row.completion_tokens > 0 and not row.tokens_estimated
    assert row.cost_usd == 0.0
    words = re.findall(r"[A-Za-z]{3,}", row.output)[:3]  # as the Markdown column shows them
    assert words and all(w in panel.columns[0].value for w in words)
    assert "free" in panel.metrics.value and "done" in panel.status.value


def test_answers_render_as_markdown_bounded_with_controls_visible(openai_env) -> None:
    openai_env.reply = (
        "# Title\n\n**bold** \x1b[31mred \u202eexe <img src=x onerror=alert(1)> "
        "[j](javascript:alert(1))\n\n" + "x" * 30_000 + " end"
    )
    panel = make_panel(["openai:gpt-4o-mini"], "Hi")
    run(panel)
    column = panel.columns[0].value
    assert "<h1>Title</h1>" in column and "<strong>bold</strong>" in column
    assert "\\x1b[31mred" in column and "&lt;U+202E&gt;exe" in column
    assert "<img" not in column and "<a " not in column and "\x1b" not in column
    output = panel.result["output"][0]
    assert output == openai_env.reply  # the DataFrame keeps every character, raw
    assert f"… {len(output) - SHOWN_HEAD:,} more characters in the DataFrame" in column
    assert len(column) < SHOWN_HEAD + 5_000 and " end" not in column


def test_out_of_range_arguments_are_refused_not_clamped() -> None:
    from llm_magic.errors import UsageProblem

    for kwargs, words in [
        ({"temperature": 5}, "Panel: temperature 5 is out of range; allowed: 0 to 2"),
        ({"max_tokens": 0}, "Panel: max_tokens 0 is out of range"),
        ({"repeat": 100}, "Panel: repeat 100 is out of range; the panel shows 1 to 50"),
    ]:
        with pytest.raises(UsageProblem, match=words.replace("(", r"\(")):
            make_panel(["local:smollm2"], **kwargs)
    panel = make_panel(["local:smollm2"], temperature=2, max_tokens=1, repeat=50)  # the edges
    assert (panel.temperature.value, panel.max_tokens.value, panel.repeat.value) == (2, 1, 50)


def test_the_judge_box_names_who_judges_the_judge_checks(backends, monkeypatch) -> None:
    backends.openai.faults.reply = '{"score": 0.5, "reason": "half right"}'
    panel = make_panel(["ollama:llama3.2"], "Hi", checks=["judge:polite?"],
                       judge="openai:gpt-4o-mini")
    assert panel.judge.value == "openai:gpt-4o-mini"
    run(panel)
    assert panel.result["score_judge"].tolist() == [0.5]
    assert panel.result.attrs["judge"]["target"] == "openai:gpt-4o-mini"
    assert backends.openai.request_count == 1 and backends.ollama.request_count == 1
    panel.judge.value = " nosuch:model "
    assert not panel.start() and "the judge (--judge, judge=): unknown provider" in (
        panel.status.value
    )
    panel.judge.value = ""  # empty: the default target judges, as without --judge
    monkeypatch.setenv("LLM_MAGIC_DEFAULT_TARGET", "mistral:mistral-small-latest")
    backends.mistral.faults.reply = '{"score": 1, "reason": "fine"}'
    run(panel)
    assert panel.result.attrs["judge"]["target"] == "mistral:mistral-small-latest"
    assert panel.result["score_judge"].tolist() == [1.0]
    assert backends.ollama.request_count == 2 and backends.openai.request_count == 1


def test_uploaded_images_go_with_the_prompt(openai_env) -> None:
    png = b"\x89PNG\r\n\x1a\n" + bytes(24)
    panel = make_panel(["openai:gpt-4o-mini", "local:smollm2"], "What is it?")
    when = datetime.now(timezone.utc)  # what ipywidgets' FileUpload holds for each file
    upload = {"name": "a.png", "type": "image/png", "size": len(png), "last_modified": when}
    panel.images.value = ({**upload, "content": memoryview(png)},)
    run(panel)
    sent = openai_env.chat_requests()[-1].body["messages"][-1]["content"]
    assert sent[1]["image_url"]["url"].startswith("data:image/png;base64,")
    assert panel.result["params"][0]["images"][0]["bytes"] == len(png)
    assert panel.result["error"][1] == (
        "local: smollm2 cannot take images (--image, images=): it reads text only"
    )
    panel.images.value = ({**upload, "content": memoryview(b"not an image")},)
    assert not panel.start() and "not a PNG, JPEG, GIF or WEBP image" in panel.status.value


def test_the_embed_box_names_who_embeds_for_similar_checks(backends) -> None:
    panel = make_panel(["ollama:llama3.2"], "Hi", checks=["similar:Echo from llama3.2: Hi"],
                       embed="mistral:mistral-embed")
    assert panel.embed.value == "mistral:mistral-embed"
    run(panel)
    assert panel.result["score_similar"].tolist() == [pytest.approx(1.0)]  # the same words
    assert panel.result.attrs["embed"]["target"] == "mistral:mistral-embed"
    assert [r.path for r in backends.mistral.requests] == ["/v1/embeddings"]
    panel.embed.value = " anthropic:claude-haiku-4-5 "
    assert not panel.start() and "no embeddings endpoint" in panel.status.value
    assert backends.ollama.request_count == 1 and backends.anthropic.request_count == 0


def test_the_schema_box_names_a_notebook_schema(ip, openai_env) -> None:
    city = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    ip.user_ns["CITY"] = city
    openai_env.faults.reply = '{"city": "Paris"}'
    panel = make_panel(["openai:gpt-4o-mini"], "France's capital?", schema="CITY")
    run(panel)
    assert panel.result["parsed"].tolist() == [{"city": "Paris"}]
    assert bool(panel.result["schema_valid"][0]) and "1 fit the schema" in panel.status.value
    sent = openai_env.chat_requests()[-1].body["response_format"]
    assert sent["json_schema"]["schema"]["properties"] == city["properties"]
    panel.schema.value = "NOPE"  # refused as --schema NOPE is, nothing sent
    assert not panel.start() and "--schema NOPE: no variable &#x27;NOPE&#x27; in the" in (
        panel.status.value
    )
    ip.user_ns["NOPE"] = 42
    assert not panel.start() and "not int" in panel.status.value
    assert openai_env.request_count == 1
