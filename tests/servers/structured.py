"""What each API checks in a structured-output request before answering it, written from the
wire notes (shared/protocols/structured-tools-images.md §1, anthropic.md §8) and from the
sources named where the notes are silent. Written apart from the client's own code, so that a
client that builds these fields wrongly meets the refusal the real API gives.

- OpenAI: `response_format.type` is `text`, `json_object` or `json_schema`; `json_schema` needs
  `name` (a-z A-Z 0-9 _ -, at most 64) and, when given, a `schema` object; with `strict: true`
  every object must say `additionalProperties: false` and list each of its properties in
  `required`. The wording of the strict refusals is OpenAI's as observed (moeru-ai/xsai#202:
  "Invalid schema for response_format '<name>': In context=(…), 'additionalProperties' is
  required to be supplied and to be false.", param `response_format`, code null); the
  `required` one follows it (the rule: openai-python lib/_pydantic.py makes every property
  required before it sends a strict schema).
- Ollama: `format` is `"json"`, a JSON Schema object, or empty; anything else is refused with
  `invalid format: <value>; expected "json" or a valid JSON Schema object` (ollama
  llm/server.go, quoted in reports of its 400/500 replies).
- Anthropic: `output_config` holds `format` (and `effort`); `format` is `{type: "json_schema",
  schema: {...}}`, with no `name` or `strict`. Objects must be closed and some keywords are not
  taken (numeric and string-length bounds, `pattern` …): the notes do not list them, the
  Anthropic SDK's `transform_schema` (anthropic-sdk-python lib/_parse/_transform.py) rewrites
  every schema so before sending it, and the docs' structured-outputs page lists them as
  unsupported; the refusal's wording here is ours.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

__all__ = [
    "UNSUPPORTED_BY_ANTHROPIC",
    "anthropic_output_problem",
    "object_schemas",
    "ollama_format_problem",
    "openai_response_format_problem",
]

_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
UNSUPPORTED_BY_ANTHROPIC = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
                            "multipleOf", "minLength", "maxLength", "pattern", "maxItems",
                            "uniqueItems", "not", "if", "then", "else")  # fmt: skip


def object_schemas(node: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple, dict]]:
    """(path, schema) of every schema inside `node`, itself first, paths as OpenAI writes them."""
    if not isinstance(node, dict):
        return
    yield path, node
    for key in ("properties", "$defs", "definitions", "patternProperties"):
        if isinstance(node.get(key), dict):
            for name, sub in node[key].items():
                yield from object_schemas(sub, (*path, key, name))
    for key in ("items", "additionalProperties", "not"):
        if isinstance(node.get(key), dict):
            yield from object_schemas(node[key], (*path, key))
    for key in ("anyOf", "oneOf", "allOf", "prefixItems", "items"):
        if isinstance(node.get(key), list):
            for i, sub in enumerate(node[key]):
                yield from object_schemas(sub, (*path, key, str(i)))


def _is_object(schema: dict) -> bool:
    kind = schema.get("type")
    return kind == "object" or (isinstance(kind, list) and "object" in kind)


def _strict_problem(name: str, schema: Any) -> str | None:
    for path, node in object_schemas(schema):
        if not _is_object(node):
            continue
        head = f"Invalid schema for response_format '{name}': In context={path!r}, "
        if node.get("additionalProperties") is not False:
            return head + "'additionalProperties' is required to be supplied and to be false."
        required = node.get("required") if isinstance(node.get("required"), list) else []
        missing = [key for key in node.get("properties", {}) if key not in required]
        if missing:
            return (
                head + "'required' is required to be supplied and to be an array including "
                f"every key in properties. Missing '{missing[0]}'."
            )
    return None


def openai_response_format_problem(fmt: Any) -> tuple[str, str, str | None] | None:
    """(message, param, code) of OpenAI's 400 for a bad `response_format`, or None."""
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind not in ("text", "json_object", "json_schema"):
        return (
            f"Invalid value: {json.dumps(kind)}. Supported values are: 'text', 'json_object' "
            "and 'json_schema'.",
            "response_format.type",
            "invalid_value",
        )
    if kind != "json_schema":
        return None
    spec = fmt.get("json_schema")
    if not isinstance(spec, dict):
        return (
            "Missing required parameter: 'response_format.json_schema'.",
            "response_format.json_schema",
            "missing_required_parameter",
        )
    name = spec.get("name")
    if not isinstance(name, str):
        return (
            "Missing required parameter: 'response_format.json_schema.name'.",
            "response_format.json_schema.name",
            "missing_required_parameter",
        )
    if not _NAME.fullmatch(name):
        return (
            "Invalid 'response_format.json_schema.name': string does not match pattern. "
            "Expected a string that matches the pattern '^[a-zA-Z0-9_-]+$'.",
            "response_format.json_schema.name",
            "invalid_value",
        )
    schema = spec.get("schema")
    if schema is not None and not isinstance(schema, dict):
        return (
            "Invalid type for 'response_format.json_schema.schema': expected an object.",
            "response_format.json_schema.schema",
            "invalid_type",
        )
    if spec.get("strict") is True:
        problem = _strict_problem(name, schema or {})
        if problem:
            return problem, "response_format", None
    return None


def ollama_format_problem(fmt: Any) -> str | None:
    if fmt is None or fmt == "" or fmt == "json" or isinstance(fmt, dict):
        return None
    shown = json.dumps(fmt)
    return f'invalid format: {shown}; expected "json" or a valid JSON Schema object'


def anthropic_output_problem(config: Any) -> str | None:
    """Why an `output_config` breaks the documented shape, or None."""
    if config is None:
        return None
    if not isinstance(config, dict):
        return "output_config: Input should be a valid dictionary"
    extra = sorted(set(config) - {"format", "effort"})
    if extra:
        return f"output_config.{extra[0]}: Extra inputs are not permitted"
    fmt = config.get("format")
    if fmt is None:
        return None
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
        return "output_config.format.type: Input should be 'json_schema'"
    extra = sorted(set(fmt) - {"type", "schema"})
    if extra:
        return f"output_config.format.{extra[0]}: Extra inputs are not permitted"
    schema = fmt.get("schema")
    if not isinstance(schema, dict):
        return "output_config.format.schema: Field required"
    for path, node in object_schemas(schema):
        where = ".".join(path) or "(root)"
        if _is_object(node) and node.get("additionalProperties") is not False:
            return (
                f"output_config.format.schema: {where}: objects must set "
                "additionalProperties to false"
            )
        taken = [key for key in UNSUPPORTED_BY_ANTHROPIC if key in node]
        if taken:
            return f"output_config.format.schema: {where}: '{taken[0]}' is not supported"
    return None
