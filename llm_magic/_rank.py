"""`df.llm.rank()`: pairwise ranking of a frame's targets by an LLM judge.

For each prompt (and repeat), every pair of targets' answers is judged twice, once in each
order (A/B then B/A), so a judge that favours the first or the second position favours each
target equally often. Each verdict is one game; a tie is half a win to each side. Per target:
wins, losses, ties, unreadable verdicts, skipped pairs, win rate, and a Bradley–Terry strength
with a 95 % bootstrap interval (prompts resampled with replacement).

Choices, documented in the README:
- a pair where either answer failed (or is missing) is not sent to the judge: it is counted in
  `skipped` for both targets; reliability is summary()'s `errors`, not the judge's business;
- repeat r of one target is compared with repeat r of the other (every repeat is a comparison);
  the bootstrap resamples whole prompts, so repeats of a prompt never pass for independent;
- ties are half-wins (not Davidson's tie parameter), and every pair of targets gets one
  virtual tied game, so a target that won every game gets a finite strength.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ._judge import json_objects
from .errors import UsageProblem, one_line

if TYPE_CHECKING:
    from ._judge import Judge
    from ._records import RunRecord

_Key = tuple[Any, int, int]  # a slot: prompt, repeat, n-th time that prompt came for a target

__all__ = ["PAIR_SCHEMA", "RUBRIC", "bradley_terry", "pair_prompt", "rank_frame", "read_winner"]

RUBRIC = "Which answer is better: correct first, then complete, then clear and concise."

_PROMPT = """You are a fair judge. Compare two answers, A and B, to the QUESTION, following the \
RUBRIC. Reply with one JSON object and nothing else: {{"winner": "A" or "B" or "tie", \
"reason": "<one short sentence>"}}

RUBRIC:
{rubric}

QUESTION:
{question}

ANSWER A:
{a}

ANSWER B:
{b}"""

# Asked of backends that can hold an answer to a schema (the embedded model does, by grammar).
PAIR_SCHEMA = json.dumps(
    {
        "type": "object",
        "properties": {
            "winner": {"type": "string", "enum": ["A", "B", "tie"]},
            "reason": {"type": "string"},
        },
        "required": ["winner", "reason"],
    }
)
_WINNERS = {"a": "A", "answer a": "A", "b": "B", "answer b": "B", "tie": "tie", "draw": "tie"}
_BARE_WINNER = re.compile(r'"winner"\s*:\s*"(A|B|tie)"', re.I)
_PERCENTILES = (2.5, 97.5)  # percentiles of the 95 % interval
# One virtual tied game per pair of targets (half a win each way): finite strengths when a
# target won every game, and a gentle pull towards equal when there are few verdicts.
_PRIOR_GAMES = 1.0


def pair_prompt(rubric: str, question: str, a: str, b: str) -> str:
    return _PROMPT.format(rubric=rubric, question=question, a=a, b=b)


def read_winner(text: str) -> tuple[str | None, str]:
    """A judge's reply -> ("A" | "B" | "tie", reason), or (None, why) when it is not readable."""
    for value in json_objects(text):
        if "winner" not in value:
            continue
        said = value["winner"]
        winner = _WINNERS.get(said.strip().lower()) if isinstance(said, str) else None
        if winner is None:
            return None, one_line(f"judge gave winner {said!r}, not A, B or tie", 200)
        reason = value.get("reason")
        return winner, one_line(str(reason) if reason else "no reason", 200)
    bare = _BARE_WINNER.search(text)  # a verdict cut short after its winner
    if bare:
        return _WINNERS[bare.group(1).lower()], "(its reason was not readable)"
    shown = text.strip()[:60] or "an empty reply"
    return None, one_line(f"judge verdict not readable: {shown!r}", 200)


def bradley_terry(wins: np.ndarray, iterations: int = 5000, tol: float = 1e-10) -> np.ndarray:
    """Bradley–Terry log-strengths from win counts, by Hunter's (2004) MM iteration.

    `wins[..., i, j]` is how often i beat j (ties as halves); leading axes are a batch (the
    bootstrap fits all resamples at once). With `_PRIOR_GAMES` added the fit always exists.
    Returns log-strengths centred on 0 per batch item: P(i beats j) = 1 / (1 + e^(s_j - s_i)).
    """
    k = wins.shape[-1]
    off = 1.0 - np.eye(k)
    w = wins + off * (_PRIOR_GAMES / 2)
    games = w + np.swapaxes(w, -1, -2)
    won = w.sum(axis=-1)
    p = np.ones(wins.shape[:-1])
    for _ in range(iterations):
        pair = p[..., :, None] + p[..., None, :]
        new = won / (games / pair).sum(axis=-1)
        new /= np.exp(np.log(new).mean(axis=-1, keepdims=True))  # geometric mean 1
        done = np.max(np.abs(new - p)) < tol
        p = new
        if done:
            break
    return np.log(p)


def rank_frame(
    frame: pd.DataFrame,
    judge: Judge,
    rubric: str | Sequence[str] = RUBRIC,
    seed: int | None = 0,
    resamples: int = 1000,
) -> pd.DataFrame:
    """The ranking table of `frame`'s targets (best first), judged by `rubric`: one for all,
    or one per row of the frame (a templated rubric filled per row; a pair is judged by the
    rubric of its first answer's row, which answered the same prompt). Its attrs hold the verdicts
    (attrs["verdicts"]: a list of dicts, _VERDICT_FIELDS each) and the judge's figures
    (attrs["judge"]). Plain, JSON-able values: a DataFrame in attrs would make pd.concat of two
    tables fail (pandas compares attrs with ==) and to_parquet too."""
    targets, slots, failed = _slots(frame)
    k = len(targets)
    asked, skipped = _pairs(slots, failed, k)
    outputs = frame["output"].tolist()
    rubrics = rubric if not isinstance(rubric, str) else [rubric] * len(frame)
    prompts = [
        pair_prompt(
            rubrics[p.row_a], str(p.prompt), _text(outputs[p.row_a]), _text(outputs[p.row_b])
        )
        for p in asked
    ]
    records = judge.ask(prompts, PAIR_SCHEMA)
    units = len(dict.fromkeys(key[0] for key in slots))
    won, tied, unreadable, verdicts = _tally(asked, records, targets, units)
    table = _table(targets, won, tied, seed, resamples)
    table.insert(3, "unreadable", unreadable)
    table.insert(4, "skipped", skipped)
    table = table.sort_values(
        ["strength", "win_rate"], ascending=False, na_position="last", kind="stable"
    )
    failures = sum(r.error is not None for r in records)
    said = [v["verdict"] for v in verdicts]
    figures = judge.figures(records, said.count(None) - failures)
    figures["pairs_skipped"] = len(slots) * k * (k - 1) // 2 - len(asked) // 2
    figures["consistent"] = _consistency([v["winner"] for v in verdicts])
    table.attrs["verdicts"] = verdicts
    table.attrs["judge"] = figures
    return table


@dataclass(frozen=True)
class _Pair:
    """One judge request: the answer of target `a` shown as A, that of `b` as B."""

    prompt: Any
    repeat: int
    unit: int  # which prompt, for the bootstrap
    a: int
    b: int
    row_a: int
    row_b: int


def _pairs(
    slots: dict[_Key, dict[int, int]], failed: Sequence[bool], k: int
) -> tuple[list[_Pair], np.ndarray]:
    """Every pair of targets that both answered a slot, in both orders; per target, the pairs
    skipped because an answer failed or is missing."""
    units: dict[Any, int] = {}
    skipped = np.zeros(k, dtype="int64")
    asked: list[_Pair] = []
    for (prompt, repeat, _), rows in slots.items():
        unit = units.setdefault(prompt, len(units))
        for i, j in itertools.combinations(range(k), 2):
            ri, rj = rows.get(i), rows.get(j)
            if ri is None or rj is None or failed[ri] or failed[rj]:
                skipped[[i, j]] += 1
                continue
            asked.append(_Pair(prompt, repeat, unit, i, j, ri, rj))
            asked.append(_Pair(prompt, repeat, unit, j, i, rj, ri))
    return asked, skipped


def _tally(
    asked: Sequence[_Pair], records: Sequence[RunRecord], targets: Sequence[str], units: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """The verdicts read: per prompt, won[u, i, j] (verdicts i won against j) and tied[u, i, j]
    (ties between them, symmetric); unreadable verdicts per target; the verdicts."""
    k = len(targets)
    won, tied = np.zeros((units, k, k)), np.zeros((units, k, k))
    unreadable = np.zeros(k, dtype="int64")
    rows = []
    for pair, record in zip(asked, records, strict=True):
        a, b, unit = pair.a, pair.b, pair.unit
        if record.error is not None:
            said, reason = None, one_line(f"judge failed: {record.error}", 200)
        else:
            said, reason = read_winner(record.output)
        if said is None:
            unreadable[[a, b]] += 1
        elif said == "tie":
            tied[unit, a, b] += 1
            tied[unit, b, a] += 1
        else:
            winner, loser = (a, b) if said == "A" else (b, a)
            won[unit, winner, loser] += 1
        named = {"A": targets[a], "B": targets[b], "tie": "tie"}.get(said or "")
        order = 1 if a < b else 2  # 1: the pair as the frame lists its targets, 2: swapped
        prompt = None if pd.isna(pair.prompt) else str(pair.prompt)
        values = (prompt, pair.repeat, targets[a], targets[b], order, said, named, reason)
        rows.append(dict(zip(_VERDICT_FIELDS, values, strict=True)))
    return won, tied, unreadable, rows


_VERDICT_FIELDS = (
    "prompt",
    "repeat",
    "A",  # the target whose answer was shown as A
    "B",
    "order",  # 1: the pair as the frame lists its targets, 2: swapped
    "verdict",  # what the judge said: "A", "B" or "tie"; None when unreadable or failed
    "winner",  # the target that won, "tie", or None
    "reason",  # the judge's reason, or why there is no verdict
)


def _consistency(winners: Sequence[Any]) -> float:
    """The share of pairs whose two orders named the same winner (or both a tie), among pairs
    with both verdicts readable: 1.0 is a judge that looks at the answers, a judge that always
    picks one position scores 0.0. NaN when no pair had two readable verdicts."""
    both = [
        (first, second)
        for first, second in zip(winners[0::2], winners[1::2], strict=True)
        if first is not None and second is not None
    ]
    return sum(a == b for a, b in both) / len(both) if both else float("nan")


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _slots(frame: pd.DataFrame) -> tuple[list[str], dict[_Key, dict[int, int]], list[bool]]:
    """The frame's targets (in order of first appearance), and per (prompt, repeat, n-th time
    that prompt appears for a target) the row of each target."""
    missing = [c for c in ("prompt", "target", "output", "error") if c not in frame.columns]
    if missing:
        raise UsageProblem(f"df.llm.rank() needs the column(s) {', '.join(missing)}")
    labels = frame["target"].astype("string").fillna("<NA>").tolist()
    targets = list(dict.fromkeys(labels))
    if len(targets) < 2:
        raise UsageProblem(
            "df.llm.rank() needs the answers of at least two targets; this frame has "
            f"{len(targets)} (concatenate runs and set their `target` to tell them apart)"
        )
    repeats = (
        frame["repeat"].fillna(0).astype("int64").tolist()
        if "repeat" in frame.columns
        else [0] * len(frame)
    )
    prompts = frame["prompt"].tolist()
    index = {t: n for n, t in enumerate(targets)}
    seen: dict[tuple[Any, int, str], int] = {}
    slots: dict[_Key, dict[int, int]] = {}
    for row, (prompt, repeat, label) in enumerate(zip(prompts, repeats, labels, strict=True)):
        nth = seen.get((prompt, repeat, label), 0)  # the same prompt twice (two --over items)
        seen[prompt, repeat, label] = nth + 1
        slots.setdefault((prompt, repeat, nth), {})[index[label]] = row
    return targets, slots, frame["error"].notna().tolist()


def _table(
    targets: list[str], won: np.ndarray, tied: np.ndarray, seed: int | None, resamples: int
) -> pd.DataFrame:
    """wins, losses, ties, win_rate and the strengths, in the frame's order of targets."""
    wins, ties = won.sum(axis=(0, 2)), tied.sum(axis=(0, 2))
    losses = won.sum(axis=(0, 1))
    games = wins + losses + ties
    with np.errstate(invalid="ignore", divide="ignore"):
        win_rate = (wins + ties / 2) / games  # NaN for a target never compared
    points = won + tied / 2  # a tie is half a win to each side
    strength = bradley_terry(points.sum(axis=0))
    lo, hi = _bootstrap(points, seed, resamples)
    unknown = games == 0  # never compared: nothing to say
    strength[unknown] = lo[unknown] = hi[unknown] = np.nan
    return pd.DataFrame(
        {
            "wins": wins.astype("int64"),
            "losses": losses.astype("int64"),
            "ties": ties.astype("int64"),
            "win_rate": win_rate,
            "strength": strength,
            "strength_lo": lo,
            "strength_hi": hi,
        },
        index=pd.Index(targets, name="target", dtype="string"),
    )


def _bootstrap(wins: np.ndarray, seed: int | None, resamples: int) -> tuple[np.ndarray, np.ndarray]:
    """The 95 % percentile interval of each strength over `resamples` resamples of the
    prompts (with replacement), all fitted at once."""
    k = wins.shape[-1]
    n = wins.shape[0]
    if n == 0 or resamples < 1:
        return np.full(k, np.nan), np.full(k, np.nan)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, n, size=(resamples, n))
    counts = np.zeros((resamples, n))
    np.add.at(counts, (np.arange(resamples)[:, None], picks), 1.0)
    sampled = (counts @ wins.reshape(n, k * k)).reshape(resamples, k, k)
    fitted = bradley_terry(sampled)
    lo, hi = np.percentile(fitted, _PERCENTILES, axis=0)
    return lo, hi
