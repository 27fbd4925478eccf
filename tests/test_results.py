"""records -> DataFrame schema, and the df.llm accessor."""

from __future__ import annotations

import importlib
import math
import sys
import warnings
from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest

from llm_magic import results
from llm_magic._records import COLUMNS, RunRecord
from llm_magic._view_text import SHOWN_HEAD
from llm_magic.errors import UsageProblem
from llm_magic.results import to_dataframe

EXPECTED = {
    "run_id": "string",
    "target": "string",
    "provider": "string",
    "model": "string",
    "prompt": "string",
    "output": "string",
    "latency_s": "float64",
    "ttft_s": "float64",
    "prompt_tokens": "Int64",
    "completion_tokens": "Int64",
    "total_tokens": "Int64",
    "tokens_estimated": "boolean",
    "tokens_per_s": "float64",
    "cost_usd": "float64",
    "finish_reason": "string",
    "error": "string",
    "repeat": "Int64",
    "cached": "boolean",
    "fallback_from": "string",
    "params": "object",
}
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)


def rec(target: str, prompt: str = "p", **kw: object) -> RunRecord:
    provider, _, model = target.partition(":")
    return RunRecord(
        run_id="r1", target=target, provider=provider, model=model, prompt=prompt, **kw
    )  # type: ignore[arg-type]


def check_schema(df: pd.DataFrame) -> None:
    assert tuple(df.columns) == COLUMNS
    dtypes = {c: str(t) for c, t in df.dtypes.items() if c != "started_at"}
    assert dtypes == EXPECTED
    assert isinstance(df["output"].dtype, pd.StringDtype)
    started = df.dtypes["started_at"]
    assert isinstance(started, pd.DatetimeTZDtype) and str(started.tz) == "UTC"


def test_schema_exact_and_values_kept() -> None:
    df = to_dataframe(
        [
            rec(
                "openai:gpt-4o-mini",
                output="hello",
                latency_s=1.5,
                ttft_s=0.25,
                prompt_tokens=7,
                completion_tokens=3,
                total_tokens=10,
                tokens_estimated=True,
                tokens_per_s=2.4,
                cost_usd=0.001,
                finish_reason="stop",
                params={"temperature": 0.2},
                started_at=T0,
            ),
        ]
    )
    check_schema(df)
    row = df.iloc[0]
    assert row["output"] == "hello" and row["latency_s"] == 1.5 and row["total_tokens"] == 10
    assert df["tokens_estimated"].tolist() == [True] and df["cached"].tolist() == [False]
    assert row["params"] == {"temperature": 0.2}
    assert row["started_at"] == pd.Timestamp(T0)
    assert list(df.index) == [0]


def test_empty_frame_has_the_same_schema() -> None:
    df = to_dataframe([])
    assert len(df) == 0
    check_schema(df)
    full = to_dataframe([rec("a:b", started_at=T0)])
    assert df.dtypes.equals(full.dtypes)
    assert results.empty_frame().dtypes.equals(full.dtypes)


def test_none_becomes_na_of_the_right_kind() -> None:
    df = to_dataframe([rec("a:b"), rec("a:b", error="a: HTTP 500: down", repeat=1)])
    check_schema(df)
    first = df.iloc[0]
    assert first["error"] is pd.NA and first["fallback_from"] is pd.NA
    assert first["finish_reason"] is pd.NA
    assert math.isnan(first["latency_s"]) and math.isnan(first["cost_usd"])
    assert first["prompt_tokens"] is pd.NA
    assert first["started_at"] is pd.NaT
    assert df["error"].isna().tolist() == [True, False]
    assert df["repeat"].tolist() == [0, 1]


def test_datetimes_end_up_in_utc() -> None:
    paris = timezone(timedelta(hours=1))
    naive = datetime(2025, 3, 1, 12, 0)
    df = to_dataframe([rec("a:b", started_at=T0.astimezone(paris)), rec("a:b", started_at=naive)])
    assert df["started_at"].tolist() == [pd.Timestamp(T0), pd.Timestamp(T0)]


def test_params_are_copied_not_shared() -> None:
    params = {"seed": 1}
    df = to_dataframe([rec("a:b", params=params)])
    params["seed"] = 2
    assert df["params"].iloc[0] == {"seed": 1}


def test_accessor_is_registered_and_reload_is_quiet() -> None:
    assert pd.DataFrame.llm is results.LLMAccessor
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reloaded = importlib.reload(results)
    assert pd.DataFrame.llm is reloaded.LLMAccessor
    assert isinstance(to_dataframe([]).llm, reloaded.LLMAccessor)


def frame_two_targets() -> pd.DataFrame:
    return to_dataframe(
        [
            rec(
                "ollama:llama3.2",
                "q1",
                output="<script>alert(1)</script>",
                latency_s=1.0,
                completion_tokens=10,
                tokens_per_s=20.0,
            ),
            rec(
                "openai:gpt-4o-mini",
                "q1",
                output="fine & dandy",
                latency_s=2.0,
                completion_tokens=5,
                tokens_per_s=5.0,
                cost_usd=0.5,
            ),
            rec(
                "ollama:llama3.2",
                "q2",
                output="",
                error="ollama: <b>model</b> not found",
                finish_reason="error",
            ),
            rec(
                "openai:gpt-4o-mini",
                "q2",
                output="two",
                latency_s=4.0,
                completion_tokens=7,
                cost_usd=0.25,
            ),
        ]
    )


def test_side_by_side_escapes_model_text_and_errors() -> None:
    html = frame_two_targets().llm.side_by_side()._repr_html_()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script>" not in html and "<b>model" not in html
    assert "&lt;b&gt;model&lt;/b&gt; not found" in html
    assert "fine &amp; dandy" in html
    assert "1.00 s · 10 tok · 20 tok/s" in html
    # targets appear as columns in order of first appearance, prompts as row labels
    assert html.index("ollama:llama3.2") < html.index("openai:gpt-4o-mini")
    assert html.index(">q1<") < html.index(">q2<")


def test_side_by_side_html_format_is_the_one_unescaped_choice() -> None:
    df = to_dataframe([rec("a:b", output="<b>bold</b>")])
    assert "<b>bold</b>" in df.llm.side_by_side(fmt="html")._repr_html_()
    assert "<b>bold</b>" not in df.llm.side_by_side(fmt="markdown")._repr_html_()
    with pytest.raises(UsageProblem, match="unknown format"):
        df.llm.side_by_side(fmt="pdf")


def test_side_by_side_shows_a_bounded_part_of_a_long_answer() -> None:
    long = "".join(f"line {i}\n" for i in range(30_000))  # about 260,000 characters
    df = to_dataframe([rec("a:x", "q", output=long), rec("b:y", "q", output="short")])
    for fmt in ("text", "markdown"):
        page = df.llm.side_by_side(fmt)._repr_html_()
        assert len(page) < 3 * SHOWN_HEAD + 5_000
        assert f"… {len(long) - SHOWN_HEAD:,} more characters in the DataFrame" in page
        assert "line 1000" in page and "line 29999" not in page and "short" in page
    text = repr(df.llm.side_by_side())
    assert "line 29999" not in text
    assert df.llm.side_by_side().to_frame().loc["q", "a:x"] == long  # the data keeps it all


def test_side_by_side_shows_controls_and_odd_text_visibly() -> None:
    hostile = "\x1b]52;c;aGk=\x07\x1b[31mred \u202etxt.exe \ud800 \x00"
    df = to_dataframe(
        [rec("a:x", "q \x1b[2J", output=hostile, error="e \x1b[1m"), rec("b:y", "q \x1b[2J")]
    )
    for fmt in results.html.FORMATS:
        page = df.llm.side_by_side(fmt)._repr_html_()
        page.encode("utf-8")  # a lone surrogate would refuse
        assert "\\x1b]52;c;aGk=\\x07" in page and "&lt;U+202E&gt;txt.exe" in page
        assert "\\x00" in page and "\ufffd" in page and "q \\x1b[2J" in page
        assert "\x1b" not in page and "\u202e" not in page and "\x00" not in page
    text = repr(df.llm.side_by_side())  # what terminal IPython prints
    text.encode("utf-8")
    assert "\x1b" not in text and "\u202e" not in text and "\\x1b" in text
    assert df["output"][0] == hostile  # the DataFrame keeps the raw text


def test_side_by_side_to_frame_pivots_prompts_by_targets() -> None:
    wide = frame_two_targets().llm.side_by_side().to_frame()
    assert list(wide.columns) == ["ollama:llama3.2", "openai:gpt-4o-mini"]
    assert list(wide.index) == ["q1", "q2"]
    assert wide.loc["q1", "openai:gpt-4o-mini"] == "fine & dandy"
    assert wide.loc["q2", "openai:gpt-4o-mini"] == "two"
    errors = frame_two_targets().llm.side_by_side().to_frame("error")
    assert errors.loc["q2", "ollama:llama3.2"].endswith("not found")


def test_repeats_are_stacked_and_tagged() -> None:
    df = to_dataframe([rec("a:b", "q", output=f"answer {i}", repeat=i) for i in range(3)])
    view = df.llm.side_by_side()
    html = view._repr_html_()
    assert all(f"answer {i}" in html for i in range(3))
    assert all(f">#{i}<" in html for i in range(3))
    wide = view.to_frame()
    assert wide.index.names == ["prompt", "repeat"]
    assert wide["a:b"].tolist() == ["answer 0", "answer 1", "answer 2"]
    assert "answer 2" in repr(view)


def test_summary_numbers() -> None:
    records = [rec("b:first", latency_s=9.0, cost_usd=None)]
    records += [
        rec(
            "a:x",
            latency_s=lat,
            ttft_s=lat / 10,
            tokens_per_s=tps,
            completion_tokens=10,
            cost_usd=0.01,
        )
        for lat, tps in [(1.0, 10.0), (2.0, 20.0), (3.0, 30.0), (4.0, 40.0)]
    ]
    records.append(rec("a:x", latency_s=100.0, error="a: timed out", cost_usd=None))
    summary = to_dataframe(records).llm.summary()
    assert list(summary.index) == ["b:first", "a:x"]
    assert list(summary.columns) == [
        "n",
        "errors",
        "latency_p50",
        "latency_p95",
        "ttft_p50",
        "ttft_p95",
        "tokens_per_s",
        "completion_tokens",
        "cost_usd",
    ]
    a = summary.loc["a:x"].to_dict()
    assert a["n"] == 5 and a["errors"] == 1
    assert a["latency_p50"] == pytest.approx(2.5)  # the failed 100 s row is left out
    assert a["latency_p95"] == pytest.approx(3.85)
    assert a["ttft_p50"] == pytest.approx(0.25) and a["ttft_p95"] == pytest.approx(0.385)
    assert a["tokens_per_s"] == pytest.approx(25.0)
    assert a["completion_tokens"] == 40
    assert a["cost_usd"] == pytest.approx(0.04)
    assert summary.at["b:first", "n"] == 1 and summary.at["b:first", "errors"] == 0
    assert summary.at["b:first", "latency_p50"] == 9.0
    assert math.isnan(summary.at["b:first", "cost_usd"])  # nothing priced: NaN, not 0
    assert math.isnan(summary.at["b:first", "ttft_p50"])
    assert summary.at["b:first", "completion_tokens"] is pd.NA
    assert str(summary.dtypes["completion_tokens"]) == "Int64"


def test_summary_of_empty_and_all_error_frames() -> None:
    empty = to_dataframe([]).llm.summary()
    assert len(empty) == 0 and "latency_p95" in empty.columns
    failed = to_dataframe([rec("a:b", error="a: refused")]).llm.summary()
    assert failed.at["a:b", "errors"] == 1 and math.isnan(failed.at["a:b", "latency_p50"])


def test_accessor_names_missing_columns() -> None:
    with pytest.raises(UsageProblem, match="latency_s"):
        pd.DataFrame({"target": ["a"], "error": [None]}).llm.summary()


@pytest.fixture
def agg():
    mpl = pytest.importorskip("matplotlib")
    mpl.use("Agg")
    import matplotlib.pyplot as plt

    yield
    plt.close("all")


@pytest.mark.usefixtures("agg")
def test_plot_draws_median_bars_per_target() -> None:
    records = [rec("z:slow", latency_s=v, ttft_s=0.5, tokens_per_s=10.0) for v in (4.0, 6.0)]
    records += [rec("a:fast", latency_s=v, tokens_per_s=50.0) for v in (1.0, 2.0, 3.0)]
    axes = to_dataframe(records).llm.plot()
    assert len(axes) == 3
    latency, ttft, tps = axes
    assert [t.get_text() for t in latency.get_xticklabels()] == ["z:slow", "a:fast"]
    assert [p.get_height() for p in latency.patches] == pytest.approx([5.0, 2.0])
    assert [p.get_height() for p in tps.patches] == pytest.approx([10.0, 50.0])
    heights = [p.get_height() for p in ttft.patches]
    assert heights == pytest.approx([0.5, 0.0])  # pandas draws an unknown value as no bar
    assert [t.get_text() for t in ttft.texts] == ["no answer"]  # ... which must not read as 0
    assert latency.get_title() == "latency (s)"
    assert whiskers(latency) == pytest.approx([0, 5.0, 5.9, 1, 2.0, 2.9])  # median up to p95
    assert whiskers(ttft) == pytest.approx([0, 0.5, 0.5, 1, 0.0, 0.0])


def whiskers(ax) -> list[float]:
    """x, bottom, top of each error bar an Axes draws, in one flat list."""
    (bars,) = [c for c in ax.collections if len(c.get_segments()) > 0]
    return [v for (x, low), (_, high) in bars.get_segments() for v in (x, low, high)]


@pytest.mark.usefixtures("agg")
def test_plot_single_target_with_errors() -> None:
    df = to_dataframe([rec("a:b", latency_s=1.0), rec("a:b", latency_s=50.0, error="a: boom")])
    axes = df.llm.plot()
    assert [p.get_height() for p in axes[0].patches] == pytest.approx([1.0])
    assert whiskers(axes[0]) == pytest.approx([0, 1.0, 1.0])  # the failure's 50 s is not in it
    failed = to_dataframe([rec("a:b", latency_s=1.0), rec("c:d", latency_s=0.1, error="c: boom")])
    latency = failed.llm.plot()[0]
    assert [p.get_height() for p in latency.patches][0] == pytest.approx(1.0)
    assert [(t.get_text(), t.xy[0]) for t in latency.texts] == [("no answer", 1)]


def test_plot_without_matplotlib_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(UsageProblem) as info:
        to_dataframe([rec("a:b", latency_s=1.0)]).llm.plot()
    assert str(info.value) == "df.llm.plot() needs matplotlib: pip install matplotlib"


def test_side_by_side_keeps_a_fallback_answer_under_the_target_asked_for() -> None:
    # `%%llm a:x|b:y b:y`: a:x failed, b:y answered for it; b:y also answered on its own.
    df = to_dataframe(
        [
            rec("b:y", "q", output="via fallback", fallback_from="a:x"),
            rec("b:y", "q", output="asked directly"),
        ]
    )
    view = df.llm.side_by_side()
    wide = view.to_frame()
    assert list(wide.columns) == ["a:x", "b:y"]
    assert wide.loc["q", "a:x"] == "via fallback"
    assert wide.loc["q", "b:y"] == "asked directly"
    html = view._repr_html_()
    assert "by b:y after a:x failed" in html
    assert ">#" not in html  # two columns of one answer each, not one column of two


def test_side_by_side_reads_frames_without_fallback_text() -> None:
    df = to_dataframe([rec("a:x", "q", output="one")])
    df["fallback_from"] = float("nan")  # as after a CSV round trip
    assert df.llm.side_by_side().to_frame().loc["q", "a:x"] == "one"
