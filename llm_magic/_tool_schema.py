"""A notebook function (or a Pydantic model class) as a tool the model may call: its name, its
description and its arguments' JSON Schema, read from the type hints and the docstring.

Written with `inspect` and `typing` alone: pydantic is not a dependency, but a Pydantic model
class is read by duck typing (`model_json_schema`), as a parameter's type or as a tool itself.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import inspect
import json
import re
import types
import typing
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .errors import UsageProblem
from .providers.base import ToolSpec

__all__ = ["is_model_class", "tool_spec", "tool_specs"]

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # what OpenAI, Mistral and Anthropic all accept
_SIMPLE: dict[Any, dict[str, Any]] = {
    str: {"type": "string"},
    int: {"type": "integer"},
    float: {"type": "number"},
    bool: {"type": "boolean"},
    type(None): {"type": "null"},
    Any: {},
}


def is_model_class(obj: Any) -> bool:
    """A Pydantic (v2) model class, recognised without importing pydantic."""
    return isinstance(obj, type) and callable(getattr(obj, "model_json_schema", None))


def tool_spec(obj: Any, where: str = "--tools") -> ToolSpec:
    """The ToolSpec of a function with type-hinted parameters, or of a Pydantic model class
    (its fields are the arguments). Anything else is a UsageProblem naming it."""
    try:
        return _READ[obj]  # read once per function: a batch asks with the same tools each time
    except (KeyError, TypeError):  # not read yet, or not weakly referable (then not cached)
        pass
    spec = _read_spec(obj, where)
    with contextlib.suppress(TypeError):
        _READ[obj] = spec
    return spec


# function or class -> its spec; a function redefined in the notebook is a new object
_READ: weakref.WeakKeyDictionary[Any, ToolSpec] = weakref.WeakKeyDictionary()


def _read_spec(obj: Any, where: str) -> ToolSpec:
    if is_model_class(obj):
        name = obj.__name__
        _check_name(name, where)
        return ToolSpec(name, _summary(inspect.getdoc(obj) or ""), _dumps(obj.model_json_schema()))
    if not callable(obj) or isinstance(obj, type):
        raise UsageProblem(f"{where}: {_shown(obj)} is not a function or a Pydantic model class")
    name = getattr(obj, "__name__", "")
    _check_name(name, where)
    try:
        signature = inspect.signature(obj)
        hints = typing.get_type_hints(obj)
    except (TypeError, ValueError, NameError) as exc:
        raise UsageProblem(f"{where}: cannot read the signature of {name}: {exc}") from None
    doc = inspect.getdoc(obj) or ""
    described = _param_docs(doc)
    properties: dict[str, Any] = {}
    required: list[str] = []
    for param in signature.parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise UsageProblem(
                f"{where}: tool {name} takes *{param.name}; a tool's parameters must be named"
            )
        if param.name not in hints:
            raise UsageProblem(
                f"{where}: tool {name} has no type hint for {param.name!r}; annotate every"
                f" parameter, e.g. def {name}({param.name}: str) -> str"
            )
        prop = _schema_of(hints[param.name], f"{where}: tool {name}, parameter {param.name!r}")
        if param.name in described:
            prop = {**prop, "description": described[param.name]}
        if param.default is param.empty:
            required.append(param.name)
        elif _jsonable(param.default):
            prop = {**prop, "default": param.default}
        properties[param.name] = prop
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return ToolSpec(name, _summary(doc), _dumps(schema))


def _check_name(name: str, where: str) -> None:
    if not _NAME.match(name or ""):
        raise UsageProblem(
            f"{where}: {name or 'a tool'!r} cannot be a tool's name: use a def with a name of"
            " letters, digits, _ or - (at most 64)"
        )


def _shown(obj: Any) -> str:
    text = repr(obj)
    return text if len(text) <= 40 else text[:39] + "…"


def _dumps(schema: Mapping[str, Any]) -> str:
    return json.dumps(schema, sort_keys=True, ensure_ascii=False)


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def _schema_of(hint: Any, where: str) -> dict[str, Any]:
    """The JSON Schema of a type hint; UsageProblem for one JSON cannot carry."""
    if hint in _SIMPLE:
        return dict(_SIMPLE[hint])
    if is_model_class(hint):
        return hint.model_json_schema()
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return {"enum": [member.value for member in hint]}
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        fields = typing.get_type_hints(hint)
        return {
            "type": "object",
            "properties": {
                f.name: _schema_of(fields[f.name], where) for f in dataclasses.fields(hint)
            },
            "required": [
                f.name
                for f in dataclasses.fields(hint)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            ],
        }
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        return {"enum": list(args)}
    if origin is typing.Union or origin is types.UnionType:
        return {"anyOf": [_schema_of(arg, where) for arg in args]}
    if origin is typing.Annotated:
        return _schema_of(args[0], where)
    if hint in (list, tuple, set, frozenset) or origin in (list, set, frozenset, Sequence):
        return {"type": "array", **({"items": _schema_of(args[0], where)} if args else {})}
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return {"type": "array", "items": _schema_of(args[0], where)}
        items = [_schema_of(arg, where) for arg in args]
        return {
            "type": "array",
            "prefixItems": items,
            "minItems": len(items),
            "maxItems": len(items),
        }
    if hint is dict or origin in (dict, Mapping):
        values = {"additionalProperties": _schema_of(args[1], where)} if len(args) == 2 else {}
        return {"type": "object", **values}
    raise UsageProblem(
        f"{where}: the type {hint!r} has no JSON Schema; use str, int, float,"
        " bool, list, dict, Literal, an Enum, a dataclass or a Pydantic model"
    )


def _summary(doc: str) -> str:
    """The docstring's text before its parameter section (Args:, Parameters, :param)."""
    kept: list[str] = []
    for line in doc.splitlines():
        if _SECTION.match(line.strip()) or line.strip().startswith(":param"):
            break
        kept.append(line)
    return "\n".join(kept).strip()


_SECTION = re.compile(r"^(Args|Arguments|Parameters|Params|Returns|Raises)\s*:?\s*$")
_GOOGLE = re.compile(r"^\s+(\w+)\s*(?:\([^)]*\))?\s*:\s*(.+)$")
_SPHINX = re.compile(r"^\s*:param\s+(?:[^:]*\s)?(\w+)\s*:\s*(.+)$")


def _param_docs(doc: str) -> dict[str, str]:
    """Each parameter's line in a Google-style `Args:` section or a Sphinx `:param x:` line."""
    found: dict[str, str] = {}
    in_args = False
    for line in doc.splitlines():
        stripped = line.strip()
        sphinx = _SPHINX.match(line)
        if sphinx:
            found[sphinx.group(1)] = sphinx.group(2).strip()
            continue
        if _SECTION.match(stripped):
            in_args = stripped.split()[0].rstrip(":") in (
                "Args",
                "Arguments",
                "Parameters",
                "Params",
            )
            continue
        if in_args:
            google = _GOOGLE.match(line)
            if google:
                found[google.group(1)] = google.group(2).strip()
    return found


def tool_specs(
    tools: Sequence[Any] | Callable[..., Any], where: str = "--tools"
) -> tuple[ToolSpec, ...]:
    """Every tool's spec; two of one name are refused."""
    items = [tools] if callable(tools) else list(tools)
    specs = tuple(tool_spec(t, where) for t in items)
    names = [s.name for s in specs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise UsageProblem(f"{where}: two tools are named {twice[0]}")
    return specs
