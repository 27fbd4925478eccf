"""What each protocol requires of tools and of the tool turns a client sends back, checked by
the loopback servers (shared/protocols/structured-tools-images.md §2, anthropic.md §3 and §7).

Documented facts checked: OpenAI's tool wrapper `{type: "function", function: {name, ...}}`
with names of `a-zA-Z0-9_-` (at most 64), an assistant turn's `tool_calls` with `arguments` as
JSON text, a `{role: "tool", tool_call_id, content}` result (all three required); Mistral's
required `function.parameters` and its 9-character id rule (observed 400, cited in the notes);
Ollama's `tool_name` on a result and `arguments` as an object when a call is echoed back;
Anthropic's `{name, input_schema}` tools, `tool_use` blocks with an object `input`, and
`tool_result` blocks with a `tool_use_id` in the user turn after the call.

Our rule, not documented in those words (the real APIs refuse the same thing with their own
wording): a result must answer a call of an earlier assistant turn, and every call of an
assistant turn must have its result before the next assistant turn.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = [
    "anthropic_problem",
    "anthropic_result",
    "anthropic_rounds",
    "ollama_problem",
    "openai_problem",
    "openai_result",
    "openai_rounds",
]

_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_MISTRAL_ID = re.compile(r"^[a-zA-Z0-9]{9}$")


def _dicts(items: Any) -> list[dict[str, Any]]:
    return [m for m in items if isinstance(m, dict)] if isinstance(items, list) else []


def _wrapped_tools_problem(tools: Any, need_parameters: bool) -> str | None:
    if tools is None:
        return None
    if not isinstance(tools, list):
        return "Invalid 'tools': expected an array"
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type") != "function":
            return f"Invalid 'tools[{i}].type': expected 'function'"
        if not isinstance(function, dict):
            return f"Missing required parameter: 'tools[{i}].function'."
        if not isinstance(function.get("name"), str) or not _NAME.match(function["name"]):
            return f"Invalid 'tools[{i}].function.name': string does not match pattern"
        if need_parameters and not isinstance(function.get("parameters"), dict):
            return f"tools.{i}.function.parameters: Field required"
        if "parameters" in function and not isinstance(function["parameters"], dict):
            return f"Invalid 'tools[{i}].function.parameters': expected an object"
    return None


def _answered_problem(
    calls: list[tuple[int, set[str]]], results: list[tuple[int, str]]
) -> str | None:
    """`calls`: (position, ids) of each assistant turn with calls; `results`: (position, id)."""
    for at, ident in results:
        earlier = set().union(*(ids for pos, ids in calls if pos < at)) if calls else set()
        if ident not in earlier:
            return f"tool result {ident!r} does not answer a call of an earlier assistant turn"
    for n, (pos, ids) in enumerate(calls):
        end = calls[n + 1][0] if n + 1 < len(calls) else 1 << 30
        got = {ident for at, ident in results if pos < at < end}
        if ids - got:
            return f"tool call {sorted(ids - got)[0]!r} has no result before the next turn"
    return None


def openai_problem(body: dict[str, Any], mistral: bool = False) -> str | None:
    """Why the tools or the tool turns of an OpenAI (or Mistral) request are refused."""
    problem = _wrapped_tools_problem(body.get("tools"), need_parameters=mistral)
    if problem:
        return problem
    calls: list[tuple[int, set[str]]] = []
    results: list[tuple[int, str]] = []
    for i, m in enumerate(_dicts(body.get("messages"))):
        if m.get("role") == "assistant" and m.get("tool_calls"):
            ids = set()
            for j, call in enumerate(_dicts(m["tool_calls"])):
                function = call.get("function") if isinstance(call.get("function"), dict) else {}
                arguments = function.get("arguments")
                if not isinstance(call.get("id"), str) or not isinstance(function.get("name"), str):
                    return f"Invalid 'messages[{i}].tool_calls[{j}]': id and function.name required"
                if not isinstance(arguments, str) and not (mistral and isinstance(arguments, dict)):
                    where = f"messages[{i}].tool_calls[{j}].function.arguments"
                    return f"Invalid '{where}': expected a string"
                ids.add(call["id"])
            calls.append((i, ids))
        elif m.get("role") == "tool":
            ident = m.get("tool_call_id")
            if not isinstance(ident, str) or "content" not in m:
                return f"Missing required parameter: 'messages[{i}].tool_call_id' or content"
            if mistral and not _MISTRAL_ID.match(ident):
                return f"Tool call id was {ident} but must be a-z, A-Z, 0-9, with a length of 9"
            results.append((i, ident))
    return _answered_problem(calls, results)


def openai_rounds(messages: Any) -> int:
    """Assistant turns that asked for tool calls (OpenAI, Mistral, Ollama alike)."""
    return sum(1 for m in _dicts(messages) if m.get("role") == "assistant" and m.get("tool_calls"))


def openai_result(messages: Any) -> str | None:
    """The last result's text when the conversation ends with one (OpenAI, Mistral, Ollama)."""
    turns = _dicts(messages)
    if turns and turns[-1].get("role") == "tool":
        content = turns[-1].get("content")
        return content if isinstance(content, str) else str(content)
    return None


def ollama_problem(body: dict[str, Any]) -> str | None:
    problem = _wrapped_tools_problem(body.get("tools"), need_parameters=False)
    if problem:
        return problem
    for i, m in enumerate(_dicts(body.get("messages"))):
        for call in _dicts(m.get("tool_calls")):
            function = call.get("function") if isinstance(call.get("function"), dict) else {}
            if not isinstance(function.get("arguments"), dict):
                # Go decodes arguments into a map: a string does not fit
                return (
                    "json: cannot unmarshal string into Go struct field"
                    " ToolCallFunction.messages.tool_calls.function.arguments"
                )
        if m.get("role") == "tool" and not isinstance(m.get("tool_name"), str):
            return f"messages[{i}]: a tool result needs tool_name"
    return None


def anthropic_problem(body: dict[str, Any]) -> str | None:
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            return "tools: Input should be a valid list"
        for i, tool in enumerate(tools):
            if not isinstance(tool, dict) or not _NAME.match(str(tool.get("name", ""))):
                return f"tools.{i}.name: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'"
            schema = tool.get("input_schema")
            if not isinstance(schema, dict) or schema.get("type") != "object":
                return f"tools.{i}.input_schema: Field required (an object schema)"
            if "parameters" in tool or "function" in tool:
                return f"tools.{i}: Extra inputs are not permitted"
    calls: list[tuple[int, set[str]]] = []
    results: list[tuple[int, str]] = []
    for i, m in enumerate(_dicts(body.get("messages"))):
        blocks = _dicts(m.get("content"))
        if m.get("role") == "assistant":
            uses = [b for b in blocks if b.get("type") == "tool_use"]
            for b in uses:
                if not isinstance(b.get("id"), str) or not isinstance(b.get("input"), dict):
                    return f"messages.{i}.content: tool_use needs an id and an object input"
            if uses:
                calls.append((i, {b["id"] for b in uses}))
        for b in blocks:
            if b.get("type") == "tool_result":
                if m.get("role") != "user":
                    return f"messages.{i}: tool_result blocks go in a user message"
                results.append((i, str(b.get("tool_use_id"))))
    return _answered_problem(calls, results)


def anthropic_rounds(messages: Any) -> int:
    return sum(
        1
        for m in _dicts(messages)
        if m.get("role") == "assistant"
        and any(b.get("type") == "tool_use" for b in _dicts(m.get("content")))
    )


def anthropic_result(messages: Any) -> str | None:
    turns = _dicts(messages)
    if not turns or turns[-1].get("role") != "user":
        return None
    found = [b for b in _dicts(turns[-1].get("content")) if b.get("type") == "tool_result"]
    if not found:
        return None
    content = found[-1].get("content")
    if isinstance(content, list):
        return " ".join(b.get("text", "") for b in _dicts(content))
    return content if isinstance(content, str) else ""
