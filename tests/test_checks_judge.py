"""`judge:RUBRIC` checks: the Ollama loopback server answers (it echoes the prompt), the OpenAI
one plays the judge with scripted verdicts — good, bad, unreadable, slow, failing."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pandas as pd
import pytest
from IPython.core.error import UsageError

import llm_magic
import llm_magic._api
from llm_magic._judge import VERDICT_SCHEMA, read_verdict
from llm_magic._plan import make_plan
from llm_magic._request import Request
from llm_magic._session import Session
from llm_magic.errors import UsageProblem
from llm_magic.results import run_frame as run_frame_of
from tests.cells import run_frame

ANSWERER = "ollama:llama3.2"
JUDGE = "--judge openai:gpt-4o-mini"


@pytest.fixture
def wired(ip, backends):
    return ip, backends


def _judge_prompts(backends) -> list[str]:
    return [r.body["messages"][-1]["content"] for r in backends.openai.chat_requests()]


def test_a_good_verdict_scores_the_row_and_the_judge_is_no_row(wired) -> None:
    ip, backends = wired
    backends.openai.faults.reply = 'Sure.\n```json\n{"score": 0.9, "reason": "names Paris"}\n```'
    ip.user_ns["cases"] = pd.DataFrame({"prompt": ["Capital of France?", "2+2?"],
                                        "expected": ["Paris", "4"]})
    check = "'correct=judge:must say {expected}'"
    df = run_frame(ip, f"%%llm {ANSWERER} --over cases -q {JUDGE} --check {check}\n{{prompt}}")
    assert len(df) == 2 and (df["target"] == ANSWERER).all()  # no judge row
    assert df["score_correct"].tolist() == [0.9, 0.9] and df["passed"].all()
    assert df["checks"][0]["correct"]["reason"] == "judge: names Paris"
    prompts = _judge_prompts(backends)
    assert len(prompts) == 2 and backends.ollama.request_count == 2
    # the rubric is filled per row; the question and the answer go with it
    first = next(p for p in prompts if "must say Paris" in p)
    assert "Capital of France?" in first and "Echo from" in first and '"score"' in first
    assert df.attrs["judge"]["requests"] == 2 and df.attrs["judge"]["failed"] == 0
    assert df.attrs["judge"]["target"] == "openai:gpt-4o-mini"
    assert df.attrs["judge"]["latency_s"] > 0


def test_a_bad_verdict_fails_with_the_judges_reason(wired) -> None:
    ip, backends = wired
    backends.openai.faults.reply = 'The verdict is {"score": 0.2, "reason": "wrong city"}. Bye.'
    df = llm_magic.compare("Capital of France?", ANSWERER, judge="openai:gpt-4o-mini",
                           checks=["judge:is it Paris?"])
    assert df["score_judge"].tolist() == [0.2] and df["pass_judge"].tolist() == [False]
    assert df["checks"][0]["judge"] == {"score": 0.2, "pass": False, "reason": "judge: wrong city"}


@pytest.mark.parametrize(
    "reply",
    ["I think it is fine.", '{"score": "high"}', '{"score": 7, "reason": "x"}', "{not json}"],
)
def test_an_unreadable_verdict_is_nan_and_a_reason(wired, reply) -> None:
    ip, backends = wired
    backends.openai.faults.reply = reply
    checks = "--check judge:correct? --check contains:Hi"
    df = run_frame(ip, f"%%llm {ANSWERER} -q {JUDGE} {checks}\nHi")
    assert len(df) == 1 and df["pass_contains"].tolist() == [True]
    assert math.isnan(df["score_judge"][0]) and df["pass_judge"].tolist() == [False]
    reason = df["checks"][0]["judge"]["reason"]
    assert reason.startswith("judge") and "\n" not in reason
    assert df.attrs["judge"]["unreadable"] == 1


def test_a_failing_judge_is_the_rows_reason(wired) -> None:
    ip, backends = wired
    backends.openai.faults.status = 500
    df = run_frame(ip, f"%%llm {ANSWERER} -q --retries 0 {JUDGE} --check judge:ok?\nHi")
    assert len(df) == 1 and df["error"].isna().all()
    assert math.isnan(df["score_judge"][0]) and not df["passed"][0]
    assert df["checks"][0]["judge"]["reason"].startswith("judge failed:")
    assert df.attrs["judge"]["failed"] == 1 and df.attrs["judge"]["requests"] == 1


def test_a_slow_judge_meets_the_deadline_and_only_its_row_says_so(wired) -> None:
    ip, backends = wired

    def verdict(prompt: str) -> str:
        if "QUESTION:\nslow one" in prompt:
            time.sleep(4)  # held past the deadline; the server thread is left to finish
        return '{"score": 1, "reason": "fine"}'

    backends.openai.faults.reply_to = verdict
    ip.user_ns["cases"] = ["fast one", "slow one", "another fast one"]
    cell = f"%%llm {ANSWERER} --over cases -q --deadline 1.5 --retries 0 {JUDGE}"
    df = run_frame(ip, cell + " --check judge:ok? --check contains:one\n{item}")
    assert len(df) == 3 and df["error"].isna().all() and df["pass_contains"].all()
    assert df["score_judge"].tolist()[::2] == [1.0, 1.0]
    assert math.isnan(df["score_judge"][1]) and not df["passed"][1]
    reason = df["checks"][1]["judge"]["reason"]
    assert reason.startswith("judge failed:") and "deadline" in reason
    assert df.attrs["judge"]["failed"] == 1 and df.attrs["judge"]["requests"] == 3


def test_judge_requests_are_in_the_run_log(wired) -> None:
    ip, backends = wired
    backends.openai.faults.reply = '{"score": 1, "reason": "fine"}'
    run_frame(ip, f"%%llm {ANSWERER} -q {JUDGE} --check judge:ok?\nHi")
    logged = ip.run_line_magic("llm", "history")
    assert list(logged["target"]) == [ANSWERER, "openai:gpt-4o-mini"]
    assert "RUBRIC:\nok?" in logged["prompt"].iloc[1]


def test_a_failed_answer_is_not_sent_to_the_judge(wired) -> None:
    ip, backends = wired
    backends.ollama.faults.status = 500
    backends.openai.faults.reply = '{"score": 1}'
    df = run_frame(ip, f"%%llm {ANSWERER} -q --retries 0 {JUDGE} --check judge:ok?\nHi")
    assert df["checks"][0]["judge"]["reason"] == "no answer"
    assert backends.openai.request_count == 0 and df.attrs["judge"]["requests"] == 0


def test_a_stopped_run_is_not_judged(wired) -> None:
    ip, backends = wired
    plan = make_plan(
        Request(("Hi", "Bye"), (ANSWERER,), checks=["judge:ok?"], judge="openai:gpt-4o-mini"),
        Session(),
    )
    records = llm_magic._api.run(plan)
    records[1].finish_reason, records[1].error = "interrupted", "interrupted"
    df = run_frame_of(records, plan)
    assert len(df) == 2 and df["score_judge"].isna().all()
    assert df["checks"][0]["judge"]["reason"] == "not judged (the run was stopped)"
    assert backends.openai.request_count == 0 and "judge" not in df.attrs


def test_with_cache_the_same_judgement_is_not_paid_twice(wired) -> None:
    ip, backends = wired
    backends.openai.faults.reply = '{"score": 1, "reason": "fine"}'
    cell = f"%%llm {ANSWERER} -q --cache {JUDGE} --check judge:ok?\nHi"
    first, second = run_frame(ip, cell), run_frame(ip, cell)
    assert backends.openai.request_count == 1  # the second judgement came from the cache
    assert first["score_judge"].tolist() == second["score_judge"].tolist() == [1.0]
    assert second.attrs["judge"]["cached"] == 1


def test_df_llm_check_judges_an_existing_frame(wired) -> None:
    ip, backends = wired
    df = llm_magic.compare(["Hi", "Bye"], ANSWERER)
    backends.openai.faults.reply = '{"score": 0.75, "reason": "polite"}'
    scored = df.llm.check("polite=judge:is it polite?", judge="openai:gpt-4o-mini")
    assert scored["score_polite"].tolist() == [0.75, 0.75]
    assert backends.ollama.request_count == 2 and backends.openai.request_count == 2
    assert scored.attrs["judge"]["requests"] == 2


def test_the_default_judge_is_the_default_target(wired) -> None:
    ip, backends = wired
    ip.run_line_magic("config", "LLMMagics.default_target = 'openai:gpt-4o-mini'")
    backends.openai.faults.reply = '{"score": 1, "reason": "ok"}'
    df = run_frame(ip, f"%%llm {ANSWERER} -q --check judge:ok?\nHi")
    assert df.attrs["judge"]["target"] == "openai:gpt-4o-mini"
    assert df["score_judge"].tolist() == [1.0] and backends.openai.request_count == 1


def test_a_judge_that_cannot_be_resolved_is_one_line_before_anything_is_sent(wired) -> None:
    ip, backends = wired
    with pytest.raises(UsageError) as info:
        ip.run_cell(f"%%llm {ANSWERER} --judge nosuch:model --check judge:ok?\nHi")
    assert "--judge" in str(info.value) and "\n" not in str(info.value)
    assert backends.ollama.request_count == 0 and backends.openai.request_count == 0
    df = llm_magic.compare("Hi", ANSWERER)
    refused = r"^the judge \(--judge, judge=\): unknown provider 'nosuch'"
    with pytest.raises(UsageProblem, match=refused):
        df.llm.check("judge:ok?", judge="nosuch:model")
    assert backends.ollama.request_count == 1 and backends.openai.request_count == 0


@pytest.mark.parametrize(
    ("text", "score"),
    [
        ('{"score": 1, "reason": "x"}', 1.0),
        ('```json\n{"score": 0.5, "reason": "half"}\n```', 0.5),
        ('Here: {"reason": "r", "score": "0.25"} done', 0.25),
        ('{"a": 1} then {"score": 0}', 0.0),
        ('{ "score": 0.5, "reason": "cut sho', 0.5),
    ],
)
def test_verdicts_are_read_leniently(text: str, score: float) -> None:
    assert read_verdict(text)[0] == score


def test_the_verdict_schema_goes_with_each_judge_request(wired) -> None:
    ip, backends = wired
    backends.openai.faults.reply = '{"score": 1, "reason": "fine"}'
    df = run_frame(ip, f"%%llm {ANSWERER} -q {JUDGE} --check judge:ok?\nHi")
    logged = ip.run_line_magic("llm", "history")
    (judged,) = (r for r in logged.itertuples() if r.target != ANSWERER)
    assert json.loads(judged.params["json_schema"]) == json.loads(VERDICT_SCHEMA)
    assert judged.params["temperature"] == 0.0 and df["score_judge"].tolist() == [1.0]


CASES = Path(__file__).resolve().parent.parent / "notebooks" / "cases.csv"


@pytest.mark.local_model
def test_the_embedded_model_judges_offline(ip) -> None:
    pytest.importorskip("llama_cpp")
    df = run_frame(ip, "%%llm local:smollm2 -q -t 0 -n 16 --judge local:smollm2"
                       " --check 'judge:the answer names Paris'\nCapital of France? One word.")
    assert len(df) == 1 and df["error"].isna().all()
    verdict = df["checks"][0]["judge"]
    score = verdict["score"]
    assert (0.0 <= score <= 1.0) or (math.isnan(score) and verdict["reason"].startswith("judge"))
    assert df.attrs["judge"]["requests"] == 1 and json.dumps(df.attrs["judge"])
