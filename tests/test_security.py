"""A sentinel API key through every path: it may reach the server, and nothing else.

Also: model text holding <script> is escaped in side_by_side() and in the live display, and
escape sequences, controls and bidi overrides from a model are shown visibly in every view.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from llm_magic import _api as api
from llm_magic import _discovery as discovery
from llm_magic import providers
from llm_magic._availability import check_targets
from llm_magic._panel_view import metrics_html, status_html
from llm_magic._records import RunRecord
from tests.cells import run_frame

SENTINEL = "sk-SENTINEL-0123456789abcdef"
XSS = "<script>alert('x')</script>"
# Window title, OSC 52 clipboard write, colour, 8-bit CSI, bidi override and isolate.
ESCAPES = (
    "\x1b]0;pwned\x07\x1b]52;c;ZXZpbA==\x07 \x1b[31mred\x1b[0m \x9b2J \u202eexe.txt \u2066x\u2069"
)
SHOWN = ("\\x1b]0;pwned\\x07", "\\x1b]52;c;ZXZpbA==\\x07", "\\x1b[31mred", "\\x9b2J", "U+202E")
ACTIVE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
# A base URL holding a password and a key in its query; port 1: nothing answers there.
CREDENTIALED = "http://user:secretpw@127.0.0.1:1/v1?key=querysecret"


@pytest.fixture
def keyed(ip, backends, published, monkeypatch, isolated_env):
    for var in ("OPENAI_API_KEY", "MISTRAL_API_KEY", "ANTHROPIC_API_KEY", "GROQ_API_KEY"):
        monkeypatch.setenv(var, SENTINEL)
    return ip, backends.openai, backends.mistral, isolated_env


def everything_shown(ip) -> str:
    return "\n".join(str(o["data"]) for o in ip.display_pub.outputs)


def rendered(ip) -> str:
    """What a frontend renders as markup (text/plain is shown as plain text, never parsed)."""
    kinds = ("text/html", "text/markdown")
    return "\n".join(o["data"].get(k, "") for o in ip.display_pub.outputs for k in kinds)


def test_the_sentinel_reaches_the_server_and_nothing_else(keyed, backends, capsys) -> None:
    ip, openai_server, mistral_server, home = keyed
    servers = (openai_server, mistral_server, backends.anthropic)
    cell = "%%llm openai:gpt-4o-mini mistral:mistral-small-latest anthropic:claude-haiku-4-5"
    texts: list[str] = []
    # Success, then failures whose server text echoes the key back (a careless proxy does that).
    df = run_frame(ip, f"{cell}\nHi")
    texts.append(df.to_string() + df.to_json(date_format="iso"))
    assert openai_server.requests[-1].headers["authorization"] == f"Bearer {SENTINEL}"
    assert backends.anthropic.requests[-1].headers["x-api-key"] == SENTINEL
    for status in (401, 429, 500):
        for server in servers:
            server.status, server.error_message = status, f"key {SENTINEL} refused"
        df = run_frame(ip, f"{cell} --retries 0\nHi")
        assert df["error"].notna().all()
        texts.append(df.to_string() + df.to_json(date_format="iso"))
    for server in servers:
        server.status = None
    openai_server.reply = f"your key is {SENTINEL}"  # a model that repeats the key
    df = run_frame(ip, "%%llm openai:gpt-4o-mini --cache\nHi")
    texts.append(repr(ip.user_ns["_llm"]) + ip.user_ns["_llm"].to_json(date_format="iso"))
    for sub in ("history 50", "config", "providers", "status", "models"):
        result = ip.run_line_magic("llm", sub)
        texts.append(result.to_string() if hasattr(result, "to_string") else repr(result))
    texts.append(repr(api.complete("Hi", "mistral:mistral-small-latest")))
    texts.append(repr(api.complete("Hi", "anthropic:claude-haiku-4-5")))
    texts.append(repr(providers.get_provider("openai")) + repr(providers.get_provider("groq")))
    texts.append(everything_shown(ip))
    captured = capsys.readouterr()
    texts.append(captured.out + captured.err)
    leaks = [t for t in texts if SENTINEL in t]
    assert not leaks, leaks[0][:300]
    # The log and cache on disk, every file of the database (main, -wal, -shm).
    for path in Path(home / "home").rglob("*"):
        if path.is_file():
            assert SENTINEL.encode() not in path.read_bytes(), path


def test_model_html_is_escaped_everywhere(keyed) -> None:
    ip, openai_server, mistral_server, _ = keyed
    openai_server.reply = mistral_server.reply = XSS
    df = run_frame(ip, "%%llm openai:gpt-4o-mini mistral:mistral-small-latest\nHi")
    live = rendered(ip)
    assert "&lt;script&gt;" in live and "<script>" not in live
    side = df.llm.side_by_side()._repr_html_()
    assert "&lt;script&gt;" in side and "<script>" not in side
    ip.display_pub.outputs.clear()
    ip.run_cell("%%llm openai:gpt-4o-mini\nHi")  # one target: the Markdown view
    assert "<script>" not in rendered(ip)
    ip.display_pub.outputs.clear()
    ip.run_cell("%%llm openai:gpt-4o-mini -f html\nHi")  # the one explicit opt-in
    assert "<script>" in rendered(ip)


def test_credentials_in_a_base_url_are_masked_wherever_it_is_shown(
    ip, monkeypatch, capsys, isolated_env
) -> None:
    monkeypatch.setenv("VLLM_BASE_URL", CREDENTIALED)
    monkeypatch.setattr(discovery, "DEFAULT_PORTS", ())  # the configured backends only
    texts: list[str] = []
    frames = {sub: ip.run_line_magic("llm", sub) for sub in ("providers", "status", "config")}
    masked = "http://user:***@127.0.0.1:1/v1?key=***"
    for sub in ("providers", "status"):
        frame = frames[sub]
        assert frame[frame["provider"] == "vllm"]["base_url"].tolist() == [masked], sub
    frames["models"] = ip.run_line_magic("llm", "models")  # its note names the URL
    for frame in frames.values():
        with pd.option_context("display.max_colwidth", None, "display.max_columns", None):
            texts.append(frame.to_string())
        texts.append(frame.to_json(date_format="iso", default_handler=str))
    ip.run_cell("%%llm vllm:any-model --retries 0 -q\nHi")
    df = ip.user_ns["_llm"]
    assert df["error"].iloc[0].startswith("vllm: cannot connect")
    texts.append(df.to_string() + df.to_json(date_format="iso", default_handler=str))
    texts += [str(a) for a in check_targets(["vllm:any-model"])]
    vllm = providers.get_provider("vllm")
    texts += [repr(vllm), repr(vllm.health())]
    assert masked in repr(vllm)
    captured = capsys.readouterr()
    assert f"skipped vllm ({masked})" in captured.out
    texts += [captured.out, captured.err]
    leaks = [t for t in texts if "secretpw" in t or "querysecret" in t]
    assert not leaks, leaks[0][:300]
    for path in Path(isolated_env / "home").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert b"secretpw" not in data and b"querysecret" not in data, path


def test_escape_sequences_from_a_model_are_visible_in_every_view(keyed) -> None:
    ip, openai_server, mistral_server, _ = keyed
    openai_server.reply = mistral_server.reply = ESCAPES
    shown = ip.run_cell("%%llm openai:gpt-4o-mini mistral:mistral-small-latest\nHi").result
    df = ip.user_ns["_llm"]
    assert df["output"].tolist() == [ESCAPES, ESCAPES]  # the DataFrame keeps the raw text
    ip.run_cell("%%llm openai:gpt-4o-mini\nHi")  # one target: the Markdown view
    views = {
        # every MIME type of every update, text/plain too
        "live": "\n".join(v for o in ip.display_pub.outputs for v in o["data"].values()),
        "side_by_side": df.llm.side_by_side()._repr_html_(),
        "side_by_side markdown": df.llm.side_by_side("markdown")._repr_html_(),
        "end of run": shown.to_html() + repr(shown),
    }
    with pd.option_context("display.max_colwidth", None):
        views["side_by_side repr"] = repr(df.llm.side_by_side())  # what a terminal prints
    failed = RunRecord("r", "a:x", "a", "x", "Hi", error=f"a: HTTP 500: {ESCAPES}")
    views["panel metrics"] = metrics_html([failed])
    views["panel status"] = status_html("failed", ESCAPES, [(f"{ESCAPES} · error", "error")])
    for name, text in views.items():
        assert not ACTIVE.search(text), name
        assert all(piece in text for piece in SHOWN), name


WORK_KEY = "W0RK0plain0key0only0the0config0names"  # no key shape, no *_API_KEY variable


@pytest.mark.parametrize(
    ("kind", "header", "sent"),
    [("openai", "authorization", "Bearer {key}"), ("anthropic", "x-api-key", "{key}")],
)
def test_a_key_only_the_config_names_is_hidden_everywhere(
    ip, backends, published, monkeypatch, capsys, isolated_env, kind, header, sent
) -> None:
    server = getattr(backends, kind)
    (isolated_env / "config.toml").write_text(
        f'[providers.work]\nkind = "{kind}"\nbase_url = "{server.url}"\n'
        'api_key_env = "WORK_LLM_KEY"\n'
    )
    monkeypatch.setenv("WORK_LLM_KEY", WORK_KEY)
    server.echo_headers = True  # a debugging proxy's answer: the request's headers
    ip.run_cell("%%llm work:big-model\nHi")
    df = ip.user_ns["_llm"]
    assert server.chat_requests()[-1].headers[header] == sent.format(key=WORK_KEY)
    assert f"{header}: {sent.format(key='***')}" in df["output"].iloc[0]
    texts = [df.to_string() + df.to_json(date_format="iso"), df.llm.side_by_side()._repr_html_()]
    server.echo_headers = False
    server.reply = f"the key you sent is {WORK_KEY} as far as I can tell"  # the bare key
    ip.run_cell("%%llm work:big-model\nHi")
    df = ip.user_ns["_llm"]
    assert df["output"].iloc[0] == "the key you sent is *** as far as I can tell"
    texts += [df.to_string() + df.to_json(date_format="iso"), df.llm.side_by_side()._repr_html_()]
    answer = api.complete("Hi", "work:big-model")
    texts += [answer.text, repr(answer), repr(answer.record)]
    server.status, server.error_message = 500, f"upstream refused key {WORK_KEY}"
    ip.run_cell("%%llm work:big-model --retries 0\nHi")
    df = ip.user_ns["_llm"]
    assert "upstream refused key ***" in df["error"].iloc[0]
    texts += [df.to_string() + df.to_json(date_format="iso")]
    texts.append(ip.run_line_magic("llm", "history 20").to_string())
    texts += [str(o["data"]) for o in published.outputs]
    captured = capsys.readouterr()
    texts += [captured.out, captured.err]
    leaks = [t for t in texts if WORK_KEY in t]
    assert not leaks, leaks[0][:300]
    for path in Path(isolated_env / "home").rglob("*"):
        if path.is_file():
            assert WORK_KEY.encode() not in path.read_bytes(), path
