"""Bad input in a cell: one UsageError line, no traceback, and not one byte sent to any server."""

from __future__ import annotations

import pytest
from IPython.core.error import UsageError

T = "openai:gpt-4o-mini"

BAD_CELLS = [
    # option values
    f"%%llm {T} -t hot\nHi",
    f"%%llm {T} -t 3\nHi",
    f"%%llm {T} -t -0.5\nHi",
    f"%%llm {T} -n 0\nHi",
    f"%%llm {T} -n 1.5\nHi",
    f"%%llm {T} -n many\nHi",
    f"%%llm {T} --top-p 0\nHi",
    f"%%llm {T} --top-p 1.5\nHi",
    f"%%llm {T} --seed x\nHi",
    f"%%llm {T} -r 0\nHi",
    f"%%llm {T} -r -2\nHi",
    f"%%llm {T} -c 0\nHi",
    f"%%llm {T} --timeout -1\nHi",
    f"%%llm {T} --timeout soon\nHi",
    f"%%llm {T} --retries -1\nHi",
    f"%%llm {T} -f pdf\nHi",
    f"%%llm {T} -o 1abc\nHi",
    f"%%llm {T} -o\nHi",
    f"%%llm {T} --over\nHi",
    f"%%llm {T} --bogus\nHi",
    f"%%llm {T} -s\nHi",
    f"%%llm {T} -s 'unbalanced\nHi",
    f"%%llm {T} --cache --no-cache\nHi",
    f"%%llm {T} --chat -r 2\nHi",
    # targets
    "%%llm nosuch:model\nHi",
    "%%llm :gpt-4o-mini\nHi",
    "%%llm openai:\nHi",
    "%%llm openai\nHi",
    f"%%llm {T}||ollama:llama3.2\nHi",
    f"%%llm {T}|\nHi",
    "%%llm notanalias\nHi",
    f"%%llm {T} {T}\nHi",
    f"%%llm {T} OpenAI:gpt-4o\nHi",
    # templates and the namespace
    f"%%llm {T}\nTell me about {{undefined_name}}",
    f"%%llm {T}\nAn open {{brace",
    f"%%llm {T}\nA closing brace}} alone }}",
    f'%%llm {T}\nJSON like {{"a": 1}}',
    f"%%llm {T} -s 'Be {{missing_style}}'\nHi",
    f"%%llm {T} --over not_defined\nRow {{item}}",
    f"%%llm {T} --over an_int\nRow {{item}}",
    f"%%llm {T} --over a_string\nRow {{item}}",
    f"%%llm {T} --over empty_list\nRow {{item}}",
    f"%%llm {T} --over rows\nRow {{no_such_column}}",
    f"%%llm {T} --over rows\nThe same text for every row",
    f"%%llm {T} --over rows --no-interpolate\nRow {{q}}",
    f"%%llm {T} --over with_blank\n{{item}}",
    f"%%llm {T}\n{{blank}}",
    # empty cells
    f"%%llm {T}\n",
    f"%%llm {T}\n   \n\t\n",
]


@pytest.fixture
def wired(ip, backends):
    ip.user_ns.update(an_int=3, a_string="abc", empty_list=[], rows=[{"q": "a"}, {"q": "b"}])
    ip.user_ns.update(blank=" \n", with_blank=["tea", ""])
    return ip, backends


def test_there_are_at_least_forty_cases() -> None:
    assert len(BAD_CELLS) >= 40


@pytest.mark.parametrize("cell", BAD_CELLS)
def test_bad_cell_is_one_usage_line_and_sends_nothing(wired, cell: str) -> None:
    ip, servers = wired
    with pytest.raises(UsageError) as info:
        ip.run_cell(cell)
    message = str(info.value)
    assert message and "\n" not in message and "Traceback" not in message
    assert all(server.request_count == 0 for server in servers)
    assert "_llm" not in ip.user_ns  # nothing ran, nothing half-recorded


BAD_LINES = ["nosuchcmd", "pull", "alias fast nosuch:x", "alias 1bad openai:gpt-4o", "history x"]


@pytest.mark.parametrize("line", BAD_LINES)
def test_bad_subcommand_is_one_usage_line(wired, line: str) -> None:
    ip, servers = wired
    with pytest.raises(UsageError) as info:
        ip.run_line_magic("llm", line)
    assert "\n" not in str(info.value)
    assert all(server.request_count == 0 for server in servers)
