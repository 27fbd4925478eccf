"""Fan-out cost: wall time of one `%%llm` cell with N targets / the slowest target alone.

    python bench/fanout.py [--delay 0.5] [--token-delay 0.01] [--runs 5]

Targets are spread over loopback OpenAI, Ollama and Mistral servers that wait `--delay` before
the first byte and `--token-delay` between chunks. Each target is first timed alone in a cell;
then all N in one cell. A ratio of 1.00 means the N-target cell costs nothing over its slowest
member. The cells run through the real magic, live display included.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from IPython.core.interactiveshell import InteractiveShell  # noqa: E402
from servers.mistral_server import MistralServer  # noqa: E402
from servers.ollama_server import OllamaServer  # noqa: E402
from servers.openai_server import OpenAIServer  # noqa: E402

REPLY = " ".join(f"word{i}" for i in range(40))


def cell_wall(shell: InteractiveShell, targets: list[str]) -> float:
    start = time.perf_counter()
    result = shell.run_cell(f"%%llm {' '.join(targets)} -q\nSay forty words.")
    wall = time.perf_counter() - start
    result.raise_error()
    errors = shell.user_ns["_llm"]["error"].dropna()
    if len(errors):
        raise SystemExit(f"a target failed: {errors.iloc[0]}")
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay", type=float, default=0.5)
    parser.add_argument("--token-delay", type=float, default=0.01)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    # any_model: the Ollama server installs whatever model a chat names (else it answers 404).
    servers = {
        "openai": OpenAIServer(),
        "ollama": OllamaServer(any_model=True),
        "mistral": MistralServer(),
    }
    for server in servers.values():
        server.start()
        server.faults.delay = args.delay
        server.faults.token_delay = args.token_delay
        server.faults.reply = REPLY
    import os

    os.environ["OPENAI_BASE_URL"] = servers["openai"].url
    os.environ["OPENAI_API_KEY"] = "sk-bench-not-a-real-key"
    os.environ["OLLAMA_HOST"] = servers["ollama"].url
    os.environ["MISTRAL_BASE_URL"] = servers["mistral"].url
    os.environ["MISTRAL_API_KEY"] = "bench-not-a-real-key"
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "llm_magic")
    names = list(servers)
    try:
        cell_wall(shell, ["openai:warmup", "ollama:warmup", "mistral:warmup"])  # imports, pools
        print(f"server delay {args.delay} s, {args.token_delay} s between 40 chunks")
        print(f"{'N':>3} {'slowest alone (s)':>18} {'N in one cell (s)':>18} {'ratio':>7}")
        for n in (2, 4, 8):
            targets = [f"{names[i % 3]}:model-{i}" for i in range(n)]
            ratios, alones, togethers = [], [], []
            for _ in range(args.runs):
                alone = max(cell_wall(shell, [t]) for t in targets)
                together = cell_wall(shell, targets)
                ratios.append(together / alone)
                alones.append(alone)
                togethers.append(together)
            print(
                f"{n:>3} {statistics.median(alones):>18.3f} {statistics.median(togethers):>18.3f}"
                f" {statistics.median(ratios):>7.3f}   (min {min(ratios):.3f}, max {max(ratios):.3f})"
            )
        print("goal: ratio <= 1.03")
    finally:
        for server in servers.values():
            server.stop()


if __name__ == "__main__":
    main()
