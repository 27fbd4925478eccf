"""Port discovery, backend status and model listing, against loopback servers on real sockets."""

from __future__ import annotations

import struct
import threading
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from servers.base import Exchange, TestServer
from servers.ollama_server import OllamaServer

from llm_magic import _backends as backends
from llm_magic import _discovery as discovery
from llm_magic._backends import Backend, configured_backends, models_table, status_table
from llm_magic._discovery import Found, discover, gather, loopback_port, probe_port
from llm_magic.errors import ConnectFailed, TimedOut, UnknownProvider

KEY = "sk-SENTINEL-discovery-0123456789"


class CompatServer(TestServer):
    """An OpenAI-compatible server that lists models the way one product does.

    entries: the /v1/models `data`; extra: other GET routes (path -> JSON body).
    """

    def __init__(self, entries: list[dict[str, Any]], extra: dict[str, Any] | None = None):
        super().__init__()
        self.routes[("GET", "/v1/models")] = lambda ex: ex.send_json(
            200, {"object": "list", "data": entries}
        )
        for path, body in (extra or {}).items():
            self.routes[("GET", path)] = lambda ex, body=body: ex.send_json(200, body)


def write_gguf(path: Path, metadata: dict[str, str | int]) -> Path:
    """A header-only GGUF v3 file: no tensors, string and uint32 metadata."""

    def text(s: str) -> bytes:
        raw = s.encode()
        return struct.pack("<Q", len(raw)) + raw

    out = b"GGUF" + struct.pack("<IQQ", 3, 0, len(metadata))
    for key, value in metadata.items():
        if isinstance(value, str):
            out += text(key) + struct.pack("<I", 8) + text(value)
        else:
            out += text(key) + struct.pack("<II", 4, value)
    path.write_bytes(out)
    return path


@pytest.fixture
def servers(monkeypatch, openai_server, ollama_server, mistral_server):
    monkeypatch.setenv("OLLAMA_HOST", ollama_server.url)
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.url)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("MISTRAL_BASE_URL", mistral_server.url)
    monkeypatch.setenv("MISTRAL_API_KEY", KEY)
    return openai_server, ollama_server, mistral_server


# --- probing one port ---------------------------------------------------------------------------


def test_ollama_is_recognised_by_api_version(ollama_server):
    found = probe_port(ollama_server.port)
    assert found is not None
    assert (found.kind, found.preset, found.server) == ("ollama", "ollama", "Ollama")
    assert found.version == "0.12.6" and found.base_url == ollama_server.url
    assert found.rtt_s > 0
    # Asked on the loopback address, /api/version first.
    first = ollama_server.requests[0]
    assert (first.method, first.path) == ("GET", "/api/version")
    assert first.headers["host"] == f"127.0.0.1:{ollama_server.port}"


def test_an_openai_compatible_server_is_recognised_by_v1_models(openai_server):
    found = probe_port(openai_server.port)
    assert found is not None
    assert (found.kind, found.preset, found.server) == ("openai", None, "OpenAI-compatible")
    assert found.base_url == openai_server.url  # ends in /v1, ready for <NAME>_BASE_URL
    assert [r.path for r in openai_server.requests] == ["/api/version", "/v1/models"]


def test_a_server_that_wants_a_key_is_still_recognised(openai_server):
    openai_server.api_key = KEY  # /v1/models answers 401 without it
    found = probe_port(openai_server.port)
    assert found is not None and found.kind == "openai"


@pytest.mark.parametrize(
    ("entries", "extra", "preset", "server", "version"),
    [
        (
            [{"id": "q", "object": "model", "owned_by": "vllm", "max_model_len": 4096}],
            {"/version": {"version": "0.9.2"}},
            "vllm",
            "vLLM",
            "0.9.2",
        ),
        (
            [{"id": "q", "object": "model", "owned_by": "llamacpp", "meta": {"n_ctx_train": 8192}}],
            {"/props": {"build_info": "b6000-abc"}},
            "llamacpp",
            "llama.cpp",
            "b6000-abc",
        ),
        (
            [{"id": "smollm2", "object": "model", "owned_by": "me", "permissions": []}],
            {},
            "llamacpp",
            "llama-cpp-python",
            None,
        ),
        (
            [{"id": "qwen3-4b", "object": "model", "owned_by": "organization_owner"}],
            {},
            "lmstudio",
            "LM Studio",
            None,
        ),
        ([{"id": "gpt4all-j", "object": "model"}], {}, "localai", "LocalAI", None),
    ],
)
def test_the_product_is_told_by_what_its_model_list_says(entries, extra, preset, server, version):
    with CompatServer(entries, extra) as srv:
        found = probe_port(srv.port)
    assert found is not None
    assert (found.kind, found.preset, found.server, found.version) == (
        "openai",
        preset,
        server,
        version,
    )


def test_nothing_listening_is_nothing_found(refused_url):
    assert probe_port(loopback_port(refused_url)) is None


def test_an_http_server_without_an_llm_api_is_listed_as_unknown():
    with TestServer() as srv:  # answers 404 to everything
        found = probe_port(srv.port)
    assert found is not None
    assert found.kind == "http" and found.server == "unknown HTTP server (HTTP 404)"


def test_loopback_port_accepts_only_loopback_hosts():
    assert loopback_port("http://127.0.0.1:11434") == 11434
    assert loopback_port("http://localhost:8000/v1") == 8000
    assert loopback_port("127.0.0.1:1234") == 1234
    assert loopback_port("https://api.openai.com/v1") is None
    assert loopback_port("http://10.0.0.5:8080") is None
    assert loopback_port(None) is None


# --- discovering several ports -------------------------------------------------------------------


def test_discover_lists_what_answers_and_skips_the_rest(ollama_server, openai_server, refused_url):
    found = discover([ollama_server.port, loopback_port(refused_url), openai_server.port])
    assert {(f.port, f.kind) for f in found} == {
        (ollama_server.port, "ollama"),
        (openai_server.port, "openai"),
    }


def test_discover_probes_the_module_default_ports(monkeypatch, ollama_server):
    monkeypatch.setattr(discovery, "DEFAULT_PORTS", (ollama_server.port,))
    assert [f.port for f in discover()] == [ollama_server.port]
    assert discover([]) == []


def test_discover_probes_the_ports_at_the_same_time():
    # Each server answers only once both have been asked: probed one after the other, the first
    # probe would give up (1 s timeout) before the second server was even asked.
    barrier = threading.Barrier(2, timeout=5)

    def version(ex: Exchange) -> None:
        try:
            barrier.wait()
        except threading.BrokenBarrierError:
            return ex.send_json(503, {"error": "alone"})
        ex.send_json(200, {"version": "0.0.1"})

    with TestServer() as one, TestServer() as two:
        for srv in (one, two):
            srv.routes[("GET", "/api/version")] = version
        found = discover([one.port, two.port], timeout=1.0)
    assert sorted(f.port for f in found) == sorted([one.port, two.port])
    assert all(f.kind == "ollama" for f in found)


def test_gather_keeps_results_errors_and_gives_up_at_the_deadline():
    release = threading.Event()
    try:
        got = gather({"ok": lambda: 1, "bad": lambda: 1 / 0, "slow": release.wait}, deadline=0.3)
    finally:
        release.set()
    assert got["ok"] == 1
    assert isinstance(got["bad"], ZeroDivisionError)
    assert isinstance(got["slow"], TimedOut)


# --- which backends are configured ---------------------------------------------------------------


def test_without_keys_only_the_local_backends_are_configured():
    names = [b.name for b in configured_backends()]
    assert names == ["llamacpp", "lmstudio", "local", "localai", "ollama", "vllm"]
    by_name = {b.name: b for b in configured_backends()}
    assert by_name["ollama"].default_local and by_name["ollama"].source == "built-in default"
    assert not by_name["local"].default_local and by_name["local"].source == "in-process"


def test_a_key_a_base_url_or_a_config_table_configures_a_provider(monkeypatch, isolated_env):
    monkeypatch.setenv("GROQ_API_KEY", KEY)
    monkeypatch.setenv("MISTRAL_BASE_URL", "http://127.0.0.1:9/")
    (isolated_env / "config.toml").write_text(
        '[providers.work]\nkind = "openai"\nbase_url = "http://127.0.0.1:9/v1"\n'
    )
    by_name = {b.name: b for b in configured_backends()}
    assert by_name["groq"].source == "built-in default"
    assert by_name["mistral"].source == "environment MISTRAL_BASE_URL"
    assert by_name["work"].source.startswith("config file ")
    assert "openai" not in by_name and "deepseek" not in by_name  # no key: never contacted


def test_presets_sharing_a_default_port_keep_the_one_the_server_names():
    url = "http://127.0.0.1:8080/v1"
    both = [
        Backend("llamacpp", "openai", url, "built-in default", default_local=True),
        Backend("localai", "openai", url, "built-in default", default_local=True),
    ]
    seen = Found(8080, "openai", "localai", "LocalAI", url, 0.001)
    assert [b.name for b in backends._with_discovered(both, [seen])] == ["localai"]
    unsure = Found(8080, "openai", None, "OpenAI-compatible", url, 0.001)
    assert [b.name for b in backends._with_discovered(both, [unsure])] == ["llamacpp", "localai"]


# --- status ---------------------------------------------------------------------------------------


def test_status_checks_configured_backends_and_names_discovered_ones(servers):
    openai_server, ollama_server, mistral_server = servers
    with OllamaServer(version="0.13.0") as stray:  # answers, but OLLAMA_HOST points elsewhere
        frame = status_table(ports=[ollama_server.port, stray.port, openai_server.port])
    rows = frame.set_index("provider")
    assert frame["reachable"].dtype == "boolean"
    ollama = rows.loc["ollama"]
    assert ollama["reachable"] and ollama["version"] == "0.12.6" and ollama["server"] == "Ollama"
    assert ollama["source"] == "environment OLLAMA_HOST" and ollama["rtt_ms"] > 0
    assert ollama["base_url"] == ollama_server.url and pd.isna(ollama["error"])
    assert rows.loc["openai", "reachable"] and rows.loc["openai", "rtt_ms"] > 0
    assert rows.loc["mistral", "reachable"] and rows.loc["mistral", "server"] == "Mistral API"
    stray_row = rows.loc[f"ollama@{stray.port}"]
    assert stray_row["reachable"] and stray_row["version"] == "0.13.0"
    assert stray_row["source"] == (
        f"discovered on port {stray.port}; set OLLAMA_HOST={stray.url} to use it"
    )
    assert rows.loc["local", "server"] == "llama.cpp in-process"
    assert KEY not in frame.to_string()


def test_status_reports_a_dead_backend_in_its_row(monkeypatch, refused_url):
    monkeypatch.setenv("OLLAMA_HOST", refused_url)
    rows = status_table(ports=[]).set_index("provider")
    assert not rows.loc["ollama", "reachable"]
    assert rows.loc["ollama", "error"].startswith("cannot connect")
    assert pd.isna(rows.loc["ollama", "rtt_ms"])


def test_status_never_contacts_a_cloud_api_without_a_key():
    names = set(status_table(ports=[])["provider"])
    assert names.isdisjoint({"openai", "mistral", "groq", "deepseek", "xai", "gemini"})


# --- models ----------------------------------------------------------------------------------


def test_models_lists_every_reachable_backend_in_one_table(servers, tmp_path, monkeypatch):
    openai_server, ollama_server, mistral_server = servers
    folder = tmp_path / "models"
    folder.mkdir()
    write_gguf(folder / "tiny.gguf", {"general.architecture": "llama", "llama.context_length": 512})
    monkeypatch.setenv("LLM_MAGIC_MODELS", str(folder))
    frame, notes = models_table(ports=[])
    assert list(frame.columns) == list(backends.MODEL_COLUMNS)
    assert str(frame["modified"].dtype) == "datetime64[ns, UTC]"
    rows = frame.set_index(["provider", "model"])
    llama = rows.loc[("ollama", "llama3.2:latest")]
    # /api/tags has no context length: it comes from /api/show.
    assert llama["context_length"] == 131072 and llama["size_gb"] == pytest.approx(2.019, abs=1e-3)
    assert llama["details"]["parameter_size"] == "3.2B"
    assert rows.loc[("ollama", "qwen2.5:0.5b"), "context_length"] == 32768
    assert set(frame.loc[frame["provider"] == "openai", "model"]) == set(openai_server.models)
    assert rows.loc[("mistral", "codestral-latest"), "context_length"] == 262144
    tiny = rows.loc[("local", "tiny.gguf")]
    assert tiny["context_length"] == 512 and tiny["details"]["architecture"] == "llama"
    assert notes == ["not running (default ports on 127.0.0.1): llamacpp, lmstudio, localai, vllm"]


def test_an_unreachable_backend_is_a_note_not_an_exception(servers, monkeypatch, refused_url):
    monkeypatch.setenv("OLLAMA_HOST", refused_url)
    frame, notes = models_table(ports=[])
    assert "ollama" not in set(frame["provider"]) and "openai" in set(frame["provider"])
    (note,) = [n for n in notes if "ollama" in n]
    assert note.startswith(f"skipped ollama ({refused_url}): cannot connect")
    assert "\n" not in note


def test_a_silent_server_on_a_default_port_is_not_called_not_running():
    # A refused connection on a preset's default port: nobody set it up, one shared line. A
    # connection taken and never answered: something runs there and is stuck; say so.
    silent = Backend("lmstudio", "openai", "http://127.0.0.1:1234/v1", "built-in default", True)
    down = Backend("vllm", "openai", "http://127.0.0.1:8000/v1", "built-in default", True)
    failures = [
        (silent, TimedOut("did not answer within 5 s", provider="lmstudio")),
        (down, ConnectFailed("cannot connect: [Errno 111] Connection refused", provider="vllm")),
    ]
    assert backends.notes_for(failures, quiet_defaults=True) == [
        "skipped lmstudio (http://127.0.0.1:1234/v1): did not answer within 5 s",
        "not running (default ports on 127.0.0.1): vllm",
    ]


def test_models_of_one_provider(servers):
    frame, notes = models_table("ollama")
    assert set(frame["provider"]) == {"ollama"} and len(frame) == 2 and notes == []
    with pytest.raises(UnknownProvider, match="unknown provider 'olama'"):
        models_table("olama")


def test_one_cloud_provider_without_a_key_says_which_variable(monkeypatch):
    frame, notes = models_table("groq")
    assert frame.empty
    assert notes == ["skipped groq: no API key: set GROQ_API_KEY"]


def test_models_of_a_discovered_server_carry_its_port(servers):
    with OllamaServer(models=["phi3:mini"]) as stray:
        frame, _ = models_table(ports=[stray.port])
    assert list(frame.loc[frame["provider"] == f"ollama@{stray.port}", "model"]) == ["phi3:mini"]


def test_a_plugin_whose_health_check_raises_gets_a_row_not_a_crash(monkeypatch):
    from llm_magic import providers

    class Broken:
        name, base_url = "plug", "http://127.0.0.1:9"

        def health(self):
            raise RuntimeError(f"boom with {KEY}")

    monkeypatch.setenv("PLUG_API_KEY", KEY)  # a secret the process knows: redacted everywhere
    monkeypatch.setitem(providers._registered, "plug", lambda name: Broken())
    monkeypatch.setattr(providers, "_instances", {})
    row = status_table(ports=[]).set_index("provider").loc["plug"]
    assert not row["reachable"] and row["server"] == "plugin"
    assert row["error"] == "RuntimeError: boom with ***"


@pytest.mark.local_model
def test_the_real_llama_cpp_python_server_is_recognised(llamacpp_server):
    found = probe_port(loopback_port(llamacpp_server))
    assert found is not None
    assert (found.kind, found.preset, found.server) == ("openai", "llamacpp", "llama-cpp-python")
    assert found.base_url == llamacpp_server
