"""parse_command / parse_subcommand: valid lines give the right Command, bad ones one clear line."""

from __future__ import annotations

import dataclasses

import pytest

from llm_magic import _command as command_module
from llm_magic._command import (
    FORMATS,
    SUBCOMMANDS,
    Command,
    parse_command,
    parse_subcommand,
    split_line,
    usage_text,
)
from llm_magic._config import FileConfig
from llm_magic._targets import resolve_targets
from llm_magic._template import expand_over, render
from llm_magic.errors import TemplateProblem, UnknownProvider, UsageProblem
from llm_magic.providers import known_providers

KNOWN = known_providers(FileConfig())
CELL = "Say hi\n"


def assert_one_line(exc: BaseException, *fragments: str) -> None:
    message = str(exc)
    assert "\n" not in message and message.strip() == message and message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_command_fields_are_the_agreed_contract() -> None:
    names = [f.name for f in dataclasses.fields(Command)]
    assert names == [
        "targets", "template", "temperature", "max_tokens", "top_p", "seed", "system", "stop",
        "repeat", "over", "out", "format", "stream", "timeout", "deadline", "retries",
        "concurrency", "cache", "chat", "quiet", "interpolate", "help", "checks", "judge",
        "images",
        "tools", "run_tools", "max_steps",
        "batch", "wait",
        "embed",
        "schema", "resume",
    ]  # fmt: skip
    cmd = parse_command("", CELL)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cmd.repeat = 2  # type: ignore[misc]


def test_defaults() -> None:
    assert parse_command("", "Say hi") == Command(template="Say hi")
    cmd = parse_command("  ", "Say hi")
    assert (cmd.format, cmd.stream, cmd.repeat, cmd.cache, cmd.interpolate) == (
        "markdown", True, 1, None, True,
    )  # fmt: skip


VALID = [
    ("ollama:llama3.2", {"targets": ("ollama:llama3.2",)}),
    (
        "ollama:llama3.2:1b openai:gpt-4o-mini",
        {"targets": ("ollama:llama3.2:1b", "openai:gpt-4o-mini")},
    ),
    ("a -t 0.7 b", {"targets": ("a", "b"), "temperature": 0.7}),
    ("-t 0 a", {"targets": ("a",), "temperature": 0.0}),
    ("--temperature=2", {"temperature": 2.0}),
    ("-t0.5", {"temperature": 0.5}),
    ("-n 1", {"max_tokens": 1}),
    ("--max-tokens 4096", {"max_tokens": 4096}),
    ("--top-p 1", {"top_p": 1.0}),
    ("--top-p 0.05", {"top_p": 0.05}),
    ("--seed 0", {"seed": 0}),
    ("--seed 42", {"seed": 42}),
    ('-s "You are terse"', {"system": "You are terse"}),
    ("--system 'Say \"yes\" # always'", {"system": 'Say "yes" # always'}),
    ("--stop END", {"stop": ("END",)}),
    ('--stop "\\n" --stop ###', {"stop": ("\n", "###")}),
    ("-r 1000", {"repeat": 1000}),
    ("--repeat 3", {"repeat": 3}),
    ("--over topics", {"over": "topics"}),
    ("-o df_1", {"out": "df_1"}),
    ("--out _", {"out": "_"}),
    ("-f json", {"format": "json"}),
    ("-f HTML", {"format": "html"}),
    ("--format code", {"format": "code"}),
    ("--no-stream", {"stream": False}),
    ("--timeout 0.5", {"timeout": 0.5}),
    ("--retries 0", {"retries": 0}),
    ("--retries 10", {"retries": 10}),
    ("-c 1", {"concurrency": 1}),
    ("--concurrency 256", {"concurrency": 256}),
    ("--cache", {"cache": True}),
    ("--no-cache", {"cache": False}),
    ("--chat", {"chat": True}),
    ("-q", {"quiet": True}),
    ("--quiet", {"quiet": True}),
    ("--no-interpolate", {"interpolate": False}),
    ("--embed openai:text-embedding-3-small", {"embed": "openai:text-embedding-3-small"}),
    ("-qc 4", {"quiet": True, "concurrency": 4}),
    ("-h", {"help": True}),
    ("--help", {"help": True}),
    ("local:C:\\models\\x.gguf", {"targets": ("local:C:\\models\\x.gguf",)}),
    (
        "'fast|safe' -q local:/m/x.gguf",
        {"targets": ("fast|safe", "local:/m/x.gguf"), "quiet": True},
    ),
]


@pytest.mark.parametrize(("line", "expected"), VALID)
def test_valid_lines(line: str, expected: dict[str, object]) -> None:
    cmd = parse_command(line, CELL)
    for name, value in expected.items():
        assert getattr(cmd, name) == value, name
    untouched = {f.name for f in dataclasses.fields(Command)} - set(expected) - {"template"}
    default = Command()
    for name in untouched:
        assert getattr(cmd, name) == getattr(default, name), name


INVALID = [
    ("-t hot", "-t/--temperature", "'hot' is not a number"),
    ("-t 3", "-t/--temperature", "0 to 2"),
    ("-t -0.1", "-t/--temperature", "out of range"),
    ("-t nan", "-t/--temperature", "out of range"),
    ("-t", "-t/--temperature needs a value"),
    ("-n 0", "-n/--max-tokens", "1 or more"),
    ("-n 1.5", "-n/--max-tokens", "'1.5' is not a whole number"),
    ("-n many", "-n/--max-tokens", "not a whole number"),
    ("--top-p 0", "--top-p", "greater than 0 and at most 1"),
    ("--top-p 1.01", "--top-p", "out of range"),
    ("--seed -1", "--seed", "0 to 4294967295"),
    ("--seed 1.5", "--seed", "not a whole number"),
    ('-s ""', "-s/--system", "empty"),
    ("-s", "-s/--system needs a value"),
    ('--stop ""', "--stop", "empty"),
    ("-r 0", "-r/--repeat", "1 to 1000"),
    ("-r 1001", "-r/--repeat", "out of range"),
    ("-c 0", "-c/--concurrency", "1 to 256"),
    ("-c 257", "-c/--concurrency", "out of range"),
    ("--retries 11", "--retries", "0 to 10"),
    ("--retries -1", "--retries", "out of range"),
    ("--timeout -1", "--timeout", "greater than 0"),
    ("--timeout 0", "--timeout", "out of range"),
    ("--timeout inf", "--timeout", "out of range"),
    ("--timeout soon", "--timeout", "not a number"),
    ("-f pdf", "-f/--format", "'pdf'", ", ".join(FORMATS)),
    ("-o 1abc", "-o/--out", "'1abc' is not a Python variable name"),
    ("-o my-df", "-o/--out", "not a Python variable name"),
    ("-o class", "-o/--out", "Python keyword"),
    ("--over", "--over needs a value"),
    ("--over 2x", "--over", "not a Python variable name"),
    ("--bogus", "unknown option --bogus", "%llm help"),
    ("a --temp 1", "unknown option --temp"),
    ("-x a", "unknown option -x"),
    ('a -s "unclosed', "unbalanced quote"),
    ("a 'b", "unbalanced quote"),
    ("--cache --no-cache", "--no-cache: not allowed with --cache"),
]


@pytest.mark.parametrize(("line", *["fragments"]), [(c[0], c[1:]) for c in INVALID])
def test_invalid_lines(line: str, fragments: tuple[str, ...]) -> None:
    with pytest.raises(UsageProblem) as info:
        parse_command(line, CELL)
    assert_one_line(info.value, *fragments)


@pytest.mark.parametrize("cell", ["", "   ", "\n\n", " \t\n  \n"])
def test_empty_cell(cell: str) -> None:
    with pytest.raises(UsageProblem) as info:
        parse_command("openai:gpt-4o", cell)
    assert str(info.value) == "the cell is empty: write the prompt below %%llm"


def test_help_does_not_need_a_prompt() -> None:
    assert parse_command("--help", "").help is True


def test_line_form_carries_no_prompt() -> None:
    cmd = parse_command("ollama:llama3.2 -t 0.1", None)
    assert cmd.template == "" and cmd.targets == ("ollama:llama3.2",)


def test_template_keeps_inner_layout() -> None:
    cell = "\n  \n    indented first line\n\n  second {x}\n\n  \n"
    assert parse_command("", cell).template == "    indented first line\n\n  second {x}"


def test_split_line_keeps_backslashes_and_hashes() -> None:
    assert split_line(r'local:C:\m\x.gguf -s "a # b" --stop "\n"') == [
        r"local:C:\m\x.gguf", "-s", "a # b", "--stop", r"\n",
    ]  # fmt: skip


def test_option_values_can_start_with_a_dash_when_attached() -> None:
    assert parse_command("--stop=---", CELL).stop == ("---",)


def test_usage_text_lists_every_option_and_subcommand() -> None:
    text = usage_text()
    for action in command_module._PARSER._actions:
        for option in action.option_strings:
            assert option in text, option
    for name in SUBCOMMANDS:
        assert f"%llm {name}" in text
    assert "{name}" in text and "{{ and }}" in text


SUBCOMMAND_OK = [
    ("models", ("models", [])),
    ("models ollama", ("models", ["ollama"])),
    ("status", ("status", [])),
    ("providers", ("providers", [])),
    ("pull ollama:llama3.2:1b", ("pull", ["ollama:llama3.2:1b"])),
    ("rm ollama:qwen2.5:0.5b", ("rm", ["ollama:qwen2.5:0.5b"])),
    ("show local:smollm2", ("show", ["local:smollm2"])),
    ("ps", ("ps", [])),
    ("alias", ("alias", [])),
    ("alias fast 'groq:llama-3.1-8b-instant|local:smollm2'",
     ("alias", ["fast", "groq:llama-3.1-8b-instant|local:smollm2"])),
    ("config", ("config", [])),
    ("history", ("history", [])),
    ("history 20", ("history", ["20"])),
    ("reset", ("reset", [])),
    ("panel", ("panel", [])),
    ("help", ("help", [])),
    ("", ("help", [])),
    ("   ", ("help", [])),
    ("--help", ("help", [])),
]  # fmt: skip


@pytest.mark.parametrize(("line", "expected"), SUBCOMMAND_OK)
def test_subcommands(line: str, expected: tuple[str, list[str]]) -> None:
    assert parse_subcommand(line) == expected


SUBCOMMAND_BAD = [
    ("modles", "unknown subcommand 'modles'", "known subcommands: models, status"),
    ("openai:gpt-4o hello", "unknown subcommand 'openai:gpt-4o'", "%%llm cell"),
    ("pull", "usage: %llm pull ollama:MODEL"),
    ("pull a b", "usage: %llm pull"),
    ("show", "usage: %llm show TARGET"),
    ("status now", "usage: %llm status"),
    ("alias a b c", "usage: %llm alias [NAME TARGET]"),
    ("alias fast", "usage: %llm alias [NAME TARGET]"),  # a name alone: half an alias
    ("config timeout", "usage: %llm config"),
    ("help over", "usage: %llm help"),
    ("history ten", "%llm history N", "'ten' is not a whole number"),
    ("history 0", "%llm history N", "out of range"),
    ("alias 'x", "unbalanced quote"),
]


@pytest.mark.parametrize(("line", *["fragments"]), [(c[0], c[1:]) for c in SUBCOMMAND_BAD])
def test_bad_subcommands(line: str, fragments: tuple[str, ...]) -> None:
    with pytest.raises(UsageProblem) as info:
        parse_subcommand(line)
    assert_one_line(info.value, *fragments)


def test_help_shows_the_arguments_each_subcommand_takes() -> None:
    text = usage_text()
    assert "%llm alias [NAME TARGET]" in text
    assert "%llm reset [TARGET ...]" in text
    assert parse_subcommand("reset fast ollama:llama3.2") == ("reset", ["fast", "ollama:llama3.2"])
    assert parse_subcommand("alias fast ollama:llama3.2") == ("alias", ["fast", "ollama:llama3.2"])


def test_known_subcommands_are_listed_in_full() -> None:
    with pytest.raises(UsageProblem) as info:
        parse_subcommand("nope")
    for name in SUBCOMMANDS:
        assert name in str(info.value)


# --- a whole cell through the pure pipeline, as the magic will run it -----------------------


def prepare(line: str, cell: str, ns: dict[str, object]) -> list[str]:
    cmd = parse_command(line, cell)
    resolve_targets(cmd.targets, {"fast": "groq:llama-3.1-8b-instant"}, KNOWN, "local:smollm2")
    items = expand_over(ns[cmd.over], cmd.over) if cmd.over else [{}]
    return [render(cmd.template, {**ns, **item}) for item in items]


def test_pipeline_happy_path() -> None:
    ns = {"topics": ["tea", "rust"], "tone": "dry"}
    prompts = prepare("fast ollama:llama3.2 --over topics -t 0", "A {tone} joke on {item}.", ns)
    assert prompts == ["A dry joke on tea.", "A dry joke on rust."]


PIPELINE_BAD = [
    ("foo:bar", "hi", UnknownProvider, "unknown provider 'foo'; known providers: "),
    ("nosuch", "hi", UsageProblem, "'nosuch' is neither provider:model nor a known alias"),
    (":gpt-4o", "hi", UsageProblem, "has no provider"),
    ("openai:", "hi", UsageProblem, "has no model"),
    ("'openai:a||ollama:b'", "hi", UsageProblem, "empty link"),
    ("fast groq:llama-3.1-8b-instant", "hi", UsageProblem, "given twice"),
    ("'openai: gpt-4o'", "hi", UsageProblem, "whitespace"),
    ("", "{", TemplateProblem, "unbalanced braces"),
    ("", "{topic}", TemplateProblem, "name 'topic' is not defined"),
    ("--over n", "{item}", UsageProblem, "--over n must be a list, Series or DataFrame, not int"),
    ("--over empty", "{item}", UsageProblem, "--over empty is empty"),
]


@pytest.mark.parametrize(("line", "cell", "kind", "fragment"), PIPELINE_BAD)
def test_pipeline_rejects_bad_cells(
    line: str, cell: str, kind: type[UsageProblem], fragment: str
) -> None:
    with pytest.raises(kind) as info:
        prepare(line, cell, {"n": 3, "empty": []})
    assert_one_line(info.value, fragment)
