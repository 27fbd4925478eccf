"""The lines of batch files: the `custom_id` that maps a line back to its row, and the output
line read into an answer (shared/protocols/batch.md §1.6, §2.4, §3).

One reader takes every output file llm_magic meets: OpenAI's output and error files,
Mistral's (OpenAI-like lines), and `vllm run-batch`'s single file, whose older versions put
the `chat.completion` object straight in `response` with no `status_code`/`body` wrapper.
A line fails by its `response.status_code` (4xx/5xx, the message in `response.body.error`)
or by a top-level `error` (a non-HTTP failure: an object with `message`, or vLLM's string);
success is never read from `error` being null alone.
"""

from __future__ import annotations

import contextlib
import gc
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._records import RunRecord
from ._redaction import Redactor
from ._utf8 import utf8_safe
from .errors import one_line

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "LineAnswer",
    "NotBatchOutput",
    "Row",
    "answer_into",
    "batched_frame",
    "cleaner",
    "gc_paused",
    "json_lines",
    "custom_id",
    "read_output",
    "split_custom_id",
]


Row = tuple[int, RunRecord, bool]  # the job's place in its run, its record, batched or not


def custom_id(index: int, repeat: int, target: str) -> str:
    """`INDEX.REPEAT.TARGET`: unique in a run, and it names its row's target and repeat even
    in a file read back without llm_magic's store (`read_batch_output`)."""
    return f"{index}.{repeat}.{target}"


def split_custom_id(text: str) -> tuple[int, int, str] | None:
    """(index, repeat, target) of an id `custom_id` made; None for anybody else's id."""
    index, _, rest = text.partition(".")
    repeat, _, target = rest.partition(".")
    if index.isdigit() and repeat.isdigit() and ":" in target:
        return int(index), int(repeat), target
    return None


@dataclass
class LineAnswer:
    """What one output line says about its request."""

    custom_id: str
    text: str = ""
    model: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None
    error: str | None = None


class NotBatchOutput(ValueError):
    """A line that is not a batch output line: the file is of another format."""


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # typed parts: only text parts are answer text
        return "".join(
            p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return ""


def _message(body: Any) -> str | None:
    """The error message of an error body, whatever its shape (OpenAI's `error.message`,
    Mistral's `message`, FastAPI's `detail`), or of a bare string."""
    if isinstance(body, str):
        return body or None
    if not isinstance(body, dict):
        return None
    for key in ("error", "message", "detail"):
        value = body.get(key)
        if isinstance(value, dict):
            found = _message(value)
            if found:
                return found
        elif isinstance(value, str) and value:
            return value
        elif isinstance(value, list) and value:
            return json.dumps(value)[:300]
    return None


def _answer(obj: dict[str, Any]) -> LineAnswer:
    answer = LineAnswer(custom_id=str(obj["custom_id"]))
    response = obj.get("response")
    if isinstance(response, dict) and "status_code" not in response and "body" not in response:
        status, body = 200, response  # older vLLM: the completion itself
    elif isinstance(response, dict):
        status, body = _int(response.get("status_code")) or 200, response.get("body")
    else:
        status, body = None, None
    failure = obj.get("error")
    if status is not None and status >= 400:
        said = _message(body) or _message(failure) or "no message"
        answer.error = f"HTTP {status}: {said}"
    elif failure:
        answer.error = _message(failure) or one_line(json.dumps(failure))
    elif not isinstance(body, dict):
        answer.error = "the line carries no response"
    if answer.error is not None:
        answer.error, answer.finish_reason = one_line(answer.error), "error"
        return answer
    assert isinstance(body, dict)
    choices = body.get("choices")
    first = choices[0] if isinstance(choices, list) and choices else {}
    if isinstance(first, dict):
        message = first.get("message")
        answer.text = utf8_safe(
            _text_of(message.get("content")) if isinstance(message, dict) else ""
        )[0]
        answer.finish_reason = (
            first.get("finish_reason") if isinstance(first.get("finish_reason"), str) else None
        )
    usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}
    answer.prompt_tokens = _int(usage.get("prompt_tokens", usage.get("input_tokens")))
    answer.completion_tokens = _int(usage.get("completion_tokens", usage.get("output_tokens")))
    answer.model = body.get("model") if isinstance(body.get("model"), str) else None
    return answer


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection meanwhile: reading 100,000 lines makes millions of
    objects that all live on, and the collector, which runs every few hundred allocations and
    walks them all in its older generations, took half the time or more (none are cycles)."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()


_BAD = object()  # a line that is not JSON


def _loads(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return _BAD


def json_lines(data: bytes) -> list[tuple[int, bytes, Any]]:
    """(line number, bytes, parsed value) of each non-blank line of a JSONL file; the value is
    `_BAD` for a line that is not JSON. The lines are parsed as one JSON array when they
    allow it (one call for 100,000 lines instead of 100,000), else one by one."""
    numbered = [(n, raw) for n, raw in enumerate(data.splitlines(), 1) if raw.strip()]
    values = _loads(b"[" + b",".join(raw for _, raw in numbered) + b"]")
    if values is _BAD or len(values) != len(numbered):  # some line is not JSON on its own
        values = [_loads(raw) for _, raw in numbered]
    return [(n, raw, value) for (n, raw), value in zip(numbered, values, strict=True)]


def read_output(data: bytes, where: str) -> list[LineAnswer]:
    """Every answer of an output file's bytes. A line that is not a batch output line (no JSON
    object with a `custom_id` and a `response` or `error`) raises NotBatchOutput naming it."""
    answers = []
    for number, raw, obj in json_lines(data):
        if (
            not isinstance(obj, dict)
            or not isinstance(obj.get("custom_id"), str)
            or not ("response" in obj or "error" in obj)
        ):
            shown = raw[:60].decode("utf-8", "replace")
            raise NotBatchOutput(
                f"{where}, line {number}, is not a batch output line ({{custom_id, response,"
                f" error}}): {shown!r}"
            )
        answers.append(_answer(obj))
    return answers


def _same(text: str) -> str:
    return text


def cleaner(answers: Iterable[LineAnswer]) -> Callable[[str], str]:
    """What hides secrets in these answers: a `Redactor`, or nothing to do when none holds one,
    known by one check of all their texts joined by newlines (a secret or key shape inside one
    text is inside the joined text; a newline is no word character, so no shape spans two)."""
    clean = Redactor()
    joined = "\n".join(t for a in answers for t in (a.text, a.error or ""))
    return _same if clean(joined) == joined else clean


def answer_into(
    record: RunRecord, answer: LineAnswer | None, missing: str, clean: Callable[[str], str]
) -> RunRecord:
    """Fill `record` with what its output line says, through `clean` (a `Redactor`: a model
    or a proxy may echo the key it was sent); with no line, the error `missing` says why."""
    if answer is None:
        record.error, record.finish_reason = missing, "error"
        return record
    record.output = clean(answer.text)
    record.model = answer.model or record.model
    record.prompt_tokens, record.completion_tokens = answer.prompt_tokens, answer.completion_tokens
    record.finish_reason = answer.finish_reason
    record.error = clean(answer.error) if answer.error else None
    return record


def batched_frame(rows: Sequence[Row], runs: Sequence[str] = ()) -> pd.DataFrame:
    """The rows in run order (the runs' first appearance, then each job's place), as a run's
    frame plus `batched` (boolean)."""
    import pandas as pd

    from ._frame import to_dataframe

    order = {
        run: n for n, run in enumerate(dict.fromkeys([*runs, *(r.run_id for _, r, _ in rows)]))
    }
    ranked = sorted(rows, key=lambda row: (order[row[1].run_id], row[0]))
    from ._schema_frame import logged_schema_columns

    frame = to_dataframe(record for _, record, _ in ranked)
    frame["batched"] = pd.array([flag for _, _, flag in ranked], dtype="boolean")
    # rows asked with a schema (--schema: params' json_schema) read against it, as history does
    return logged_schema_columns(frame, [False] * len(frame))
