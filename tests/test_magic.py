"""%%llm and %llm in a real InteractiveShell against loopback servers on real sockets."""

from __future__ import annotations

import pandas as pd
import pytest
from IPython.core.error import UsageError

from llm_magic._records import COLUMNS
from tests.cells import run_frame

KEY = "sk-SENTINEL-magic-0123456789"


def test_load_ext_registers_magics_and_imports_nothing_heavy() -> None:
    import subprocess
    import sys

    probe = (
        "import sys\n"
        "from IPython.core.interactiveshell import InteractiveShell\n"
        "sh = InteractiveShell.instance()\n"
        "sh.run_line_magic('load_ext', 'llm_magic')\n"
        "assert 'llm' in sh.magics_manager.magics['cell']\n"
        "assert 'llm' in sh.magics_manager.magics['line']\n"
        "heavy = [m for m in ('pandas', 'openai', 'httpx2', 'httpx', 'llama_cpp', 'numpy')"
        " if m in sys.modules]\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_one_cell_three_providers_gives_one_row_each(ip, backends) -> None:
    openai_server, ollama_server, mistral_server = backends[:3]
    shown = ip.run_cell(
        "%%llm openai:gpt-4o-mini ollama:llama3.2 mistral:mistral-small-latest -t 0.2 -n 50\n"
        "Why is the sky blue?"
    ).result
    # the cell shows one short line per answer; _llm keeps every column
    assert list(shown.columns) == [
        "target", "answer", "latency_s", "ttft_s", "tokens", "tokens_per_s", "cost_usd", "error"
    ]  # fmt: skip
    df = ip.user_ns["_llm"]
    assert isinstance(df, pd.DataFrame)
    assert list(df.columns) == list(COLUMNS)
    for preview, output in zip(shown["answer"], df["output"], strict=True):
        assert len(preview) <= 80 and " ".join(output.split()).startswith(preview.rstrip("…"))
    assert list(df["target"]) == [
        "openai:gpt-4o-mini",
        "ollama:llama3.2",
        "mistral:mistral-small-latest",
    ]
    assert df["error"].isna().all()
    models = ["gpt-4o-mini", "llama3.2", "mistral-small-latest"]
    for output, model in zip(df["output"], models, strict=True):
        assert output.strip() == f"Echo from {model}: Why is the sky blue?"
    assert (df["latency_s"] > 0).all() and (df["ttft_s"] <= df["latency_s"]).all()
    assert not df["tokens_estimated"].any()  # all three servers report usage
    assert ip.user_ns["_llm"] is df
    # What went over the wire: each protocol's own fields.
    assert openai_server.requests[-1].body["temperature"] == 0.2
    assert ollama_server.requests[-1].body["options"]["num_predict"] == 50
    assert mistral_server.requests[-1].body["max_tokens"] == 50


def test_template_reads_the_notebook_namespace_and_out_var(ip, backends) -> None:
    openai_server = backends[0]
    ip.user_ns["topic"] = "tides"
    ip.user_ns["style"] = "brief"
    ip.run_cell("%%llm openai:gpt-4o-mini -o answer -s 'Be {style}.'\nExplain {topic}.")
    df = ip.user_ns["answer"]
    assert df["prompt"].iloc[0] == "Explain tides."
    messages = openai_server.requests[-1].body["messages"]
    assert messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Explain tides."},
    ]


def test_single_target_returns_nothing_but_keeps_the_row(ip, backends) -> None:
    result = ip.run_cell("%%llm openai:gpt-4o-mini\nHello").result
    assert result is None
    assert len(ip.user_ns["_llm"]) == 1


def test_a_dead_target_is_an_error_row_and_the_others_survive(
    ip, backends, refused_url, monkeypatch
):
    monkeypatch.setenv("VLLM_BASE_URL", refused_url + "/v1")
    df = run_frame(ip, "%%llm openai:gpt-4o-mini vllm:some-model --retries 0\nHello")
    ok, dead = df.iloc[0], df.iloc[1]
    assert pd.isna(ok["error"]) and ok["output"]
    assert dead["error"].startswith("vllm:") and dead["finish_reason"] == "error"
    assert "\n" not in dead["error"]


def test_usage_errors_are_one_line_and_send_nothing(ip, backends) -> None:
    servers = backends
    for cell in [
        "%%llm nosuch:model\nHi",
        "%%llm openai:gpt-4o-mini -t hot\nHi",
        "%%llm openai:gpt-4o-mini\n",
        "%%llm openai:gpt-4o-mini\nTell me about {undefined_name}",
    ]:
        with pytest.raises(UsageError) as info:
            ip.run_cell(cell)
        assert "\n" not in str(info.value)
    assert all(server.request_count == 0 for server in servers)


def test_alias_subcommand_defines_a_usable_target(ip, backends) -> None:
    ip.run_line_magic("llm", "alias fast ollama:llama3.2")
    df = run_frame(ip, "%%llm fast openai:gpt-4o-mini\nHi")
    assert list(df["target"]) == ["ollama:llama3.2", "openai:gpt-4o-mini"]
    with pytest.raises(UsageError):
        ip.run_line_magic("llm", "alias bad nosuch:model")


def test_quiet_still_says_when_no_target_answered(ip, backends, capsys) -> None:
    openai_server, ollama_server = backends[:2]
    ip.run_cell("%%llm openai:gpt-4o-mini ollama:llama3.2 -q\nHi")
    assert capsys.readouterr().err == ""  # quiet means quiet while answers come
    openai_server.status = ollama_server.status = 400
    ip.run_cell("%%llm openai:gpt-4o-mini ollama:llama3.2 -q\nHi")
    err = capsys.readouterr().err
    assert err.startswith("%%llm -q: all 2 answers failed (openai: HTTP 400") and "_llm" in err


def test_config_sets_the_default_target(ip, backends) -> None:
    ip.run_line_magic("config", "LLMMagics.default_target = 'ollama:llama3.2'")
    ip.run_cell("%%llm\nHi")
    assert ip.user_ns["_llm"]["target"].iloc[0] == "ollama:llama3.2"


def test_the_python_api_follows_config_as_cells_do(ip, backends) -> None:
    openai_server = backends[0]
    ip.run_line_magic("config", "LLMMagics.default_target = 'ollama:llama3.2'")
    ip.run_line_magic("config", "LLMMagics.retries = 0")
    ip.run_cell("import llm_magic")
    df = ip.run_cell("llm_magic.compare('Hi')").result
    assert list(df["target"]) == ["ollama:llama3.2"]
    assert str(ip.run_cell("llm_magic.complete('Hi')").result).startswith("Echo from llama3.2")
    openai_server.status = 503  # retried twice by default; %config says not at all
    ip.run_cell("df = llm_magic.compare('Hi', 'openai:gpt-4o-mini')")
    assert openai_server.request_count == 1 and "503" in ip.user_ns["df"]["error"].iloc[0]
    ip.run_line_magic("config", "LLMMagics.retries = 1")  # read at each call, not at load
    ip.run_cell("df = llm_magic.compare('Hi', 'openai:gpt-4o-mini')")
    assert openai_server.request_count == 3
    # a keyword passed to compare() still wins over %config, as a cell's option does
    ip.run_cell("df = llm_magic.compare('Hi', 'openai:gpt-4o-mini', retries=0)")
    assert openai_server.request_count == 4


def test_aliases_and_endpoints_from_the_config_file(ip, backends, isolated_env, monkeypatch):
    openai_server = backends[0]
    (isolated_env / "config.toml").write_text(
        'default_target = "mine:served-model"\n'
        "[aliases]\n"
        'safe = "mine:served-model"\n'
        "[providers.mine]\n"
        'kind = "openai"\n'
        f'base_url = "{openai_server.url}"\n'
        'api_key_env = "MINE_KEY"\n'
    )
    monkeypatch.setenv("MINE_KEY", KEY)
    ip.run_cell("%%llm\nHi")
    assert ip.user_ns["_llm"]["target"].iloc[0] == "mine:served-model"
    ip.run_cell("%%llm safe\nHi")
    assert ip.user_ns["_llm"]["target"].iloc[0] == "mine:served-model"
    assert openai_server.requests[-1].headers["authorization"] == f"Bearer {KEY}"
