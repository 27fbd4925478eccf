"""The loopback test servers speak their protocols on real sockets, and every fault knob works.

Plain httpx2 only: these tests check the servers, not llm_magic's providers.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx2
import pytest
from servers.mistral_server import MistralServer
from servers.ollama_server import OllamaServer
from servers.openai_server import OpenAIServer
from servers.reading import delta_text as openai_text
from servers.reading import ndjson_lines as ndjson
from servers.reading import post_stream
from servers.reading import sse_data as sse
from servers.reading import sse_json as chunks

USER = [{"role": "user", "content": "hello there"}]  # 2 prompt words


@pytest.fixture
def client() -> Iterator[httpx2.Client]:
    with httpx2.Client(timeout=5) as c:
        yield c


# -- the shared machinery --------------------------------------------------------------------
def test_urls_and_request_log(openai_server, ollama_server, mistral_server, client):
    assert openai_server.url == f"http://127.0.0.1:{openai_server.port}/v1"
    assert ollama_server.url == f"http://127.0.0.1:{ollama_server.port}"
    assert mistral_server.url == f"http://127.0.0.1:{mistral_server.port}"
    client.post(
        openai_server.url + "/chat/completions",
        json={"model": "m", "messages": USER},
        headers={"X-Custom": "yes"},
    )
    [req] = openai_server.requests
    assert (req.method, req.path) == ("POST", "/v1/chat/completions")
    assert req.headers["x-custom"] == "yes"
    assert req.body == {"model": "m", "messages": USER} and openai_server.request_count == 1
    openai_server.reset()
    assert openai_server.requests == [] and openai_server.request_count == 0


def test_knobs_settable_on_server_and_reset_restores(openai_server):
    openai_server.delay = 0.25
    openai_server.faults.statuses = [500]
    assert openai_server.faults.delay == 0.25 and openai_server.statuses == [500]
    openai_server.reset()
    assert openai_server.faults.delay == 0 and openai_server.statuses == []


def test_keep_alive_reuses_one_connection(ollama_server, client):
    for _ in range(3):
        assert client.get(ollama_server.url + "/api/version").status_code == 200
        client.post(ollama_server.url + "/api/chat", json={"model": "llama3.2", "messages": USER})
    assert ollama_server.connection_count == 1


def test_chunked_request_body_is_read(openai_server, client):
    body = json.dumps({"model": "m", "messages": USER}).encode()
    r = client.post(openai_server.url + "/chat/completions", content=iter([body[:9], body[9:]]))
    assert r.status_code == 200 and openai_server.requests[0].body["model"] == "m"


def _post_at_once(client: httpx2.Client, url: str, n: int) -> list[int]:
    """The statuses of `n` chat requests sent at the same time."""

    def ask(_: int) -> int:
        return client.post(url, json={"model": "m", "messages": USER}).status_code

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(ask, range(n)))


def test_concurrent_requests_are_served_in_parallel(openai_server, client):
    # Long enough that all 8 requests arrive within one delay even on a busy 2-core machine
    # (at 0.3 s one of them once came in after another had finished).
    openai_server.delay = 1.0
    url = openai_server.url + "/chat/completions"
    start = time.monotonic()
    assert _post_at_once(client, url, 8) == [200] * 8
    assert openai_server.max_in_flight == 8
    assert time.monotonic() - start < 8 * 1.0  # serial handling would take at least 8 s


def test_max_concurrent_serves_that_many_at_a_time_and_queues_the_rest(openai_server, client):
    openai_server.delay = 0.3
    openai_server.max_concurrent = 2
    url = openai_server.url + "/chat/completions"
    assert _post_at_once(client, url, 6) == [200] * 6
    assert openai_server.max_serving == 2  # answered two at a time
    assert openai_server.max_in_flight > 2  # while the others waited with their connection open


def test_stop_ends_idle_and_stalled_connections(client):
    before = threading.active_count()
    server = OpenAIServer().start()
    client.get(server.url + "/models")  # leaves an idle keep-alive connection behind
    server.stall_after = 1
    result: list[Any] = []
    body = {"model": "m", "messages": USER, "stream": True}
    reader = threading.Thread(
        target=lambda: result.append(
            post_stream(client, server.url + "/chat/completions", body, timeout=30)
        )
    )
    reader.start()
    while server.in_flight == 0:
        time.sleep(0.01)
    server.stop()
    reader.join(5)
    assert not reader.is_alive() and threading.active_count() == before
    got, err = result[0]
    assert isinstance(err, httpx2.RemoteProtocolError) and b"Echo" in got


def test_refused_url_refuses(refused_url, client):
    with pytest.raises(httpx2.ConnectError):
        client.get(refused_url)


# -- OpenAI ----------------------------------------------------------------------------------
def test_openai_plain_reply_is_the_default(openai_server, client):
    r = client.post(
        openai_server.url + "/chat/completions", json={"model": "gpt-4o-mini", "messages": USER}
    )
    body = r.json()
    assert r.headers["content-type"].startswith("application/json")
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    assert body["choices"][0]["message"]["content"] == "Echo from gpt-4o-mini: hello there"
    assert body["choices"][0]["finish_reason"] == "stop"
    usage = body["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]) == (2, 5, 7)


@pytest.mark.parametrize("include_usage", [False, True])
def test_openai_stream_wire_shape(openai_server, client, include_usage):
    body = {"model": "gpt-4o-mini", "messages": USER, "stream": True}
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    with client.stream("POST", openai_server.url + "/chat/completions", json=body) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["transfer-encoding"] == "chunked"
        raw = r.read()
    events = sse(raw)
    assert events[-1] == "[DONE]"
    objs = [json.loads(e) for e in events[:-1]]
    assert objs[0]["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    assert {o["id"] for o in objs} == {objs[0]["id"]} and {o["object"] for o in objs} == {
        "chat.completion.chunk"
    }
    finish = objs[-2] if include_usage else objs[-1]
    assert finish["choices"] == [
        {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    ]
    assert openai_text(objs) == "Echo from gpt-4o-mini: hello there"
    if include_usage:
        assert objs[-1]["choices"] == [] and objs[-1]["usage"]["completion_tokens"] == 5
        assert all("usage" not in o for o in objs[:-1])
    else:
        assert all("usage" not in o for o in objs)


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_openai_max_tokens_truncates_with_length(openai_server, client, field):
    openai_server.reply = "one two three four five"
    body = {"model": "m", "messages": USER, field: 2}
    choice = client.post(openai_server.url + "/chat/completions", json=body).json()["choices"][0]
    assert (choice["message"]["content"], choice["finish_reason"]) == ("one two ", "length")


def test_openai_reply_is_streamed_word_by_word_keeping_spaces(openai_server, client):
    openai_server.reply = "Hello  big\nworld "
    openai_server.report_model = "gpt-4o-2024-08-06"
    got, _ = post_stream(
        client,
        openai_server.url + "/chat/completions",
        {"model": "gpt-4o", "messages": USER, "stream": True},
    )
    objs = chunks(got)
    assert [o["choices"][0]["delta"]["content"] for o in objs[1:-1]] == [
        "Hello  ",
        "big\n",
        "world ",
    ]
    assert {o["model"] for o in objs} == {"gpt-4o-2024-08-06"}


def test_openai_server_that_never_sends_usage(client):
    with OpenAIServer(usage=False) as server:
        url = server.url + "/chat/completions"
        body = {
            "model": "m",
            "messages": USER,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        got, _ = post_stream(client, url, body)
        assert all("usage" not in o and o["choices"] for o in chunks(got))
        assert "usage" not in client.post(url, json={"model": "m", "messages": USER}).json()


def test_openai_api_key_is_checked(openai_server, client):
    openai_server.api_key = "sk-right"
    url = openai_server.url + "/chat/completions"
    body = {"model": "m", "messages": USER}
    missing = client.post(url, json=body)
    wrong = client.post(url, json=body, headers={"Authorization": "Bearer sk-wrong"})
    right = client.post(url, json=body, headers={"Authorization": "Bearer sk-right"})
    assert (missing.status_code, wrong.status_code, right.status_code) == (401, 401, 200)
    assert missing.json()["error"]["code"] is None
    assert wrong.json()["error"]["code"] == "invalid_api_key" and "sk-" not in wrong.text
    assert client.get(openai_server.url + "/models").status_code == 401


def test_openai_models_and_unknown_paths(openai_server, client):
    models = client.get(openai_server.url + "/models").json()
    assert models["object"] == "list" and "gpt-4o-mini" in [m["id"] for m in models["data"]]
    r = client.post(openai_server.url + "/completions", json={})
    assert r.status_code == 404
    assert r.json()["error"]["message"] == "Invalid URL (POST /v1/completions)"


def test_openai_rejects_stream_options_without_stream(openai_server, client):
    body = {"model": "m", "messages": USER, "stream_options": {"include_usage": True}}
    r = client.post(openai_server.url + "/chat/completions", json=body)
    assert r.status_code == 400 and r.json()["error"]["param"] == "stream_options"


def test_openai_check_models(client):
    with OpenAIServer(check_models=True) as server:
        r = client.post(server.url + "/chat/completions", json={"model": "nope", "messages": USER})
        assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"


# -- status knobs (all protocols) -----------------------------------------------------------
def _chat(server: Any, client: httpx2.Client, **extra: Any) -> httpx2.Response:
    path = "/api/chat" if isinstance(server, OllamaServer) else "/v1/chat/completions"
    model = "llama3.2" if isinstance(server, OllamaServer) else "m"
    body = {"model": model, "messages": USER, "stream": False, **extra}
    return client.post(server.root_url + path, json=body)


def test_status_knob_uses_each_protocols_error_shape(
    openai_server, ollama_server, mistral_server, client
):
    for server in (openai_server, ollama_server, mistral_server):
        server.status, server.retry_after, server.error_message = 429, 1.5, "slow down"
    r = _chat(openai_server, client)
    assert r.status_code == 429 and r.headers["retry-after"] == "1.5"
    assert r.json() == {
        "error": {
            "message": "slow down",
            "type": "requests",
            "param": None,
            "code": "rate_limit_exceeded",
        }
    }
    r = _chat(ollama_server, client)
    assert (r.status_code, r.json()) == (429, {"error": "slow down"})
    mistral_server.error_message = None
    r = _chat(mistral_server, client)
    assert (r.status_code, r.headers["retry-after"]) == (429, "1.5")
    assert r.json() == {
        "object": "error",
        "message": "Rate limit exceeded",
        "type": "rate_limited",
        "param": None,
        "code": "1300",
    }


def test_fail_times_then_normal_answers(openai_server, client):
    openai_server.status, openai_server.fail_times = 503, 2
    assert [_chat(openai_server, client).status_code for _ in range(4)] == [503, 503, 200, 200]


def test_statuses_queue_is_popped_per_request(ollama_server, client):
    ollama_server.statuses = [500, 503, 200]
    codes = [_chat(ollama_server, client).status_code for _ in range(4)]
    assert codes == [500, 503, 200, 200]


def test_delay_and_token_delay(openai_server, client):
    openai_server.delay, openai_server.token_delay = 0.2, 0.05
    start = time.monotonic()
    got, _ = post_stream(
        client,
        openai_server.url + "/chat/completions",
        {"model": "m", "messages": USER, "stream": True},
    )
    assert time.monotonic() - start >= 0.2 + 4 * 0.05 and sse(got)[-1] == "[DONE]"


# -- stream fault knobs (all protocols) -----------------------------------------------------
STREAMS = {  # fixture, path, body that streams
    "openai": ("openai_server", "/v1/chat/completions", {"model": "m", "stream": True}),
    "ollama": ("ollama_server", "/api/chat", {"model": "llama3.2"}),  # streams by default
    "mistral": ("mistral_server", "/v1/chat/completions", {"model": "m", "stream": True}),
}


def _words(proto: str, raw: bytes) -> list[str]:
    """The content pieces received, skipping lines that are not JSON."""
    if proto == "ollama":
        lines = [json.loads(s) for s in raw.decode().splitlines() if s.startswith('{"model"')]
        return [x["message"]["content"] for x in lines if not x["done"]]
    objs = [json.loads(e) for e in sse(raw) if e.startswith("{") and e != "{not json"]
    return [w for w in (openai_text([o]) for o in objs if "choices" in o) if w]


def _stream(request: Any, client: httpx2.Client, proto: str, **knobs: Any):
    fixture, path, body = STREAMS[proto]
    server = request.getfixturevalue(fixture)
    server.reply = "one two three four"
    for name, value in knobs.items():
        setattr(server, name, value)
    return post_stream(
        client,
        server.root_url + path,
        {**body, "messages": USER},
        timeout=httpx2.Timeout(5, read=0.5),
    )


@pytest.mark.parametrize("proto", STREAMS)
def test_empty_reply_still_ends_the_stream_properly(request, client, proto):
    got, err = _stream(request, client, proto, reply="")
    assert err is None and _words(proto, got) == []
    if proto == "ollama":
        assert ndjson(got)[-1]["done"] is True and "eval_count" not in ndjson(got)[-1]
    else:
        assert sse(got)[-1] == "[DONE]" and chunks(got)[-1]["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize("proto", STREAMS)
def test_cut_after_closes_without_terminator(request, client, proto):
    got, err = _stream(request, client, proto, cut_after=2)
    assert isinstance(err, httpx2.RemoteProtocolError)
    assert _words(proto, got) == ["one ", "two "]
    assert b"[DONE]" not in got and b'"done":true' not in got


@pytest.mark.parametrize("proto", STREAMS)
def test_stall_after_keeps_the_socket_open_silently(request, client, proto):
    got, err = _stream(request, client, proto, stall_after=1)
    assert isinstance(err, httpx2.ReadTimeout)
    assert _words(proto, got) == ["one "]


@pytest.mark.parametrize("proto", STREAMS)
def test_malformed_after_sends_one_bad_line_then_goes_on(request, client, proto):
    got, err = _stream(request, client, proto, malformed_after=1)
    assert err is None and _words(proto, got) == ["one ", "two ", "three ", "four"]
    bad = b"\n{not json\n" if proto == "ollama" else b"\n\ndata: {not json\n\n"
    assert got.count(b"{not json") == 1 and bad in got


def test_error_after_openai_sends_error_event_and_no_done(request, client):
    got, err = _stream(request, client, "openai", error_after=2)
    events = sse(got)
    assert err is None and "[DONE]" not in events
    assert json.loads(events[-1])["error"]["type"] == "server_error"
    assert _words("openai", got) == ["one ", "two "]


def test_error_after_ollama_sends_error_line_and_no_done(request, client):
    got, err = _stream(request, client, "ollama", error_after=2)
    lines = ndjson(got)
    assert err is None
    assert lines[-1] == {"error": "an error was encountered while running the model"}
    assert not any(x.get("done") for x in lines) and len(lines) == 3


def test_error_after_mistral_finishes_with_reason_error(request, client):
    got, err = _stream(request, client, "mistral", error_after=1)
    events = sse(got)
    assert err is None and events[-1] == "[DONE]"
    assert json.loads(events[-2])["choices"][0]["finish_reason"] == "error"


@pytest.mark.parametrize("proto", ["openai", "mistral"])
def test_plain_reply_faults(openai_server, mistral_server, client, proto):
    server = openai_server if proto == "openai" else mistral_server
    server.cut_after = 0
    with pytest.raises(httpx2.RemoteProtocolError):
        _chat(server, client)
    server.reset()
    server.malformed_after = 0
    r = _chat(server, client)
    assert r.status_code == 200 and r.text == "{not json"


# -- hostile answers: drip, huge, lone surrogates, controls (all protocols) -------------------
HOSTILE_TEXT = "nul\x00 esc\x1b[31mred\x1b[0m osc\x1b]52;c;ZXZpbA==\x07 \u202eexe.txt \u2066x\u2069"


@pytest.mark.parametrize("proto", STREAMS)
def test_drip_sends_the_body_one_byte_at_a_time(request, client, proto):
    fixture, path, body = STREAMS[proto]
    server = request.getfixturevalue(fixture)
    server.reply, server.drip = "ab", 0.001
    # A read timeout far below the whole body's time: the drip is never silent for long.
    timeout = httpx2.Timeout(5, read=0.5)
    with client.stream(
        "POST", server.root_url + path, json={**body, "messages": USER}, timeout=timeout
    ) as r:
        assert r.status_code == 200
        parts = list(r.iter_raw())
    raw = b"".join(parts)
    assert _words(proto, raw) == ["ab"]
    assert len(parts) > len(raw) / 3  # arrived in (nearly) single bytes
    listing = client.get(server.root_url + ("/api/tags" if proto == "ollama" else "/v1/models"))
    assert listing.status_code == 200  # only chat replies drip


@pytest.mark.parametrize("proto", STREAMS)
def test_huge_answer_in_big_pieces(request, client, proto):
    size, piece = 20_000_000, 1 << 16
    got, err = _stream(
        request, client, proto, reply="0123456789", reply_chars=size, chunk_chars=piece
    )
    words = _words(proto, got)
    assert err is None and len(words) == -(-size // piece)
    assert "".join(words) == "0123456789" * (size // 10)


def test_reply_chars_repeats_any_text_to_the_exact_length(openai_server, client):
    openai_server.reply, openai_server.reply_chars, openai_server.chunk_chars = "abc", 7, 3
    r = _chat(openai_server, client)
    assert r.json()["choices"][0]["message"]["content"] == "abcabca"
    assert r.json()["usage"]["completion_tokens"] == 3  # one per piece


@pytest.mark.parametrize("proto", STREAMS)
def test_lone_surrogates_go_out_as_json_escapes(request, client, proto):
    # A lone high surrogate, and a pair split over two pieces (each piece alone is lone).
    text = "a\ud800bc\ud83d\ude00"
    got, err = _stream(request, client, proto, reply=text, chunk_chars=5)
    assert err is None and b"\\ud800" in got and b"\\ud83d" in got and b"\\ude00" in got
    got.decode("utf-8")  # the rest of the body is plain UTF-8
    assert "".join(_words(proto, got)) == text


@pytest.mark.parametrize("proto", ["openai", "mistral"])
def test_lone_surrogates_in_a_plain_reply(openai_server, mistral_server, client, proto):
    server = openai_server if proto == "openai" else mistral_server
    server.reply = "x\udfffy"
    r = _chat(server, client)
    assert b"\\udfff" in r.content
    assert r.json()["choices"][0]["message"]["content"] == "x\udfffy"


@pytest.mark.parametrize("proto", STREAMS)
def test_controls_and_bidi_reach_the_client_as_sent(request, client, proto):
    got, err = _stream(request, client, proto, reply=HOSTILE_TEXT)
    assert err is None and "".join(_words(proto, got)) == HOSTILE_TEXT
    # JSON escapes every C0 control; bidi overrides travel as plain UTF-8.
    assert b"\\u0000" in got and b"\\u001b" in got and "\u202e".encode() in got


# -- Ollama ----------------------------------------------------------------------------------
def test_ollama_streams_ndjson_by_default_with_ns_metrics(ollama_server, client):
    url = ollama_server.url + "/api/chat"
    with client.stream("POST", url, json={"model": "llama3.2", "messages": USER}) as r:
        assert r.headers["content-type"] == "application/x-ndjson"
        lines = ndjson(r.read())
    assert [x["done"] for x in lines] == [False] * 5 + [True]
    assert "".join(x["message"]["content"] for x in lines) == "Echo from llama3.2: hello there"
    assert all("eval_count" not in x for x in lines[:-1])
    done = lines[-1]
    assert (done["done_reason"], done["prompt_eval_count"], done["eval_count"]) == ("stop", 2, 5)
    durations = [
        done[k]
        for k in ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration")
    ]
    assert all(isinstance(d, int) and d > 0 for d in durations)
    assert done["total_duration"] >= sum(durations[1:])
    assert done["created_at"].endswith("Z")


def test_ollama_stream_false_num_predict_and_usage_knob(ollama_server, client):
    ollama_server.reply = "a b c d"
    ollama_server.usage = False
    body = {
        "model": "llama3.2:latest",
        "messages": USER,
        "stream": False,
        "options": {"num_predict": 3},
    }
    r = client.post(ollama_server.url + "/api/chat", json=body)
    out = r.json()
    assert r.headers["content-type"].startswith("application/json")
    assert (out["message"]["content"], out["done_reason"]) == ("a b c ", "length")
    assert "eval_count" not in out and "prompt_eval_count" not in out
    assert isinstance(out["eval_duration"], int)


def test_ollama_chat_errors(ollama_server, client):
    url = ollama_server.url + "/api/chat"
    r = client.post(url, json={"model": "nope:1b", "messages": USER})
    assert (r.status_code, r.json()) == (404, {"error": "model 'nope:1b' not found"})
    r = client.post(url, json={"messages": USER})
    assert (r.status_code, r.json()) == (400, {"error": "model is required"})
    r = client.post(url, json={"model": "llama3.2", "messages": []})
    assert r.json()["done_reason"] == "load"


def test_ollama_install_and_any_model(ollama_server, client):
    url = ollama_server.url + "/api/chat"
    ollama_server.install("made-up", context_length=2048)
    assert client.post(url, json={"model": "made-up:latest", "messages": USER}).status_code == 200
    assert client.post(url, json={"model": "model-7", "messages": USER}).status_code == 404
    with OllamaServer(models=["only-one:1b"], any_model=True) as server:
        r = client.post(server.url + "/api/chat", json={"model": "model-7", "messages": USER})
        assert r.status_code == 200 and set(server.models) == {"only-one:1b", "model-7:latest"}


def test_ollama_model_endpoints(ollama_server, client):
    base = ollama_server.url
    assert client.get(base + "/").text == "Ollama is running"
    assert "version" in client.get(base + "/api/version").json()
    tags = client.get(base + "/api/tags").json()["models"]
    assert {"llama3.2:latest", "qwen2.5:0.5b"} <= {m["name"] for m in tags}
    keys = {"name", "model", "size", "digest", "details", "modified_at"}
    assert all(keys <= set(m) for m in tags)
    show = client.post(base + "/api/show", json={"model": "llama3.2"}).json()
    assert show["model_info"]["llama.context_length"] == 131072
    assert client.post(base + "/api/show", json={"model": "x"}).status_code == 404
    assert client.get(base + "/api/ps").json() == {"models": []}
    client.post(base + "/api/chat", json={"model": "qwen2.5:0.5b", "messages": USER})
    [running] = client.get(base + "/api/ps").json()["models"]
    assert running["name"] == "qwen2.5:0.5b" and "expires_at" in running


def test_ollama_pull_and_delete(ollama_server, client):
    base = ollama_server.url
    with client.stream("POST", base + "/api/pull", json={"model": "smollm2:135m"}) as r:
        lines = ndjson(r.read())
    assert lines[0] == {"status": "pulling manifest"}
    assert lines[-3:] == [
        {"status": "verifying sha256 digest"},
        {"status": "writing manifest"},
        {"status": "success"},
    ]
    layer = lines[1]
    assert layer["status"] == "pulling " + layer["digest"][7:19] and "completed" not in layer
    assert lines[3]["completed"] == lines[3]["total"]
    assert "smollm2:135m" in [m["name"] for m in client.get(base + "/api/tags").json()["models"]]
    r = client.post(base + "/api/pull", json={"model": "no-such-model"})
    assert r.status_code == 200
    assert ndjson(r.content) == [
        {"status": "pulling manifest"},
        {"error": "pull model manifest: file does not exist"},
    ]
    r = client.request("DELETE", base + "/api/delete", json={"model": "smollm2:135m"})
    assert (r.status_code, r.content) == (200, b"")
    r = client.request("DELETE", base + "/api/delete", json={"model": "smollm2:135m"})
    assert (r.status_code, r.json()) == (404, {"error": "model 'smollm2:135m' not found"})
    ollama_server.reset()
    assert "smollm2:135m" not in ollama_server.models and "llama3.2:latest" in ollama_server.models


def test_ollama_openai_compat_flavour(ollama_server, client):
    url = ollama_server.url + "/v1/chat/completions"
    body = {"model": "llama3.2", "messages": USER, "stream": True, "max_completion_tokens": 1}
    got, _ = post_stream(client, url, body)
    objs = chunks(got)
    assert objs[0]["id"].startswith("chatcmpl-") and objs[0]["system_fingerprint"] == "fp_ollama"
    assert objs[0]["choices"][0]["delta"] == {"role": "assistant", "content": "Echo "}
    assert objs[-1]["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "stop"}
    assert all("usage" not in o for o in objs)  # max_completion_tokens is ignored by Ollama
    body = {**body, "max_tokens": 1, "stream_options": {"include_usage": True}}
    objs = chunks(post_stream(client, url, body)[0])
    assert objs[-2]["choices"][0]["finish_reason"] == "length"
    assert objs[-1]["choices"] == [] and objs[-1]["usage"]["completion_tokens"] == 1
    r = client.post(url, json={"model": "nope", "messages": USER})
    assert r.status_code == 404 and r.json() == {
        "error": {
            "message": "model 'nope' not found",
            "type": "not_found_error",
            "param": None,
            "code": None,
        }
    }
    assert "llama3.2:latest" in [
        m["id"] for m in client.get(ollama_server.url + "/v1/models").json()["data"]
    ]
    ollama_server.models.clear()
    assert client.get(ollama_server.url + "/v1/models").json() == {"object": "list", "data": None}


# -- Mistral ---------------------------------------------------------------------------------
def test_mistral_stream_usage_rides_on_last_content_chunk(mistral_server, client):
    body = {
        "model": "mistral-small-latest",
        "messages": USER,
        "stream": True,
        "random_seed": 7,
        "safe_prompt": False,
    }
    got, _ = post_stream(client, mistral_server.url + "/v1/chat/completions", body)
    assert sse(got)[-1] == "[DONE]"
    objs = chunks(got)
    assert objs[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(o["choices"] for o in objs)  # no OpenAI-style choices:[] usage chunk
    assert [o["choices"][0]["finish_reason"] for o in objs] == [None] * 5 + ["stop"]
    assert [("usage" in o) for o in objs] == [False] * 5 + [True]
    assert objs[-1]["usage"] == {"prompt_tokens": 2, "total_tokens": 7, "completion_tokens": 5}
    assert objs[-1]["choices"][0]["delta"] == {"content": "there"}


def test_mistral_plain_reply_and_max_tokens(mistral_server, client):
    body = {"model": "mistral-small-latest", "messages": USER, "max_tokens": 2}
    out = client.post(mistral_server.url + "/v1/chat/completions", json=body).json()
    assert not out["id"].startswith("chatcmpl") and "system_fingerprint" not in out
    assert out["choices"][0] == {
        "index": 0,
        "finish_reason": "length",
        "message": {
            "content": "Echo from ",
            "tool_calls": None,
            "prefix": False,
            "role": "assistant",
        },
    }
    assert out["usage"]["completion_tokens"] == 2


@pytest.mark.parametrize(
    ("extra", "loc"),
    [
        ({"seed": 1}, ["body", "seed"]),
        ({"stream_options": {"include_usage": True}}, ["body", "stream_options"]),
        ({"max_completion_tokens": 5}, ["body", "max_completion_tokens"]),
        (
            {"messages": [{"role": "user", "content": "x", "name": "me"}]},
            ["body", "messages", 0, "user", "name"],
        ),
        (
            {"messages": [{"role": "user", "content": "x", "tool_calls": None}]},
            ["body", "messages", 0, "user", "tool_calls"],
        ),
    ],
)
def test_mistral_rejects_fields_outside_its_schema(mistral_server, client, extra, loc):
    body = {"model": "mistral-small-latest", "messages": USER, **extra}
    r = client.post(mistral_server.url + "/v1/chat/completions", json=body)
    assert r.status_code == 422
    out = r.json()
    assert (out["object"], out["type"], out["param"], out["code"]) == (
        "error",
        "invalid_request_error",
        None,
        None,
    )
    [problem] = out["message"]["detail"]
    assert (problem["type"], problem["loc"]) == ("extra_forbidden", loc)


def test_mistral_range_check_auth_and_models(mistral_server, client):
    url = mistral_server.url + "/v1/chat/completions"
    r = client.post(url, json={"model": "m", "messages": USER, "temperature": 2})
    assert r.json()["message"]["detail"][0]["type"] == "less_than_equal"
    mistral_server.api_key = "right"
    r = client.post(url, json={"model": "m", "messages": USER})
    assert r.status_code == 401 and r.json()["message"] == "Unauthorized"
    assert set(r.json()) == {"message", "request_id"}
    r = client.get(mistral_server.url + "/v1/models", headers={"Authorization": "Bearer right"})
    card = r.json()["data"][0]
    assert r.json()["object"] == "list" and card["capabilities"]["completion_chat"] is True
    assert isinstance(card["max_context_length"], int)


def test_mistral_check_models(client):
    with MistralServer(check_models=True) as server:
        r = client.post(server.url + "/v1/chat/completions", json={"model": "x", "messages": USER})
        assert r.status_code == 400 and r.json()["message"] == "Invalid model: x"
