"""Throughput on a batch: 1,000 prompts at concurrency 16 against a server that waits 50 ms.

    python bench/batch.py [--prompts 1000] [--delay 0.05] [--workers 16]

Three clients against the same loopback OpenAI-compatible server, one after another:
  llm_magic  `llm_magic.compare(prompts, target, concurrency=16)` (the path %%llm --over takes)
  raw SDK    the official openai SDK, one client shared by a 16-thread pool
  litellm    `litellm.batch_completion(max_workers=16)`, run in a scratch venv so it never
             enters the project's environment (created on first use)
The ceiling is workers / delay = 320 req/s; each line prints its fraction of it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from serve import served  # noqa: E402

KEY = "sk-bench-not-a-real-key"

LITELLM_PROBE = """
import json, sys, time
import litellm
url, n, workers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
messages = [[{"role": "user", "content": f"prompt {i}"}] for i in range(n)]
start = time.perf_counter()
out = litellm.batch_completion(model="openai/bench-model", messages=messages, api_base=url,
                               api_key="sk-bench", max_workers=workers)
wall = time.perf_counter() - start
ok = sum(1 for r in out if not isinstance(r, Exception))
print(json.dumps({"wall": wall, "ok": ok}))
"""


def ours(n: int, workers: int) -> tuple[float, int]:
    import llm_magic

    prompts = [f"prompt {i}" for i in range(n)]
    start = time.perf_counter()
    df = llm_magic.compare(prompts, "openai:bench-model", concurrency=workers, retries=0)
    return time.perf_counter() - start, int(df["error"].isna().sum())


def raw_sdk(url: str, n: int, workers: int) -> tuple[float, int]:
    import openai

    client = openai.OpenAI(base_url=url, api_key=KEY, max_retries=0)

    def call(i: int) -> str:
        stream = client.chat.completions.create(
            model="bench-model",
            messages=[{"role": "user", "content": f"prompt {i}"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        answers = list(pool.map(call, range(n)))
    return time.perf_counter() - start, sum(1 for a in answers if a)


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=1000)
    parser.add_argument("--delay", type=float, default=0.05)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--litellm-venv", type=Path, default=Path("/tmp/llm_magic-bench-litellm"))
    args = parser.parse_args()

    # The server runs in its own process: in ours it would take GIL time from the clients.
    with served("openai", delay=args.delay) as url:
        os.environ["OPENAI_BASE_URL"] = url
        os.environ["OPENAI_API_KEY"] = KEY
        os.environ["LLM_MAGIC_HOME"] = os.environ.get("LLM_MAGIC_HOME", "/tmp/llm_magic-bench-home")
        ceiling = args.workers / args.delay
        ours(args.workers, args.workers)  # warm-up: imports and connection pool
        rows = [("llm_magic compare()", *ours(args.prompts, args.workers))]
        rows.append(("raw openai SDK pool", *raw_sdk(url, args.prompts, args.workers)))
        python = ensure_litellm(args.litellm_venv)
        rows.append(("litellm.batch_completion", *litellm(python, url, args.prompts, args.workers)))
    rates = {}
    print(
        f"{args.prompts} prompts, server delay {args.delay * 1000:.0f} ms, {args.workers} workers,"
        f" ceiling {ceiling:.0f} req/s"
    )
    for name, wall, ok in rows:
        rate = args.prompts / wall
        rates[name] = rate
        print(
            f"{name:<26} {wall:7.2f} s  {rate:7.1f} req/s  {rate / ceiling:6.1%} of ceiling"
            f"  ({ok} ok)"
        )
    ours_rate = rates["llm_magic compare()"]
    print(
        f"llm_magic / raw SDK pool  = {ours_rate / rates['raw openai SDK pool']:.3f}  (goal >= 1.0)"
    )
    print(
        f"llm_magic / litellm       = {ours_rate / rates['litellm.batch_completion']:.3f}"
        "  (goal >= 2.5)"
    )


if __name__ == "__main__":
    main()
