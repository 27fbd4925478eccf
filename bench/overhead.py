"""What llm_magic adds to one call: `complete()` beside the raw openai SDK, same loopback server.

    python bench/overhead.py [--calls 300]

Both stream the same answer from the same server (TCP_NODELAY on, so no delayed-ACK stall hides
the difference). Calls alternate A B A B so drift hits both alike; prints median per-call times
and the difference, which is llm_magic's own cost: parsing the target, planning, the worker
thread, timing, token accounting, the record and the log.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from serve import alternate, sdk_answer  # noqa: E402
from servers.openai_server import OpenAIServer  # noqa: E402

KEY = "sk-bench-not-a-real-key"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()

    with OpenAIServer() as server:
        os.environ["OPENAI_BASE_URL"] = server.url
        os.environ["OPENAI_API_KEY"] = KEY
        os.environ["LLM_MAGIC_HOME"] = os.environ.get("LLM_MAGIC_HOME", "/tmp/llm_magic-bench-home")
        import openai

        import llm_magic

        client = openai.OpenAI(base_url=server.url, api_key=KEY, max_retries=0)

        def raw() -> str:
            return sdk_answer(client, "Say something short.")

        def ours() -> str:
            return llm_magic.complete("Say something short.", "openai:bench-model").text

        assert raw() == ours()  # same work on both sides
        for _ in range(20):  # warm-up: imports, pools, caches
            raw(), ours()
        a, b = alternate(ours, raw, args.calls)
    ma, mb = statistics.median(a) * 1000, statistics.median(b) * 1000
    print(f"{args.calls} calls each, streamed, loopback server")
    pa, pb = (sorted(x)[int(len(x) * 0.9)] * 1000 for x in (a, b))
    print(f"llm_magic.complete()  median {ma:6.2f} ms  p90 {pa:6.2f} ms")
    print(f"raw openai SDK        median {mb:6.2f} ms  p90 {pb:6.2f} ms")
    print(f"added by llm_magic    {ma - mb:+.2f} ms at the median  (goal <= 1 ms)")


if __name__ == "__main__":
    main()
