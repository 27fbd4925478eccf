"""--tools / tools=: the JSON Schema read from a function's hints and docstring, the
`tool_calls` column and its round trip through the run log, and bad input refused in one line
before anything is sent."""

from __future__ import annotations

import dataclasses
import enum
from typing import Literal

import pytest
from IPython.core.error import UsageError

import llm_magic
from llm_magic._tool_schema import tool_spec
from llm_magic._tools import CallAssembler, calls_line, column_entry
from llm_magic.errors import UsageProblem
from llm_magic.providers.base import ToolCall, ToolCallPiece
from llm_magic.store import default_store


def get_weather(city: str, unit: Literal["C", "F"] = "C", days: int | None = None) -> str:
    """Today's weather in a city.

    Args:
        city: the city's name, e.g. Paris
        unit (str): C or F
    """
    return f"18 {unit} in {city}"


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclasses.dataclass
class Point:
    x: float
    y: float = 0.0


def paint(colour: Colour, where: list[Point], tags: dict[str, int], pair: tuple[int, str]) -> None:
    """Paint points.

    :param colour: which paint
    """


def test_schema_from_hints_and_docstring() -> None:
    spec = tool_spec(get_weather)
    assert spec.name == "get_weather"
    assert spec.description == "Today's weather in a city."
    assert spec.schema() == {
        "type": "object",
        "properties": {
            "city": {"type": "string", "description": "the city's name, e.g. Paris"},
            "unit": {"enum": ["C", "F"], "description": "C or F", "default": "C"},
            "days": {"anyOf": [{"type": "integer"}, {"type": "null"}], "default": None},
        },
        "required": ["city"],
    }


def test_schema_of_enums_dataclasses_and_containers() -> None:
    props = tool_spec(paint).schema()["properties"]
    assert props["colour"] == {"enum": ["red", "blue"], "description": "which paint"}
    assert props["where"] == {
        "type": "array",
        "items": {
            "type": "object",
            "properties": {"x": {"type": "number"}, "y": {"type": "number"}},
            "required": ["x"],
        },
    }
    assert props["tags"] == {"type": "object", "additionalProperties": {"type": "integer"}}
    assert props["pair"]["prefixItems"] == [{"type": "integer"}, {"type": "string"}]


class FakeModel:
    """A class shaped like a Pydantic v2 model (pydantic is not a dependency of llm_magic)."""

    @classmethod
    def model_json_schema(cls) -> dict:
        return {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}

    @classmethod
    def model_validate(cls, value: dict) -> FakeModel:
        made = cls()
        made.q = value["q"]  # type: ignore[attr-defined]
        return made


def test_a_model_class_is_a_tool_and_a_parameter_type() -> None:
    spec = tool_spec(FakeModel)
    assert spec.name == "FakeModel" and spec.schema()["required"] == ["q"]
    assert spec.description.startswith("A class shaped like")

    def search(query: FakeModel) -> str:
        return query.q  # type: ignore[attr-defined]

    assert tool_spec(search).schema()["properties"]["query"]["properties"] == {
        "q": {"type": "string"}
    }


@pytest.mark.parametrize(
    ("tool", "words"),
    [
        (lambda city: city, "cannot be a tool's name"),
        (42, "is not a function or a Pydantic model class"),
        (int, "is not a function or a Pydantic model class"),
    ],
)
def test_not_a_tool(tool: object, words: str) -> None:
    with pytest.raises(UsageProblem, match=words):
        tool_spec(tool)


def untyped(city):  # noqa: ANN001, ANN201
    return city


def starred(*cities: str) -> str:
    return ""


def test_parameters_need_hints_and_names() -> None:
    with pytest.raises(UsageProblem, match="no type hint for 'city'"):
        tool_spec(untyped)
    with pytest.raises(UsageProblem, match=r"takes \*cities"):
        tool_spec(starred)

    def odd(x: complex) -> None: ...

    with pytest.raises(UsageProblem, match="has no JSON Schema"):
        tool_spec(odd)


def test_arguments_parsed_or_flagged() -> None:
    assert column_entry(ToolCall("c1", "f", '{"a": 1}')) == {"name": "f", "arguments": {"a": 1}}
    bad = column_entry(ToolCall("c1", "f", '{"a": '))
    assert bad["arguments"] == '{"a": ' and bad["error"].startswith("arguments are not JSON")
    assert column_entry(ToolCall("c1", "f", "")) == {"name": "f", "arguments": {}}


def test_pieces_join_by_index_and_a_new_id_starts_a_new_call() -> None:
    calls = CallAssembler()
    calls.add([ToolCallPiece(0, "a", "f", ""), ToolCallPiece(1, "b", "g", '{"x"')])
    calls.add([ToolCallPiece(0, arguments='{"y": '), ToolCallPiece(1, arguments=": 2}")])
    calls.add([ToolCallPiece(0, arguments="1}")])
    calls.add([ToolCallPiece(0, "c", "h", "{}")])  # Mistral: whole calls, no index
    assert calls.calls() == [
        ToolCall("a", "f", '{"y": 1}'),
        ToolCall("b", "g", '{"x": 2}'),
        ToolCall("c", "h", "{}"),
    ]
    (made_up,) = CallAssembler().calls() or [None]  # nothing added: no call
    assert made_up is None


def test_calls_line() -> None:
    entries = [
        {"name": "f", "arguments": {"city": "Paris"}, "result": "18 C"},
        {"name": "g", "arguments": "{", "error": "arguments are not JSON"},
    ]
    assert calls_line(entries) == "f(city='Paris') → 18 C · g('{') ✗ arguments are not JSON"


# -- bad input: one line, nothing sent --------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("--tools untyped", "no type hint for 'city'"),
        ("--tools nowhere", "--tools nowhere: no function 'nowhere' in the notebook"),
        ("--tools number", "is not a function or a Pydantic model class"),
        ("--run-tools", "--run-tools (run_tools=) needs --tools"),
        ("--tools get_weather --max-steps 0", "--max-steps: 0 is out of range; allowed: 1 to 50"),
        ("--tools get_weather --tools get_weather", "two tools are named get_weather"),
    ],
)
def test_bad_tools_in_the_magic(ip, backends, line: str, words: str) -> None:
    ip.user_ns.update(untyped=untyped, number=3, get_weather=get_weather)
    with pytest.raises(UsageError, match=words.replace("(", r"\(").replace(")", r"\)")) as info:
        ip.run_cell_magic("llm", f"openai:gpt-4o-mini {line}", "Weather in Paris?")
    assert "\n" not in str(info.value)
    assert backends.openai.request_count == 0


def test_bad_tools_in_python(backends) -> None:
    with pytest.raises(UsageProblem, match="max_steps 0 is out of range"):
        llm_magic.compare("hi", "openai:gpt-4o-mini", tools=[get_weather], max_steps=0)
    with pytest.raises(UsageProblem, match="needs --tools"):
        llm_magic.complete("hi", "openai:gpt-4o-mini", run_tools=True)
    with pytest.raises(UsageProblem, match="no type hint"):
        llm_magic.compare("hi", "openai:gpt-4o-mini", tools=untyped)
    assert backends.openai.request_count == 0


# -- the column -------------------------------------------------------------------------------


def test_column_only_with_tools_and_kept_in_the_log(backends) -> None:
    backends.openai.tool_call = ("get_weather", '{"city": "Paris"}')
    plain = llm_magic.compare("Weather?", "openai:gpt-4o-mini")
    assert "tool_calls" not in plain.columns
    df = llm_magic.compare("Weather?", "openai:gpt-4o-mini", tools=[get_weather])
    assert df["tool_calls"].dtype == object
    assert df.loc[0, "tool_calls"] == [{"name": "get_weather", "arguments": {"city": "Paris"}}]
    assert df.loc[0, "params"]["tools"] == ["get_weather"]
    history = default_store().history_frame(2)
    assert history["tool_calls"].tolist() == [
        [],
        [{"name": "get_weather", "arguments": {"city": "Paris"}}],
    ]
    assert default_store().history_frame(1).columns.tolist() == [*history.columns]


def test_compact_view_shows_the_calls(ip, backends) -> None:
    backends.openai.tool_call = ("get_weather", '{"city": "Paris"}')
    ip.user_ns["get_weather"] = get_weather
    shown = ip.run_cell_magic(
        "llm", "openai:gpt-4o-mini --tools get_weather -q", "Weather in Paris?"
    )
    assert shown is None
    view = ip.run_cell_magic("llm", "openai:gpt-4o-mini --tools get_weather", "Weather in Paris?")
    assert view["tool_calls"].tolist() == ["get_weather(city='Paris')"]
    shown = ip.user_ns["_llm"].llm.side_by_side()._repr_html_()
    assert "calls get_weather(city=&#x27;Paris&#x27;)" in shown
    assert ip.user_ns["_llm"].loc[0, "finish_reason"] == "tool_calls"


try:
    import pydantic
except ImportError:  # not a dependency of llm_magic; Jupyter's stack usually brings it
    pydantic = None

if pydantic is not None:  # at module level, as in a notebook: the hints must resolve

    class Booking(pydantic.BaseModel):
        """Book a table."""

        name: str
        seats: int

    def book(booking: Booking) -> str:
        """Book it."""
        got.append(booking)
        return f"booked {booking.seats} for {booking.name}"


got: list[object] = []


def test_a_real_pydantic_model_as_a_tool_and_as_a_parameter(backends) -> None:
    if pydantic is None:
        pytest.skip("pydantic is not installed")
    got.clear()
    assert tool_spec(Booking).schema()["required"] == ["name", "seats"]
    backends.openai.tool_call = ("Booking", '{"name": "Ada", "seats": 2}')
    df = llm_magic.compare("Book", "openai:gpt-4o-mini", tools=[Booking], run_tools=True)
    assert df.loc[0, "tool_calls"][0]["result"] == '{"name": "Ada", "seats": 2}'
    backends.openai.tool_call = ("book", '{"booking": {"name": "Ada", "seats": 2}}')
    df = llm_magic.compare("Book", "openai:gpt-4o-mini", tools=[book], run_tools=True)
    assert df.loc[0, "output"] == "Tool said: booked 2 for Ada"
    assert isinstance(got[0], Booking)
    backends.openai.tool_call = ("book", '{"booking": {"name": "Ada"}}')
    df = llm_magic.compare("Book", "openai:gpt-4o-mini", tools=[book], run_tools=True)
    assert df.loc[0, "tool_calls"][0]["error"].startswith("ValidationError: 1 validation error")


def test_a_function_is_read_once_and_a_redefined_one_afresh() -> None:
    def lookup(city: str) -> str:
        return city

    first = tool_spec(lookup)
    assert tool_spec(lookup) is first  # a batch asks with the same tools: read once

    def lookup(city: str, country: str) -> str:  # noqa: F811 (redefined, as in a notebook)
        return city

    assert tool_spec(lookup).schema()["required"] == ["city", "country"]


def test_the_magic_line_reads_tools_flags() -> None:
    from llm_magic._command import parse_command

    cmd = parse_command("a --tools f g --run-tools --max-steps 3 b --tools h", "hi")
    assert (cmd.targets, cmd.tools, cmd.run_tools, cmd.max_steps) == (
        ("a", "b"), ("f", "g", "h"), True, 3,
    )  # fmt: skip
    assert parse_command("a", "hi").max_steps == 5
    with pytest.raises(UsageProblem, match="is not a Python variable name"):
        parse_command("a --tools f-g", "hi")
