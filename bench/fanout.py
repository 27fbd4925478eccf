"""Fan-out cost: wall time of one `%%llm` cell with N targets / the slowest target alone.

    python bench/fanout.py [--delay 0.5] [--token-delay 0.01] [--runs 5]

Cells run in a real IPython kernel (jupyter_client), live columns and all, exactly as in a
notebook: the clock runs from sending the cell to the kernel's reply. Targets are spread over
loopback OpenAI, Ollama and Mistral servers, each in its own process, that wait `--delay`
before the first byte and `--token-delay` between 40 chunks. Each target is first timed alone;
then all N in one cell. A ratio of 1.00 means the N-target cell costs nothing over its slowest
member.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from jupyter_client.manager import start_new_kernel  # noqa: E402
from serve import served  # noqa: E402

KINDS = ("openai", "ollama", "mistral")
REPLY = " ".join(f"word{i}" for i in range(40))


def cell_wall(client, targets: list[str]) -> float:
    code = f"%%llm {' '.join(targets)} -n 40\nSay forty words."
    start = time.perf_counter()
    reply = client.execute_interactive(code, timeout=60, output_hook=lambda msg: None)
    wall = time.perf_counter() - start
    if reply["content"]["status"] != "ok":
        raise SystemExit(f"cell failed: {reply['content'].get('evalue')}")
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay", type=float, default=0.5)
    parser.add_argument("--token-delay", type=float, default=0.01)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    with ExitStack() as stack:
        urls = {
            k: stack.enter_context(served(k, args.delay, args.token_delay, REPLY)) for k in KINDS
        }
        env = dict(os.environ)
        env.update(
            OPENAI_BASE_URL=urls["openai"],
            OPENAI_API_KEY="sk-bench-not-a-real-key",
            OLLAMA_HOST=urls["ollama"],
            MISTRAL_BASE_URL=urls["mistral"],
            MISTRAL_API_KEY="bench-not-a-real-key",
            LLM_MAGIC_HOME=env.get("LLM_MAGIC_HOME", "/tmp/llm_magic-bench-home"),
        )
        manager, client = start_new_kernel(env=env)
        try:
            client.execute_interactive("%load_ext llm_magic", timeout=60)
            cell_wall(client, [f"{k}:warmup" for k in KINDS])  # imports, connection pools
            print(
                f"server delay {args.delay} s, {args.token_delay} s between 40 chunks;"
                " real kernel, live display on"
            )
            print(f"{'N':>3} {'slowest alone (s)':>18} {'N in one cell (s)':>18} {'ratio':>7}")
            for n in (2, 4, 8):
                targets = [f"{KINDS[i % 3]}:model-{i}" for i in range(n)]
                ratios, alones, togethers = [], [], []
                for _ in range(args.runs):
                    alone = max(cell_wall(client, [t]) for t in targets)
                    together = cell_wall(client, targets)
                    ratios.append(together / alone)
                    alones.append(alone)
                    togethers.append(together)
                print(
                    f"{n:>3} {statistics.median(alones):>18.3f}"
                    f" {statistics.median(togethers):>18.3f} {statistics.median(ratios):>7.3f}"
                    f"   (min {min(ratios):.3f}, max {max(ratios):.3f})"
                )
            print("goal: ratio <= 1.03")
        finally:
            client.stop_channels()
            manager.shutdown_kernel(now=True)


if __name__ == "__main__":
    main()
