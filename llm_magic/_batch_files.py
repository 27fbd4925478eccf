"""Batch files for self-hosted servers: OpenAI's batch input format, which `vllm run-batch`
reads, written from prompts or from a frame; its output file read back into a run's frame.

    llm_magic.batch_file(prompts, ["vllm:Qwen/Qwen3-8B"], path="in.jsonl", max_tokens=64)
    # vllm run-batch -i in.jsonl -o out.jsonl --model Qwen/Qwen3-8B
    df = llm_magic.read_batch_output("out.jsonl", inputs="in.jsonl")

Each line's custom_id is `INDEX.REPEAT.TARGET` (`_batch_lines.custom_id`), so the output
names its rows' targets and repeats by itself; the prompts (and the system prompt and
sampling options, into `params`) come from the input file when it is given.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import providers
from ._accounting import account
from ._batch_lines import (
    LineAnswer,
    NotBatchOutput,
    Row,
    answer_into,
    batched_frame,
    cleaner,
    custom_id,
    gc_paused,
    json_lines,
    read_output,
    split_custom_id,
)
from ._config import load_file_config
from ._pricing import BATCH_PRICE_FACTOR
from ._records import RunRecord
from ._request import Request
from ._runner import new_run_id
from .errors import UsageProblem
from .providers.base import Message, Options

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["batch_file", "frame_to_batch_file", "read_batch_output"]

_SAMPLING = ("temperature", "max_tokens", "top_p", "seed")


def _write(path: str | os.PathLike[str], lines: Any) -> Path:
    target = Path(path).expanduser()
    try:
        with target.open("wb") as out:
            for line in lines:
                out.write(line)
    except OSError as exc:
        raise UsageProblem(f"cannot write the batch file {target}: {exc.strerror or exc}") from None
    return target


def batch_file(
    prompts: str | Sequence[str],
    targets: str | Sequence[str] | None = None,
    *,
    path: str | os.PathLike[str],
    **options: Any,
) -> Path:
    """Write one OpenAI batch input line per prompt x target x repeat to `path` (the options
    of compare(): system, temperature, max_tokens, repeat, over=, ...); the path written."""
    from ._plan import make_plan
    from ._session import session

    prompt_list = (prompts,) if isinstance(prompts, str) else tuple(prompts)
    target_list = (targets,) if isinstance(targets, str) else tuple(targets or ())
    for name in ("checks", "batch", "wait", "chat"):
        if options.get(name):
            raise UsageProblem(f"batch_file() writes requests; {name}= is compare()'s")
    with gc_paused():  # 100,000 jobs: see gc_paused
        plan = make_plan(Request.build("batch_file()", prompt_list, target_list, options), session)
        return _write_lines(path, plan)


def _write_lines(path: str | os.PathLike[str], plan: Any) -> Path:
    return _write(
        path,
        (
            providers.batch_file_line(
                custom_id(job.index, job.repeat, str(job.spec.primary)),
                list(job.messages),
                job.spec.primary.model,
                job.options,
            )
            for job in plan.jobs
        ),
    )


def frame_to_batch_file(frame: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """`df.llm.to_batch_file(path)`: each row's request (its prompt, target, system prompt and
    sampling options from `params`) as one batch input line, to ask again elsewhere."""
    missing = [c for c in ("prompt", "target") if c not in frame.columns]
    if missing:
        raise UsageProblem(f"df.llm.to_batch_file() needs the column(s) {', '.join(missing)}")

    def lines() -> Any:
        params = frame["params"] if "params" in frame.columns else [{}] * len(frame)
        repeats = frame["repeat"] if "repeat" in frame.columns else [0] * len(frame)
        rows = zip(frame["prompt"], frame["target"], params, repeats, strict=True)
        for index, (prompt, target, said, repeat) in enumerate(rows):
            said = said if isinstance(said, dict) else {}
            system = said.get("system")
            messages = [Message("system", system)] if system else []
            messages.append(Message("user", str(prompt)))
            stop = said.get("stop")
            options = Options(
                **{k: said.get(k) for k in _SAMPLING},
                stop=tuple(stop) if stop else None,
                stream=False,
            )
            model = str(target).partition(":")[2]
            yield providers.batch_file_line(
                custom_id(index, int(repeat), str(target)), messages, model, options
            )

    return _write(path, lines())


def _read(path: str | os.PathLike[str]) -> bytes:
    try:
        return Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise UsageProblem(f"cannot read {path}: {exc.strerror or exc}") from None


def _inputs(path: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """custom_id -> the request body of each line of an input file."""
    found = {}
    for number, _, line in json_lines(_read(path)):
        if not isinstance(line, dict) or not isinstance(line.get("body"), dict):
            raise UsageProblem(
                f"{path}, line {number}, is not a batch input line ({{custom_id, body}})"
            )
        found[str(line.get("custom_id"))] = line["body"]
    return found


def _asked(body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The user prompt and the params (system prompt, sampling) of a request body."""
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    users = [m.get("content") for m in messages if m.get("role") == "user"]
    systems = [m.get("content") for m in messages if m.get("role") == "system"]
    params = {k: body[k] for k in (*_SAMPLING, "stop") if body.get(k) is not None}
    if systems and isinstance(systems[0], str):
        params["system"] = systems[0]
    return (users[-1] if users and isinstance(users[-1], str) else ""), params


def read_batch_output(
    path: str | os.PathLike[str],
    inputs: str | os.PathLike[str] | None = None,
    *,
    provider: str = "vllm",
) -> pd.DataFrame:
    """A batch output file (vLLM's `run-batch`, or OpenAI's or Mistral's output and error
    files concatenated) as a run's frame plus `batched`: one row per line, in the order the
    requests were written; with `inputs` (the input file), one row per request, its prompt
    and params filled, and an error for a request the output lacks. A line whose custom_id
    llm_magic did not write is named `PROVIDER:MODEL` by the model the answer reports."""
    with gc_paused():
        try:
            answers = read_output(_read(path), str(path))
        except NotBatchOutput as exc:
            raise UsageProblem(str(exc)) from None
        asked = _inputs(inputs) if inputs is not None else {}
        run_id = new_run_id()
        return batched_frame(_rows(answers, asked, provider, run_id), [run_id])


def _rows(
    answers: list[LineAnswer], asked: dict[str, dict[str, Any]], provider: str, run_id: str
) -> list[Row]:
    """A row per request asked (per answer, without the input file), in the written order."""
    prices = load_file_config().prices
    by_id = {answer.custom_id: answer for answer in answers}
    ids = list(asked) if asked else [answer.custom_id for answer in answers]
    rows = []
    clean = cleaner(answers)
    batched_by: dict[str, bool] = {}  # provider -> it has a batch API (config read once)
    for position, cid in enumerate(ids):
        index, repeat, target = split_custom_id(cid) or (position, 0, "")
        answer = by_id.get(cid)
        prompt, params = _asked(asked[cid]) if cid in asked else ("", {})
        if not target:
            model = (answer.model if answer else None) or str(asked.get(cid, {}).get("model", ""))
            target = f"{provider}:{model}"
        provider_name, _, model = target.partition(":")
        record = RunRecord(
            run_id, target, provider_name, model, prompt, repeat=repeat, params=params
        )
        answer_into(record, answer, "not in the output file", clean)
        account(record, [Message("user", prompt)], prices)
        if record.provider not in batched_by:
            batched_by[record.provider] = providers.batch_wire(record.provider) is not None
        if record.cost_usd and batched_by[record.provider]:
            record.cost_usd *= BATCH_PRICE_FACTOR  # answered by a provider's batch API
        rows.append((index, record, True))
    return rows
