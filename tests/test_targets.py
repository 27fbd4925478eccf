"""Targets: provider:model split on the first colon, aliases, fallback chains, clear errors."""

from __future__ import annotations

import dataclasses

import pytest

from llm_magic._config import FileConfig
from llm_magic._targets import (
    Target,
    TargetSpec,
    check_alias,
    parse_target,
    resolve_targets,
    validate_alias_name,
)
from llm_magic.errors import UnknownProvider, UsageProblem
from llm_magic.providers import known_providers

KNOWN = known_providers(FileConfig())
ALIASES = {
    "fast": "groq:llama-3.1-8b-instant",
    "safe": "openai:gpt-4o-mini|local:smollm2",
    "best": "fast|safe",  # an alias of aliases
    "tiny": "ollama:qwen2.5:0.5b",
}


def assert_one_line(exc: BaseException, *fragments: str) -> None:
    message = str(exc)
    assert "\n" not in message and message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_the_real_provider_list_has_the_builtins() -> None:
    assert {"openai", "ollama", "mistral", "local", "groq"} <= set(KNOWN)


def test_target_and_spec_shapes() -> None:
    t = Target("ollama", "llama3.2:1b")
    assert str(t) == "ollama:llama3.2:1b"
    spec = parse_target("ollama:llama3.2:1b|local:smollm2", {}, KNOWN)
    assert spec.primary == t and spec.fallbacks == (Target("local", "smollm2"),)
    assert str(spec) == spec.label == "ollama:llama3.2:1b|local:smollm2"
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.label = "x"  # type: ignore[misc]
    with pytest.raises(ValueError):
        TargetSpec((), "empty")


VALID = [
    ("openai:gpt-4o-mini", [("openai", "gpt-4o-mini")]),
    ("ollama:llama3.2:1b", [("ollama", "llama3.2:1b")]),
    ("ollama:hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M",
     [("ollama", "hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M")]),
    ("local:/models/x.gguf", [("local", "/models/x.gguf")]),
    ("local:C:\\models\\x.gguf", [("local", "C:\\models\\x.gguf")]),
    ("local:smollm2", [("local", "smollm2")]),
    ("  openai:gpt-4o  ", [("openai", "gpt-4o")]),
    ("openai:gpt-4o|ollama:llama3.2|local:smollm2",
     [("openai", "gpt-4o"), ("ollama", "llama3.2"), ("local", "smollm2")]),
    ("fast", [("groq", "llama-3.1-8b-instant")]),
    ("tiny", [("ollama", "qwen2.5:0.5b")]),
    ("safe", [("openai", "gpt-4o-mini"), ("local", "smollm2")]),
    ("best", [("groq", "llama-3.1-8b-instant"), ("openai", "gpt-4o-mini"), ("local", "smollm2")]),
    ("fast|ollama:llama3.2", [("groq", "llama-3.1-8b-instant"), ("ollama", "llama3.2")]),
]  # fmt: skip


@pytest.mark.parametrize(("text", "chain"), VALID)
def test_valid_targets(text: str, chain: list[tuple[str, str]]) -> None:
    spec = parse_target(text, ALIASES, KNOWN)
    assert [(t.provider, t.model) for t in spec.chain] == chain
    assert spec.label == text.strip()


INVALID = [
    ("", UsageProblem, "empty target"),
    ("   ", UsageProblem, "empty target"),
    (":gpt-4o", UsageProblem, "target ':gpt-4o' has no provider", "provider:model"),
    ("openai:", UsageProblem, "target 'openai:' has no model", "openai:MODEL"),
    ("openai:a||ollama:b", UsageProblem, "empty link in its fallback chain"),
    ("|openai:a", UsageProblem, "empty link"),
    ("openai:a|", UsageProblem, "empty link"),
    ("|", UsageProblem, "empty link"),
    ("foo:bar", UnknownProvider, "unknown provider 'foo'; known providers: ", "openai"),
    ("OpenAI:gpt-4o", UnknownProvider, "unknown provider 'OpenAI'", "did you mean 'openai'?"),
    ("openai:gpt-4o|bogus:x", UnknownProvider, "unknown provider 'bogus'"),
    ("nosuch", UsageProblem, "'nosuch' is neither provider:model nor a known alias",
     "aliases: best, fast, safe, tiny"),
    ("ollama", UsageProblem, "'ollama' needs a model: write ollama:MODEL"),
    ("openai: gpt-4o", UsageProblem, "contains whitespace"),
    ("openai:gpt\t4o", UsageProblem, "contains whitespace"),
    ("openai:a|openai:a", UsageProblem, "names openai:a twice"),
    ("safe|local:smollm2", UsageProblem, "names local:smollm2 twice"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "kind", *["fragments"]), [(c[0], c[1], c[2:]) for c in INVALID])
def test_invalid_targets(text: str, kind: type[UsageProblem], fragments: tuple[str, ...]) -> None:
    with pytest.raises(kind) as info:
        parse_target(text, ALIASES, KNOWN)
    assert_one_line(info.value, *fragments)


def test_unknown_provider_lists_every_known_provider() -> None:
    with pytest.raises(UnknownProvider) as info:
        parse_target("foo:bar", {}, KNOWN)
    assert str(info.value) == f"unknown provider 'foo'; known providers: {', '.join(KNOWN)}"


def test_unknown_word_without_aliases_says_how_to_add_one() -> None:
    with pytest.raises(UsageProblem) as info:
        parse_target("fast", {}, KNOWN)
    assert_one_line(info.value, "no aliases are defined", "%llm alias NAME TARGET")


CYCLES = [
    ({"a": "a"}, "a", "alias cycle: a -> a"),
    ({"a": "b", "b": "a"}, "a", "alias cycle: a -> b -> a"),
    ({"a": "openai:x|b", "b": "c", "c": "a"}, "a", "alias cycle: a -> b -> c -> a"),
    ({"a": "b", "b": "c", "c": "b"}, "a", "alias cycle: a -> b -> c -> b"),
]


@pytest.mark.parametrize(("aliases", "text", "message"), CYCLES)
def test_alias_cycles(aliases: dict[str, str], text: str, message: str) -> None:
    with pytest.raises(UsageProblem) as info:
        parse_target(text, aliases, KNOWN)
    assert str(info.value) == message


def test_an_error_inside_an_alias_names_the_alias() -> None:
    with pytest.raises(UnknownProvider) as info:
        parse_target("work", {"work": "corp:big"}, KNOWN)
    assert_one_line(info.value, "alias 'work' = 'corp:big': unknown provider 'corp'")
    with pytest.raises(UsageProblem) as info2:
        parse_target("w", {"w": "openai:a||b"}, KNOWN)
    assert_one_line(info2.value, "alias 'w' = 'openai:a||b'", "empty link")


def test_the_same_alias_twice_in_a_tree_is_not_a_cycle() -> None:
    aliases = {"x": "openai:a", "y": "x|ollama:b", "z": "ollama:c|x"}
    assert str(parse_target("y", aliases, KNOWN)) == "openai:a|ollama:b"
    # Diamond-shaped reuse is not a cycle, but the expanded chain repeats openai:a.
    with pytest.raises(UsageProblem, match="names openai:a twice"):
        parse_target("y|z", aliases, KNOWN)


def test_resolve_uses_the_default_when_no_words() -> None:
    assert resolve_targets([], ALIASES, KNOWN, "local:smollm2") == [
        TargetSpec((Target("local", "smollm2"),), "local:smollm2")
    ]
    assert [str(s) for s in resolve_targets((), ALIASES, KNOWN, "fast")] == [
        "groq:llama-3.1-8b-instant"
    ]


def test_a_bad_default_says_it_is_the_default() -> None:
    with pytest.raises(UnknownProvider) as info:
        resolve_targets([], {}, KNOWN, "nope:model")
    assert_one_line(info.value, "default target 'nope:model': unknown provider 'nope'")
    with pytest.raises(UsageProblem) as info2:
        resolve_targets([], {}, KNOWN, "")
    assert_one_line(info2.value, "default target '': empty target")


def test_resolve_keeps_order_and_labels() -> None:
    specs = resolve_targets(["safe", "ollama:llama3.2", "fast"], ALIASES, KNOWN, "local:smollm2")
    assert [s.label for s in specs] == ["safe", "ollama:llama3.2", "fast"]
    assert [str(s.primary) for s in specs] == [
        "openai:gpt-4o-mini", "ollama:llama3.2", "groq:llama-3.1-8b-instant",
    ]  # fmt: skip


DUPLICATES = [
    (["openai:gpt-4o", "openai:gpt-4o"], "target openai:gpt-4o is given twice;"),
    (
        ["fast", "groq:llama-3.1-8b-instant"],
        "given twice (as 'fast' and 'groq:llama-3.1-8b-instant')",
    ),
    (["safe", "openai:gpt-4o-mini|local:smollm2"], "given twice"),
    # the same first link with another fallback: both rows would ask openai:a, told apart by
    # nothing (side_by_side would show them as two repeats)
    (["openai:a", "openai:a|local:smollm2"], "target openai:a is given twice"),
]


@pytest.mark.parametrize(("words", "fragment"), DUPLICATES)
def test_duplicate_targets_are_rejected(words: list[str], fragment: str) -> None:
    with pytest.raises(UsageProblem) as info:
        resolve_targets(words, ALIASES, KNOWN, "local:smollm2")
    assert_one_line(info.value, fragment, "-r/--repeat", "the panel: the repeat box")


def test_a_target_may_be_another_chains_fallback() -> None:
    # asked on its own, and as what to fall back on when vllm fails: distinct first links
    specs = resolve_targets(["openai:a", "vllm:x|openai:a"], {}, KNOWN, "local:smollm2")
    assert [s.label for s in specs] == ["openai:a", "vllm:x|openai:a"]


@pytest.mark.parametrize("name", ["fast", "my_model", "gpt4o-mini", "v1.2", "_x", "A"])
def test_good_alias_names(name: str) -> None:
    assert validate_alias_name(name, KNOWN) == name


BAD_ALIAS_NAMES = [
    ("", "alias name '' is not allowed"),
    ("a:b", "no ':' or '|'"),
    ("a|b", "no ':' or '|'"),
    ("1fast", "starting with a letter or _"),
    ("-q", "is not allowed"),
    ("my model", "is not allowed"),
    ("openai", "alias name 'openai' is a provider name"),
    ("local", "is a provider name"),
]


@pytest.mark.parametrize(("name", "fragment"), BAD_ALIAS_NAMES)
def test_bad_alias_names(name: str, fragment: str) -> None:
    with pytest.raises(UsageProblem) as info:
        validate_alias_name(name, KNOWN)
    assert_one_line(info.value, fragment)


def test_alias_name_checked_against_the_registry_by_default() -> None:
    assert validate_alias_name("fast") == "fast"
    with pytest.raises(UsageProblem, match="is a provider name"):
        validate_alias_name("ollama")


def test_check_alias_accepts_and_expands() -> None:
    spec = check_alias("duo", "fast|tiny", ALIASES, KNOWN)
    assert str(spec) == "groq:llama-3.1-8b-instant|ollama:qwen2.5:0.5b"
    assert spec.label == "duo"


def test_check_alias_refuses_a_cycle_it_would_create() -> None:
    with pytest.raises(UsageProblem, match=r"alias cycle: me -> me"):
        check_alias("me", "me", {}, KNOWN)
    with pytest.raises(UsageProblem, match=r"alias cycle: fast -> best -> fast"):
        check_alias("fast", "best", ALIASES, KNOWN)


def test_check_alias_refuses_a_bad_target() -> None:
    with pytest.raises(UnknownProvider):
        check_alias("x", "corp:big", {}, KNOWN)
