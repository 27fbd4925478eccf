"""Scoring cost: `df.llm.check()` with five deterministic checks over 10,000 answers, beside a
plain pandas `.str.contains` pass over the same column.

    python bench/checks.py [--rows 10000] [--rounds 7]

The frame looks like a `--over cases` run: varied answers (some JSON, some not), an `expected`
column that one check fills per row. Rounds alternate A B A B so drift hits both alike; prints
the median of each, the ratio, and whether the goal (checks under 0.5 s) is met.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time

import pandas as pd

from llm_magic._records import RunRecord
from llm_magic.results import to_dataframe

CHECKS = (
    "contains:Paris",
    "correct=icontains:{expected}",
    "not-contains:sorry",
    r"number=regex:\b\d{{2,4}}\b",
    "json",
)
GOAL_S = 0.5


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
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


if __name__ == "__main__":
    main()
