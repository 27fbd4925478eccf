"""Structured output on the wire: `Options.json_schema` (a JSON Schema as text) in the field
and shape each API documents (shared/protocols/structured-tools-images.md §1, anthropic.md §8).

- OpenAI and the compatible presets: `response_format: {type: "json_schema", json_schema:
  {name, schema, strict}}`. `strict: true` only takes schemas whose objects are closed
  (`additionalProperties: false`) and list every property in `required`; the openai SDK makes
  a Pydantic model's schema so before sending it (lib/_pydantic.py `to_strict_json_schema`),
  and so do we for every schema that can be made so. One that cannot (an object left open on
  purpose or with no `properties`, a root that is not an object) goes as written with
  `strict: false`.
- `llamacpp` (llama.cpp's server and llama-cpp-python's): `{type: "json_object", schema}`,
  the one shape both read (§1.4, §4); llama-cpp-python's server refuses `json_schema` (a 500
  naming the field, 0.3.36: tests/test_schema_local.py), its in-process API ignores it.
- Mistral: the same `response_format` as OpenAI, objects closed and `strict: true`, as its
  SDK's `response_format_from_pydantic_model` sends (extra/utils/_pydantic_helper.py).
- Ollama: `format` is the schema itself.
- Anthropic: `output_config: {format: {type: "json_schema", schema}}`, objects closed and the
  keywords it does not take folded into the description, as its SDK's `transform_schema`
  does (anthropic-sdk-python lib/_parse/_transform.py).

The answer is always read against the schema as the user wrote it (`_schema.py`): what a
provider's copy drops (a `minimum` for Anthropic) is still checked in `schema_valid`.
Each shape is built once per schema text: a run sends the same schema with every request.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Callable
from typing import Any

__all__ = [
    "anthropic_output_config",
    "closed",
    "mistral_response_format",
    "ollama_format",
    "openai_response_format",
    "strict",
]

Schema = dict[str, Any]

# Keywords whose value is a schema, a list of schemas, or a {name: schema} map.
_ONE = ("items", "additionalProperties", "not", "if", "then", "else", "contains", "propertyNames",
        "additionalItems", "unevaluatedItems", "unevaluatedProperties")  # fmt: skip
_LIST = ("anyOf", "oneOf", "allOf", "prefixItems", "items")
_MAP = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")


def _walk(node: Any, fix: Callable[[Schema], None]) -> None:
    """Apply `fix` to `node` and to every schema inside it, in place."""
    if not isinstance(node, dict):
        return
    fix(node)
    for key in _ONE:
        _walk(node.get(key), fix)
    for key in _LIST:
        if isinstance(node.get(key), list):
            for item in node[key]:
                _walk(item, fix)
    for key in _MAP:
        if isinstance(node.get(key), dict):
            for item in node[key].values():
                _walk(item, fix)


def _lists_properties(node: Schema) -> bool:
    return isinstance(node.get("properties"), dict)


def closed(schema: Schema) -> Schema:
    """A copy where every object that lists its properties and says nothing of others gets
    `additionalProperties: false`. An object without `properties` (any keys) stays open."""
    out = copy.deepcopy(schema)

    def close(node: Schema) -> None:
        if _lists_properties(node):
            node.setdefault("additionalProperties", False)

    _walk(out, close)
    return out


def strict(schema: Schema) -> tuple[Schema, bool]:
    """The schema as OpenAI's strict mode takes it, and whether it could be made so: objects
    closed, every property required, a `$ref` with other keys beside it inlined, a `default`
    of null dropped (as the openai SDK does for Pydantic's optional fields)."""
    out = _inline_refs(closed(schema))
    fits = True

    def require_all(node: Schema) -> None:
        nonlocal fits
        if "default" in node and node["default"] is None:
            del node["default"]
        is_object = node.get("type") == "object" or "properties" in node
        if not is_object:
            return
        if not _lists_properties(node) or node.get("additionalProperties") is not False:
            fits = False  # open on purpose: strict mode cannot say that
            return
        node["required"] = list(node["properties"])

    _walk(out, require_all)
    # Strict mode wants an object at the root (an array or a string there goes as written).
    return out, fits and out.get("type") == "object"


def _inline_refs(schema: Schema) -> Schema:
    """`{"$ref": "#/$defs/X", "description": …}` -> X's schema with the description: strict
    mode refuses keys beside a `$ref` (the openai SDK inlines them the same way)."""
    defs = schema.get("$defs") if isinstance(schema.get("$defs"), dict) else {}

    def inline(node: Schema) -> None:
        ref = node.get("$ref")
        if not isinstance(ref, str) or len(node) == 1 or not ref.startswith("#/$defs/"):
            return
        target = defs.get(ref.removeprefix("#/$defs/"))
        if isinstance(target, dict):
            del node["$ref"]
            for key, value in copy.deepcopy(target).items():
                node.setdefault(key, value)

    _walk(schema, inline)
    return schema


def _name(schema: Schema) -> str:
    """json_schema.name: a-z A-Z 0-9 _ -, at most 64 (the schema's title, else "answer")."""
    title = schema.get("title")
    name = re.sub(r"[^A-Za-z0-9_-]+", "_", title).strip("_")[:64] if isinstance(title, str) else ""
    return name or "answer"


@functools.lru_cache(maxsize=32)
def _schema(text: str) -> Schema:
    return json.loads(text)


@functools.lru_cache(maxsize=32)
def openai_response_format(text: str, provider: str = "openai") -> dict[str, Any]:
    schema = _schema(text)
    if provider == "llamacpp":
        return {"type": "json_object", "schema": schema}
    sent, fits = strict(schema)
    body = {"name": _name(schema), "schema": sent if fits else schema, "strict": fits}
    return {"type": "json_schema", "json_schema": body}


@functools.lru_cache(maxsize=32)
def mistral_response_format(text: str) -> dict[str, Any]:
    schema = _schema(text)
    body = {"name": _name(schema), "schema": closed(schema), "strict": True}
    return {"type": "json_schema", "json_schema": body}


def ollama_format(text: str) -> Schema:
    return _schema(text)


# What Anthropic's structured output takes, per its SDK's transform_schema; other keywords
# are folded into the description, where the model reads them as a hint.
_ANTHROPIC_KEYS = frozenset(
    ("type", "enum", "anyOf", "allOf", "description", "title", "$ref", "$defs",
     "properties", "required", "additionalProperties", "items")  # fmt: skip
)
_ANTHROPIC_FORMATS = frozenset(
    ("date-time", "time", "date", "duration", "email", "hostname", "uri", "ipv4", "ipv6", "uuid")
)


def _anthropic_node(node: Schema) -> None:
    if isinstance(node.get("oneOf"), list) and "anyOf" not in node:
        node["anyOf"] = node.pop("oneOf")  # the SDK sends oneOf as anyOf
    if node.get("type") == "object" or _lists_properties(node):
        node["additionalProperties"] = False
    rest = {}
    for key in list(node):
        keep = key in _ANTHROPIC_KEYS
        if key == "format":
            keep = node[key] in _ANTHROPIC_FORMATS
        elif key == "minItems":
            keep = node[key] in (0, 1)
        if not keep:
            rest[key] = node.pop(key)
    if rest:
        said = ", ".join(f"{k}: {json.dumps(v, ensure_ascii=False)}" for k, v in rest.items())
        head = node.get("description")
        node["description"] = (f"{head}\n\n" if isinstance(head, str) else "") + "{" + said + "}"


@functools.lru_cache(maxsize=32)
def anthropic_output_config(text: str) -> dict[str, Any]:
    schema = copy.deepcopy(_schema(text))
    _walk(schema, _anthropic_node)
    return {"format": {"type": "json_schema", "schema": schema}}
