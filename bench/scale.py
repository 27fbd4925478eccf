"""Big runs, measured (issue 13). Each section prints its figures beside a baseline run the
same way on the same machine, and the ratio.

    python bench/scale.py [--rows 100000] [--section batch|pool|live] [--concurrency 16]
        [--code DIR]

Sections:
  batch  (provider batch APIs and batch files)
    write    `llm_magic.batch_file(prompts, target)`: 100,000 prompts to an OpenAI batch input
             file. Baseline: the same lines written by a bare loop of json.dumps (the least a
             writer can do). Goal <= 5 s and <= 300 MB peak RSS.
    read     `llm_magic.read_batch_output(out, inputs)`: a 100,000-line vLLM output file to the
             run's frame. Baseline: `pd.read_json(out, lines=True)` (the frame by hand, none of
             the work: no prompts, no tokens, no costs). Goal <= 5 s.
    collect  `%llm collect RUN` of a 100,000-request batch on the loopback OpenAI server: the
             row mapping read from the store, both files downloaded and read, the rows logged,
             the frame built. Its submit is timed too (lines built, mapping written, uploaded).
  Each measurement runs in a fresh interpreter, so its peak RSS (ru_maxrss) is its own; the
  RSS after imports is printed beside it.
  pool  (several servers behind one target)
    Two loopback OpenAI servers behind one target vs one of them alone, each server in its
    own process, answering after 50 ms and serving at most 8 requests at a time (the rest
    wait their turn, as vLLM queues past --max-num-seqs). `compare()` sends 1,280 prompts to a
    provider with one base URL (the run's default concurrency, 8) and to one with both
    (`base_urls`, per_server_concurrency = 8: the run takes 16 at once); runs alternate
    one/two, 5 each. Baseline: the one server. Goal: the pair's throughput >= 1.9x. The
    client's own time per row (~1.7 ms CPU here) and the two server processes share the
    machine's cores with it: on 2 busy cores that, not the pool, is what keeps it under 2x.
  live  (big live runs, no batch API)
             `llm_magic.compare("Q {item}", target, over=range(N))` against a loopback
             OpenAI-compatible server (its own process, answering at once), N = rows / 10 and
             rows, each in a fresh subprocess with its own empty run log; rows stream to the log
             as they finish, as in any run. Peak RSS (ru_maxrss) and wall time per row; a
             baseline child runs 10 rows the same way (what every run pays before any row).
             Goal: peak RSS at `rows` < 2x at rows / 10. `--code DIR` measures another
             checkout (main before a change, say) against the same server: a before/after.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _prompts(n: int) -> list[str]:
    return [f"Question {i}: what is {i} + {i}? Answer in one word." for i in range(n)]


# --------------------------------------------------------------------------- batch: children


def _child_write(n: int, folder: Path, how: str) -> dict:
    prompts = _prompts(n)
    if how == "llm_magic":
        import llm_magic
        import llm_magic._batch_files  # noqa: F401  (imported before the clock)
        import llm_magic._plan  # noqa: F401

        base = _rss_mb()
        start, cpu = time.perf_counter(), time.process_time()
        llm_magic.batch_file(prompts, "vllm:Qwen/Qwen3-8B", path=folder / "in.jsonl", max_tokens=16)
    else:
        base = _rss_mb()
        start, cpu = time.perf_counter(), time.process_time()
        with open(folder / "in_baseline.jsonl", "w") as out:
            for i, prompt in enumerate(prompts):
                body = {
                    "model": "Qwen/Qwen3-8B",
                    "messages": [{"role": "user", "content": prompt}],
                    "max_tokens": 16,
                }
                line = {
                    "custom_id": str(i),
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": body,
                }
                out.write(json.dumps(line) + "\n")
    return {
        "s": time.perf_counter() - start,
        "cpu": time.process_time() - cpu,
        "peak_mb": _rss_mb(),
        "base_mb": base,
    }


def _vllm_output(folder: Path) -> Path:
    """What `vllm run-batch` writes for in.jsonl (batch.md §3), made once."""
    out = folder / "out.jsonl"
    if out.exists():
        return out
    with open(folder / "in.jsonl", "rb") as lines, open(out, "w") as dest:
        for i, raw in enumerate(lines):
            line = json.loads(raw)
            completion = {
                "id": f"chatcmpl-{i}",
                "object": "chat.completion",
                "model": line["body"]["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": f"Answer {i * 2}."},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 14, "completion_tokens": 3, "total_tokens": 17},
            }
            response = {"status_code": 200, "request_id": f"vllm-batch-{i}", "body": completion}
            dest.write(
                json.dumps(
                    {
                        "id": f"vllm-{i}",
                        "custom_id": line["custom_id"],
                        "response": response,
                        "error": None,
                    }
                )
                + "\n"
            )
    return out


def _child_read(folder: Path, how: str) -> dict:
    import pandas as pd

    out = folder / "out.jsonl"
    if how == "llm_magic":
        import llm_magic
        import llm_magic._batch_files  # noqa: F401
        import llm_magic._batch_run  # noqa: F401

        base = _rss_mb()
        start, cpu = time.perf_counter(), time.process_time()
        frame = llm_magic.read_batch_output(out, folder / "in.jsonl")
    else:
        base = _rss_mb()
        start, cpu = time.perf_counter(), time.process_time()
        frame = pd.read_json(out, lines=True)
    return {
        "s": time.perf_counter() - start,
        "cpu": time.process_time() - cpu,
        "peak_mb": _rss_mb(),
        "base_mb": base,
        "rows": len(frame),
    }


def _child_collect(n: int, folder: Path) -> dict:
    os.environ["LLM_MAGIC_HOME"] = str(folder / "home")
    os.environ["LLM_MAGIC_CONFIG"] = str(folder / "none.toml")
    from servers.openai_server import OpenAIServer

    import llm_magic
    from llm_magic._batch_store import find
    from llm_magic.store import default_store

    server = OpenAIServer().start()
    os.environ["OPENAI_BASE_URL"] = server.url
    os.environ["OPENAI_API_KEY"] = "sk-bench-not-a-key-000000"
    import llm_magic._plan  # noqa: F401

    base = _rss_mb()
    start = time.perf_counter()
    df = llm_magic.compare(_prompts(n), "openai:gpt-4o-mini", batch=True, max_tokens=16)
    submitted = time.perf_counter() - start
    run_id = find(default_store())[0].run_id
    for batch_id in server.batch_knobs.created:  # on to completed, untimed (a read a step)
        batch = server.batches.batches[batch_id]
        while batch["status"] not in server.batches.terminal():
            server.batches._advance(batch)
    start, cpu = time.perf_counter(), time.process_time()
    frame = llm_magic.collect(run_id)
    collected, cpu = time.perf_counter() - start, time.process_time() - cpu
    server.stop()
    assert len(df) == 0, df[["target", "error"]].head()
    assert frame is not None, "nothing collected"
    assert len(frame) == n and frame["error"].isna().all(), frame["error"].dropna()[:3].tolist()
    return {
        "submit_s": submitted,
        "s": collected,
        "cpu": cpu,
        "peak_mb": _rss_mb(),
        "base_mb": base,
        "rows": len(frame),
    }


def _child(args: list[str]) -> None:
    what, folder, *rest = args
    folder_path = Path(folder)
    if what == "write":
        result = _child_write(int(rest[0]), folder_path, rest[1])
    elif what == "read":
        result = _child_read(folder_path, rest[0])
    else:
        result = _child_collect(int(rest[0]), folder_path)
    print(json.dumps(result))


def _run(*args: str) -> dict:
    done = subprocess.run(
        [sys.executable, __file__, "--child", *args], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(done.stderr)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _figures(result: dict) -> str:
    return (
        f"{result['s']:.2f} s wall, {result['cpu']:.2f} s CPU, peak RSS {result['peak_mb']:.0f} MB"
    )


def batch_section(rows: int) -> None:
    print(f"## batch: {rows:,} requests (wall time, the process's CPU time, peak RSS)")
    with tempfile.TemporaryDirectory() as tmp:
        ours, base = (
            _run("write", tmp, str(rows), "llm_magic"),
            _run("write", tmp, str(rows), "baseline"),
        )
        size = (Path(tmp) / "in.jsonl").stat().st_size / 1e6
        print(
            f"write    batch_file: {_figures(ours)} (after imports {ours['base_mb']:.0f} MB),"
            f" {size:.1f} MB file | json.dumps loop: {_figures(base)} | ratio"
            f" {ours['s'] / base['s']:.2f}  (goal <= 5 s, <= 300 MB)"
        )
        _vllm_output(Path(tmp))
        ours, base = _run("read", tmp, "llm_magic"), _run("read", tmp, "baseline")
        print(
            f"read     read_batch_output: {_figures(ours)} | pd.read_json(lines=True):"
            f" {_figures(base)} | ratio {ours['s'] / base['s']:.2f}  (goal <= 5 s)"
        )
        read = ours
        ours = _run("collect", tmp, str(rows))
        print(
            f"collect  %llm collect: {_figures(ours)} (CPU includes the loopback server's;"
            f" submit took {ours['submit_s']:.2f} s) | read_batch_output: {read['s']:.2f} s |"
            f" ratio {ours['s'] / read['s']:.2f}  (goal <= 5 s)"
        )


# --------------------------------------------------------------------------- pool

POOL_PROMPTS, POOL_RUNS = 1280, 5


def pool_section(rows: int) -> None:
    """Two servers behind one target vs one (the module docstring); `rows` is not used:
    POOL_PROMPTS at 8 x 50 ms per server already take seconds a run."""
    import statistics
    from contextlib import ExitStack

    sys.path.insert(0, str(ROOT / "bench"))
    from serve import alternate, served

    print(f"## pool: {POOL_PROMPTS} prompts, each server 8 at a time, 50 ms per answer")
    saved = {k: os.environ.get(k) for k in ("LLM_MAGIC_CONFIG", "LLM_MAGIC_HOME")}
    with ExitStack() as stack:
        urls = [
            stack.enter_context(served("openai", delay=0.05, reply="ok", max_concurrent=8))
            for _ in range(2)
        ]
        home = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        config = home / "config.toml"
        config.write_text(  # a JSON list of strings is a TOML array too
            f"[providers.one]\nbase_url = {json.dumps(urls[0])}\n\n"
            f"[providers.two]\nbase_urls = {json.dumps(urls)}\nper_server_concurrency = 8\n",
            encoding="utf-8",
        )
        os.environ.update(LLM_MAGIC_CONFIG=str(config), LLM_MAGIC_HOME=str(home / "home"))
        import llm_magic

        prompts = [f"prompt {i}" for i in range(POOL_PROMPTS)]

        def run(provider: str) -> None:
            df = llm_magic.compare(prompts, f"{provider}:bench-model", max_tokens=4)
            if df["error"].notna().any():
                raise SystemExit(f"{provider}: a row failed: {df['error'].dropna().iloc[0]}")

        run("one"), run("two")  # warm: SDK import, connections
        one, two = alternate(lambda: run("one"), lambda: run("two"), POOL_RUNS)
        for key, value in saved.items():  # the other sections see the environment as it was
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    a = POOL_PROMPTS / statistics.median(one)
    b = POOL_PROMPTS / statistics.median(two)
    print(f"one server   median {statistics.median(one):.3f} s, {a:.1f} rows/s")
    print(f"two servers  median {statistics.median(two):.3f} s, {b:.1f} rows/s")
    print(f"ratio two/one {b / a:.2f}x  (goal >= 1.9x)")


# ---------------------------------------------------------------------------- live runs

KEY = "sk-bench-not-a-real-key"

LIVE_CHILD = """
import json, resource, sys, time
n, workers = int(sys.argv[1]), int(sys.argv[2])
import llm_magic
import llm_magic.results  # pandas and the frame code: part of the fixed cost, as in a notebook
start = time.perf_counter()
df = llm_magic.compare("Q {item}", "openai:bench-model", over=list(range(n)),
                       concurrency=workers, retries=0, max_tokens=8)
wall = time.perf_counter() - start
assert len(df) == n, len(df)
failed = int(df["error"].notna().sum())
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
print(json.dumps({"rows": n, "wall_s": wall, "peak_mb": peak, "failed": failed}))
"""


def _live_child(code: str, *args: str, env: dict[str, str]) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=env["PYTHONPATH"],  # `python -c` puts the working folder first on sys.path
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"child failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def live_section(args: argparse.Namespace) -> None:
    sizes = [args.rows // 10, args.rows]
    from serve import served

    with served("openai", reply="ok") as url, tempfile.TemporaryDirectory() as home:
        env = {
            **os.environ,
            "OPENAI_BASE_URL": url,
            "OPENAI_API_KEY": KEY,
            "PYTHONPATH": str(Path(args.code).resolve()),
        }
        print(f"live compare(), concurrency {args.concurrency}, loopback {url}")
        print(f"{'rows':>8} {'peak RSS MB':>12} {'x smallest':>10} {'ms/row':>8} {'failed':>7}")
        results = []
        for n in [10, *sizes]:
            env["LLM_MAGIC_HOME"] = str(Path(home) / f"run{n}")  # a fresh, empty run log
            got = _live_child(LIVE_CHILD, str(n), str(args.concurrency), env=env)
            results.append(got)
            base = results[1]["peak_mb"] if len(results) > 1 else got["peak_mb"]
            label = "baseline" if n == 10 else f"{n:,}"
            per_row = "-" if n == 10 else f"{1000 * got['wall_s'] / n:.3f}"  # 10: start-up
            print(
                f"{label:>8} {got['peak_mb']:>12.1f} {got['peak_mb'] / base:>10.2f}"
                f" {per_row:>8} {int(got['failed']):>7}"
            )
        first, last = results[1], results[-1]
        growth = last["peak_mb"] / first["peak_mb"]
        verdict = "met" if growth < 2 else "NOT met"
        span = f"{first['rows']:,} -> {last['rows']:,} rows"
        print(f"peak RSS {span}: {growth:.2f}x (goal < 2x: {verdict})")


SECTIONS = {
    "batch": lambda args: batch_section(args.rows),
    "pool": lambda args: pool_section(args.rows),
    "live": live_section,
}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        return _child(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--section", choices=sorted(SECTIONS), action="append")
    parser.add_argument("--concurrency", type=int, default=16, help="live: requests in flight")
    parser.add_argument("--code", default=str(ROOT), help="live: the llm_magic checkout to measure")
    args = parser.parse_args()
    for name in args.section or sorted(SECTIONS):
        SECTIONS[name](args)
    return None


if __name__ == "__main__":
    main()
