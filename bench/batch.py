"""Throughput on a batch: 1,000 prompts at concurrency 16 against a server that waits 50 ms.

    python bench/batch.py [--prompts 1000] [--delay 0.05] [--workers 16] [--runs 3]

Three clients against the same loopback OpenAI-compatible server, one after another:
  llm_magic  `llm_magic.compare(prompts, target, concurrency=16)` (the path %%llm --over takes)
  raw SDK    the official openai SDK, one client shared by a 16-thread pool
  litellm    `litellm.batch_completion(max_workers=16)`, run in a scratch venv so it never
             enters the project's environment (created on first use)
Each is warmed up alike before it is timed: one request per worker (imports, client, pool).
A fourth line, bare sockets (one pre-built request, written and read back on a kept-alive socket
per worker, no HTTP library), shows what the server itself allows: it is not a client anyone
would use, only proof that the gap to the ceiling is the clients' own time.
The ceiling is workers / delay = 320 req/s; each line prints its fraction of it. No client can
reach it: a worker's slot is busy for the delay plus a whole round trip (building the request,
the server's own work, reading the stream). So the script also times llm_magic one request at a
time against the same server and prints workers / that latency, the rate 16 slots would give with
no contention at all: the practical limit any client of this server is measured against.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from serve import sdk_answer, served  # noqa: E402

KEY = "sk-bench-not-a-real-key"

LITELLM_PROBE = """
import json, sys, time
import litellm
url, n, workers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

def batch(messages):
    return litellm.batch_completion(model="openai/bench-model", messages=messages, api_base=url,
                                    api_key="sk-bench", max_workers=workers)

batch([[{"role": "user", "content": "warm-up"}]] * workers)  # lazy imports, client, pool
messages = [[{"role": "user", "content": f"prompt {i}"}] for i in range(n)]
start = time.perf_counter()
out = batch(messages)
wall = time.perf_counter() - start
ok = sum(1 for r in out if not isinstance(r, Exception))
print(json.dumps({"wall": wall, "ok": ok}))
"""


def ours(n: int, workers: int) -> tuple[float, int]:
    import llm_magic

    llm_magic.compare(["warm-up"] * workers, "openai:bench-model", concurrency=workers)
    prompts = [f"prompt {i}" for i in range(n)]
    start = time.perf_counter()
    df = llm_magic.compare(prompts, "openai:bench-model", concurrency=workers, retries=0)
    return time.perf_counter() - start, int(df["error"].isna().sum())


def one_at_a_time(calls: int = 50) -> float:
    """Median latency of llm_magic requests sent one after another (nothing to contend with),
    as the rows report it: from sending to the last chunk, which is most of a slot's time."""
    import llm_magic

    prompts = [f"prompt {i}" for i in range(calls)]
    df = llm_magic.compare(prompts, "openai:bench-model", concurrency=1, retries=0)
    return float(df["latency_s"].median())


def raw_sdk(url: str, n: int, workers: int) -> tuple[float, int]:
    import openai

    client = openai.OpenAI(base_url=url, api_key=KEY, max_retries=0)

    def call(i: int) -> str:
        return sdk_answer(client, f"prompt {i}")

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(call, range(workers)))  # warm-up, as every client gets
        start = time.perf_counter()
        answers = list(pool.map(call, range(n)))
    return time.perf_counter() - start, sum(1 for a in answers if a)


def bare_sockets(url: str, n: int, workers: int) -> tuple[float, int]:
    import socket
    import threading
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    body = json.dumps(
        {
            "model": "bench-model",
            "messages": [{"role": "user", "content": "prompt"}],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    ).encode()
    head = (
        f"POST {parts.path}/chat/completions HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Authorization: Bearer {KEY}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    request = head.encode() + body
    local = threading.local()

    def call(i: int) -> bool:
        sock = getattr(local, "sock", None)
        if sock is None:
            sock = local.sock = socket.create_connection((host, port))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(request)
        data = b""
        while not data.endswith(b"\r\n0\r\n\r\n"):  # the chunked body's last chunk
            data += sock.recv(65536)
        return b"[DONE]" in data

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(call, range(workers)))
        start = time.perf_counter()
        ok = sum(pool.map(call, range(n)))
    return time.perf_counter() - start, ok


def ensure_litellm(venv: Path) -> str:
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "litellm"], check=True)
    return str(python)


def litellm(python: str, url: str, n: int, workers: int) -> tuple[float, int]:
    out = subprocess.run(
        [python, "-c", LITELLM_PROBE, url, str(n), str(workers)],
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return result["wall"], result["ok"]


CLIENTS = (
    "llm_magic compare()",
    "raw openai SDK pool",
    "litellm.batch_completion",
    "bare sockets (reference)",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=1000)
    parser.add_argument("--delay", type=float, default=0.05)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--runs", type=int, default=3, help="rounds of all three; medians shown")
    parser.add_argument("--litellm-venv", type=Path, default=Path("/tmp/llm_magic-bench-litellm"))
    args = parser.parse_args()
    n, workers = args.prompts, args.workers
    python = ensure_litellm(args.litellm_venv)

    # The server runs in its own process: in ours it would take GIL time from the clients.
    walls: dict[str, list[float]] = {name: [] for name in CLIENTS}
    with served("openai", delay=args.delay) as url:
        os.environ["OPENAI_BASE_URL"] = url
        os.environ["OPENAI_API_KEY"] = KEY
        os.environ["LLM_MAGIC_HOME"] = os.environ.get("LLM_MAGIC_HOME", "/tmp/llm_magic-bench-home")
        alone = one_at_a_time()
        clients = {
            CLIENTS[0]: lambda: ours(n, workers),
            CLIENTS[1]: lambda: raw_sdk(url, n, workers),
            CLIENTS[2]: lambda: litellm(python, url, n, workers),
            CLIENTS[3]: lambda: bare_sockets(url, n, workers),
        }
        for _ in range(args.runs):  # rounds, so drift of the machine hits all three alike
            for name, client in clients.items():
                wall, ok = client()
                if ok != n:
                    sys.exit(f"{name}: only {ok} of {n} requests succeeded")
                walls[name].append(wall)

    ceiling = workers / args.delay
    print(
        f"{n} prompts, server delay {args.delay * 1000:.0f} ms, {workers} workers,"
        f" ceiling {ceiling:.0f} req/s, {args.runs} rounds (median [min-max])"
    )
    rates = {}
    for name, times in walls.items():
        each = sorted(n / wall for wall in times)
        rates[name] = statistics.median(each)
        print(
            f"{name:<26} {rates[name]:7.1f} req/s [{each[0]:.1f}-{each[-1]:.1f}]"
            f"  {rates[name] / ceiling:6.1%} of ceiling"
        )
    ours_rate = rates[CLIENTS[0]]
    limit = workers / alone
    print(
        f"one request alone takes {alone * 1000:.1f} ms -> practical limit {limit:.0f} req/s"
        f" ({limit / ceiling:.1%} of ceiling); llm_magic reaches {ours_rate / limit:.1%} of it"
    )
    print(f"llm_magic / raw SDK pool  = {ours_rate / rates[CLIENTS[1]]:.3f}  (goal >= 1.0)")
    print(
        f"llm_magic / litellm       = {ours_rate / rates[CLIENTS[2]]:.3f}"
        f"  (goal >= 2.5: needs {2.5 * rates[CLIENTS[2]]:.0f} req/s)"
    )


if __name__ == "__main__":
    main()
