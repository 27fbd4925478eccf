"""Scoring cost: `df.llm.check()` with five deterministic checks over 10,000 answers, beside a
plain pandas `.str.contains` pass over the same column; and judge throughput: the requests of
a `judge:` check and of `df.llm.rank()` sent through the runner, beside the same requests sent
as a plain `compare()`.

    python bench/checks.py [--rows 10000] [--rounds 7] [--judge-rows 200] [--delay 0.05]
                           [--only checks|judge]

The frame looks like a `--over cases` run: varied answers (some JSON, some not), an `expected`
column that one check fills per row. The judge is a loopback OpenAI server in its own process
that waits `--delay` s before each answer. Rounds alternate (A B A B; for the judge A B B A,
so neither always goes first) so drift hits both alike; prints the median of each, the ratio,
and whether the goals (checks under 0.5 s; judge throughput at least 0.95x the plain
compare()) are met.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

import llm_magic
from llm_magic._judge import judge_prompt
from llm_magic._rank import RUBRIC, pair_prompt
from llm_magic._records import RunRecord
from llm_magic.results import to_dataframe

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve import served  # noqa: E402

CHECKS = (
    "contains:Paris",
    "correct=icontains:{expected}",
    "not-contains:sorry",
    r"number=regex:\b\d{{2,4}}\b",
    "json",
)
GOAL_S = 0.5
JUDGE_GOAL = 0.95  # judge throughput / plain compare() throughput
JUDGE = "openai:bench-judge"
# read as a score verdict and as a pairwise one alike
VERDICT = '{"winner": "A", "score": 1, "reason": "fine"}'


def frame(rows: int) -> pd.DataFrame:
    rng = random.Random(7)
    cities = ["Paris", "Rome", "Lima", "Oslo", "Cairo", "Quito"]
    records, expected = [], []
    for i in range(rows):
        city = rng.choice(cities)
        if i % 4 == 0:
            text = json.dumps({"city": city, "year": rng.randint(1000, 2024)})
        else:
            words = " ".join(rng.choice(["the", "answer", "is", "sorry", "so"]) for _ in range(30))
            text = f"{words} {city} {rng.randint(1, 99999)} {words}"
        records.append(RunRecord("bench", "a:x", "a", "x", f"q{i}", output=text))
        expected.append(rng.choice(cities).lower())
    return to_dataframe(records).assign(expected=expected)


def deterministic(args: argparse.Namespace) -> None:
    df = frame(args.rows)

    def ours() -> pd.DataFrame:
        return df.llm.check(*CHECKS, variables={})

    def baseline() -> pd.Series:
        return df["output"].str.contains("Paris", regex=False)

    ours(), baseline()  # warm-up: imports, regex cache
    a, b, a_cpu, b_cpu = [], [], [], []
    for _ in range(args.rounds):
        t, c = time.perf_counter(), time.process_time()
        scored = ours()
        a.append(time.perf_counter() - t)
        a_cpu.append(time.process_time() - c)
        t, c = time.perf_counter(), time.process_time()
        plain = baseline()
        b.append(time.perf_counter() - t)
        b_cpu.append(time.process_time() - c)
    assert scored["pass_contains"].tolist() == plain.tolist()  # same question, same answers
    ours_s, base_s = statistics.median(a), statistics.median(b)
    print(f"rows: {args.rows:,}  checks: {len(CHECKS)}  rounds: {args.rounds}  (median wall, cpu)")
    print(
        f"df.llm.check, {len(CHECKS)} checks:  {ours_s * 1000:7.1f} ms"
        f"  {statistics.median(a_cpu) * 1000:7.1f} ms"
    )
    print(
        f"pandas .str.contains, 1 check: {base_s * 1000:7.1f} ms"
        f"  {statistics.median(b_cpu) * 1000:7.1f} ms"
    )
    per_check = ours_s / len(CHECKS) / base_s
    print(f"ratio (wall): {ours_s / base_s:.1f}x in all, {per_check:.1f}x per check")
    print(f"goal < {GOAL_S} s: {'met' if ours_s < GOAL_S else 'NOT met'}")
    print(f"pass rate: {scored['passed'].mean():.3f}")


def _medians(a: list[float], b: list[float]) -> tuple[float, float]:
    return statistics.median(a), statistics.median(b)


def judged(args: argparse.Namespace) -> None:
    """Judge requests through the runner vs the same prompts as a plain compare()."""
    rows = args.judge_rows
    answers = frame(rows).assign(target=["a:x", "b:y"] * (rows // 2) + ["a:x"] * (rows % 2))
    answers["prompt"] = [f"q{i // 2}" for i in range(rows)]  # two targets answer each prompt
    rubric = "is it right?"
    check_prompts = [
        judge_prompt(rubric, q, o)
        for q, o in zip(answers["prompt"], answers["output"], strict=True)
    ]
    pairs = answers.groupby("prompt", sort=False)["output"].apply(list).tolist()
    rank_prompts = [
        pair_prompt(RUBRIC, f"q{n}", *order)
        for n, (x, y) in enumerate(pairs)
        for order in ((x, y), (y, x))
    ]
    with served("openai", delay=args.delay, reply=VERDICT) as url:
        os.environ.update(OPENAI_BASE_URL=url, OPENAI_API_KEY="sk-bench-not-a-real-key")

        def plain(prompts: list[str]) -> pd.DataFrame:
            return llm_magic.compare(prompts, JUDGE, temperature=0, stream=False)

        def check() -> pd.DataFrame:
            return answers.llm.check(f"judge:{rubric}", judge=JUDGE, variables={})

        def rank() -> pd.DataFrame:
            return answers.llm.rank(judge=JUDGE, resamples=1000)

        print(
            f"judge: {rows} answers (2 targets), server delay {args.delay} s per answer, "
            f"{args.rounds} rounds (median wall)"
        )
        print(f"{'':36}{'judge batch':>16}{'plain compare()':>17}{'throughput':>12}")
        for name, ours, prompts in (
            ("judge: check", check, check_prompts),
            ("rank(), both orders", rank, rank_prompts),
        ):
            ours(), plain(prompts)  # warm-up: imports, connections
            a: list[float] = []
            b: list[float] = []
            for n in range(args.rounds):  # A B, then B A: neither always goes first
                for first in (True, False) if n % 2 == 0 else (False, True):
                    t = time.perf_counter()
                    if first:
                        result = ours()
                    else:
                        sent = plain(prompts)
                    (a if first else b).append(time.perf_counter() - t)
            assert result.attrs["judge"]["requests"] == len(prompts) == len(sent)
            assert result.attrs["judge"]["failed"] == 0 and sent["error"].isna().all()
            ours_s, base_s = _medians(a, b)
            ratio = base_s / ours_s
            label = f"{name} ({len(prompts)} requests)"
            print(
                f"{label:36}{ours_s:14.3f} s{base_s:15.3f} s{ratio:11.2f}x"
                f"  goal >= {JUDGE_GOAL}x: {'met' if ratio >= JUDGE_GOAL else 'NOT met'}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--judge-rows", type=int, default=200)
    parser.add_argument("--delay", type=float, default=0.05)
    parser.add_argument("--only", choices=("checks", "judge"))
    args = parser.parse_args()
    # the run log and cache of the judge part go to a scratch home, never the user's
    os.environ.setdefault("LLM_MAGIC_HOME", tempfile.mkdtemp(prefix="llm_magic-bench-"))
    if args.only != "judge":
        deterministic(args)
    if args.only != "checks":
        judged(args)


if __name__ == "__main__":
    main()
