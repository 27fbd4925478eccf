"""Settings from %config, the environment and the config file obey the same ranges as the
cell's options, and a config file's typo is named, not ignored."""

from __future__ import annotations

import pytest
from IPython.core.error import UsageError

from llm_magic._config import load_file_config, resolve_setting
from llm_magic.errors import ConfigProblem, UsageProblem

CELL = "%%llm openai:gpt-4o-mini ollama:llama3.2 -q\nHi"


def one_line(exc: BaseException, *fragments: str) -> None:
    message = str(exc)
    assert message and "\n" not in message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("timeout", "-1.0", "timeout -1 is out of range; allowed: greater than 0"),
        ("timeout", "0.0", "timeout 0 is out of range"),
        ("connect_timeout", "0.0", "connect_timeout 0 is out of range"),
        ("retries", "-4", "retries -4 is out of range; allowed: 0 to 10"),
        ("concurrency", "0", "concurrency 0 is out of range; allowed: 1 to 256"),
    ],
)
def test_config_values_out_of_range_stop_the_cell(ip, backends, name, value, fragment) -> None:
    ip.run_line_magic("config", f"LLMMagics.{name} = {value}")
    with pytest.raises(UsageError) as info:
        ip.run_cell(CELL)
    one_line(info.value, "%config", fragment)
    assert all(server.request_count == 0 for server in backends)


def test_environment_and_file_values_are_checked_and_named(isolated_env, monkeypatch) -> None:
    monkeypatch.setenv("LLM_MAGIC_TIMEOUT", "-5")
    with pytest.raises(UsageProblem) as env:
        resolve_setting("timeout")
    one_line(env.value, "environment LLM_MAGIC_TIMEOUT", "timeout -5 is out of range")
    (isolated_env / "config.toml").write_text("retries = -3\n")
    with pytest.raises(UsageProblem) as file:
        resolve_setting("retries")
    one_line(file.value, "config.toml", "retries -3 is out of range; allowed: 0 to 10")
    assert resolve_setting("retries", 4).value == 4  # an option in range still wins


def test_a_config_file_typo_is_named_with_a_suggestion(isolated_env) -> None:
    (isolated_env / "config.toml").write_text("timout = 5\n")
    with pytest.raises(ConfigProblem) as info:
        load_file_config()
    one_line(info.value, "unknown setting 'timout'", "did you mean 'timeout'?")


def test_per_provider_limits_are_checked(isolated_env) -> None:
    (isolated_env / "config.toml").write_text("[limits]\nollama = 0\n")
    with pytest.raises(UsageProblem) as info:
        load_file_config()
    one_line(info.value, "[limits] ollama", "concurrency 0 is out of range")


def test_the_python_api_refuses_what_the_magic_refuses(backends) -> None:
    import llm_magic

    bad = [
        ({"temperature": 5}, "temperature 5 is out of range; allowed: 0 to 2"),
        ({"top_p": 0}, "top_p 0 is out of range"),
        ({"max_tokens": 0}, "max_tokens 0 is out of range"),
        ({"seed": -1}, "seed -1 is out of range"),
        ({"repeat": 0}, "repeat 0 is out of range; allowed: 1 to 1000"),
        ({"retries": 11}, "retries 11 is out of range"),
        ({"concurrency": 0}, "concurrency 0 is out of range"),
        ({"timeout": 0}, "timeout 0 is out of range"),
        ({"max_tokens": 1.5}, "1.5 is not a whole number"),
    ]
    for kwargs, fragment in bad:
        with pytest.raises(UsageProblem) as info:
            llm_magic.compare("Hi", "openai:gpt-4o-mini", **kwargs)
        one_line(info.value, fragment)
    with pytest.raises(UsageProblem, match="temperature 3 is out of range"):
        llm_magic.complete("Hi", "openai:gpt-4o-mini", temperature=3)
    with pytest.raises(UsageProblem, match="no targets"):
        llm_magic.compare("Hi", [])
    with pytest.raises(UsageProblem, match="no prompts"):
        llm_magic.compare([], "openai:gpt-4o-mini")
    with pytest.raises(UsageProblem, match="one target"):
        llm_magic.complete("Hi", ["openai:gpt-4o-mini", "ollama:llama3.2"])  # type: ignore[arg-type]
    for empty in ("", "  \n"):
        with pytest.raises(UsageProblem, match="empty"):
            llm_magic.complete(empty, "openai:gpt-4o-mini")
    with pytest.raises(UsageProblem, match="prompt 2 of 2 is empty"):
        llm_magic.compare(["Hi", ""], "openai:gpt-4o-mini")
    assert all(server.request_count == 0 for server in backends)


@pytest.mark.parametrize(
    ("toml", "fragments"),
    [
        (
            '[prices."openai:gpt-4o-mini"]\ninput = 0.1\noutptu = 2\n',
            ("unknown key 'outptu'", "did you mean 'output'?"),
        ),
        ('[prices."openai:gpt-4o-mini"]\ninput = -1\n', ("input must be 0 or more",)),
        ('[prices."openai:gpt-4o-mini"]\ninput = "cheap"\n', ("input must be a number",)),
        (
            '[providers.work]\nbase_ulr = "http://x"\n',
            ("[providers.work] unknown key 'base_ulr'", "'base_url'"),
        ),
        ('[providers.work]\nkey_required = "false"\n', ("key_required must be true or false",)),
        ("retries = true\n", ("retries must be a whole number",)),
    ],
)  # fmt: skip
def test_config_file_tables_are_checked_key_by_key(isolated_env, toml, fragments) -> None:
    (isolated_env / "config.toml").write_text(toml)
    with pytest.raises(ConfigProblem) as info:
        load_file_config()
        resolve_setting("retries")
    one_line(info.value, *fragments)


def test_a_rewrite_within_the_same_clock_tick_is_seen(isolated_env) -> None:
    import os

    path = isolated_env / "config.toml"
    path.write_text("retries = 1\n")
    assert resolve_setting("retries").value == 1
    stamp = path.stat().st_mtime_ns
    path.write_text("retries = 10\n")  # a different size ...
    os.utime(path, ns=(stamp, stamp))  # ... at the very same modification time
    assert resolve_setting("retries").value == 10
