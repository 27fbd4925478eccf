"""Tools of a run (`--tools`, `tools=`): what goes to the providers, the calls the model asked
for as the `tool_calls` column shows them, and running a call in the kernel (`--run-tools`).

The loop that sends results back lives in `_tool_loop.py`; this module holds what it uses.
"""

from __future__ import annotations

import json
import threading
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from . import _ranges as ranges
from ._tool_schema import is_model_class, tool_specs
from .errors import UsageProblem, one_line
from .providers.base import CancelToken, ToolCall, ToolCallPiece, ToolSpec

__all__ = ["DEFAULT_MAX_STEPS", "CallAssembler", "ToolBox", "calls_line", "make_toolbox"]

DEFAULT_MAX_STEPS = 5
_RESULT_CHARS = 20_000  # the most of one result sent back (a huge repr would fill the context)


@dataclass(frozen=True, eq=False)
class ToolBox:
    """A run's tools: their specs (sent), their functions (run only with `run`), and the
    most requests one row may make while its tools run (`max_steps`)."""

    specs: tuple[ToolSpec, ...]
    functions: dict[str, Any]
    run: bool = False
    max_steps: int = DEFAULT_MAX_STEPS
    # One call at a time in the whole run: notebook functions are rarely written for threads.
    lock: threading.Lock = field(default_factory=threading.Lock)

    def call(self, call: ToolCall, cancel: CancelToken) -> dict[str, Any]:
        """Run one call; its column entry with `result` (the text sent back) and, when it
        could not give one, `error` (one line). Never raises for the tool's own failure."""
        entry = column_entry(call)
        if "error" in entry:
            entry["result"] = f"error: {entry['error']}"
            return entry
        function = self.functions.get(call.name)
        if function is None:
            entry["error"] = f"no tool named {call.name!r}"
        elif not isinstance(entry["arguments"], dict):
            entry["error"] = "the arguments are not a JSON object"
        else:
            while not self.lock.acquire(timeout=0.05):
                if cancel.cancelled:
                    entry["error"] = "not run: the row was stopped"
                    entry["result"] = f"error: {entry['error']}"
                    return entry
            try:
                entry["result"] = _result_text(_invoke(function, entry["arguments"]))
            except Exception as exc:  # the tool's failure goes back to the model, as text
                entry["error"] = one_line(f"{type(exc).__name__}: {exc}")
            finally:
                self.lock.release()
        if "error" in entry:
            entry["result"] = f"error: {entry['error']}"
        return entry


def make_toolbox(tools: Any, run: bool, max_steps: int, where: str = "--tools") -> ToolBox | None:
    """The ToolBox of a request; None without tools. Refuses --run-tools without tools and a
    max_steps below 1, before anything is sent."""
    ranges.check("max_steps", max_steps, "")
    items = [] if tools is None else [tools] if callable(tools) else list(tools)
    if not items:
        if run:
            raise UsageProblem("--run-tools (run_tools=) needs --tools (tools=): nothing to run")
        return None
    specs = tool_specs(items, where)
    functions = {spec.name: item for spec, item in zip(specs, items, strict=True)}
    return ToolBox(specs, functions, bool(run), max_steps)


def _invoke(function: Any, arguments: dict[str, Any]) -> Any:
    if is_model_class(function):  # a model class as a tool: its validated instance
        return function.model_validate(arguments)
    return function(**_typed(function, arguments))


def _typed(function: Callable[..., Any], arguments: dict[str, Any]) -> dict[str, Any]:
    """Arguments whose parameter is a Pydantic model arrive as dicts: make them instances."""
    try:
        hints = typing.get_type_hints(function)  # annotations may be strings (__future__)
    except (TypeError, ValueError, NameError):
        return arguments
    out = dict(arguments)
    for name, value in arguments.items():
        hint = hints.get(name)
        if is_model_class(hint) and isinstance(value, dict):
            out[name] = hint.model_validate(value)
    return out


def _result_text(value: Any) -> str:
    """What the model reads back: a string as it is, else JSON (a Pydantic instance through
    model_dump), else repr."""
    if isinstance(value, str):
        text = value
    else:
        dump = getattr(value, "model_dump", None)
        value = dump(mode="json") if callable(dump) else value
        try:
            text = json.dumps(value, ensure_ascii=False, default=str)
        except (TypeError, ValueError):
            text = repr(value)
    return text if len(text) <= _RESULT_CHARS else text[:_RESULT_CHARS] + "…"


def calls_line(entries: Any, limit: int = 80) -> str:
    """A row's calls on one line for the views: `f(city='Paris') → 18°C · g(…) ✗ error`."""
    if not isinstance(entries, list):
        return ""
    shown = []
    for entry in entries:
        arguments = entry.get("arguments")
        if isinstance(arguments, dict):
            said = ", ".join(f"{k}={v!r}" for k, v in arguments.items())
        else:
            said = repr(arguments)
        line = f"{entry.get('name')}({said})"
        if "error" in entry:
            line += f" ✗ {entry['error']}"
        elif "result" in entry:
            line += f" → {entry['result']}"
        shown.append(line)
    text = " · ".join(" ".join(s.split()) for s in shown)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def column_entry(call: ToolCall) -> dict[str, Any]:
    """A call as the `tool_calls` column holds it: {name, arguments} with the arguments
    parsed; text that is not JSON is kept as text with an `error` saying so."""
    text = call.arguments
    try:
        arguments = json.loads(text) if text.strip() else {}
    except ValueError as exc:
        return {"name": call.name, "arguments": text, "error": f"arguments are not JSON: {exc}"}
    return {"name": call.name, "arguments": arguments}


class CallAssembler:
    """Joins streamed ToolCallPieces into whole calls, in the order their indexes appeared."""

    def __init__(self) -> None:
        self._calls: list[dict[str, Any]] = []  # id, name, argument fragments
        self._at: dict[int, dict[str, Any]] = {}  # index -> the call it now adds to

    def add(self, pieces: Iterable[ToolCallPiece]) -> None:
        for piece in pieces:
            call = self._at.get(piece.index)
            if call is None or (piece.id and call["id"] and piece.id != call["id"]):
                call = {"id": piece.id, "name": piece.name, "parts": []}
                self._calls.append(call)
                self._at[piece.index] = call
            call["id"] = call["id"] or piece.id
            call["name"] = call["name"] or piece.name
            if piece.arguments:
                call["parts"].append(piece.arguments)

    def calls(self) -> list[ToolCall]:
        return [
            # an id the server gave none of: 9 letters and digits, which Mistral insists on
            ToolCall(c["id"] or f"call{n:05d}", c["name"] or "", "".join(c["parts"]))
            for n, c in enumerate(self._calls)
        ]
