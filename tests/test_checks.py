"""Checks on every row: `%%llm --check`, `compare(checks=...)`, the columns they add, test sets
read from files, bad input refused before anything is sent — against the loopback servers,
whose default answer is "Echo from MODEL: PROMPT"."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from IPython.core.error import UsageError

import llm_magic
from llm_magic._records import COLUMNS
from tests.cells import run_frame

TWO = "openai:gpt-4o-mini ollama:llama3.2"


@pytest.fixture
def wired(ip, backends):
    return ip, backends


def _sent(backends) -> int:
    return sum(server.request_count for server in backends)


def test_a_test_set_from_a_csv_file_drives_a_cell(wired, tmp_path) -> None:
    ip, backends = wired
    path = tmp_path / "cases.csv"
    path.write_text(
        "prompt,expected\n"
        "What is the capital of France?,France\n"
        "Name a prime number.,prime\n"
        "Say nothing.,Paris\n"
    )
    ip.user_ns["cases"] = pd.read_csv(path)
    df = run_frame(
        ip,
        f"%%llm {TWO} --over cases -q --check contains:{{expected}}"
        " --check correct=icontains:{expected} --check not-contains:sorry\n{prompt}",
    )
    assert len(df) == 6 and list(df.columns[: len(COLUMNS)]) == list(COLUMNS)
    extra = list(df.columns[len(COLUMNS) :])
    assert extra == [
        "score_contains",
        "pass_contains",
        "score_correct",
        "pass_correct",
        "score_not_contains",
        "pass_not_contains",
        "passed",
        "checks",
    ]
    assert str(df["score_contains"].dtype) == "float64"
    assert str(df["pass_contains"].dtype) == "boolean" and str(df["passed"].dtype) == "boolean"
    assert list(df["pass_contains"]) == [True, True, True, True, False, False]
    assert list(df["passed"]) == [True, True, True, True, False, False]
    assert df["score_not_contains"].tolist() == [1.0] * 6
    detail = df["checks"].iloc[4]
    assert detail["contains"] == {"score": 0.0, "pass": False, "reason": "'Paris' not found"}
    assert detail["correct"]["reason"] == "'Paris' not found (any case)"
    summary = df.llm.summary()
    assert summary.loc["openai:gpt-4o-mini", "pass_rate"] == pytest.approx(2 / 3)
    lo, hi = summary.loc["openai:gpt-4o-mini", ["pass_lo", "pass_hi"]]
    assert 0 < lo < 2 / 3 < hi < 1
    assert summary.loc["ollama:llama3.2", "score_contains"] == pytest.approx(2 / 3)
    # the compact view the cell shows carries every score and whether all passed
    shown = ip.run_cell(f"%%llm {TWO} --over cases --check json\n{{prompt}}").result
    assert list(shown.columns[-2:]) == ["score_json", "passed"] and not shown["passed"].any()


def test_a_test_set_from_jsonl_with_a_regex_and_a_function(wired, tmp_path) -> None:
    ip, backends = wired
    path = tmp_path / "cases.jsonl"
    rows = [{"prompt": "Count to 3", "expected": "3"}, {"prompt": "Spell it", "expected": "x"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    ip.user_ns["cases"] = pd.read_json(path, lines=True)

    def graded(answer, row):
        # the row has the result's columns and the case's own fields
        expected = str(row["expected"])
        return (0.75, f"{row['target']} for {expected}") if expected in answer else 0

    ip.user_ns["graded"] = graded
    df = run_frame(
        ip,
        "%%llm openai:gpt-4o-mini --over cases -q --check regex:\\d$"
        " --check close@0.7=py:graded\n{prompt}",
    )
    assert df["score_regex"].tolist() == [1.0, 0.0]
    assert df["score_close"].tolist() == [0.75, 0.0]
    assert df["pass_close"].tolist() == [True, False]
    assert df["checks"][0]["close"]["reason"] == "openai:gpt-4o-mini for 3"
    assert df["checks"][0]["regex"]["reason"] == "matches '3'"


def test_a_failed_request_scores_nan_no_answer_and_keeps_its_row(wired) -> None:
    ip, backends = wired
    backends.openai.status = 500
    df = run_frame(ip, f"%%llm {TWO} --retries 0 -q --check contains:Echo --check json\nHi")
    assert len(df) == 2 and df["error"].notna().tolist() == [True, False]
    assert math.isnan(df["score_contains"][0]) and not df["pass_contains"][0]
    verdict = df["checks"][0]["json"]
    assert math.isnan(verdict["score"]) and verdict["pass"] is False
    assert verdict["reason"] == "no answer"
    assert df["passed"].tolist() == [False, False]  # the echo is not JSON either
    assert df["score_contains"][1] == 1.0


def test_what_cannot_be_scored_is_the_rows_reason_never_a_crash(wired) -> None:
    ip, backends = wired
    ip.user_ns["items"] = pd.DataFrame({"pat": ["Echo", "(unclosed"], "word": ["a", "b"]})

    def picky(answer, row):
        if row["word"] == "b":
            raise ValueError("no b")
        return 1.5 if row["word"] == "a" else True

    ip.user_ns["picky"] = picky
    df = run_frame(
        ip, "%%llm openai:gpt-4o-mini --over items -q --check regex:{pat} --check py:picky\n{word}"
    )
    assert df["score_regex"][0] == 1.0 and math.isnan(df["score_regex"][1])
    assert df["checks"][1]["regex"]["reason"].startswith("regex '(unclosed' does not compile")
    assert math.isnan(df["score_py"][0]) and math.isnan(df["score_py"][1])
    assert df["checks"][0]["py"]["reason"] == "py:picky returned 1.5, not a score in 0–1"
    assert df["checks"][1]["py"]["reason"] == "py:picky raised ValueError: no b"
    assert df["passed"].tolist() == [False, False]


class Person:  # the shape of a Pydantic model class: model_validate raises a ValueError
    @classmethod
    def model_validate(cls, value):
        if not isinstance(value, dict) or not isinstance(value.get("age"), int):
            raise ValueError("age must be an integer")
        return cls()


def test_json_and_schema_checks(wired) -> None:
    ip, backends = wired
    backends.openai.reply = '```json\n{"name": "Ada", "age": "old"}\n```'
    ip.user_ns["person"] = {
        "type": "object",
        "required": ["name", "age"],
        "properties": {"age": {"type": "integer"}},
    }
    ip.user_ns["Person"] = Person
    df = run_frame(
        ip,
        "%%llm openai:gpt-4o-mini -q --check json --check schema:person"
        " --check model=schema:Person\nWho?",
    )
    assert df["score_json"][0] == 1.0 and df["checks"][0]["json"]["reason"] == "JSON dict"
    assert df["score_schema"][0] == 0.0
    assert df["checks"][0]["schema"]["reason"] == "age: 'old' is not of type 'integer'"
    assert df["checks"][0]["model"]["reason"] == "age must be an integer"
    backends.openai.reply = '{"name": "Ada", "age": 36}'
    df = run_frame(ip, "%%llm openai:gpt-4o-mini -q --check schema:person --check schema:Person\nx")
    assert df["passed"][0] and df["score_schema_2"][0] == 1.0


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("--check contain:x", "unknown check kind 'contain'"),
        ("--check py:nowhere", "no function 'nowhere' in the notebook"),
        ("--check schema:missing", "no schema 'missing' in the notebook"),
        ("--check regex:(a", "the regex does not compile"),
        ("--check contains:{nope}", "name 'nope' is not defined"),
        ("--check x@2=json", "threshold after @ must be a number in 0–1"),
        ("--check contains:", "contains needs TEXT"),
        ("--check json:x", "json takes no argument"),
        ("--check a=json --check a=contains:x", "two checks are named 'a'"),
        ("--check py:text", "text is a str, not a function"),
        ("--check schema:text", "a schema is a JSON Schema dict or a Pydantic model class"),
        ("--check equals=Paris", "write equals:… (a colon)"),
    ],
)
def test_bad_checks_are_one_line_before_anything_is_sent(wired, line, message) -> None:
    ip, backends = wired
    ip.user_ns["text"] = "not callable"
    with pytest.raises(UsageError) as info:
        ip.run_cell(f"%%llm {TWO} {line}\nHi")
    assert message in str(info.value) and "\n" not in str(info.value)
    assert _sent(backends) == 0


def test_compare_takes_checks_as_specs_functions_and_names(wired) -> None:
    _, backends = wired
    df = llm_magic.compare(
        ["Say A", "Say B"],
        ["openai:gpt-4o-mini"],
        checks={"has_a": "contains:A", "short": lambda answer, row: len(answer) < 100},
    )
    assert df["pass_has_a"].tolist() == [True, False] and df["pass_short"].all()
    df = llm_magic.compare("Say {x}", "openai:gpt-4o-mini", over=[{"x": "yes"}],
                           checks=["equals:Echo from gpt-4o-mini: Say {x}"])
    assert df["passed"].tolist() == [True]
    plain = llm_magic.compare("Hi", "openai:gpt-4o-mini")
    assert list(plain.columns) == list(COLUMNS)  # without checks the schema is unchanged
    with pytest.raises(llm_magic.errors.UsageProblem, match="checks= is compare"):
        llm_magic.complete("Hi", "openai:gpt-4o-mini", checks=["json"])
    with pytest.raises(llm_magic.errors.UsageProblem, match="unknown check kind"):
        llm_magic.compare("Hi", "openai:gpt-4o-mini", checks=["nope:1"])
    assert backends.openai.request_count == 4  # the refused ones sent nothing


def test_side_by_side_shows_each_verdict_escaped(wired) -> None:
    ip, backends = wired
    df = run_frame(ip, f"%%llm {TWO} -q --check contains:gpt --check 'tag=not-contains:<b>'\n<b>")
    page = df.llm.side_by_side()._repr_html_()
    assert "✓ contains 1.00 · ✗ tag 0.00 (contains &#x27;&lt;b&gt;&#x27;)" in page
    assert "✗ contains 0.00 (&#x27;gpt&#x27; not found)" in page
    assert "<b>" not in page


def test_a_real_pydantic_model_and_names_from_the_notebook_in_compare(wired) -> None:
    ip, backends = wired
    pydantic = pytest.importorskip("pydantic")

    class City(pydantic.BaseModel):
        name: str
        population: int

    ip.user_ns["City"] = City
    ip.user_ns["shape"] = {"type": "object", "required": ["name"]}
    backends.openai.reply = '{"name": "Oslo", "population": "many"}'
    df = llm_magic.compare("Oslo?", "openai:gpt-4o-mini", checks=["schema:City", "schema:shape"])
    assert df["score_schema"].tolist() == [0.0] and df["score_schema_2"].tolist() == [1.0]
    assert df["checks"][0]["schema"]["reason"].startswith("population: Input should be")
    ip.user_ns["broken"] = {"type": 12}
    with pytest.raises(UsageError, match="not a valid JSON Schema"):
        ip.run_cell("%%llm openai:gpt-4o-mini --check schema:broken\nHi")
    assert backends.openai.request_count == 1


def test_checks_with_repeats_score_each_row(wired) -> None:
    ip, backends = wired
    check = "--check 'equals:Echo from gpt-4o-mini: Hi'"
    df = run_frame(ip, f"%%llm openai:gpt-4o-mini -r 3 -q {check}\nHi")
    assert df["passed"].tolist() == [True, True, True]
    assert df.llm.summary()["pass_rate"].tolist() == [1.0]
    # one answer is on screen as it streamed; with checks, its scores are shown below it
    shown = ip.run_cell("%%llm openai:gpt-4o-mini --check json\nHi").result
    assert shown["score_json"].tolist() == [0.0] and shown["passed"].tolist() == [False]
    assert ip.run_cell("%%llm openai:gpt-4o-mini\nHi").result is None


CASES = Path(__file__).resolve().parent.parent / "notebooks" / "cases.csv"


def test_the_shipped_case_set_drives_a_cell(wired) -> None:
    ip, backends = wired
    ip.run_cell(f"import pandas as pd\ncases = pd.read_csv({str(CASES)!r})")
    cases = ip.user_ns["cases"]
    assert len(cases) >= 20 and {"prompt", "expected"} <= set(cases.columns)
    assert cases["expected"].notna().all() and cases["prompt"].is_unique
    cell = "%%llm ollama:llama3.2 --over cases -q --check icontains:{expected}\n{prompt}"
    df = run_frame(ip, cell)
    assert len(df) == len(cases) and df["error"].isna().all()
    # the echo server repeats the question: it "knows" the answers the question holds
    pairs = zip(cases["prompt"], cases["expected"], strict=True)
    held = [e.casefold() in p.casefold() for p, e in pairs]
    assert df["pass_icontains"].tolist() == held


@pytest.mark.local_model
def test_checks_on_the_embedded_model(ip) -> None:
    pytest.importorskip("llama_cpp")
    ip.run_cell(f"import pandas as pd\ncases = pd.read_csv({str(CASES)!r}).head(3)")
    df = run_frame(
        ip,
        "%%llm local:smollm2 --over cases -q -t 0 -n 16 --check correct=icontains:{expected}"
        " --check 'not-contains:As an AI'\n{prompt}",
    )
    assert len(df) == 3 and df["error"].isna().all()
    expected = ip.user_ns["cases"]["expected"]
    held = [e.casefold() in o.casefold() for o, e in zip(df["output"], expected, strict=True)]
    assert df["pass_correct"].tolist() == held and held[0]  # greedy SmolLM2 knows Paris
    summary = df.llm.summary()
    assert summary.loc["local:smollm2", "pass_lo"] <= summary.loc["local:smollm2", "pass_rate"]


def test_the_panel_has_a_checks_box(wired) -> None:
    pytest.importorskip("ipywidgets")
    from llm_magic._panel import Panel
    from llm_magic._session import Session

    ip, backends = wired
    panel = Panel(["openai:gpt-4o-mini"], "Hi", checks=["contains:Hi"], discover=False,
                  session=Session())
    panel.checks.value += "\nshort=py:short"
    ip.user_ns["short"] = lambda answer, row: len(answer) < 10
    panel.run_button.click()
    assert panel.wait(60)
    assert panel.result["pass_contains"].tolist() == [True]
    assert panel.result["pass_short"].tolist() == [False]
    assert "0 passed every check" in panel.status.value
    panel.checks.value = "contains:Hi\nregex:(oops"
    assert not panel.start() and "the regex does not compile" in panel.status.value
    assert backends.openai.request_count == 1


def test_the_live_columns_show_each_verdict_at_the_end(wired, published, capsys) -> None:
    ip, backends = wired
    ip.run_cell(f"%%llm {TWO} --check contains:gpt --check 'tag=not-contains:<i>'\n<i>Hi")
    views = [o["data"].get("text/html", "") for o in published.outputs]
    final = [h for h in views if "llm-magic" in h][-1]
    assert "✓ contains 1.00 · ✗ tag 0.00 (contains &#x27;&lt;i&gt;&#x27;)" in final
    assert "✗ contains 0.00 (&#x27;gpt&#x27; not found)" in final
    assert "<i>" not in "".join(views)
    # a run too big for columns says on its progress bar how many passed
    ip.user_ns["many"] = [f"q{i}" for i in range(14)]
    ip.run_cell("%%llm openai:gpt-4o-mini --over many --check contains:q1\n{item}")
    assert "passed=5/14" in capsys.readouterr().err  # q1, q10 … q13
