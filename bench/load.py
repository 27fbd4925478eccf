"""How long `%load_ext` takes: llm_magic beside jupyter-ai-magics, each in a fresh process.

    python bench/load.py [--runs 7] [--jai-venv /tmp/jai-venv]

jupyter-ai-magics is installed into a scratch venv (created on first use) so it never enters
the project's environment. Prints the median of each and their ratio.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

PROBE = """
import time
from IPython.core.interactiveshell import InteractiveShell
shell = InteractiveShell.instance()
start = time.perf_counter()
shell.run_line_magic("load_ext", "{ext}")
print(time.perf_counter() - start)
"""


def load_time(python: str, ext: str, runs: int) -> list[float]:
    times = []
    for _ in range(runs + 1):  # the first run warms the OS file cache and is dropped
        out = subprocess.run(
            [python, "-c", PROBE.format(ext=ext)], capture_output=True, text=True, check=True
        )
        times.append(float(out.stdout.strip().splitlines()[-1]))
    return times[1:]


def ensure_jai(venv: Path) -> str:
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "jupyter-ai-magics", "ipython"], check=True
        )
    return str(python)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--jai-venv", type=Path, default=Path("/tmp/llm_magic-bench-jai"))
    args = parser.parse_args()

    ours = load_time(sys.executable, "llm_magic", args.runs)
    theirs = load_time(ensure_jai(args.jai_venv), "jupyter_ai_magics", args.runs)
    a, b = statistics.median(ours), statistics.median(theirs)
    print(f"%load_ext llm_magic          median {a * 1000:8.1f} ms  (min {min(ours) * 1000:.1f})")
    print(f"%load_ext jupyter_ai_magics  median {b * 1000:8.1f} ms  (min {min(theirs) * 1000:.1f})")
    print(f"ratio llm_magic / jupyter_ai_magics = {a / b:.4f}  (goal <= 0.0667, and <= 100 ms)")


if __name__ == "__main__":
    main()
