"""Tools on the wire: how each protocol spells a tool, a call the model asked for, and the
result sent back (shared/protocols/structured-tools-images.md §2, anthropic.md §3 and §7).

- OpenAI and compatible servers, Mistral: `tools` = [{type: function, function: {name,
  description, parameters}}]; a call's `arguments` is JSON text; streamed calls come as
  fragments in `delta.tool_calls[]` keyed by `index` (Mistral: whole, often without one); the
  result is a `{role: tool, tool_call_id, content}` message (Mistral adds `name`).
- Ollama: the same tool wrapper; calls come whole, `arguments` a JSON object (and must go back
  as one); the result is `{role: tool, tool_name, content}`.
- Anthropic: `tools` = [{name, description, input_schema}]; a call is a `tool_use` block whose
  `input` streams as `input_json_delta` fragments; results are `tool_result` blocks in a user
  message.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

from .base import Message, ToolCallPiece, ToolSpec

__all__ = [
    "anthropic_messages",
    "anthropic_pieces",
    "anthropic_tools",
    "arguments_object",
    "is_tool_turn",
    "ollama_pieces",
    "ollama_tool_turn",
    "openai_pieces",
    "openai_tool_turn",
    "openai_tools",
]


def openai_tools(specs: tuple[ToolSpec, ...]) -> list[dict[str, Any]]:
    # parameters always sent: Mistral requires it, OpenAI takes it
    return [
        {
            "type": "function",
            "function": {"name": t.name, "description": t.description, "parameters": t.schema()},
        }
        for t in specs
    ]


def is_tool_turn(m: Message) -> bool:
    """A turn this module writes: a call the model asked for, or a tool's result (the other
    turns, images and all, are _image_parts'), so that providers pick the writer per turn."""
    return bool(m.tool_calls) or m.role == "tool"


def openai_tool_turn(m: Message, *, tool_name: bool = False) -> dict[str, Any]:
    """A turn in OpenAI's shape; `tool_name` adds `name` to a tool result (Mistral's docs)."""
    if m.role == "tool":
        out: dict[str, Any] = {"role": "tool", "tool_call_id": m.tool_call_id, "content": m.content}
        if tool_name and m.name:
            out["name"] = m.name
        return out
    out = {"role": m.role, "content": m.content}
    if m.tool_calls:
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in m.tool_calls
        ]
    return out


def openai_pieces(delta: dict[str, Any]) -> tuple[ToolCallPiece, ...]:
    """The tool-call pieces of a streamed `delta` (or a whole `message`)."""
    calls = delta.get("tool_calls")
    if not isinstance(calls, list):
        return ()
    pieces = []
    for position, call in enumerate(calls):
        if not isinstance(call, dict):
            continue
        function = call.get("function") if isinstance(call.get("function"), dict) else {}
        index = call.get("index")
        arguments = function.get("arguments")
        if not isinstance(arguments, str):  # Mistral's spec allows an object
            arguments = json.dumps(arguments) if arguments is not None else ""
        pieces.append(
            ToolCallPiece(
                index=index if isinstance(index, int) else position,
                id=_text(call.get("id")),
                name=_text(function.get("name")),
                arguments=arguments,
            )
        )
    return tuple(pieces)


def ollama_tool_turn(m: Message) -> dict[str, Any]:
    if m.role == "tool":
        return {"role": "tool", "tool_name": m.name or "", "content": m.content}
    out: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.tool_calls:
        out["tool_calls"] = [
            {"function": {"name": c.name, "arguments": arguments_object(c.arguments)}}
            for c in m.tool_calls
        ]
    return out


def ollama_pieces(message: dict[str, Any], first: int) -> tuple[ToolCallPiece, ...]:
    """Whole calls of one NDJSON line, numbered from `first` (calls from earlier lines keep
    theirs: Ollama's guidance is to extend the list with every line's calls)."""
    calls = message.get("tool_calls")
    if not isinstance(calls, list):
        return ()
    pieces = []
    for call in calls:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            continue
        arguments = function.get("arguments")
        text = arguments if isinstance(arguments, str) else json.dumps(arguments or {})
        pieces.append(
            ToolCallPiece(
                index=first + len(pieces),
                id=_text(call.get("id")),
                name=_text(function.get("name")),
                arguments=text,
            )
        )
    return tuple(pieces)


def anthropic_tools(specs: tuple[ToolSpec, ...]) -> list[dict[str, Any]]:
    return [
        {"name": t.name, "description": t.description, "input_schema": t.schema()} for t in specs
    ]


def anthropic_messages(
    messages: list[Message], plain: Callable[[Message], dict[str, Any]]
) -> list[dict[str, Any]]:
    """The turns below the system prompt: calls as `tool_use` blocks of the assistant turn,
    results as `tool_result` blocks, consecutive ones in one user turn; `plain` writes the
    others."""
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "system":
            continue
        if m.role == "tool":
            block = {"type": "tool_result", "tool_use_id": m.tool_call_id, "content": m.content}
            last = out[-1] if out else None
            if last and last["role"] == "user" and _all_results(last["content"]):
                last["content"].append(block)
            else:
                out.append({"role": "user", "content": [block]})
        elif m.tool_calls:
            blocks: list[dict[str, Any]] = (
                [{"type": "text", "text": m.content}] if m.content else []
            )
            blocks += [
                {
                    "type": "tool_use",
                    "id": c.id,
                    "name": c.name,
                    "input": arguments_object(c.arguments),
                }
                for c in m.tool_calls
            ]
            out.append({"role": m.role, "content": blocks})
        else:
            out.append(plain(m))
    return out


def _all_results(content: Any) -> bool:
    return isinstance(content, list) and all(b.get("type") == "tool_result" for b in content)


def anthropic_pieces(blocks: list[Any]) -> Iterator[ToolCallPiece]:
    """The calls of a whole reply's `tool_use` blocks."""
    for index, block in enumerate(blocks):
        if isinstance(block, dict) and block.get("type") == "tool_use":
            yield ToolCallPiece(
                index,
                _text(block.get("id")),
                _text(block.get("name")),
                json.dumps(block.get("input") or {}),
            )


def arguments_object(text: str) -> dict[str, Any]:
    """A call's arguments as the object Ollama and Anthropic want back; {} when the model's
    text was not a JSON object (the call was then not run, and its error went back)."""
    try:
        value = json.loads(text) if text.strip() else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
