"""Scripted tool calls, the same for every protocol server.

With the `tool_call` knob set to (name, arguments JSON text) and tools in the request, the fake
model answers with that call while the conversation holds fewer than `tool_rounds` tool results
(`tool_parallel` calls at once, each with its own id); its arguments stream in `tool_pieces`
fragments where the protocol streams them in pieces. Once the results are in, it answers in
text: `reply` if set, else "Tool said: <the last result>", so a test sees what was sent back.
Each server spells the call, and checks the result message, as its protocol documents.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from .base import Faults
from .wire import Completion

__all__ = ["ToolTurn", "after_results", "tool_completion", "tool_turn"]


@dataclass(frozen=True)
class ToolTurn:
    ids: list[str]  # one per call
    name: str
    arguments: str
    pieces: list[str]  # the arguments in fragments (joined, they are `arguments`)


def tool_turn(faults: Faults, tools: Any, results: int, make_id: Any) -> ToolTurn | None:
    """The call to answer with, or None: a text answer is due."""
    if faults.tool_call is None or not tools or results >= faults.tool_rounds:
        return None
    name, arguments = faults.tool_call
    return ToolTurn(
        [make_id() for _ in range(max(1, faults.tool_parallel))],
        name,
        arguments,
        _split(arguments, max(1, faults.tool_pieces)),
    )


def _split(text: str, n: int) -> list[str]:
    size = max(1, -(-len(text) // n))
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def after_results(faults: Faults, result: str | None) -> str | None:
    """The text answer once a tool result came back (None: the server's usual echo)."""
    if result is None:
        return faults.reply
    return faults.reply if faults.reply is not None else f"Tool said: {result}"


def tool_completion(turn: ToolTurn, model: str, prompt_tokens: int) -> Completion:
    """A Completion whose streamed "words" are the argument fragments (so the stream fault
    knobs apply to them too); finish_reason says tool calls."""
    return Completion(
        model=model,
        words=turn.pieces,
        finish_reason="tool_calls",
        prompt_tokens=prompt_tokens,
        created=int(time.time()),
        id_hex=uuid.uuid4().hex,
    )
