"""Runs through %%llm at scale: --repeat, --over, the progress bar, the live columns, limits from
the config file, and interrupting the kernel — against loopback servers on real sockets."""

from __future__ import annotations

import re
import threading
import time

import pandas as pd
import pytest

from llm_magic._live import LIVE_COLUMNS_MAX
from tests.cells import run_frame


@pytest.fixture
def wired(ip, backends):
    return ip, backends.openai, backends.ollama


def test_repeat_gives_one_row_per_run_and_percentiles(wired) -> None:
    ip, openai_server, ollama_server = wired
    shown = ip.run_cell("%%llm openai:gpt-4o-mini ollama:llama3.2 -r 3\nHi").result
    assert list(shown["repeat"]) == [0, 1, 2, 0, 1, 2] and "prompt" not in shown.columns
    df = ip.user_ns["_llm"]
    assert len(df) == 6 and list(df["repeat"]) == [0, 1, 2, 0, 1, 2]
    summary = df.llm.summary()
    assert list(summary["n"]) == [3, 3]
    assert (summary["latency_p95"] >= summary["latency_p50"]).all()
    assert openai_server.request_count == 3 and ollama_server.request_count == 3


def test_over_a_dataframe_renders_each_row(wired) -> None:
    ip, openai_server, _ = wired
    ip.user_ns["questions"] = pd.DataFrame({"city": ["Paris", "Rome"], "topic": ["food", "art"]})
    df = run_frame(ip, "%%llm openai:gpt-4o-mini ollama:llama3.2 --over questions\n"
        "Tell me about {topic} in {city}.")
    assert (
        list(df["prompt"])
        == ["Tell me about food in Paris."] * 2 + ["Tell me about art in Rome."] * 2
    )
    assert list(df["target"]) == ["openai:gpt-4o-mini", "ollama:llama3.2"] * 2
    sent = sorted(r.body["messages"][-1]["content"] for r in openai_server.requests)
    assert sent == ["Tell me about art in Rome.", "Tell me about food in Paris."]


def test_over_a_list_and_a_series(wired) -> None:
    ip, openai_server, _ = wired
    ip.user_ns["items"] = ["tea", "coffee", "cocoa"]
    ip.user_ns["drinks"] = pd.Series(["milk", "water"], name="drink")
    df = ip.run_cell("%%llm openai:gpt-4o-mini --over items -q\nPraise {item}.").result
    assert df is None and list(ip.user_ns["_llm"]["prompt"]) == [
        f"Praise {x}." for x in ["tea", "coffee", "cocoa"]
    ]
    ip.run_cell("%%llm openai:gpt-4o-mini --over drinks -q\nPraise {drink}.")
    assert list(ip.user_ns["_llm"]["prompt"]) == ["Praise milk.", "Praise water."]
    # the system prompt is rendered per item as well
    ip.run_cell("%%llm openai:gpt-4o-mini --over drinks -q -s 'You sell {drink}.'\nPraise it.")
    sent = [r.body["messages"][0]["content"] for r in openai_server.requests[-2:]]
    assert sorted(sent) == ["You sell milk.", "You sell water."]
    df = ip.user_ns["_llm"]  # the rows keep which system prompt each was asked with
    assert [p["system"] for p in df["params"]] == ["You sell milk.", "You sell water."]
    pivot = df.llm.side_by_side().to_frame()  # same prompt, two system prompts: two rows
    assert list(pivot.index) == [
        "Praise it. · system: You sell milk.",
        "Praise it. · system: You sell water.",
    ]
    # the variable's own name is each item too, as `--over items` + `{items}` reads
    ip.run_cell("%%llm openai:gpt-4o-mini --over items -q\nPraise {items}.")
    assert list(ip.user_ns["_llm"]["prompt"]) == ["Praise tea.", "Praise coffee.", "Praise cocoa."]


def test_a_large_run_shows_a_progress_bar_and_respects_concurrency(wired, capsys) -> None:
    ip, openai_server, _ = wired
    openai_server.delay = 0.05
    ip.user_ns["many"] = [f"q{i}" for i in range(LIVE_COLUMNS_MAX + 28)]
    df = run_frame(ip, "%%llm openai:gpt-4o-mini --over many -c 4\n{item}")
    assert len(df) == LIVE_COLUMNS_MAX + 28 and df["error"].isna().all()
    assert openai_server.max_in_flight == 4
    err = capsys.readouterr().err
    assert f"{LIVE_COLUMNS_MAX + 28}/{LIVE_COLUMNS_MAX + 28}" in err  # tqdm's final count
    assert "failed" not in err
    openai_server.statuses = [400] * 3  # three rows fail: the finished bar says so
    ip.run_cell("%%llm openai:gpt-4o-mini --over many -c 4 --retries 0\n{item}")
    # the bar's title: the run id (for %llm resume), then how many failed
    assert re.search(r"llm [0-9a-f]{12} · 3 failed", capsys.readouterr().err)


def test_per_provider_limit_from_the_config_file(wired, isolated_env) -> None:
    ip, openai_server, _ = wired
    (isolated_env / "config.toml").write_text("[limits]\nopenai = 2\n")
    openai_server.delay = 0.05
    ip.user_ns["many"] = [f"q{i}" for i in range(10)]
    ip.run_cell("%%llm openai:gpt-4o-mini --over many -c 8 -q\n{item}")
    assert openai_server.max_in_flight == 2


def test_several_targets_stream_into_live_columns(wired, published) -> None:
    ip, openai_server, ollama_server = wired
    for server in (openai_server, ollama_server):
        server.reply, server.token_delay = "<b>one</b> two three four five six", 0.05
    ip.run_cell("%%llm openai:gpt-4o-mini ollama:llama3.2\nHi")
    html = [o["data"].get("text/html", "") for o in published.outputs]
    assert len(html) >= 3  # the first view, updates while streaming, the final one
    final = html[-1]
    assert "openai:gpt-4o-mini" in final and "ollama:llama3.2" in final
    assert final.count("&lt;b&gt;one&lt;/b&gt; two three four five six") == 2
    assert "<b>one</b>" not in "".join(html)  # model text is escaped in every update
    streaming = [h for h in html[1:-1] if "two three" not in h and "one" in h]
    assert streaming, "no update showed a partial answer"


def test_one_target_streams_as_markdown(wired, published) -> None:
    ip, openai_server, _ = wired
    openai_server.reply = "**bold** answer"
    assert ip.run_cell("%%llm openai:gpt-4o-mini\nHi").result is None
    rendered = [o["data"].get("text/html", "") for o in published.outputs]
    assert "<strong>bold</strong> answer" in rendered[-1]


def test_interrupting_the_kernel_keeps_rows_and_stops_within_a_second(wired, interrupt_main):
    ip, openai_server, ollama_server = wired
    openai_server.reply, openai_server.stall_after = "partial answer then a stall", 2
    started = threading.Event()
    sent_at: list[float] = []

    def interrupt() -> None:
        deadline = time.monotonic() + 10
        while openai_server.request_count == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.3)  # let the first words arrive and the healthy target finish
        started.set()
        sent_at.append(time.monotonic())
        interrupt_main()

    threading.Thread(target=interrupt).start()
    with pytest.raises(KeyboardInterrupt, match="1 of 2 answers finished; every row is in _llm"):
        ip.run_cell("%%llm openai:gpt-4o-mini ollama:llama3.2 --timeout 60\nHi")
    stopped = time.monotonic()
    assert started.is_set()
    # The stalled read is cancelled at once, not after the 60 s read timeout (margin for CI).
    assert stopped - sent_at[0] < 2.0
    df = ip.user_ns["_llm"]
    stalled, healthy = df.iloc[0], df.iloc[1]
    assert stalled["finish_reason"] == "interrupted" and stalled["output"] == "partial answer "
    assert pd.isna(healthy["error"]) and healthy["output"].startswith("Echo from")
    time.sleep(0.2)
    # Every worker has ended; the process's one deadline watch thread stays (it is shared).
    workers = [t for t in threading.enumerate() if t.name.startswith("llm_magic")]
    assert [t.name for t in workers] in ([], ["llm_magic-deadlines"])
    assert openai_server.in_flight == 0, "the stalled connection was left open"


def test_live_columns_name_the_prompt_and_the_run() -> None:
    from llm_magic._plan import make_plan
    from llm_magic._request import Request
    from llm_magic._session import Session

    targets = ("openai:gpt-4o-mini", "ollama:llama3.2")
    # two --over items that render the same text are still two prompts
    items = ["Same", "Same", "Other"]
    request = Request(("{item}",), targets, variables={}, over=items, repeat=2)
    plan = make_plan(request, Session())
    jobs = plan.jobs
    labels = [plan.job_label(j) for j in jobs]
    assert len(jobs) == 12 and len(set(labels)) == 6  # a column per prompt and target
    assert labels[:4] == [  # the two runs of a target share its column (they stack there)
        "openai:gpt-4o-mini · prompt 1",
        "openai:gpt-4o-mini · prompt 1",
        "ollama:llama3.2 · prompt 1",
        "ollama:llama3.2 · prompt 1",
    ]
    assert labels[4] == "openai:gpt-4o-mini · prompt 2"
    single = make_plan(Request(("Hi",), targets), Session())
    assert [single.job_label(j) for j in single.jobs] == list(targets)
    assert single.labels == targets
