"""Tool calls on the embedded model, which has no tool-calling of its own.

SmolLM2's chat template knows no tools, and llama-cpp-python's tool support needs a
Functionary model or a chat format that only produces a call when one tool is named (see
shared/protocols/structured-tools-images.md §4). So the embedded backend does what those
formats do underneath: the tools are described in the system prompt and the answer is held by a
llama.cpp grammar to one JSON object `{"name": <a tool's name>, "arguments": <its schema>}`.
The limits this sets, which the README states: on a turn that ends with the user's prompt the
model always calls exactly one tool (it cannot choose to answer in text, nor call two); once a
tool's result is in the conversation it answers in text, unconstrained, the calls and their
results written into the prompt.
"""

from __future__ import annotations

import json
import re
from typing import Any

from .base import Message, ToolCallPiece, ToolSpec

__all__ = ["answer_turns", "call_due", "call_piece", "call_schema", "call_turns"]


def call_due(messages: list[Message]) -> bool:
    """True when the turn ends with the user's prompt (no tool result since): a call is due."""
    return bool(messages) and messages[-1].role == "user"


def call_schema(specs: tuple[ToolSpec, ...]) -> str:
    """The JSON Schema of one call of one of the tools, as text for LlamaGrammar."""
    choices = []
    for spec in specs:
        arguments = spec.schema()
        arguments.setdefault("additionalProperties", False)  # a small model wanders otherwise
        choices.append(
            {
                "type": "object",
                "properties": {"name": {"const": spec.name}, "arguments": arguments},
                "required": ["name", "arguments"],
                "additionalProperties": False,
            }
        )
    return json.dumps(choices[0] if len(choices) == 1 else {"oneOf": choices})


def call_turns(messages: list[Message], specs: tuple[ToolSpec, ...]) -> list[Message]:
    """The turns that ask for a call: the tools described in the system prompt."""
    # Listed like signatures, not as JSON Schema: SmolLM2 (greedy) picked the right one of two
    # tools for 9 of 9 test prompts so, for 6 of 9 shown the schemas; the grammar holds the
    # arguments to the schema either way.
    listed = "\n".join(f"- {_signature(s)}: {s.description}".rstrip(": ") for s in specs)
    guide = (
        "You can call these functions:\n"
        f"{listed}\n"
        'To call one, reply with JSON: {"name": "<function>", "arguments": {...}}.'
    )
    system = "\n\n".join([*(m.content for m in messages if m.role == "system"), guide])
    turns = [m for m in messages if m.role in ("user", "assistant")]
    return [Message("system", system), *(Message(m.role, m.content) for m in turns)]


def _signature(spec: ToolSpec) -> str:
    """`get_weather(city: string, unit: "C"|"F")`: a tool's arguments in one short line."""
    properties = spec.schema().get("properties") or {}
    said = ", ".join(f"{name}: {_kind(prop)}" for name, prop in properties.items())
    return f"{spec.name}({said})"


def _kind(prop: Any) -> str:
    if not isinstance(prop, dict):
        return "any"
    if "enum" in prop:
        return "|".join(json.dumps(value) for value in prop["enum"])
    if "anyOf" in prop:
        return "|".join(_kind(option) for option in prop["anyOf"])
    kind = prop.get("type")
    return kind if isinstance(kind, str) else "any"


def answer_turns(messages: list[Message]) -> list[Message]:
    """The turns once results came back, as a template without tools can take them: the
    calls and their results folded into the user's last prompt, which asks for an answer
    that uses them (SmolLM2 answered in prose so; shown a call in its own turn, it repeats
    it)."""
    last = max(i for i, m in enumerate(messages) if m.role == "user")
    results = {m.tool_call_id: m.content for m in messages[last:] if m.role == "tool"}
    done = [
        f"- {c.name}({c.arguments}) returned: {results.get(c.id, '(no result)')}"
        for m in messages[last:]
        for c in m.tool_calls
    ]
    prompt = (
        f"{messages[last].content}\n\nFunctions were called for you:\n"
        + "\n".join(done)
        + "\nAnswer the question using these results."
    )
    return [*messages[:last], Message("user", prompt)]


def call_piece(text: str) -> ToolCallPiece:
    """The call in the model's (grammar-held) answer. An answer cut short by max tokens does
    not parse: its text is kept as the arguments, and the column flags it."""
    try:
        call = json.loads(text)
        return ToolCallPiece(0, None, str(call["name"]), json.dumps(call["arguments"]))
    except (ValueError, KeyError, TypeError):
        named = re.search(r'"name"\s*:\s*"([^"]*)"', text)
        return ToolCallPiece(0, None, named.group(1) if named else "", text)
