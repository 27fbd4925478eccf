"""Checks without a server: spec parsing, `df.llm.check()` scoring a frame again, the Wilson
interval of `summary()`."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from llm_magic._checks import DEFAULT_THRESHOLD, CheckSpec, compile_checks, parse_check
from llm_magic._records import COLUMNS, RunRecord
from llm_magic._scoring import wilson
from llm_magic.errors import TemplateProblem, UsageProblem
from llm_magic.results import to_dataframe


def _frame(outputs: list[str], targets: tuple[str, ...] = ("a:x", "b:y")) -> pd.DataFrame:
    """A frame as an --over run over len(outputs) // len(targets) items makes it."""
    records = []
    for i, text in enumerate(outputs):
        item = i // len(targets)
        records.append(
            RunRecord("r1", targets[i % len(targets)], "a", "x", f"prompt {item}", output=text)
        )
    return to_dataframe(records)


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("contains:Paris, France", CheckSpec("contains", "Paris, France")),
        ("json", CheckSpec("json")),
        ("JSON", CheckSpec("json")),
        ("ok=equals:a=b", CheckSpec("equals", "a=b", "ok")),
        ("equals:a=b", CheckSpec("equals", "a=b")),
        ("close@0.8=py:grade", CheckSpec("py", "grade", "close", 0.8)),
        ("@1=regex:^\\d+$", CheckSpec("regex", "^\\d+$", None, 1.0)),
        ("not-contains: sorry", CheckSpec("not-contains", " sorry")),
        ("json=schema:Person", CheckSpec("schema", "Person", "json")),
    ],
)
def test_specs_parse(text: str, spec: CheckSpec) -> None:
    assert parse_check(text) == spec


def test_unnamed_checks_are_named_after_their_kind_and_numbered() -> None:
    checks = compile_checks(["contains:a", "contains:b", "not-contains:c", "x=contains:d"], {})
    assert [c.name for c in checks] == ["contains", "contains_2", "not_contains", "x"]
    assert all(c.threshold == DEFAULT_THRESHOLD for c in checks)


def test_df_llm_check_scores_a_frame_again_without_asking() -> None:
    df = _frame(["Paris is big", "paris?", '{"a": 1}', "no"])
    cases = pd.DataFrame({"city": ["Paris", "Rome"]})
    scored = df.llm.check("contains:{city}", "icontains:paris", "json", over=cases)
    assert list(scored.columns[: len(COLUMNS)]) == list(COLUMNS) and len(scored) == 4
    assert scored["pass_contains"].tolist() == [True, False, False, False]
    assert scored["pass_icontains"].tolist() == [True, True, False, False]
    assert scored["pass_json"].tolist() == [False, False, True, False]
    assert list(df.columns) == list(COLUMNS)  # the frame itself is left as it was
    # scoring again replaces the earlier checks' columns
    again = scored.llm.check({"short": lambda answer, row: (len(answer) / 10, row["prompt"])})
    assert [c for c in again.columns if c not in COLUMNS] == [
        "score_short", "pass_short", "passed", "checks"
    ]  # fmt: skip
    assert math.isnan(again["score_short"][0])  # 12 characters: 1.2 is no score
    assert again["checks"][1]["short"] == {"score": 0.6, "pass": True, "reason": "prompt 0"}


def test_fields_come_from_columns_then_items_then_variables() -> None:
    df = _frame(["Echo: tea", "Echo: milk"], targets=("a:x",)).assign(expected=["tea", "tea"])
    scored = df.llm.check("contains:{expected}", "prefix=contains:{head}", variables={"head": "E"})
    assert scored["pass_contains"].tolist() == [True, False]
    assert scored["pass_prefix"].tolist() == [True, True]
    with pytest.raises(UsageProblem, match=r"\{missing\} is not a column"):
        df.llm.check("contains:{missing}", variables={})
    with pytest.raises(UsageProblem, match="3 items"):
        df.llm.check("contains:{item}", over=["a", "b", "c"], variables={})
    with pytest.raises(TemplateProblem, match="literal braces"):
        df.llm.check("regex:\\d{3}", variables={})
    assert df.llm.check("regex:x{{2}}", variables={})["score_regex"].tolist() == [0.0, 0.0]


def test_a_field_that_cannot_be_filled_for_one_row_is_that_rows_reason() -> None:
    df = _frame(["1.50", "x"], targets=("a:x",)).assign(price=[1.5, "n/a"])
    scored = df.llm.check("contains:{price:.2f}", variables={})
    assert scored["score_contains"][0] == 1.0 and math.isnan(scored["score_contains"][1])
    assert "cannot render {price:.2f}" in scored["checks"][1]["contains"]["reason"]


def test_failed_rows_and_empty_frames() -> None:
    df = _frame(["fine", ""], targets=("a:x",))
    df.loc[1, "error"] = "HTTP 500"
    scored = df.llm.check("contains:fine", variables={})
    assert scored["passed"].tolist() == [True, False]
    assert scored["checks"][1]["contains"]["reason"] == "no answer"
    empty = to_dataframe([]).llm.check("json", variables={})
    assert len(empty) == 0 and str(empty["score_json"].dtype) == "float64"
    assert str(empty["passed"].dtype) == "boolean"
    with pytest.raises(UsageProblem, match="no checks"):
        df.llm.check(variables={})


def test_wilson_interval() -> None:
    lo, hi = wilson(8, 10)
    assert (round(lo, 4), round(hi, 4)) == (0.4902, 0.9433)
    assert wilson(0, 5)[0] == 0.0 and wilson(5, 5)[1] == 1.0
    assert all(math.isnan(x) for x in wilson(0, 0))


def test_summary_adds_pass_rates_only_with_checks() -> None:
    df = _frame(["yes", "no", "yes", "yes"])
    assert "pass_rate" not in df.llm.summary().columns
    summary = df.llm.check("contains:yes", variables={}).llm.summary()
    assert summary["pass_rate"].tolist() == [1.0, 0.5]
    assert list(summary.columns[-4:]) == ["pass_rate", "pass_lo", "pass_hi", "score_contains"]
    assert summary.index.name == "target"


def test_py_checks_take_numpy_scalars_and_see_no_earlier_check_columns() -> None:
    import numpy as np

    seen: list[set[str]] = []

    def numpy_verdict(answer, row):
        seen.append(set(row))
        return np.bool_(answer == "yes") if answer == "yes" else np.float64(0.25)

    df = _frame(["yes", "no"], targets=("a:x",)).llm.check("json", variables={})
    scored = df.llm.check(numpy_verdict)
    assert scored["score_numpy_verdict"].tolist() == [1.0, 0.25]
    assert not any(name.startswith("score_") or name == "checks" for name in seen[0])


def test_fields_of_equal_but_different_values_fill_apart() -> None:
    df = _frame(["1", "True"], targets=("a:x",)).assign(want=pd.Series([1, True], dtype=object))
    assert df.llm.check("equals:{want}", variables={})["passed"].tolist() == [True, True]
