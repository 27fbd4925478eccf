"""What reading the bundled model's GGUF header costs the first local cell: llm_magic's own
reader beside the `gguf` package that llama.cpp publishes (PyPI `gguf`).

    python bench/gguf_read.py [--runs 5]

The first `%%llm local:...` cell reads the header once (for the trained context length) before
llama.cpp loads the model. Each side runs in a fresh process; the clock covers reading
SmolLM2's header (49k-token vocabulary, 48k merges) and, for `gguf`, importing it (ours is
already imported: it is what finds the file). The `gguf` side needs
`pip install gguf`; it reads every array entry into numpy, where ours skips long arrays.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

PROBE = """
import json, sys, time
side = sys.argv[1]
from llm_magic.providers._gguf import bundled_gguf
path = bundled_gguf()
start = time.perf_counter()
if side == "ours":
    from llm_magic.providers._gguf import read_gguf
    context = read_gguf(path).context_length
else:
    import gguf
    reader = gguf.GGUFReader(path)
    arch = reader.fields["general.architecture"].contents()
    context = reader.fields[f"{arch}.context_length"].contents()
print(json.dumps([time.perf_counter() - start, context]))
"""


def once(side: str) -> float:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, side], capture_output=True, text=True, check=True
    )
    seconds, context = json.loads(out.stdout.strip().splitlines()[-1])
    assert context == 8192, context  # both read the same fact
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    ours: list[float] = []
    theirs: list[float] = []
    for _ in range(args.runs):  # A B A B: drift in machine load falls on both
        ours.append(once("ours"))
        theirs.append(once("gguf"))
    mo, mt = statistics.median(ours), statistics.median(theirs)
    print(f"import + read SmolLM2's GGUF header, median of {args.runs} fresh processes:")
    print(f"  llm_magic reader {mo * 1000:.1f} ms (min {min(ours) * 1000:.1f})")
    print(f"  gguf package     {mt * 1000:.1f} ms (min {min(theirs) * 1000:.1f})")
    print(f"  gguf package costs the first local cell {(mt - mo) * 1000:+.0f} ms"
          f" (ratio {mt / mo:.1f}x; adopt it only under +50 ms)")


if __name__ == "__main__":
    main()
