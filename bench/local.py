"""The embedded model: the first `%%llm local:smollm2` cell in a fresh kernel, and tokens/s
through llm_magic beside raw llama-cpp-python on the same prompt.

    python bench/local.py [--runs 5] [--tokens 128]

1. First cell: a new IPython kernel (jupyter_client) loads the extension, then the clock runs
   from sending `%%llm local:smollm2 -n 16` to the kernel's reply: importing llama_cpp,
   loading the GGUF and answering 16 tokens, live display included. Median of --runs kernels.
2. Throughput: `llm_magic.complete()` and raw `Llama.create_chat_completion(stream=True)`
   answer the same prompt greedily with the same token budget, thread count and context size,
   each in its own process (two llama.cpp thread pools in one process fight over the cores),
   A B A B. Rate = tokens / (time from the first token to the last), the runner's formula.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

PROMPT = "Write a long story about a lighthouse keeper and a storm."
HOME = os.environ.get("LLM_MAGIC_HOME", "/tmp/llm_magic-bench-home")

RATE_PROBE = """
import json, sys, time
side, prompt, tokens, reps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
from llm_magic.providers import _gguf as gguf
from llm_magic.providers._local_models import n_threads
rates = []
if side == "ours":
    import llm_magic
    def once():
        record = llm_magic.complete(prompt, "local:smollm2", max_tokens=tokens,
                                    temperature=0.0).record
        return record.tokens_per_s
else:
    import llama_cpp
    threads = n_threads()
    llm = llama_cpp.Llama(model_path=str(gguf.bundled_gguf()), n_ctx=2048, n_threads=threads,
                          n_threads_batch=threads, verbose=False)
    def once():
        first, count = None, 0
        for chunk in llm.create_chat_completion([{"role": "user", "content": prompt}],
                                                stream=True, max_tokens=tokens, temperature=0.0):
            if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                first = first or time.perf_counter()
                count += 1  # one streamed chunk per generated token
        return count / (time.perf_counter() - first)
once()  # warm-up: load, caches
print(json.dumps([once() for _ in range(reps)]))
"""


def first_cell(runs: int) -> list[float]:
    from jupyter_client.manager import start_new_kernel

    walls = []
    for _ in range(runs):
        manager, client = start_new_kernel(env=dict(os.environ, LLM_MAGIC_HOME=HOME))
        try:
            client.execute_interactive("%load_ext llm_magic", timeout=60)
            start = time.perf_counter()
            reply = client.execute_interactive(
                "%%llm local:smollm2 -n 16 -t 0\nSay hello.",
                timeout=120,
                output_hook=lambda msg: None,
            )
            walls.append(time.perf_counter() - start)
            assert reply["content"]["status"] == "ok", reply["content"]
        finally:
            client.stop_channels()
            manager.shutdown_kernel(now=True)
    return walls


def rates(side: str, tokens: int, reps: int) -> list[float]:
    out = subprocess.run(
        [sys.executable, "-c", RATE_PROBE, side, PROMPT, str(tokens), str(reps)],
        capture_output=True,
        text=True,
        check=True,
        env=dict(os.environ, LLM_MAGIC_HOME=HOME),
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=128)
    args = parser.parse_args()

    walls = first_cell(args.runs)
    print(
        f"first %%llm local:smollm2 -n 16 cell in a fresh kernel: median"
        f" {statistics.median(walls):.3f} s (min {min(walls):.3f}, max {max(walls):.3f};"
        " goal <= 1.0 s)"
    )
    ours: list[float] = []
    raw: list[float] = []
    for _ in range(args.runs):
        ours += rates("ours", args.tokens, 3)
        raw += rates("raw", args.tokens, 3)
    mo, mr = statistics.median(ours), statistics.median(raw)
    from llm_magic.providers._local_models import n_threads

    print(
        f"tokens/s, {args.tokens} greedy tokens, {n_threads()} threads:"
        f" llm_magic {mo:.1f} (min {min(ours):.1f}), raw llama-cpp-python {mr:.1f}"
        f" (min {min(raw):.1f})"
    )
    print(f"ratio of medians llm_magic / raw = {mo / mr:.3f}  (goal >= 0.95)")


if __name__ == "__main__":
    main()
