"""Prompt templates: `{name}` fields filled from the notebook, and `--over VAR` expansion.

Fields follow `str.format`: `{x.attr}`, `{x[0]}`, `{x:.2f}`, `{x!r}`; `{{` and `}}` are literal
braces. Substituted values are never rendered again, so text inside a variable is sent as is.
Every failure is one `TemplateProblem` (or `UsageProblem`) line that names the field.
"""

from __future__ import annotations

import re
import string
import sys
from collections.abc import Iterable, Mapping
from typing import Any

from .errors import TemplateProblem, UsageProblem

__all__ = ["check_over_fields", "expand_over", "fields", "render"]

_BRACE_HINT = "write {{ and }} for literal braces"
_ROOT = re.compile(r"[.\[]")


def _brace_problem(template: str) -> str | None:
    """Where the first unbalanced brace is, as words; None if the braces balance."""
    i, n = 0, len(template)
    while i < n:
        ch = template[i]
        if template.startswith(("{{", "}}"), i):
            i += 2
            continue
        if ch == "}":
            return f"a single '}}' on line {template.count(chr(10), 0, i) + 1}"
        if ch == "{":
            depth, j = 1, i + 1
            # A field may hold one nested level, as in {x:{width}}.
            while j < n and depth:
                depth += {"{": 1, "}": -1}.get(template[j], 0)
                j += 1
            if depth:
                return f"an unclosed '{{' on line {template.count(chr(10), 0, i) + 1}"
            i = j
            continue
        i += 1
    return None


class _Renderer(string.Formatter):
    def __init__(self, namespace: Mapping[str, Any]) -> None:
        self.namespace = namespace

    def get_value(self, key: int | str, args: Any, kwargs: Any) -> Any:
        # render() has already checked that the root name is present.
        return self.namespace[key]  # type: ignore[index]

    def check_root(self, field: str, shown: str) -> None:
        root = _ROOT.split(field, maxsplit=1)[0]
        if root == "" or root.isdigit():
            raise TemplateProblem(
                f"{shown} is a positional field; use {{name}} fields, or {_BRACE_HINT}"
            )
        if root in self.namespace:
            return
        if not root.isidentifier():
            raise TemplateProblem(f"{shown} is not a {{name}} field; {_BRACE_HINT}")
        raise TemplateProblem(
            f"name {root!r} is not defined in the notebook (use {{{{ and }}}} for literal braces)"
        )

    def split(self, template: str) -> list[tuple[str, str | None, str | None, str | None]]:
        try:
            return list(self.parse(template))
        except ValueError as exc:
            where = _brace_problem(template)
            if where:
                raise TemplateProblem(
                    f"unbalanced braces in the prompt: {where}; {_BRACE_HINT}"
                ) from None
            raise TemplateProblem(f"malformed field in the prompt ({exc}); {_BRACE_HINT}") from None

    def render(self, template: str, depth: int = 2) -> str:
        if depth < 0:
            raise TemplateProblem(f"format specs nest too deeply; {_BRACE_HINT}")
        out: list[str] = []
        for literal, field, spec, conversion in self.split(template):
            out.append(literal)
            if field is None:
                continue
            shown = "{" + field + (f"!{conversion}" if conversion else "")
            shown += (f":{spec}" if spec else "") + "}"
            self.check_root(field, shown)
            try:
                value, _ = self.get_field(field, (), {})
                value = self.convert_field(value, conversion)
                spec = self.render(spec, depth - 1) if spec else ""
                out.append(self.format_field(value, spec))
            except TemplateProblem:
                raise
            except Exception as exc:  # user objects may raise anything from __format__
                raise TemplateProblem(
                    f"cannot render {shown}: {type(exc).__name__}: {exc}"
                ) from None
        return "".join(out)


def render(template: str, namespace: Mapping[str, Any]) -> str:
    """Fill the `{name}` fields of `template` from `namespace`."""
    return _Renderer(namespace).render(template)


def fields(template: str) -> list[str]:
    """The root names the template uses, in order of first use (`{a.b[0]}` -> "a")."""
    renderer = _Renderer({})
    names: list[str] = []

    def walk(text: str, depth: int) -> None:
        for _, field, spec, _ in renderer.split(text):
            if field is None:
                continue
            root = _ROOT.split(field, maxsplit=1)[0]
            if root and not root.isdigit() and root not in names:
                names.append(root)
            if spec and depth > 0:
                walk(spec, depth - 1)

    walk(template, 1)
    return names


def _is_instance(value: Any, module: str, cls: str) -> bool:
    # Only true if the module is already imported: we never import pandas to ask.
    mod = sys.modules.get(module)
    kind = getattr(mod, cls, None) if mod is not None else None
    return isinstance(kind, type) and isinstance(value, kind)


def expand_over(value: Any, var_name: str) -> list[dict[str, Any]]:
    """The template variables for each prompt of `--over VAR`.

    DataFrame: one dict per row, keyed by column name. List, tuple, Series or other iterable:
    the item as {item} and as {VAR} itself (`--over topics` + "about {topics}" means each topic,
    not the whole list), plus a Series' str name and a dict element's own keys.
    """
    if _is_instance(value, "pandas", "DataFrame"):
        columns = [str(c) for c in value.columns]
        rows = [
            dict(zip(columns, row, strict=True)) for row in value.itertuples(index=False, name=None)
        ]
    elif _is_instance(value, "pandas", "Series"):
        name = value.name if isinstance(value.name, str) else None
        rows = [{"item": x, var_name: x, **({name: x} if name else {})} for x in value.tolist()]
    elif isinstance(value, (str, bytes, bytearray, Mapping)) or not isinstance(value, Iterable):
        kind = type(value).__name__
        hint = " (use list(d.items()) or a DataFrame)" if isinstance(value, Mapping) else ""
        raise UsageProblem(
            f"--over {var_name} must be a list, Series or DataFrame, not {kind}{hint}"
        )
    else:
        rows = []
        for x in value:
            row: dict[str, Any] = {"item": x, var_name: x}
            if isinstance(x, Mapping):
                row.update((str(k), v) for k, v in x.items())
            rows.append(row)
    if not rows:
        raise UsageProblem(f"--over {var_name} is empty: nothing to send")
    return rows


def check_over_fields(
    template: str, rows: list[dict[str, Any]], var_name: str, namespace: Mapping[str, Any]
) -> None:
    """Under `--over`, the cell must use a field of the items, and only fields that exist.

    Otherwise every prompt would be the same text, sent (and paid for) once per item.
    """
    names = list(dict.fromkeys(k for row in rows for k in row))
    shown = ", ".join("{" + n + "}" for n in names[:6]) + (", …" if len(names) > 6 else "")
    used = fields(template)
    for name in used:
        if name not in names and name not in namespace:
            raise TemplateProblem(
                f"--over {var_name}: {{{name}}} is neither a field of the items ({shown})"
                " nor a notebook variable"
            )
    if not any(name in names for name in used):
        raise UsageProblem(
            f"--over {var_name}: the cell uses none of the items' fields ({shown}), so every"
            " prompt would be the same; use -r N to ask one prompt several times"
        )
