"""Structured output: the schema of `--schema VAR` / `schema=`, and how an answer is read
against it (the `parsed`, `schema_valid` and `schema_error` columns; the `schema:` check).

A schema is a JSON Schema dict or a Pydantic model class. It reaches the providers as one
carrier, `Options.json_schema` (its JSON text): each provider puts it on the wire its own way.
Nothing here imports pandas or a provider; jsonschema is imported when a dict schema is used.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import UsageProblem, one_line

__all__ = [
    "Reading",
    "StructuredSchema",
    "compile_schema",
    "schema_named",
    "is_model_class",
    "json_validator",
    "parse_json",
    "validated",
]

_FENCED = re.compile(r"\A\s*(`{3,}|~{3,})[^\n]*\n(.*?)\n[ \t]*\1[`~]*\s*\Z", re.S)
_JSON_STARTS = frozenset('{["-0123456789`~')  # a JSON value, or a fence around one
_JSON_WORDS = ("true", "false", "null", "NaN", "Infinity")  # json.loads takes the last two


def parse_json(answer: str) -> tuple[Any, str | None]:
    """The answer as JSON (a whole answer in one ``` fence counts: models wrap JSON so), or
    the reason it is not."""
    text = answer.lstrip()
    head = text[:1]
    if head and head not in _JSON_STARTS and not text.startswith(_JSON_WORDS):
        return None, f"not JSON: starts with {head!r}"  # most prose: no exception raised
    fenced = _FENCED.match(answer) if head in ("`", "~") else None
    try:
        return json.loads(fenced.group(2) if fenced else answer), None
    except ValueError as exc:  # json's messages are one short line already
        return None, f"not JSON: {exc}"


def is_model_class(obj: Any) -> bool:
    """A Pydantic model class (v2: it validates with `model_validate`)."""
    return isinstance(obj, type) and hasattr(obj, "model_validate")


def _not_a_schema(obj: Any, where: str) -> UsageProblem:
    given = f"the class {obj.__name__}" if isinstance(obj, type) else type(obj).__name__
    return UsageProblem(
        f"{where}: a schema is a JSON Schema dict or a Pydantic model class, not {given}"
    )


def json_validator(obj: Any, where: str) -> Any:
    """A jsonschema validator for a JSON Schema dict; `where` starts the UsageProblem line."""
    if not isinstance(obj, Mapping):
        raise _not_a_schema(obj, where)
    try:
        import jsonschema
    except ImportError:
        raise UsageProblem(
            f"{where}: a JSON Schema dict needs jsonschema (pip install jsonschema), "
            "or give a Pydantic model class"
        ) from None
    cls = jsonschema.validators.validator_for(obj)
    try:
        cls.check_schema(obj)
    except jsonschema.SchemaError as exc:
        raise UsageProblem(f"{where}: not a valid JSON Schema: {exc.message}") from None
    return cls(obj)


def validated(value: Any, validator: Any, model: Any) -> tuple[Any, str | None]:
    """A parsed JSON value held to a schema: (the value, or the model's instance, and None)
    when valid, else (None, the first problem as one line)."""
    if validator is not None:
        error = next(iter(validator.iter_errors(value)), None)
        if error is None:
            return value, None
        where = "/".join(str(p) for p in error.absolute_path)
        return None, one_line(f"{where + ': ' if where else ''}{error.message}", 200)
    try:
        return model.model_validate(value), None
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        errors = getattr(exc, "errors", None)
        first = errors()[0] if callable(errors) and errors() else None
        if first:
            where = ".".join(str(p) for p in first.get("loc", ()))
            return None, one_line(f"{where + ': ' if where else ''}{first.get('msg', exc)}", 200)
        return None, one_line(str(exc), 200)


Reading = tuple[Any, bool, str | None]  # parsed, schema_valid, schema_error


@dataclass(frozen=True, eq=False)
class StructuredSchema:
    """A run's schema, checked: what a user gave (`source`), its JSON Schema as text (what
    the providers get), and what validates an answer against it."""

    source: Any  # the dict or the Pydantic model class
    text: str  # the JSON Schema, as JSON text (Options.json_schema)
    validator: Any = None  # for a dict
    model: Any = None  # for a Pydantic model class

    def read(self, answer: str) -> Reading:
        """An answer -> (parsed, valid, one-line error): parsed is the model's instance or the
        JSON value when valid, None when not."""
        value, problem = parse_json(answer)
        if problem is not None:
            return None, False, problem
        parsed, problem = validated(value, self.validator, self.model)
        return parsed, problem is None, problem


def compile_schema(obj: Any, where: str = "--schema") -> StructuredSchema:
    """A dict (a valid JSON Schema) or a Pydantic model class -> StructuredSchema (one
    already compiled is returned as is); anything else is one UsageProblem line starting with
    `where`. The same schema again is not checked again: a run of `complete()` calls pays for
    it once (checking a JSON Schema takes milliseconds)."""
    if isinstance(obj, StructuredSchema):
        return obj
    if is_model_class(obj):
        return _from_model(obj, where)
    if not isinstance(obj, Mapping):
        raise _not_a_schema(obj, where)
    return _from_text(_as_text(obj, where), where)


def schema_named(name: str, namespace: Mapping[str, Any]) -> StructuredSchema:
    """`--schema VAR` (and the panel's schema box): the notebook variable VAR, compiled."""
    if name not in namespace:
        raise UsageProblem(f"--schema {name}: no variable {name!r} in the notebook")
    return compile_schema(namespace[name], f"--schema {name}")


@functools.lru_cache(maxsize=64)
def _from_model(model: type, where: str) -> StructuredSchema:
    try:
        schema = model.model_json_schema()  # type: ignore[attr-defined]
    except Exception as exc:  # a model pydantic cannot describe: the user's to fix
        raise UsageProblem(f"{where}: {model.__name__} has no JSON Schema: {exc}") from None
    return StructuredSchema(model, _as_text(schema, where), model=model)


@functools.lru_cache(maxsize=64)
def _from_text(text: str, where: str) -> StructuredSchema:
    schema = json.loads(text)
    return StructuredSchema(schema, text, validator=json_validator(schema, where))


def _as_text(schema: Any, where: str) -> str:
    try:
        return json.dumps(schema, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise UsageProblem(f"{where}: the schema is not plain JSON: {exc}") from None
