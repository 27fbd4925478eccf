"""A huge streamed answer: its time through `complete()` beside the raw openai SDK, and what a
`%%llm` cell costs a real kernel (display traffic, peak memory).

    python bench/huge_answer.py [--chars 5000000] [--chunks 64,1024,16384] [--runs 5]

(a) `llm_magic.complete()` and the official openai SDK stream the same answer (`--chars`
    characters in pieces of each `--chunks` size) from the same loopback server, in its own
    process; calls alternate A B A B, medians are printed with their ratio (goal <= 1.2). The
    SDK side only joins the pieces; complete() also does what it always does: timing, token
    accounting, redaction, the record and the run log.
(b) `%%llm` with the live view on, in a real IPython kernel (jupyter_client): the bytes of the
    display messages the kernel sends on IOPub for one cell (display_data,
    update_display_data, execute_result; goal <= 2 MB), and the kernel's peak RSS (VmHWM in
    /proc/PID/status) beside its peak after the same cell with a short answer (goal: peak <=
    baseline + 4 x the answer's size).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from serve import alternate, sdk_answer, served  # noqa: E402

KEY = "sk-bench-not-a-real-key"
DISPLAY_TYPES = ("display_data", "update_display_data", "execute_result")


def sdk_vs_complete(chars: int, chunk: int, runs: int) -> tuple[float, float]:
    """Median seconds of (complete(), raw SDK) for one answer of `chars` in `chunk` pieces."""
    import openai

    import llm_magic

    with served("openai", reply="0123456789", reply_chars=chars, chunk_chars=chunk) as url:
        os.environ["OPENAI_BASE_URL"] = url
        client = openai.OpenAI(base_url=url, api_key=KEY, max_retries=0)

        def raw() -> str:
            return sdk_answer(client, "Say a lot.")

        def ours() -> str:
            return llm_magic.complete("Say a lot.", "openai:bench-model").text

        assert len(raw()) == len(ours()) == chars  # same work on both sides; warms both up
        a, b = alternate(ours, raw, runs)
        client.close()
    return statistics.median(a), statistics.median(b)


def peak_rss(pid: int) -> int:
    """VmHWM of `pid` in bytes: the most resident memory it has had."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")


def run_cell(client, code: str) -> dict[str, int]:
    """Run one cell; bytes of the display messages it sent, by type, and their count."""
    sizes: dict[str, int] = {t: 0 for t in DISPLAY_TYPES}
    sizes["messages"] = 0

    def hook(msg: dict) -> None:
        kind = msg["header"]["msg_type"]
        if kind in DISPLAY_TYPES:
            sizes[kind] += len(json.dumps(msg["content"]).encode())
            sizes["messages"] += 1

    reply = client.execute_interactive(code, timeout=300, output_hook=hook)
    if reply["content"]["status"] != "ok":
        raise SystemExit(f"cell failed: {reply['content'].get('evalue')}")
    return sizes


def in_a_kernel(chars: int, chunk: int, log: bool = True) -> tuple[dict[str, int], int, int, float]:
    """One %%llm cell of a `chars` answer in a fresh kernel: (display bytes by type, baseline
    peak RSS, peak RSS, wall seconds). `log=False` turns the run log off (config `log`)."""
    from jupyter_client.manager import start_new_kernel

    with ExitStack() as stack:
        small = stack.enter_context(served("openai"))
        huge = stack.enter_context(
            served("openai", reply="0123456789", reply_chars=chars, chunk_chars=chunk)
        )
        home = stack.enter_context(tempfile.TemporaryDirectory(prefix="llm_magic-bench-"))
        config = Path(home) / "config.toml"
        # Two names for two servers, both through the openai provider: the same code path.
        config.write_text(
            f"log = {str(log).lower()}\n"
            f'[providers.small]\nkind = "openai"\nbase_url = "{small}"\napi_key_env = "BENCH_KEY"\n'
            f'[providers.huge]\nkind = "openai"\nbase_url = "{huge}"\napi_key_env = "BENCH_KEY"\n'
        )
        env = dict(os.environ, BENCH_KEY=KEY, LLM_MAGIC_CONFIG=str(config), LLM_MAGIC_HOME=home)
        manager, client = start_new_kernel(env=env)
        try:
            pid = manager.provisioner.process.pid
            client.execute_interactive("%load_ext llm_magic", timeout=60)
            for _ in range(3):  # imports, pools, the log: everything but the answer's size
                run_cell(client, "%%llm small:bench-model\nSay a lot.")
            baseline = peak_rss(pid)
            started = time.perf_counter()
            sizes = run_cell(client, "%%llm huge:bench-model\nSay a lot.")
            wall = time.perf_counter() - started
            peak = peak_rss(pid)
        finally:
            client.stop_channels()
            manager.shutdown_kernel(now=True)
    return sizes, baseline, peak, wall


def report_kernel(chars: int, chunk: int) -> None:
    sizes, baseline, peak, wall = in_a_kernel(chars, chunk)
    _, quiet_base, quiet_peak, _ = in_a_kernel(chars, chunk, log=False)
    shown = sum(sizes[t] for t in DISPLAY_TYPES)
    mb = 1_000_000

    def grown(base: int, top: int) -> str:
        return f"baseline + {(top - base) / mb:.1f} MB = baseline + {(top - base) / chars:.2f} x"

    print(f"\n(b) %%llm huge:bench-model in a real kernel, live view on: {chars:,} characters")
    print(f"    in pieces of {chunk:,}, cell wall {wall:.2f} s")
    print(
        f"    display messages: {sizes['messages']} ({sizes['display_data']:,} B display_data, "
        f"{sizes['update_display_data']:,} B updates, {sizes['execute_result']:,} B result)"
    )
    print(f"    display bytes     {shown / mb:8.3f} MB   (goal <= 2 MB)")
    print(f"    peak RSS baseline {baseline / mb:8.1f} MB   (after the same cell, short answer)")
    print(f"    peak RSS          {peak / mb:8.1f} MB   = {grown(baseline, peak)} (goal <= 4 x)")
    print(f"    run log off       {quiet_peak / mb:8.1f} MB   = {grown(quiet_base, quiet_peak)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chars", type=int, default=5_000_000)
    parser.add_argument("--chunks", default="64,1024,16384")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    chunks = [int(c) for c in args.chunks.split(",")]

    home = tempfile.mkdtemp(prefix="llm_magic-bench-")
    os.environ.update(OPENAI_API_KEY=KEY, LLM_MAGIC_HOME=home, LLM_MAGIC_CONFIG=f"{home}/none")
    print(f"(a) one streamed answer of {args.chars:,} characters, loopback, median of {args.runs}")
    print(f"{'piece':>8} {'complete() s':>13} {'raw SDK s':>10} {'ratio':>7}")
    for chunk in chunks:
        ours, raw = sdk_vs_complete(args.chars, chunk, args.runs)
        print(f"{chunk:>8,} {ours:>13.3f} {raw:>10.3f} {ours / raw:>7.2f}")
    print("goal: ratio <= 1.2")
    report_kernel(args.chars, 1024)


if __name__ == "__main__":
    main()
