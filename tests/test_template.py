"""Prompt templates and --over expansion."""

from __future__ import annotations

import subprocess
import sys
from collections import ChainMap
from types import SimpleNamespace

import pandas as pd
import pytest

from llm_magic._template import check_over_fields, expand_over, fields, render
from llm_magic.errors import TemplateProblem, UsageProblem

NS = {
    "topic": "tea",
    "n": 3,
    "price": 1.23456,
    "names": ["Ada", "Grace"],
    "user": SimpleNamespace(name="Ada", langs={"first": "Python"}),
    "width": 6,
    "first name": "Ada",  # a key a DataFrame column might bring
}


def assert_one_line(exc: BaseException, *fragments: str) -> None:
    message = str(exc)
    assert "\n" not in message and message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


RENDERED = [
    ("plain text", "plain text"),
    ("", ""),
    ("Tell me about {topic}.", "Tell me about tea."),
    ("{n} facts on {topic}", "3 facts on tea"),
    ("{price:.2f}", "1.23"),
    ("[{topic:>{width}}]", "[   tea]"),
    ("{names[1]}", "Grace"),
    ("{user.name} likes {user.langs[first]}", "Ada likes Python"),
    ("{topic!r}", "'tea'"),
    ("{{not a field}}", "{not a field}"),
    ('JSON: {{"topic": "{topic}"}}', 'JSON: {"topic": "tea"}'),
    ("{first name}", "Ada"),
    ("line1\n{topic}\n  line3", "line1\ntea\n  line3"),
]


@pytest.mark.parametrize(("template", "expected"), RENDERED)
def test_render(template: str, expected: str) -> None:
    assert render(template, NS) == expected


def test_values_are_not_rendered_again() -> None:
    assert render("{x}", {"x": "{topic} {{"}) == "{topic} {{"


def test_render_reads_any_mapping() -> None:
    ns = ChainMap({"item": "rust"}, NS)
    assert render("{item} and {topic}", ns) == "rust and tea"


BROKEN = [
    ("{topic} and {missing}",
     "name 'missing' is not defined in the notebook (use {{ and }} for literal braces)"),
    ("{missing.attr}", "name 'missing' is not defined"),
    ("{missing[0]}", "name 'missing' is not defined"),
    ("{", "unbalanced braces in the prompt: an unclosed '{' on line 1", "{{ and }}"),
    ("}", "a single '}' on line 1", "{{ and }}"),
    ("ok\nstill ok\nbad {topic", "an unclosed '{' on line 3"),
    ("a } b {topic}", "a single '}' on line 1"),
    ('return {"a": 1}', '{"a": 1} is not a {name} field', "{{ and }}"),
    ("{ topic }", "{ topic } is not a {name} field"),
    ("{}", "{} is a positional field"),
    ("{0}", "{0} is a positional field"),
    ("{user.age}", "cannot render {user.age}", "AttributeError", "no attribute 'age'"),
    ("{names[5]}", "cannot render {names[5]}", "IndexError"),
    ("{user.langs[second]}", "cannot render {user.langs[second]}", "KeyError"),
    ("{topic:d}", "cannot render {topic:d}", "Unknown format code 'd'"),
    ("{topic!x}", "cannot render {topic!x}", "conversion"),
    ("{topic:{nowidth}}", "name 'nowidth' is not defined"),
    ("{topic!}", "malformed field in the prompt"),
]  # fmt: skip


@pytest.mark.parametrize(("template", *["fragments"]), [(c[0], c[1:]) for c in BROKEN])
def test_broken_templates(template: str, fragments: tuple[str, ...]) -> None:
    with pytest.raises(TemplateProblem) as info:
        render(template, NS)
    assert isinstance(info.value, UsageProblem)
    assert_one_line(info.value, *fragments)


def test_a_raising_format_method_is_one_line() -> None:
    class Grumpy:
        def __format__(self, spec: str) -> str:
            raise RuntimeError("no\nformatting\ttoday")

    with pytest.raises(TemplateProblem) as info:
        render("{g}", {"g": Grumpy()})
    assert str(info.value) == "cannot render {g}: RuntimeError: no formatting today"


FIELDS = [
    ("no fields", []),
    ("{a} {b} {a}", ["a", "b"]),
    ("{a.b[0]} {c[x]:>{w}} {{d}}", ["a", "c", "w"]),
    ("{0} {} {e!r}", ["e"]),
]


@pytest.mark.parametrize(("template", "names"), FIELDS)
def test_fields(template: str, names: list[str]) -> None:
    assert fields(template) == names


def test_fields_reports_unbalanced_braces() -> None:
    with pytest.raises(TemplateProblem, match="unbalanced braces"):
        fields("{a")


# --- --over -----------------------------------------------------------------------------------


def test_over_a_list() -> None:
    rows = expand_over(["tea", "rust"], "topics")
    assert rows == [{"item": "tea", "topics": "tea"}, {"item": "rust", "topics": "rust"}]
    # `{topics}` under `--over topics` is each topic, as one would write it, not the whole list
    assert [render("About {topics}", {"topics": ["tea", "rust"], **row}) for row in rows] == [
        "About tea", "About rust",
    ]  # fmt: skip


def test_over_tuples_generators_and_ranges() -> None:
    assert expand_over((1, 2), "t") == [{"item": 1, "t": 1}, {"item": 2, "t": 2}]
    assert expand_over((x * 2 for x in range(2)), "g") == [{"item": 0, "g": 0}, {"item": 2, "g": 2}]
    assert expand_over(range(1), "r") == [{"item": 0, "r": 0}]


def test_over_a_list_of_dicts_merges_their_keys() -> None:
    rows = expand_over([{"city": "Oslo", "n": 1}, {"city": "Lima", "item": "own"}], "places")
    oslo = {"city": "Oslo", "n": 1}
    assert rows == [
        {"item": oslo, "places": oslo, "city": "Oslo", "n": 1},
        {"item": "own", "places": {"city": "Lima", "item": "own"}, "city": "Lima"},  # own wins
    ]


def test_over_a_dataframe() -> None:
    df = pd.DataFrame({"city": ["Oslo", "Lima"], "pop k": [709, 10_000]}, index=[10, 20])
    rows = expand_over(df, "df")
    assert rows == [{"city": "Oslo", "pop k": 709}, {"city": "Lima", "pop k": 10_000}]
    assert [render("{city} has {pop k}k people", row) for row in rows] == [
        "Oslo has 709k people", "Lima has 10000k people",
    ]  # fmt: skip


def test_over_a_named_series() -> None:
    rows = expand_over(pd.Series(["a", "b"], name="letter"), "s")
    assert rows == [{"item": "a", "s": "a", "letter": "a"}, {"item": "b", "s": "b", "letter": "b"}]
    assert expand_over(pd.Series([1.5]), "s") == [{"item": 1.5, "s": 1.5}]
    assert expand_over(pd.Series([1], name=0), "s") == [{"item": 1, "s": 1}]


BAD_OVER = [
    (3, "--over x must be a list, Series or DataFrame, not int"),
    (None, "not NoneType"),
    ("abc", "not str"),
    (b"abc", "not bytes"),
    (2.5, "not float"),
    ({"a": 1}, "not dict (use list(d.items()) or a DataFrame)"),
    ([], "--over x is empty"),
    ((), "--over x is empty"),
    (pd.DataFrame({"a": []}), "--over x is empty"),
    (pd.Series([], dtype=object), "--over x is empty"),
]


def test_the_cell_must_use_a_field_of_the_items() -> None:
    df = pd.DataFrame({"question": ["a?", "b?"], "answer": ["a", "b"]})
    rows = expand_over(df, "qa")
    check_over_fields("Q: {question}", rows, "qa", {})  # fine
    with pytest.raises(UsageProblem) as same:
        check_over_fields("Always the same text", rows, "qa", {"qa": df})
    assert_one_line(same.value, "--over qa: the cell uses none", "{question}, {answer}", "-r N")
    with pytest.raises(TemplateProblem) as unknown:
        check_over_fields("{question} {item}", rows, "qa", {"qa": df})
    assert_one_line(unknown.value, "{item} is neither a field of the items ({question}, {answer})")
    # a notebook variable may be used beside the items' fields
    check_over_fields("{style}: {item}", expand_over([1, 2], "n"), "n", {"style": "terse"})


@pytest.mark.parametrize(("value", "fragment"), BAD_OVER)
def test_bad_over_values(value: object, fragment: str) -> None:
    with pytest.raises(UsageProblem) as info:
        expand_over(value, "x")
    assert_one_line(info.value, fragment)


def test_no_pandas_import() -> None:
    code = (
        "import sys\n"
        "import llm_magic._command, llm_magic._targets, llm_magic._template as t\n"
        "assert t.expand_over([1], 'v') == [{'item': 1, 'v': 1}]\n"
        "assert 'pandas' not in sys.modules, 'pandas was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
