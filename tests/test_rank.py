"""`df.llm.rank()`: the Ollama and Mistral loopback servers answer (they echo the prompt with
their model's name), the OpenAI one judges with verdicts scripted from the pair it is shown."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd
import pytest

import llm_magic
from llm_magic._rank import PAIR_SCHEMA, bradley_terry, read_winner
from llm_magic.errors import UsageProblem

LLAMA, MISTRAL = "ollama:llama3.2", "mistral:mistral-small-latest"
JUDGE = "openai:gpt-4o-mini"
_PAIR = re.compile(r"ANSWER A:\n(.*)\n\nANSWER B:\n(.*)", re.S)


def prefers(name: str):
    """A judge that picks the answer naming `name`, wherever it is shown."""

    def verdict(prompt: str) -> str:
        a, b = _PAIR.search(prompt).groups()
        if (name in a) == (name in b):
            return '{"winner": "tie", "reason": "same"}'
        return json.dumps({"winner": "A" if name in a else "B", "reason": f"names {name}"})

    return verdict


@pytest.fixture
def answers(ip, backends) -> pd.DataFrame:
    return llm_magic.compare(["Capital of France?", "2+2?"], [LLAMA, MISTRAL])


def _judge_prompts(backends) -> list[str]:
    return [r.body["messages"][-1]["content"] for r in backends.openai.chat_requests()]


def test_every_pair_is_judged_in_both_orders_best_first(backends, answers) -> None:
    backends.openai.faults.reply_to = prefers("llama3.2")
    table = answers.llm.rank(judge=JUDGE, rubric="the better answer names llama")
    assert table.index.tolist() == [LLAMA, MISTRAL]  # best first
    assert table.loc[LLAMA, ["wins", "losses", "ties"]].tolist() == [4, 0, 0]
    assert table.loc[MISTRAL, ["wins", "losses", "ties"]].tolist() == [0, 4, 0]
    assert table["win_rate"].tolist() == [1.0, 0.0]
    assert table.loc[LLAMA, "strength"] > 0 > table.loc[MISTRAL, "strength"]
    for target in (LLAMA, MISTRAL):
        row = table.loc[target]
        assert row["strength_lo"] <= row["strength"] <= row["strength_hi"]
    prompts = _judge_prompts(backends)
    assert len(prompts) == 4 == table.attrs["judge"]["requests"]
    # each pair shown both ways round, with its question and the rubric
    shown = sorted(_PAIR.search(p).groups()[0].split(":")[0] for p in prompts)
    assert shown == [
        "Echo from llama3.2",
        "Echo from llama3.2",
        "Echo from mistral-small-latest",
        "Echo from mistral-small-latest",
    ]
    assert all("RUBRIC:\nthe better answer names llama" in p for p in prompts)
    assert sum("QUESTION:\n2+2?" in p for p in prompts) == 2
    verdicts = pd.DataFrame(table.attrs["verdicts"])
    assert list(verdicts.columns) == [
        "prompt",
        "repeat",
        "A",
        "B",
        "order",
        "verdict",
        "winner",
        "reason",
    ]
    assert sorted(verdicts["order"]) == [1, 1, 2, 2] and (verdicts["winner"] == LLAMA).all()
    assert set(verdicts["verdict"]) == {"A", "B"}  # llama won from either position
    assert (verdicts.loc[verdicts["order"] == 2, "A"] == MISTRAL).all()
    assert verdicts["reason"].tolist() == ["names llama3.2"] * 4
    # the answers' own frame is left as it was: only the run id a run gives every frame
    assert table.attrs["judge"]["target"] == JUDGE
    assert answers.attrs == {"run_id": answers["run_id"].iloc[0]}
    assert table.attrs["judge"]["consistent"] == 1.0  # both orders named the same winner
    # plain values in attrs: two tables concatenate (pandas compares attrs), attrs are JSON
    assert len(pd.concat([table, table])) == 4 and json.loads(json.dumps(table.attrs))


def test_a_judge_that_always_picks_a_cancels_out(backends, answers) -> None:
    backends.openai.faults.reply = '{"winner": "A", "reason": "first is best"}'
    table = answers.llm.rank(judge=JUDGE)
    assert table["wins"].tolist() == [2, 2] and table["losses"].tolist() == [2, 2]
    assert table["win_rate"].tolist() == [0.5, 0.5]
    assert np.allclose(table["strength"], 0.0)
    assert table.attrs["judge"]["consistent"] == 0.0  # it looked at the position alone


def test_ties_and_unreadable_verdicts_are_counted_as_such(backends, answers) -> None:
    def verdict(prompt: str) -> str:
        return '{"winner": "tie", "reason": "both fine"}' if "France" in prompt else "B, surely"

    backends.openai.faults.reply_to = verdict
    table = answers.llm.rank(judge=JUDGE)
    assert table["ties"].tolist() == [2, 2] and table["unreadable"].tolist() == [2, 2]
    assert table["wins"].tolist() == [0, 0] and table["win_rate"].tolist() == [0.5, 0.5]
    verdicts = pd.DataFrame(table.attrs["verdicts"])
    unread = verdicts[verdicts["prompt"] == "2+2?"]
    assert unread["verdict"].isna().all() and unread["winner"].isna().all()
    assert unread["reason"].str.startswith("judge verdict not readable").all()
    assert (verdicts.loc[verdicts["prompt"] != "2+2?", "winner"] == "tie").all()
    assert table.attrs["judge"]["unreadable"] == 2 and table.attrs["judge"]["failed"] == 0
    assert table.attrs["judge"]["consistent"] == 1.0  # of the pairs read twice: tie and tie


def test_a_failing_judge_counts_as_unreadable_and_says_why(backends, answers) -> None:
    backends.openai.faults.status = 500
    table = llm_magic.compare(["Hi"], [LLAMA, MISTRAL]).llm.rank(judge=JUDGE)
    assert table["unreadable"].tolist() == [2, 2] and table["wins"].sum() == 0
    assert table["strength"].isna().all() and table["win_rate"].isna().all()
    assert all(v["reason"].startswith("judge failed:") for v in table.attrs["verdicts"])
    assert table.attrs["judge"]["failed"] == 2 and table.attrs["judge"]["unreadable"] == 0
    assert math.isnan(table.attrs["judge"]["consistent"])


def test_a_pair_with_a_failed_answer_is_skipped_not_judged(backends) -> None:
    backends.ollama.faults.status, backends.ollama.faults.fail_times = 500, 1
    # one at a time, in job order: the first request (Capital of France? to llama) fails
    frame = llm_magic.compare(
        ["Capital of France?", "2+2?"], [LLAMA, MISTRAL], retries=0, concurrency=1
    )
    assert frame["error"].notna().tolist() == [True, False, False, False]
    backends.openai.faults.reply_to = prefers("mistral")
    table = frame.llm.rank(judge=JUDGE)
    assert table["skipped"].tolist() == [1, 1]
    assert table.loc[MISTRAL, "wins"] == 2 and table.loc[LLAMA, "losses"] == 2
    assert table.attrs["judge"]["requests"] == 2 and table.attrs["judge"]["pairs_skipped"] == 1
    assert {v["prompt"] for v in table.attrs["verdicts"]} == {"2+2?"}


def test_repeat_r_is_compared_with_repeat_r(backends) -> None:
    frame = llm_magic.compare("Hi", [LLAMA, MISTRAL], repeat=3)
    backends.openai.faults.reply_to = prefers("llama3.2")
    table = frame.llm.rank(judge=JUDGE)
    assert table.loc[LLAMA, "wins"] == 6 and table.attrs["judge"]["requests"] == 6
    assert sorted(v["repeat"] for v in table.attrs["verdicts"]) == [0, 0, 1, 1, 2, 2]


def test_runs_relabelled_and_concatenated_rank_against_each_other(backends) -> None:
    """Two runs of one model (here with two system prompts) become two targets."""
    terse = llm_magic.compare(["Hi", "Bye"], LLAMA, system="Be terse.")
    chatty = llm_magic.compare(["Hi", "Bye"], LLAMA, system="Be chatty.")
    both = pd.concat([terse.assign(target="terse"), chatty.assign(target="chatty")])
    backends.openai.faults.reply = '{"winner": "B", "reason": "second"}'
    table = both.llm.rank(judge=JUDGE)
    assert sorted(table.index) == ["chatty", "terse"] and table["wins"].tolist() == [2, 2]
    assert backends.ollama.request_count == 4 and backends.openai.request_count == 4


def test_the_pair_schema_goes_with_each_request_and_the_cache_saves_the_second(
    ip, backends, answers
) -> None:
    backends.openai.faults.reply_to = prefers("llama3.2")
    first = answers.llm.rank(judge=JUDGE, cache=True)
    second = answers.llm.rank(judge=JUDGE, cache=True)
    assert backends.openai.request_count == 4 and second.attrs["judge"]["cached"] == 4
    assert first.equals(second)  # same verdicts, same seed: same table
    logged = ip.run_line_magic("llm", "history")
    judged = logged[logged["target"] == JUDGE]
    assert len(judged) == 8  # logged, the cached ones too
    assert all(json.loads(p["json_schema"]) == json.loads(PAIR_SCHEMA) for p in judged["params"])
    assert (judged["params"].map(lambda p: p["temperature"]) == 0.0).all()


def test_the_bootstrap_is_seeded(backends) -> None:
    frame = llm_magic.compare(
        [f"q{i} llama" if i % 3 else f"q{i}" for i in range(9)], [LLAMA, MISTRAL]
    )
    backends.openai.faults.reply_to = lambda p: (
        prefers("llama3.2")(p)
        if "llama" in p.split("QUESTION:")[1].split("ANSWER A")[0]
        else prefers("mistral")(p)
    )
    a, b = frame.llm.rank(judge=JUDGE), frame.llm.rank(judge=JUDGE)
    c = frame.llm.rank(judge=JUDGE, seed=7, resamples=200)
    interval = ["strength_lo", "strength_hi"]
    assert a[interval].equals(b[interval])  # default seed: reproducible
    assert a["strength"].equals(c["strength"])  # the fit itself does not depend on it
    assert not a[interval].equals(c[interval])
    assert (a["strength_lo"] < a["strength_hi"]).all()  # 6 of 9 prompts prefer llama: unsure
    assert a.index[0] == LLAMA


def test_bradley_terry_matches_the_closed_form_for_two() -> None:
    # 3 wins to 1, plus the virtual tied game: odds (3 + .5) / (1 + .5)
    s = bradley_terry(np.array([[0.0, 3.0], [1.0, 0.0]]))
    assert np.allclose(s, [math.log(7 / 3) / 2, -math.log(7 / 3) / 2])
    # a cycle of equals is equal; a batch is fitted item by item
    cycle = np.array([[0, 2, 0], [0, 0, 2], [2, 0, 0]], dtype=float)
    batch = bradley_terry(np.stack([cycle, cycle.T * 0]))
    assert np.allclose(batch, 0.0)
    chain = bradley_terry(np.array([[0, 5, 5], [0, 0, 5], [0, 0, 0]], dtype=float))
    assert chain[0] > chain[1] > chain[2] and np.isfinite(chain).all()


@pytest.mark.parametrize(
    ("text", "winner"),
    [
        ('{"winner": "A", "reason": "x"}', "A"),
        ('```json\n{"reason": "r", "winner": "b"}\n```', "B"),
        ('I say {"winner": "Tie"} overall', "tie"),
        ('{"winner": "A", "reason": "cut sho', "A"),
        ('{"winner": "C", "reason": "?"}', None),
        ("Answer A is better.", None),
    ],
)
def test_pair_verdicts_are_read_leniently(text: str, winner: str | None) -> None:
    assert read_winner(text)[0] == winner


def test_the_rubric_is_filled_per_prompt_from_over_and_the_notebook(backends) -> None:
    cases = pd.DataFrame({"question": ["Capital of France?", "2+2?"], "expected": ["Paris", "4"]})
    frame = llm_magic.compare("{question}", [LLAMA, MISTRAL], over=cases)
    backends.openai.faults.reply_to = prefers("llama3.2")
    frame.llm.rank(
        judge=JUDGE, rubric="{style}: the right answer is {expected}", over=cases,
        variables={"style": "Be strict"},
    )
    rubrics = sorted(re.search(r"RUBRIC:\n(.*)\n", p).group(1) for p in _judge_prompts(backends))
    assert rubrics == ["Be strict: the right answer is 4"] * 2 + [
        "Be strict: the right answer is Paris"
    ] * 2
    with pytest.raises(UsageProblem, match=r"rank\(\) rubric .*\{nowhere\} is not a column"):
        frame.llm.rank(judge=JUDGE, rubric="{nowhere}", over=cases, variables={})
    assert len(_judge_prompts(backends)) == 4  # the refused one sent nothing


def test_bad_input_is_one_line_before_anything_is_sent(backends) -> None:
    one = llm_magic.compare("Hi", LLAMA)
    with pytest.raises(UsageProblem, match="at least two targets"):
        one.llm.rank(judge=JUDGE)
    two = llm_magic.compare("Hi", [LLAMA, MISTRAL])
    with pytest.raises(UsageProblem, match=r"^the judge \(--judge, judge=\): unknown provider"):
        two.llm.rank(judge="nosuch:model")
    with pytest.raises(UsageProblem, match="resamples"):
        two.llm.rank(judge=JUDGE, resamples=-1)
    with pytest.raises(UsageProblem, match="needs the column"):
        two.drop(columns=["output"]).llm.rank(judge=JUDGE)
    assert backends.openai.request_count == 0


@pytest.mark.local_model
def test_the_embedded_model_ranks_offline(ip) -> None:
    pytest.importorskip("llama_cpp")
    cold = llm_magic.compare(
        "Capital of France? One word.", "local:smollm2", temperature=0, max_tokens=8
    )
    warm = llm_magic.compare(
        "Capital of France? One word.",
        "local:smollm2",
        temperature=0,
        max_tokens=8,
        system="Answer wrongly on purpose.",
    )
    both = pd.concat([cold.assign(target="plain"), warm.assign(target="wrong")])
    table = both.llm.rank(judge="local:smollm2")
    assert sorted(table.index) == ["plain", "wrong"]
    assert (table["wins"] + table["losses"] + table["ties"] + table["unreadable"] == 2).all()
    assert table.attrs["judge"]["requests"] == 2 and len(table.attrs["verdicts"]) == 2
