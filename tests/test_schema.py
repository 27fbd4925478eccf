"""Structured output (`--schema VAR`, `schema=`): what a user gives is checked before anything
is sent, every answer is read against it into `parsed`, `schema_valid` and `schema_error`, and
summary() adds the valid rate. The answers come from the loopback OpenAI server (scripted
replies); what each provider puts on the wire is test_schema_wire.py's."""

from __future__ import annotations

import json

import pandas as pd
import pydantic
import pytest
from IPython.core.error import UsageError

import llm_magic
from llm_magic._command import parse_command
from llm_magic._schema import compile_schema
from llm_magic.errors import UsageProblem
from llm_magic.store import Store

CITY = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "population": {"type": "integer", "minimum": 0}},
    "required": ["city", "population"],
}
GOOD = '{"city": "Paris", "population": 2102650}'
OFF = '{"city": "Paris", "population": -3}'


class City(pydantic.BaseModel):
    city: str
    population: int


@pytest.fixture
def openai(backends):
    return backends.openai


# ---- bad input: one line, nothing sent ---------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "words"),
    [
        (42, "--schema s: a schema is a JSON Schema dict or a Pydantic model class, not int"),
        ("a string", "not str"),
        (type("Plain", (), {}), "not the class Plain"),
        ({"type": "objekt"}, "--schema s: not a valid JSON Schema: 'objekt' is not valid"),
        ({"type": "object", "required": "city"}, "not a valid JSON Schema"),
    ],
)
def test_a_bad_schema_is_one_line_and_nothing_is_sent(ip, openai, value, words) -> None:
    ip.user_ns["s"] = value
    with pytest.raises(UsageError) as caught:
        ip.run_cell("%%llm openai:gpt-4o-mini --schema s\nWhere is Paris?")
    message = str(caught.value)
    assert words in message and "\n" not in message
    assert openai.request_count == 0


def test_a_missing_schema_variable_is_named(ip, openai) -> None:
    with pytest.raises(UsageError, match=r"^--schema nope: no variable 'nope' in the notebook$"):
        ip.run_cell("%%llm openai:gpt-4o-mini --schema nope\nWhere is Paris?")
    assert openai.request_count == 0


def test_the_schema_option_takes_a_variable_name() -> None:
    with pytest.raises(UsageProblem, match="--schema: '1x' is not a Python variable name"):
        parse_command("openai:x --schema 1x", "hi")
    with pytest.raises(UsageProblem, match="--schema needs a value"):
        parse_command("openai:x --schema", "hi")
    assert parse_command("openai:x --schema City", "hi").schema == "City"


def test_compare_and_complete_refuse_a_bad_schema_before_sending(openai) -> None:
    with pytest.raises(UsageProblem, match=r"^schema=: a schema is a JSON Schema dict .* not list"):
        llm_magic.compare("hi", "openai:gpt-4o-mini", schema=[CITY])
    with pytest.raises(UsageProblem, match="not a valid JSON Schema"):
        llm_magic.complete("hi", "openai:gpt-4o-mini", schema={"type": 3})
    assert openai.request_count == 0


def test_a_schema_that_is_not_plain_json_is_refused() -> None:
    with pytest.raises(UsageProblem, match="the schema is not plain JSON"):
        compile_schema({"type": "object", "default": object()}, "schema=")


# ---- the columns ------------------------------------------------------------------------------
def test_a_valid_answer_is_parsed_into_a_dict(openai) -> None:
    openai.faults.reply = GOOD
    df = llm_magic.compare("Largest city of France, as JSON", "openai:gpt-4o-mini", schema=CITY)
    assert list(df.columns[-3:]) == ["parsed", "schema_valid", "schema_error"]
    assert df["parsed"][0] == {"city": "Paris", "population": 2102650}
    assert df["schema_valid"].dtype == "boolean" and df["schema_valid"][0]
    assert df["schema_error"].dtype == "string" and pd.isna(df["schema_error"][0])
    assert df["parsed"].dtype == object
    # the schema the providers got is the row's params, as the run log keeps it
    assert json.loads(df["params"][0]["json_schema"]) == CITY


def test_a_pydantic_model_gives_instances(openai) -> None:
    openai.faults.reply = "```json\n" + GOOD + "\n```"  # a fenced answer counts, as json: does
    df = llm_magic.compare("France?", "openai:gpt-4o-mini", schema=City)
    parsed = df["parsed"][0]
    assert isinstance(parsed, City) and parsed.population == 2102650
    assert bool(df["schema_valid"][0])


def test_an_answer_off_the_schema_is_a_row_not_a_failure(openai) -> None:
    openai.faults.reply = OFF
    df = llm_magic.compare("France?", "openai:gpt-4o-mini", schema=CITY)
    assert pd.isna(df["error"][0]) and df["output"][0] == OFF
    assert not df["schema_valid"][0] and df["parsed"][0] is None
    assert df["schema_error"][0] == "population: -3 is less than the minimum of 0"

    openai.faults.reply = '{"city": "Paris", "population": "many"}'
    df = llm_magic.compare("France?", "openai:gpt-4o-mini", schema=City)
    assert pd.isna(df["error"][0]) and not df["schema_valid"][0]  # pydantic's words this time
    assert df["schema_error"][0].startswith("population: Input should be a valid integer")


def test_prose_and_cut_answers_say_why(openai) -> None:
    openai.faults.reply = "Paris, with about two million people."
    df = llm_magic.compare("France?", "openai:gpt-4o-mini", schema=CITY)
    assert df["schema_error"][0] == "not JSON: starts with 'P'"
    openai.faults.reply = GOOD
    df = llm_magic.compare("France?", "openai:gpt-4o-mini", schema=CITY, max_tokens=2)
    assert df["finish_reason"][0] == "length" and not df["schema_valid"][0]
    assert df["schema_error"][0].endswith("(the answer was cut at max_tokens)")


def test_a_failed_request_has_no_reading(openai) -> None:
    openai.faults.status = 401
    df = llm_magic.compare("France?", "openai:gpt-4o-mini", schema=CITY, retries=0)
    assert df["error"].notna()[0]
    assert pd.isna(df["schema_valid"][0]) and df["schema_error"][0] == "no answer"
    assert df["parsed"][0] is None


def test_no_schema_no_columns(openai) -> None:
    df = llm_magic.compare("France?", "openai:gpt-4o-mini")
    assert not {"parsed", "schema_valid", "schema_error"} & set(df.columns)
    assert "valid_rate" not in df.llm.summary().columns


def test_summary_gives_the_valid_rate_with_a_wilson_interval(openai, backends) -> None:
    openai.faults.reply = GOOD
    backends.mistral.faults.reply = "not json"
    df = llm_magic.compare(
        "France?", ["openai:gpt-4o-mini", "mistral:mistral-small-latest"], schema=CITY, repeat=4
    )
    summary = df.llm.summary()
    assert summary.loc["openai:gpt-4o-mini", "valid_rate"] == 1.0
    assert summary.loc["mistral:mistral-small-latest", "valid_rate"] == 0.0
    lo, hi = summary.loc["openai:gpt-4o-mini", ["valid_lo", "valid_hi"]]
    assert 0.45 < lo < 0.55 and hi == 1.0  # Wilson 95 % for 4 of 4: 0.510 – 1
    assert summary["valid_rate"].dtype == "float64"


def test_failed_rows_count_as_errors_not_in_the_valid_rate(openai) -> None:
    openai.faults.reply = GOOD
    openai.faults.statuses = [500, 200, 200]
    df = llm_magic.compare("France?", "openai:gpt-4o-mini", schema=CITY, repeat=3, retries=0,
                           concurrency=1)  # fmt: skip
    row = df.llm.summary().loc["openai:gpt-4o-mini"]
    assert row["errors"] == 1 and row["valid_rate"] == 1.0


def test_checks_and_the_schema_go_together(openai) -> None:
    openai.faults.reply = GOOD
    df = llm_magic.compare("France?", "openai:gpt-4o-mini", schema=CITY, checks=["contains:Paris"])
    assert bool(df["schema_valid"][0]) and bool(df["passed"][0])
    assert {"parsed", "score_contains"} <= set(df.columns)


# ---- the magic --------------------------------------------------------------------------------
def test_the_magic_shows_whether_each_answer_fits(ip, openai) -> None:
    openai.faults.reply = GOOD
    ip.user_ns["City"] = City
    shown = ip.run_cell("%%llm openai:gpt-4o-mini --schema City\nFrance?").result
    assert shown is not None and bool(shown["schema_valid"][0])  # the compact view says it
    df = ip.user_ns["_llm"]
    assert isinstance(df["parsed"][0], City)
    html = df.llm.side_by_side()._repr_html_()
    assert "✓ schema" in html


def test_side_by_side_says_why_an_answer_does_not_fit(openai) -> None:
    openai.faults.reply = OFF
    df = llm_magic.compare("France?", "openai:gpt-4o-mini", schema=CITY)
    assert "✗ schema (population: -3 is less than the minimum of 0)" in (
        df.llm.side_by_side()._repr_html_()
    )


def test_complete_returns_the_parsed_answer(openai) -> None:
    openai.faults.reply = GOOD
    answer = llm_magic.complete("France?", "openai:gpt-4o-mini", schema=City)
    assert isinstance(answer.parsed, City) and answer.schema_valid is True
    assert answer.schema_error is None and answer.text == GOOD
    openai.faults.reply = OFF
    answer = llm_magic.complete("France?", "openai:gpt-4o-mini", schema=CITY)
    assert answer.parsed is None and answer.schema_valid is False
    assert "minimum" in answer.schema_error
    plain = llm_magic.complete("France?", "openai:gpt-4o-mini")
    assert plain.parsed is None and plain.schema_valid is None


# ---- the run log and the cache ---------------------------------------------------------------
def test_the_columns_come_back_from_the_run_log(openai) -> None:
    openai.faults.reply = GOOD
    llm_magic.compare("France?", "openai:gpt-4o-mini", schema=City)
    openai.faults.reply = OFF
    llm_magic.compare("Spain?", "openai:gpt-4o-mini", schema=CITY)
    llm_magic.compare("no schema here", "openai:gpt-4o-mini")
    history = Store().history_frame(3)
    assert history["prompt"].tolist() == ["France?", "Spain?", "no schema here"]
    # read again against the logged schema; a Pydantic class is not in the log: a plain dict
    assert history["parsed"].tolist()[:2] == [json.loads(GOOD), None]
    assert history["schema_valid"].tolist()[:2] == [True, False]
    assert pd.isna(history["schema_valid"][2]) and history["parsed"][2] is None
    assert "minimum" in history["schema_error"][1]


def test_a_cut_log_row_is_not_read_as_off_schema(openai, ip) -> None:
    openai.faults.reply = GOOD
    ip.run_line_magic("config", "LLMMagics.max_log_chars = 10")
    llm_magic.compare("France?", "openai:gpt-4o-mini", schema=CITY)
    history = Store().history_frame(1)
    assert bool(history["truncated"][0]) and pd.isna(history["schema_valid"][0])
    assert history["schema_error"][0] == "the log kept only the start of the answer"


def test_a_cached_answer_is_read_the_same(openai) -> None:
    openai.faults.reply = GOOD
    first = llm_magic.compare("France?", "openai:gpt-4o-mini", schema=CITY, cache=True)
    again = llm_magic.compare("France?", "openai:gpt-4o-mini", schema=CITY, cache=True)
    assert bool(again["cached"][0]) and openai.request_count == 1
    assert again["parsed"][0] == first["parsed"][0] and bool(again["schema_valid"][0])
    # another schema is another request: the cache key holds it
    llm_magic.compare("France?", "openai:gpt-4o-mini", schema=City, cache=True)
    assert openai.request_count == 2


def test_batched_rows_are_read_against_the_schema_too(openai, monkeypatch) -> None:
    from llm_magic import _batch_run

    monkeypatch.setattr(_batch_run, "POLL_FIRST", 0.01)
    monkeypatch.setattr(_batch_run, "POLL_MAX", 0.02)
    # the batch endpoint of the loopback server answers each line with its echo: not JSON
    df = llm_magic.compare(["France?", "Spain?"], "openai:gpt-4o-mini", schema=CITY,
                           batch=True, wait=True)  # fmt: skip
    assert df["batched"].all() and df["error"].isna().all()
    assert df["schema_valid"].tolist() == [False, False]
    assert set(df["schema_error"]) == {"not JSON: starts with 'E'"}
    assert df.llm.summary().loc["openai:gpt-4o-mini", "valid_rate"] == 0.0
