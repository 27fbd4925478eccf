"""The LLM judge of `judge:RUBRIC` checks: one prompt per answer, asking for a verdict as the
JSON object {"score": <0..1>, "reason": "…"}, sent as one batch through the runner once the
answers are in (so concurrency, retries, cache and the deadline apply), logged in the run log,
never a row of the result.

A verdict is read leniently (a JSON object in a ```json fence or inside prose counts); what
cannot be read, and a judge request that failed, is NaN and a one-line reason.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ._check_kinds import Verdict
from ._records import RunRecord
from ._runner import Job, Policy, run_jobs
from ._targets import TargetSpec
from .errors import RunInterrupted, one_line
from .providers.base import Message, Options
from .store import record_run

__all__ = ["VERDICT_SCHEMA", "Judge", "json_objects", "judge_prompt", "read_verdict"]

_PROMPT = """You are a strict grader. Grade the ANSWER to the QUESTION against the RUBRIC.
Reply with one JSON object and nothing else: {{"score": <a number from 0 to 1>, \
"reason": "<one short sentence>"}}

RUBRIC:
{rubric}

QUESTION:
{question}

ANSWER:
{answer}"""

# Asked of backends that can hold an answer to a schema (the embedded model does, by grammar).
VERDICT_SCHEMA = json.dumps(
    {
        "type": "object",
        "properties": {
            "score": {"type": "number", "minimum": 0, "maximum": 1},
            "reason": {"type": "string"},
        },
        "required": ["score", "reason"],
    }
)
_OBJECT = re.compile(r"\{.*?\}", re.S)  # shortest first: a verdict is one flat object
_BARE_SCORE = re.compile(r'"score"\s*:\s*"?(\d+(?:\.\d+)?|\.\d+)"?')


def judge_prompt(rubric: str, question: str, answer: str) -> str:
    return _PROMPT.format(rubric=rubric, question=question, answer=answer)


def json_objects(text: str) -> Iterator[dict[str, Any]]:
    """The flat JSON objects in a reply, first first: bare, in a ```json fence or in prose."""
    for found in _OBJECT.finditer(text):
        try:
            value = json.loads(found.group(0))
        except ValueError:
            continue
        if isinstance(value, dict):
            yield value


def read_verdict(text: str) -> Verdict:
    """A judge's reply -> (score, reason); NaN and why when no verdict can be read."""
    for value in json_objects(text):
        if "score" not in value:
            continue
        score = value["score"]
        if isinstance(score, str):
            try:
                score = float(score.strip())
            except ValueError:
                return math.nan, one_line(f"judge gave score {score!r}, not a number", 200)
        if isinstance(score, bool) or not isinstance(score, int | float) or math.isnan(score):
            return math.nan, one_line(f"judge gave score {score!r}, not a number", 200)
        if not 0.0 <= score <= 1.0:
            return math.nan, one_line(f"judge gave score {score!r}, not in 0–1", 200)
        reason = value.get("reason")
        return float(score), one_line(f"judge: {reason}" if reason else "judge: no reason", 200)
    bare = _BARE_SCORE.search(text)  # a verdict cut short, or broken JSON around its score
    if bare and 0.0 <= float(bare.group(1)) <= 1.0:
        return float(bare.group(1)), "judge: (its reason was not readable)"
    shown = text.strip()[:60] or "an empty reply"
    return math.nan, one_line(f"judge verdict not readable: {shown!r}", 200)


@dataclass(frozen=True, eq=False)
class Judge:
    """Who judges and how its requests run: the run's policy, deterministic sampling."""

    spec: TargetSpec
    policy: Policy
    options: Options
    get_provider: Callable[[str], Any]

    def __call__(self, tasks: Sequence[tuple[str, str, str]]) -> tuple[list[Verdict], dict]:
        """(rubric, question, answer) per task -> a verdict each, and the batch's figures for
        df.attrs["judge"]: requests, failed, unreadable, latency_s (sum), cost_usd (sum)."""
        records = self.ask([judge_prompt(*task) for task in tasks])
        verdicts: list[Verdict] = []
        for record in records:
            if record.error is not None:
                verdicts.append((math.nan, one_line(f"judge failed: {record.error}", 200)))
            else:
                verdicts.append(read_verdict(record.output))
        unreadable = sum(
            r.error is None and math.isnan(score)
            for r, (score, _) in zip(records, verdicts, strict=True)
        )
        return verdicts, self.figures(records, unreadable)

    def ask(self, prompts: Sequence[str], schema: str | None = None) -> list[RunRecord]:
        """Send each prompt to the judge as one batch through the runner; a record each, in
        order, logged in the run log. `schema`: another reply shape than the score verdict's
        (pairwise ranking asks for a winner)."""
        options = self.options if schema is None else replace(self.options, json_schema=schema)
        jobs = [
            Job(i, prompt, (Message("user", prompt),), self.spec, options)
            for i, prompt in enumerate(prompts)
        ]
        try:
            records = run_jobs(jobs, self.get_provider, self.policy) if jobs else []
        except RunInterrupted as stopped:  # the answers are in: keep them, judged or not
            records = list(stopped.records)
        record_run(records, self.policy.max_log_chars)  # in the run log like any request
        return records

    def figures(self, records: Sequence[RunRecord], unreadable: int) -> dict[str, Any]:
        """A batch's figures: requests, failed, unreadable, cached, latency_s and cost_usd
        (sums over the batch)."""
        costs = [r.cost_usd for r in records if r.cost_usd is not None]
        return {
            "target": self.spec.label,
            "requests": len(records),
            "failed": sum(r.error is not None for r in records),
            "unreadable": unreadable,
            "cached": sum(r.cached for r in records),
            "latency_s": float(sum(r.latency_s or 0.0 for r in records)),
            "cost_usd": float(sum(costs)) if costs else math.nan,
        }
