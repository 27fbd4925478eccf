"""Several servers behind one target (providers/_pool.py): spread, caps, benching, endpoint.

Real loopback servers on real sockets: two or three OpenAI (or Ollama) servers behind one
provider name, one of them a closed port (refused) or slow (its requests time out).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pandas as pd
import pytest
from servers.fixtures import TEST_KEY
from servers.ollama_server import OllamaServer
from servers.openai_server import OpenAIServer

import llm_magic
from llm_magic import providers
from llm_magic._backends import status_table
from llm_magic._config import load_file_config
from llm_magic.errors import ConfigProblem, ConnectFailed, UsageProblem
from llm_magic.providers.base import Message, Options
from llm_magic.store import default_store


@pytest.fixture(scope="module")
def farm() -> Iterator[list[OpenAIServer]]:
    """Three OpenAI servers of our own (the session one is shared with other tests)."""
    servers = [OpenAIServer().start() for _ in range(3)]
    yield servers
    for server in servers:
        server.stop()


@pytest.fixture(autouse=True)
def long_bench(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bench of 30 s, not 1 s: on a busy machine a test's next look must still find it."""
    monkeypatch.setattr("llm_magic.providers._pool.BENCH_FIRST_S", 30.0)


@pytest.fixture
def three(farm: list[OpenAIServer]) -> list[OpenAIServer]:
    providers.close_all()  # a fresh pool each test: no bench or turn left from the last one
    for server in farm:
        server.reset()
    return farm


def _pool_env(monkeypatch: pytest.MonkeyPatch, *urls: str) -> None:
    monkeypatch.setenv("VLLM_BASE_URL", ",".join(urls))


def _config(isolated_env, text: str) -> None:
    (isolated_env / "config.toml").write_text(text, encoding="utf-8")


def _chat_counts(servers: list[OpenAIServer]) -> list[int]:
    return [len(s.chat_requests()) for s in servers]


def test_a_comma_list_builds_a_pool_and_spreads_the_rows(monkeypatch, three):
    _pool_env(monkeypatch, *(s.url for s in three))
    for s in three:
        s.delay = 0.1  # long enough that the requests overlap
    df = llm_magic.compare([f"q{i}" for i in range(12)], "vllm:m", concurrency=12)
    assert df["error"].isna().all() and len(df) == 12
    # Twelve requests at once over three idle servers: four each (fewest in flight first).
    assert _chat_counts(three) == [4, 4, 4]
    assert sorted(df["endpoint"].unique()) == sorted(s.url for s in three)
    assert str(df["endpoint"].dtype) == "string"
    # Each row names the server that really answered it.
    for row in df.itertuples():
        (server,) = [s for s in three if s.url == row.endpoint]
        assert row.prompt in [r.body["messages"][-1]["content"] for r in server.chat_requests()]


def test_ties_go_round_robin_one_request_at_a_time(monkeypatch, three):
    _pool_env(monkeypatch, *(s.url for s in three))
    df = llm_magic.compare([f"q{i}" for i in range(6)], "vllm:m", concurrency=1)
    assert df["error"].isna().all()
    assert _chat_counts(three) == [2, 2, 2]
    assert list(df["endpoint"]) == [s.url for s in three] * 2


def test_a_busy_server_gets_no_new_request_while_another_is_idle(monkeypatch, three):
    a, b = three[:2]
    _pool_env(monkeypatch, a.url, b.url)
    pool = providers.get_provider("vllm")
    held = pool.stream([Message("user", "held")], "m", Options())
    first = next(held)  # the answer stays open (in flight) until it is read to the end
    # While that answer is open on one server, three more go to the other one.
    df = llm_magic.compare(["x", "y", "z"], "vllm:m", concurrency=1)
    assert set(df["endpoint"]) == {b.url if first.endpoint == a.url else a.url}
    list(held)


def _slow_farm(isolated_env, servers: list[OpenAIServer], cap: int) -> None:
    """[providers.farm] over `servers`, `cap` requests at once each; answers take 0.15 s."""
    urls = ", ".join(f'"{s.url}"' for s in servers)
    _config(
        isolated_env, f"[providers.farm]\nbase_urls = [{urls}]\nper_server_concurrency = {cap}\n"
    )
    for s in servers:
        s.reset()
        s.delay = 0.15


def test_the_per_server_cap_is_honoured(isolated_env, three):
    a, b = three[:2]
    _slow_farm(isolated_env, [a, b], 2)
    df = llm_magic.compare([f"q{i}" for i in range(12)], "farm:m", concurrency=12)
    assert df["error"].isna().all()
    assert a.max_in_flight == 2 and b.max_in_flight == 2


def test_the_run_takes_cap_times_servers_at_once_unless_told(isolated_env, three):
    a, b = three[:2]
    _slow_farm(isolated_env, [a, b], 3)
    llm_magic.compare([f"q{i}" for i in range(12)], "farm:m")
    assert a.max_in_flight + b.max_in_flight == 6  # 2 servers x 3 (not the default 8 in all)
    _slow_farm(isolated_env, [a, b], 3)
    llm_magic.compare([f"q{i}" for i in range(12)], "farm:m", concurrency=2)
    assert a.max_in_flight + b.max_in_flight == 2  # --concurrency says how many in all


def test_a_refusing_server_is_benched_and_its_requests_go_elsewhere(
    monkeypatch, three, refused_url
):
    a = three[0]
    _pool_env(monkeypatch, refused_url + "/v1", a.url)
    df = llm_magic.compare([f"q{i}" for i in range(8)], "vllm:m", concurrency=4, retries=0)
    # No row lost, none answered twice: every prompt reached the live server exactly once.
    assert df["error"].isna().all() and len(df) == 8
    assert set(df["endpoint"]) == {a.url}
    sent = sorted(r.body["messages"][-1]["content"] for r in a.chat_requests())
    assert sent == sorted(f"q{i}" for i in range(8))
    (refused,) = [
        s for s in providers.get_provider("vllm").server_states() if not s.health.reachable
    ]
    assert refused.benched_until is not None and refused.failures >= 1


def test_the_bench_doubles_while_a_server_keeps_refusing(monkeypatch, three, refused_url):
    monkeypatch.setattr("llm_magic.providers._pool.BENCH_FIRST_S", 0.2)
    _pool_env(monkeypatch, refused_url + "/v1", three[0].url)
    pool = providers.get_provider("vllm")

    def ask() -> None:
        (chunk, *_) = list(pool.stream([Message("user", "hi")], "m", Options()))
        assert chunk.endpoint == three[0].url  # answered by the live server all the same

    ask()  # the refused server is first in turn: benched for 0.2 s
    time.sleep(0.3)  # the bench is over: it gets its turn again, and refuses again
    before = pd.Timestamp.now(tz="UTC")
    ask()
    refused = pool.server_states()[0]
    assert refused.failures == 2
    assert refused.benched_until >= before + pd.Timedelta(seconds=0.4)  # 0.2 s doubled


def test_embeddings_go_through_the_pool_too(monkeypatch, three, refused_url):
    _pool_env(monkeypatch, refused_url + "/v1", three[0].url)
    pool = providers.get_provider("vllm")
    result = pool.embed(["one", "two"], "text-embedding-3-small", Options())
    assert len(result.vectors) == 2
    assert [r.path for r in three[0].requests] == ["/v1/embeddings"]
    assert pool.server_states()[0].benched_until is not None  # the refused one, benched


def test_a_slow_server_times_out_is_benched_and_the_row_is_retried(monkeypatch, three):
    slow, fast = three[:2]
    slow.delay = 5.0
    _pool_env(monkeypatch, slow.url, fast.url)
    start = time.monotonic()
    df = llm_magic.compare([f"q{i}" for i in range(4)], "vllm:m", concurrency=2, timeout=0.5)
    assert time.monotonic() - start < 4  # nobody waited for the slow server's answer
    assert df["error"].isna().all() and set(df["endpoint"]) == {fast.url}
    assert len(fast.chat_requests()) == 4
    # Only the first request met the slow server: it was benched after timing out.
    assert len(slow.chat_requests()) == 1
    states = {s.health.base_url: s for s in providers.get_provider("vllm").server_states()}
    assert states[slow.url].benched_until is not None and states[fast.url].benched_until is None


def test_a_failure_after_the_first_chunk_is_the_rows_error_not_a_retry(monkeypatch, three):
    a, b = three[:2]
    for s in (a, b):
        s.cut_after = 1
    _pool_env(monkeypatch, a.url, b.url)
    df = llm_magic.compare(["only once"], "vllm:m", retries=3)
    (row,) = df.itertuples()
    assert row.error is not pd.NA and row.output  # the partial answer is kept
    assert _chat_counts([a, b]).count(1) == 1 and sum(_chat_counts([a, b])) == 1
    assert row.endpoint in (a.url, b.url)


def test_an_http_error_is_not_a_reason_to_bench(monkeypatch, three):
    a, b = three[:2]
    a.status = b.status = 400
    _pool_env(monkeypatch, a.url, b.url)
    df = llm_magic.compare(["bad"], "vllm:m")
    (row,) = df.itertuples()
    assert "HTTP 400" in row.error and sum(_chat_counts([a, b])) == 1
    assert row.endpoint in (a.url, b.url)  # the server that refused it
    assert all(s.benched_until is None for s in providers.get_provider("vllm").server_states())


def test_when_every_server_refuses_the_row_says_so_for_each(monkeypatch, refused_url):
    _pool_env(monkeypatch, refused_url, refused_url.replace("127.0.0.1", "localhost"))
    df = llm_magic.compare(["hi"], "vllm:m", retries=0)
    (row,) = df.itertuples()
    assert "none of the 2 servers answered" in row.error
    assert row.error.count("cannot connect") == 2
    with pytest.raises(ConnectFailed):
        llm_magic.complete("hi", "vllm:m", retries=0)


def test_ollama_host_takes_a_comma_list(monkeypatch):
    with OllamaServer() as a, OllamaServer() as b:
        monkeypatch.setenv("OLLAMA_HOST", f"127.0.0.1:{a.port}, 127.0.0.1:{b.port}")
        df = llm_magic.compare(["p1", "p2"], "ollama:llama3.2", concurrency=1)
        assert df["error"].isna().all()
        assert list(df["endpoint"]) == [a.root_url, b.root_url]
        assert len(a.chat_requests()) == len(b.chat_requests()) == 1


def test_config_base_urls_and_an_environment_list_over_it(isolated_env, monkeypatch, three):
    a, b, c = three
    _config(
        isolated_env,
        f'[providers.farm]\nkind = "openai"\nbase_urls = ["{a.url}", "{b.url}"]\n',
    )
    df = llm_magic.compare(["1", "2"], "farm:m", concurrency=1)
    assert set(df["endpoint"]) == {a.url, b.url}
    monkeypatch.setenv("FARM_BASE_URL", c.url)  # the environment wins, as for base_url
    df = llm_magic.compare(["3"], "farm:m")
    assert "endpoint" not in df.columns  # one server now: no pool
    assert len(c.chat_requests()) == 1 and _chat_counts([a, b]) == [1, 1]


@pytest.mark.parametrize(
    ("table", "says"),
    [
        ('base_urls = "http://a/v1"', "base_urls must be a list of strings"),
        ("base_urls = []", "base_urls must be a list of URLs"),
        ('base_urls = ["http://a/v1", 3]', "base_urls must be a list of URLs"),
        ('base_url = "http://a"\nbase_urls = ["http://b"]', "keep one"),
        ('base_urls = ["http://a"]\nper_server_concurrency = "x"', "must be a whole number"),
        ('base_urls = ["http://a"]\nper_server_concurrency = 0', "per_server_concurrency"),
    ],
)
def test_a_wrong_servers_table_is_one_clear_line(isolated_env, table, says):
    _config(isolated_env, f"[providers.farm]\n{table}\n")
    with pytest.raises((ConfigProblem, UsageProblem), match=says):
        load_file_config()


def test_credentials_in_server_urls_never_show(monkeypatch, three, refused_url):
    a, b = three[:2]
    secret_a = a.url.replace("http://", "http://alice:hunter2secret@")
    secret_b = b.url.replace("http://", "http://bob:s3cretpass@")
    _pool_env(monkeypatch, secret_a, secret_b)
    monkeypatch.setenv("VLLM_API_KEY", TEST_KEY)
    df = llm_magic.compare(["a", "b"], "vllm:m", concurrency=1)
    assert df["error"].isna().all()
    shown = " ".join(df["endpoint"])
    assert "***" in shown
    pool = providers.get_provider("vllm")
    status = status_table(ports=[])
    stored = default_store().history_frame()
    assert set(stored["endpoint"]) == set(df["endpoint"])
    texts = [shown, repr(pool), status.to_string(), repr(pool.health()), stored.to_string()]
    # and in the error of a row whose servers all refused
    dead = refused_url.replace("http://", "http://carol:d34dsecret@")
    _pool_env(monkeypatch, dead, dead.replace("127.0.0.1", "localhost"))
    failed = llm_magic.compare(["c"], "vllm:m", retries=0)
    assert "none of the 2 servers answered" in failed["error"].iloc[0]
    texts += [
        failed.to_string(),
        failed["error"].iloc[0],
        default_store().history_frame().to_string(),
    ]
    for text in texts:
        for secret in ("hunter2secret", "s3cretpass", "d34dsecret", TEST_KEY):
            assert secret not in text


def test_status_shows_each_server_of_a_pool(monkeypatch, three, refused_url):
    a, b = three[:2]
    _pool_env(monkeypatch, a.url, b.url, refused_url + "/v1")
    llm_magic.compare(["warm up", "all", "three"], "vllm:m", concurrency=1, retries=0)
    rows = status_table(ports=[]).query("provider == 'vllm'")
    assert list(rows["base_url"]) == [a.url, b.url, refused_url + "/v1"]
    assert list(rows["reachable"]) == [True, True, False]
    assert rows["rtt_ms"].iloc[:2].notna().all() and pd.isna(rows["rtt_ms"].iloc[2])
    assert list(rows["in_flight"]) == [0, 0, 0]
    benched = rows["benched_until"]
    assert benched.iloc[:2].isna().all() and benched.iloc[2] > pd.Timestamp.now(tz="UTC")


def test_status_counts_requests_in_flight(monkeypatch, three):
    a, b = three[:2]
    a.delay = b.delay = 1.0
    _pool_env(monkeypatch, a.url, b.url)
    pool = providers.get_provider("vllm")
    open_stream = pool.stream([Message("user", "x")], "m", Options())
    started: list = []
    reader = threading.Thread(target=lambda: started.extend(open_stream))
    reader.start()
    time.sleep(0.3)
    rows = status_table(ports=[]).query("provider == 'vllm'")
    assert sorted(rows["in_flight"]) == [0, 1]
    reader.join()
    assert sorted(s.in_flight for s in pool.server_states()) == [0, 0]


def test_the_endpoint_column_comes_with_a_pool(openai_server, monkeypatch, three):
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.url)
    monkeypatch.setenv("OPENAI_API_KEY", TEST_KEY)
    plain = llm_magic.compare(["hi"], ["openai:m", "local:smollm2"], max_tokens=4)
    assert "endpoint" not in plain.columns  # no pool in the run: the schema as ever
    assert "endpoint" not in default_store().history_frame().columns

    _pool_env(monkeypatch, *(s.url for s in three[:2]))
    df = llm_magic.compare(["hi"], ["vllm:m", "openai:m", "local:smollm2"], max_tokens=4)
    assert list(df.columns[-1:]) == ["endpoint"]
    by_target = dict(zip(df["target"], df["endpoint"], strict=True))
    assert by_target["vllm:m"] == three[0].url
    assert by_target["openai:m"] is pd.NA and by_target["local:smollm2"] is pd.NA  # one server
    assert "endpoint" in llm_magic.results.compact(df).columns
    logged = default_store().history_frame(3)
    assert list(logged["endpoint"]) == list(df["endpoint"])  # the run log keeps it
