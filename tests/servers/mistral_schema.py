"""Mistral's closed request schema (additionalProperties: false), checked the way its FastAPI /
pydantic front end reports it: a list of {type, loc, msg, input} problems for a 422.

This is what catches clients that send OpenAI-only fields (seed, stream_options,
max_completion_tokens, `name` on a user message, `"tool_calls": null` on a user message).
"""

from __future__ import annotations

from typing import Any

__all__ = ["REQUEST_FIELDS", "validation_errors"]

REQUEST_FIELDS = frozenset(
    {
        "model",
        "messages",
        "temperature",
        "top_p",
        "max_tokens",
        "stream",
        "stop",
        "random_seed",
        "metadata",
        "response_format",
        "tools",
        "tool_choice",
        "presence_penalty",
        "frequency_penalty",
        "n",
        "prediction",
        "parallel_tool_calls",
        "prompt_mode",
        "reasoning_effort",
        "guardrails",
        "prompt_cache_key",
        "safe_prompt",
    }
)

_MESSAGE_FIELDS = {
    "system": {"role", "content"},
    "user": {"role", "content"},
    "assistant": {"role", "content", "tool_calls", "prefix"},
    "tool": {"role", "content", "tool_call_id", "name"},
}

_RANGES = {  # field: (min, max) for numbers
    "temperature": (0, 1.5),
    "top_p": (0, 1),
    "presence_penalty": (-2, 2),
    "frequency_penalty": (-2, 2),
}


def _problem(kind: str, loc: list[Any], msg: str, value: Any, **ctx: Any) -> dict[str, Any]:
    out = {"type": kind, "loc": loc, "msg": msg, "input": value}
    if ctx:
        out["ctx"] = ctx
    return out


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validation_errors(body: Any) -> list[dict[str, Any]]:
    if body is None:
        return [_problem("missing", ["body"], "Field required", None)]
    if not isinstance(body, dict):
        return [
            _problem(
                "model_attributes_type",
                ["body"],
                "Input should be a valid dictionary or object to extract fields from",
                body,
            )
        ]
    out: list[dict[str, Any]] = []
    for key in ("model", "messages"):
        if key not in body:
            out.append(_problem("missing", ["body", key], "Field required", body))
    if "model" in body and not isinstance(body["model"], str):
        out.append(
            _problem(
                "string_type", ["body", "model"], "Input should be a valid string", body["model"]
            )
        )
    if "messages" in body:
        out.extend(_message_errors(body["messages"]))
    for key, value in body.items():
        if key not in REQUEST_FIELDS:
            out.append(
                _problem("extra_forbidden", ["body", key], "Extra inputs are not permitted", value)
            )
    out.extend(_scalar_errors(body))
    out.extend(_response_format_errors(body.get("response_format")))
    return out


_FORMAT_FIELDS = {"type", "json_schema"}
_JSON_SCHEMA_FIELDS = {"name", "description", "schema", "strict"}
_FORMAT_TYPES = "'text', 'json_object' or 'json_schema'"


def _response_format_errors(fmt: Any) -> list[dict[str, Any]]:
    """ResponseFormat and JsonSchema of the spec (structured-tools-images.md §1.3): both
    closed, `type` one of three, `name` and `schema` required in `json_schema`."""
    if fmt is None:
        return []
    loc: list[Any] = ["body", "response_format"]
    if not isinstance(fmt, dict):
        return [_problem("model_type", loc, "Input should be a valid dictionary", fmt)]
    out = [
        _problem("extra_forbidden", [*loc, key], "Extra inputs are not permitted", value)
        for key, value in fmt.items()
        if key not in _FORMAT_FIELDS
    ]
    kind = fmt.get("type", "text")
    if kind not in ("text", "json_object", "json_schema"):
        out.append(
            _problem("enum", [*loc, "type"], f"Input should be {_FORMAT_TYPES}", kind,
                     expected=_FORMAT_TYPES)  # fmt: skip
        )
    spec = fmt.get("json_schema")
    if spec is None:
        return out
    loc = [*loc, "json_schema"]
    if not isinstance(spec, dict):
        return [*out, _problem("model_type", loc, "Input should be a valid dictionary", spec)]
    for key in ("name", "schema"):
        if key not in spec:
            out.append(_problem("missing", [*loc, key], "Field required", spec))
    for key, value in spec.items():
        if key not in _JSON_SCHEMA_FIELDS:
            out.append(
                _problem("extra_forbidden", [*loc, key], "Extra inputs are not permitted", value)
            )
    if "schema" in spec and not isinstance(spec["schema"], dict):
        out.append(
            _problem("dict_type", [*loc, "schema"], "Input should be a valid dictionary",
                     spec["schema"])  # fmt: skip
        )
    if "strict" in spec and not isinstance(spec["strict"], bool):
        out.append(
            _problem("bool_type", [*loc, "strict"], "Input should be a valid boolean",
                     spec["strict"])  # fmt: skip
        )
    return out


def _message_errors(messages: Any) -> list[dict[str, Any]]:
    if not isinstance(messages, list):
        return [
            _problem("list_type", ["body", "messages"], "Input should be a valid list", messages)
        ]
    out = []
    for i, msg in enumerate(messages):
        loc: list[Any] = ["body", "messages", i]
        role = msg.get("role") if isinstance(msg, dict) else None
        if role not in _MESSAGE_FIELDS:
            out.append(
                _problem(
                    "union_tag_invalid",
                    loc,
                    f"Input tag '{role}' found using 'role' does not match any of the expected "
                    "tags: 'assistant', 'system', 'tool', 'user'",
                    msg,
                    discriminator="'role'",
                    tag=str(role),
                    expected_tags="'assistant', 'system', 'tool', 'user'",
                )
            )
            continue
        for key, value in msg.items():
            if key not in _MESSAGE_FIELDS[role]:
                out.append(
                    _problem(
                        "extra_forbidden",
                        [*loc, role, key],
                        "Extra inputs are not permitted",
                        value,
                    )
                )
    return out


def _scalar_errors(body: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for key, (low, high) in _RANGES.items():
        value = body.get(key)
        if value is None:
            continue
        if not _is_number(value):
            out.append(
                _problem("float_type", ["body", key], "Input should be a valid number", value)
            )
        elif value > high:
            out.append(
                _problem(
                    "less_than_equal",
                    ["body", key],
                    f"Input should be less than or equal to {high}",
                    value,
                    le=high,
                )
            )
        elif value < low:
            out.append(
                _problem(
                    "greater_than_equal",
                    ["body", key],
                    f"Input should be greater than or equal to {low}",
                    value,
                    ge=low,
                )
            )
    for key in ("max_tokens", "random_seed"):
        value = body.get(key)
        if value is not None and not (_is_int(value) and value >= 0):
            out.append(
                _problem(
                    "greater_than_equal" if _is_int(value) else "int_type",
                    ["body", key],
                    "Input should be a valid non-negative integer",
                    value,
                )
            )
    for key in ("stream", "safe_prompt"):
        value = body.get(key)
        if value is not None and not isinstance(value, bool):
            out.append(
                _problem("bool_type", ["body", key], "Input should be a valid boolean", value)
            )
    return out
