"""The transport under every HTTP provider, on real sockets: proxies from the environment and
the config file (a loopback forward proxy, absolute-form and CONNECT), NO_PROXY, proxy
credentials never shown, redirects refused with where they point, and the one private
attribute of httpx2 it relies on."""

from __future__ import annotations

import importlib.util
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import trustme
from cells import run_frame
from servers.forward_proxy import ForwardProxy

from llm_magic import _api as api
from llm_magic import errors
from llm_magic._redaction import redact
from llm_magic.providers import _sockets
from llm_magic.providers._openai import OpenAIProvider
from llm_magic.providers._proxy import proxy_route, proxy_shown, route_for
from llm_magic.providers.base import CancelToken, Message, Options

MODELS = {
    "openai": "gpt-4o-mini",
    "ollama": "llama3.2",
    "mistral": "mistral-small-latest",
    "anthropic": "claude-haiku-4-5",
}
URL_VARIABLES = {
    "openai": "OPENAI_BASE_URL",
    "ollama": "OLLAMA_HOST",
    "mistral": "MISTRAL_BASE_URL",
    "anthropic": "ANTHROPIC_BASE_URL",
}
# Where each provider's chat request goes under its base URL.
CHAT_PATHS = {
    "openai": "/chat/completions",
    "ollama": "/api/chat",
    "mistral": "/v1/chat/completions",
    "anthropic": "/v1/messages",
}
PROXY_PASSWORD = "pr0xy-Pa55word-4-tests"


@pytest.fixture
def proxy() -> Iterator[ForwardProxy]:
    with ForwardProxy() as running:
        yield running


@pytest.fixture
def tls_proxy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ForwardProxy]:
    """A proxy whose CONNECT tunnels end TLS for https://localhost:PORT (a throwaway CA the
    client trusts through SSL_CERT_FILE) and carry plain HTTP to the loopback server there."""
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(context)
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))
    with ForwardProxy(tls=context) as running:
        yield running


def server_of(backends, kind: str):
    return getattr(backends, kind)


def ask(kind: str, **options) -> str:
    return api.complete("Hi", f"{kind}:{MODELS[kind]}", retries=0, **options).text


@pytest.mark.parametrize("kind", MODELS)
def test_http_proxy_carries_every_provider_in_absolute_form(
    backends, proxy, monkeypatch, kind
) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    server = server_of(backends, kind)
    answer = ask(kind)
    assert answer.startswith("Echo from")
    (seen,) = [r for r in proxy.requests if r.method == "POST"]
    assert seen.target == server.root_url + server.chat_requests()[0].path  # absolute form
    # The server got an origin-form request without the proxy's own headers.
    assert "proxy-authorization" not in server.chat_requests()[0].headers


@pytest.mark.parametrize("kind", MODELS)
def test_https_proxy_tunnels_every_provider_with_connect(
    backends, tls_proxy, monkeypatch, kind
) -> None:
    server = server_of(backends, kind)
    monkeypatch.setenv("HTTPS_PROXY", tls_proxy.url)
    https = server.url.replace("http://127.0.0.1", "https://localhost")
    monkeypatch.setenv(URL_VARIABLES[kind], https)
    assert ask(kind).startswith("Echo from")
    assert {r.method for r in tls_proxy.requests} == {"CONNECT"}
    assert tls_proxy.requests[0].target == f"localhost:{server.port}"
    assert server.chat_requests(), "the tunnel reached the server"


def test_all_proxy_serves_when_the_schemes_own_variable_is_unset(
    backends, proxy, monkeypatch
) -> None:
    monkeypatch.setenv("all_proxy", proxy.url.removeprefix("http://"))  # no scheme: http
    ask("openai")
    assert [r.method for r in proxy.requests] == ["POST"]


@pytest.mark.parametrize("no_proxy", ["127.0.0.1", "*", "127.0.0.0/8", "other.example, 127.0.0.1"])
def test_no_proxy_sends_direct(backends, proxy, monkeypatch, no_proxy) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("no_proxy", no_proxy)
    assert ask("mistral").startswith("Echo from")
    assert proxy.requests == []
    assert backends.mistral.chat_requests()


@pytest.mark.parametrize(
    ("host", "port", "no_proxy", "direct"),
    [
        ("api.example.com", 443, "example.com", True),  # the domain and its subdomains
        ("example.com", 443, "example.com", True),
        ("notexample.com", 443, "example.com", False),
        ("example.com", 443, ".example.com", False),  # subdomains only
        ("api.example.com", 443, ".example.com", True),
        ("example.com", 443, "*.example.com", False),
        ("a.b.example.com", 443, "*.example.com", True),
        ("api.example.com", 443, "example.com:8443", False),  # that port only
        ("api.example.com", 8443, "example.com:8443", True),
        ("api.example.com", None, "example.com:443", True),  # the scheme's default port
        ("10.1.2.3", 443, "10.0.0.0/8", True),
        ("11.1.2.3", 443, "10.0.0.0/8", False),
        ("::1", 443, "::1", True),
        ("::1", 443, "[::1]", True),
        ("localhost", 443, "localhost", True),
        ("api.example.com", 443, "https://api.example.com", True),
        ("api.example.com", 443, "http://api.example.com", False),  # another scheme
        ("API.Example.COM", 443, "example.com", True),  # names are case-blind
        ("api.example.com", 443, "example.com/path", False),  # no known shape: ignored
        ("api.example.com", 443, "", False),
    ],
)
def test_no_proxy_rules(monkeypatch, host, port, no_proxy, direct) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.corp:3128")
    monkeypatch.setenv("NO_PROXY", no_proxy)
    route = route_for("https", host, port, None)
    assert (route.proxy is None) is direct


def test_which_variable_applies(monkeypatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://upper:1")
    monkeypatch.setenv("https_proxy", "http://lower:2")  # lower-case wins, as in urllib
    monkeypatch.setenv("HTTP_PROXY", "http://plain:3")
    assert route_for("https", "api.example.com", None, None).proxy == "http://lower:2"
    assert route_for("http", "api.example.com", None, None).proxy == "http://plain:3"
    monkeypatch.setenv("https_proxy", "")  # an empty lower-case value unsets it
    assert route_for("https", "api.example.com", None, None).proxy is None
    monkeypatch.setenv("REQUEST_METHOD", "GET")  # in a CGI request HTTP_PROXY is a header
    assert route_for("http", "api.example.com", None, None).proxy is None
    # The provider's own `proxy` wins over everything; "" means direct.
    assert route_for("http", "api.example.com", None, "corp:8080").proxy == "http://corp:8080"
    assert route_for("http", "api.example.com", None, "").proxy is None


def test_config_proxy_wins_over_the_environment(
    backends, proxy, monkeypatch, isolated_env
) -> None:
    (isolated_env / "config.toml").write_text(
        f'[providers.work]\nkind = "openai"\nbase_url = "{backends.openai.url}"\n'
        f'proxy = "{proxy.url}"\n\n[providers.direct]\nkind = "openai"\n'
        f'base_url = "{backends.openai.url}"\nproxy = ""\n'
    )
    monkeypatch.setenv("NO_PROXY", "*")
    assert api.complete("Hi", "work:m", retries=0).text.startswith("Echo from")
    assert [r.method for r in proxy.requests] == ["POST"]
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:1")  # nothing there: must not be used
    monkeypatch.delenv("NO_PROXY")
    assert api.complete("Hi", "direct:m", retries=0).text.startswith("Echo from")
    assert len(proxy.requests) == 1
    shown = proxy_route("work", backends.openai.url).shown()
    assert shown == f"{proxy.url} (config file)"


@pytest.mark.parametrize(
    ("proxy_url", "words"),
    [("ftp://127.0.0.1:1", "Unknown scheme"), ("socks5://127.0.0.1:1", "socksio")],
)
def test_an_unusable_proxy_is_one_line_in_the_row(
    ip, backends, monkeypatch, proxy_url, words
) -> None:
    if "socks" in proxy_url and importlib.util.find_spec("socksio") is not None:
        pytest.skip("socksio is installed: a socks proxy is usable")
    monkeypatch.setenv("HTTP_PROXY", proxy_url)
    ip.run_cell("%%llm mistral:mistral-small-latest ollama:llama3.2 -q --retries 0\nHi")
    shown = ip.user_ns["_llm"]["error"].tolist()
    start = f"cannot use the proxy {proxy_url} (environment HTTP_PROXY): "
    assert [e.split(": ", 1)[1].startswith(start) for e in shown] == [True, True], shown
    assert all(words in e for e in shown)
    assert backends.mistral.requests == backends.ollama.requests == []


def test_a_proxy_set_mid_session_is_used_by_the_next_request(backends, proxy, monkeypatch) -> None:
    ask("ollama")
    assert proxy.requests == []
    assert proxy_shown("ollama", backends.ollama.url) is None
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    ask("ollama")
    assert [r.method for r in proxy.requests] == ["POST"]


def test_proxy_credentials_are_sent_to_the_proxy_and_never_shown(
    ip, backends, published, monkeypatch, capsys, isolated_env
) -> None:
    with ForwardProxy(credentials=("corp-user", PROXY_PASSWORD)) as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        # A careless server that echoes every header it got, the proxy's too if it forwarded
        # them; and one that puts the password in its error.
        backends.openai.echo_headers = True
        df = run_frame(ip, "%%llm openai:gpt-4o-mini ollama:llama3.2\nHi")
        assert df["error"].isna().all()
        assert proxy.requests[0].headers["proxy-authorization"].startswith("Basic ")
        shown = proxy_shown("openai", backends.openai.url)
        assert shown == f"http://corp-user:***@127.0.0.1:{proxy.port} (environment HTTP_PROXY)"
        basic = proxy.requests[0].headers["proxy-authorization"].removeprefix("Basic ")
        texts = [
            df.to_string(),
            df.llm.side_by_side()._repr_html_(),
            shown,
            redact(f"echoed: {basic} and {PROXY_PASSWORD}"),
        ]
    with ForwardProxy(credentials=("corp-user", "another-password-00")) as wrong:
        monkeypatch.setenv("HTTP_PROXY", wrong.url.replace("another-password-00", PROXY_PASSWORD))
        with pytest.raises(errors.StatusError, match="HTTP 407") as failed:
            ask("mistral")
        texts.append(str(failed.value))
    texts += [str(o["data"]) for o in published.outputs]
    captured = capsys.readouterr()
    texts += [captured.out, captured.err]
    leaks = [t for t in texts if PROXY_PASSWORD in t or basic in t]
    assert not leaks, leaks[0][:300]
    for path in Path(isolated_env / "home").rglob("*"):
        if path.is_file():
            assert PROXY_PASSWORD.encode() not in path.read_bytes(), path


@pytest.mark.parametrize("status", [301, 302, 307, 308])
@pytest.mark.parametrize("kind", MODELS)
def test_a_redirect_is_not_followed_and_says_what_to_set(backends, kind, status) -> None:
    server = server_of(backends, kind)
    server.redirect = status
    new_base = "https://llm.example.com/v1" if kind == "openai" else "https://llm.example.com"
    server.redirect_to = new_base + CHAT_PATHS[kind] + "?token=querysecret"
    with pytest.raises(errors.StatusError) as failed:
        ask(kind)
    message = str(failed.value)
    assert message == (
        f"{kind}: HTTP {status}: the server redirected to "
        f"{new_base}{CHAT_PATHS[kind]}?token=***; set {URL_VARIABLES[kind]} to {new_base}"
    )
    assert not failed.value.retryable
    assert len(server.requests) == 1  # neither followed nor retried


def test_a_redirect_elsewhere_names_the_variable_to_check(backends) -> None:
    backends.openai.redirect = 302
    backends.openai.redirect_to = "/login"  # relative: read against the request's URL
    with pytest.raises(errors.StatusError) as failed:
        ask("openai")
    root = backends.openai.root_url
    assert str(failed.value) == (
        f"openai: HTTP 302: the server redirected to {root}/login; redirects are not "
        "followed: check the base URL (OPENAI_BASE_URL)"
    )


def test_a_redirect_ends_the_row_with_its_line(ip, backends) -> None:
    backends.mistral.redirect = 301  # to the same server, under /moved
    ip.run_cell("%%llm mistral:mistral-small-latest openai:gpt-4o-mini -q\nHi")
    df = ip.user_ns["_llm"]
    errors_by_target = dict(zip(df["target"], df["error"], strict=True))
    moved = f"{backends.mistral.root_url}/moved"
    assert errors_by_target["mistral:mistral-small-latest"] == (
        f"mistral: HTTP 301: the server redirected to {moved}/v1/chat/completions; "
        f"set MISTRAL_BASE_URL to {moved}"
    )
    assert pd.isna(errors_by_target["openai:gpt-4o-mini"])
    assert not [r for r in backends.mistral.requests if r.path.startswith("/moved")]


def test_the_socket_watch_is_installed_in_every_pool(proxy) -> None:
    """httpx2 has no public way to wrap the network backend, so make_client sets the pool's
    private `_network_backend`; this fails if httpx2 moves it (cancelling would then wait for
    a blocked read to time out)."""
    client = _sockets.make_client(name="x", base_url="http://127.0.0.1:1")
    direct = client._transport._pool(None)
    through = client._transport._pool(proxy.url)
    try:
        for transport in (direct, through):
            assert isinstance(transport._pool._network_backend, _sockets._WatchedBackend)
    finally:
        client.close()


def test_key_sent_by_the_transport_is_hidden_from_then_on(backends, monkeypatch) -> None:
    """A key only the request knew (here a header the SDK sends) is hidden once it was sent."""
    key = "plain0key0only0the0request0knew"
    assert redact(f"echo {key}") == f"echo {key}"
    client = _sockets.make_client(name="x", base_url=backends.openai.url)
    try:
        client.get(backends.openai.url + "/models", headers={"x-api-key": key})
    finally:
        client.close()
    assert redact(f"echo {key}") == "echo ***"


def test_a_proxy_that_is_down_is_named(backends, monkeypatch, refused_url) -> None:
    monkeypatch.setenv("HTTP_PROXY", refused_url)
    with pytest.raises(errors.ConnectFailed) as failed:
        ask("ollama")
    assert str(failed.value).startswith(
        f"ollama: cannot connect to the proxy {refused_url} (environment HTTP_PROXY): "
    )
    assert failed.value.retryable


def test_a_tunnel_the_proxy_refuses_is_one_line_without_the_password(
    backends, tmp_path, monkeypatch
) -> None:
    with ForwardProxy(credentials=("corp-user", "the-right-one-000")) as proxy:
        wrong = proxy.url.replace("the-right-one-000", PROXY_PASSWORD)
        monkeypatch.setenv("HTTPS_PROXY", wrong)
        https = backends.openai.url.replace("http://127.0.0.1", "https://localhost")
        monkeypatch.setenv("OPENAI_BASE_URL", https)
        with pytest.raises(errors.ProviderError) as failed:
            ask("openai")
    assert str(failed.value) == (
        f"openai: the proxy http://corp-user:***@127.0.0.1:{proxy.port} "
        "(environment HTTPS_PROXY) refused: 407 Proxy Authentication Required"
    )
    assert not failed.value.retryable
    assert backends.openai.requests == []


def test_status_says_which_proxy_each_backend_uses(ip, backends, monkeypatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", f"http://corp-user:{PROXY_PASSWORD}@127.0.0.1:1")
    monkeypatch.setenv("NO_PROXY", "localhost")
    monkeypatch.setenv("OLLAMA_HOST", backends.ollama.url.replace("127.0.0.1", "localhost"))
    rows = ip.run_line_magic("llm", "status").set_index("provider")
    assert rows.loc["openai", "proxy"] == (
        "http://corp-user:***@127.0.0.1:1 (environment HTTP_PROXY)"
    )
    assert pd.isna(rows.loc["ollama", "proxy"])  # NO_PROXY: direct
    assert PROXY_PASSWORD not in rows.to_string()


@pytest.mark.parametrize("tunnel", [False, True])
def test_cancel_breaks_a_blocked_read_through_a_proxy(
    openai_server, proxy, tls_proxy, monkeypatch, tunnel
) -> None:
    """The socket watch is in the proxy's pools too: a cancel wakes a read blocked on it."""
    openai_server.delay = 60
    if tunnel:
        monkeypatch.setenv("HTTPS_PROXY", tls_proxy.url)
        url = openai_server.url.replace("http://127.0.0.1", "https://localhost")
    else:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        url = openai_server.url
    token = CancelToken()
    timer = threading.Timer(0.3, token.cancel)
    start = time.monotonic()
    timer.start()
    provider = OpenAIProvider(name="openai", base_url=url, api_key=None)
    with provider, pytest.raises(errors.Cancelled):
        list(provider.stream([Message("user", "Hi")], "m", Options(read_timeout=60), token))
    timer.join()
    assert time.monotonic() - start < 10  # far below the 60 s read timeout
    assert (tls_proxy if tunnel else proxy).requests
