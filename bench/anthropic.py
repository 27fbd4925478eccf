"""Anthropic's named events beside Mistral's chat chunks: `complete()` per call, same answer.

    python bench/anthropic.py [--calls 300] [--words 40]

Both providers speak through the same httpx2 service; only the wire format and its reader
differ (Anthropic: message_start, a ping, one content_block_delta per word, message_delta,
message_stop; Mistral: one chunk per word, then [DONE]). Each streams the same `--words`-word
answer from its own loopback server in this process. Calls alternate A B A B so drift hits both
alike; prints the median per-call times and their ratio (1.00: reading Anthropic's stream costs
what reading Mistral's does).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from servers.anthropic_server import AnthropicServer  # noqa: E402
from servers.mistral_server import MistralServer  # noqa: E402

KEY = "sk-bench-not-a-real-key"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--words", type=int, default=40)
    args = parser.parse_args()
    reply = " ".join(f"word{i}" for i in range(args.words))

    with AnthropicServer() as anthropic, MistralServer() as mistral:
        anthropic.reply = mistral.reply = reply
        os.environ.update(
            ANTHROPIC_BASE_URL=anthropic.url,
            ANTHROPIC_API_KEY=KEY,
            MISTRAL_BASE_URL=mistral.url,
            MISTRAL_API_KEY=KEY,
            LLM_MAGIC_HOME=os.environ.get("LLM_MAGIC_HOME", "/tmp/llm_magic-bench-home"),
        )
        import llm_magic

        def call(target: str) -> float:
            start = time.perf_counter()
            answer = llm_magic.complete("Say something short.", target, retries=0)
            elapsed = time.perf_counter() - start
            assert answer.text == reply, answer.text
            return elapsed

        targets = {"mistral": "mistral:mistral-small-latest", "anthropic": "anthropic:claude-x"}
        for target in targets.values():  # imports, connection pools
            call(target)
        times: dict[str, list[float]] = {name: [] for name in targets}
        for _ in range(args.calls):
            for name, target in targets.items():
                times[name].append(call(target))
        base, ours = (statistics.median(times[n]) * 1000 for n in ("mistral", "anthropic"))
        print(f"{args.calls} calls each, {args.words} words streamed per answer")
        print(f"mistral   median {base:.3f} ms per call")
        print(f"anthropic median {ours:.3f} ms per call")
        print(f"ratio anthropic / mistral: {ours / base:.3f}")


if __name__ == "__main__":
    main()
