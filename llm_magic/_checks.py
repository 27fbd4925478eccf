"""Checks: deterministic scores of each answer, from `--check SPEC`, `compare(checks=...)` and
`df.llm.check(...)`.

A spec is `[NAME][@THRESHOLD]=KIND[:ARG]` or just `KIND[:ARG]`:

    contains:TEXT  icontains:TEXT  not-contains:TEXT  equals:TEXT  regex:PATTERN  json
    schema:VAR     py:FUNC         correct=contains:{expected}     close@0.9=similar:{expected}
    judge:RUBRIC   similar:TEXT

TEXT, PATTERN and RUBRIC are templates filled per row (the `--over` item's fields, the notebook's
names); VAR and FUNC name notebook objects. Every answer gets a score in 0–1 (NaN when it cannot
be scored) and a one-line reason; it passes when its score reaches the threshold. Nothing here
imports pandas: parsing runs when `%load_ext` is light, scoring works on plain values.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._check_kinds import SCORERS, Verdict, raised
from ._schema import is_model_class, json_validator
from ._template import fields, render
from .errors import UsageProblem

__all__ = [
    "DEFAULT_THRESHOLD",
    "KINDS",
    "SIMILAR_THRESHOLD",
    "Check",
    "CheckPlan",
    "CheckSpec",
    "compile_checks",
    "notebook_namespace",
    "parse_check",
    "plan_checks",
    "verdict_line",
]

DEFAULT_THRESHOLD = 0.5
"""A score at or above it passes. The built-in kinds score 0 or 1, so it matters for `py:`."""
SIMILAR_THRESHOLD = 0.8
"""similar:'s own default: a cosine of 0.8 is close in most embedding models' spaces, while
unrelated texts often reach 0.5 (an embedding model's scale is its own: tune it with @)."""

# kind -> what its argument is (None: it takes none)
KINDS: dict[str, str | None] = {
    "contains": "TEXT",
    "icontains": "TEXT",
    "not-contains": "TEXT",
    "equals": "TEXT",
    "regex": "PATTERN",
    "json": None,
    "schema": "VAR",
    "py": "FUNC",
    "judge": "RUBRIC",  # an LLM's verdict: judge.py, run after the answers are in
    "similar": "TEXT",  # the cosine of two embeddings: similar.py, after the answers are in
}
_TEMPLATED = ("TEXT", "PATTERN", "RUBRIC")
_PREFIX = re.compile(r"(?P<name>[A-Za-z_]\w*)?(?:@(?P<threshold>[^=]*))?=(?P<rest>.*)", re.S)
assert set(SCORERS) == set(KINDS)


@dataclass(frozen=True)
class CheckSpec:
    """A parsed spec, before any notebook object is looked up."""

    kind: str
    arg: str | None = None
    name: str | None = None
    threshold: float | None = None

    def __str__(self) -> str:
        head = (self.name or "") + (f"@{self.threshold:g}" if self.threshold is not None else "")
        body = self.kind + (f":{self.arg}" if self.arg is not None else "")
        return f"{head}={body}" if head else body


def parse_check(text: str) -> CheckSpec:
    """`--check SPEC` as written -> CheckSpec; a malformed one is one UsageProblem line."""
    spec = text.strip()
    name = threshold = None
    head = _PREFIX.fullmatch(spec)
    if head and (head["name"] or head["threshold"] is not None):
        name, spec = head["name"], head["rest"].strip()
        meant = name and name.replace("_", "-").lower() in KINDS
        if meant and spec.partition(":")[0].strip().lower() not in KINDS:  # equals=Paris
            raise UsageProblem(f"check {text!r}: write {name}:… (a colon), or name it: x={name}:…")
        if head["threshold"] is not None:
            threshold = _threshold(head["threshold"], text)
    kind, colon, arg = spec.partition(":")
    kind = kind.strip().lower()
    if kind not in KINDS:
        known = ", ".join(k + (f":{a}" if a else "") for k, a in KINDS.items())
        raise UsageProblem(f"unknown check kind {kind!r} in {text!r}; known: {known}")
    needs = KINDS[kind]
    if needs is None and colon:
        raise UsageProblem(f"check {text!r}: {kind} takes no argument")
    if needs is not None and not arg.strip():
        raise UsageProblem(f"check {text!r}: {kind} needs {needs}, as in {kind}:{needs}")
    if needs in ("VAR", "FUNC"):
        arg = arg.strip()
        if not arg.isidentifier():
            raise UsageProblem(f"check {text!r}: {needs} must be a notebook name, not {arg!r}")
    return CheckSpec(kind, arg if needs else None, name, threshold)


def _threshold(text: str, spec: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 1.0:
        raise UsageProblem(f"check {spec!r}: the threshold after @ must be a number in 0–1")
    return value


# ---- compiled checks --------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Check:
    """One check ready to score: its column name, its notebook object, its static regex."""

    name: str
    spec: CheckSpec
    threshold: float
    obj: Any = None  # schema:VAR's schema or model class, py:FUNC's function
    validator: Any = None  # a jsonschema validator for a dict schema
    pattern: re.Pattern[str] | None = None  # regex: without fields, compiled once
    fields: tuple[str, ...] = ()  # the template fields of TEXT/PATTERN

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def templated(self) -> bool:
        return KINDS[self.kind] in _TEMPLATED and _braced(self.spec.arg or "")

    def fill(self, scope: Mapping[str, Any]) -> str | None:
        """TEXT/PATTERN with its fields filled from `scope` (TemplateProblem if one is missing)."""
        arg = self.spec.arg
        return render(arg, scope) if arg is not None and self.templated else arg

    def score(self, answer: str, arg: str | None, row: Callable[[], Mapping[str, Any]]) -> Verdict:
        """Score one answer; `arg` is this row's filled TEXT/PATTERN, `row()` its fields (for
        py:). Never raises: what cannot be scored is NaN and the reason."""
        try:
            return SCORERS[self.spec.kind](self, answer, arg, row)
        except Exception as exc:  # a user's function, a schema library: the row's reason
            return math.nan, raised(f"{self.kind}:{self.spec.arg}", exc)


# ---- from what a user wrote to checks ----------------------------------------------------------
def notebook_namespace() -> Mapping[str, Any]:
    """The running notebook's names (for compare() and df.llm.check()), else none."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell.user_ns if shell is not None else {}


def compile_checks(items: Any, namespace: Mapping[str, Any]) -> tuple[Check, ...]:
    """Specs (strings), CheckSpecs, functions (py:), schema dicts or model classes (schema:),
    as a list or as a {name: item} dict -> Checks with unique names (`contains_2` for the
    second unnamed contains). VAR and FUNC are looked up in `namespace`."""
    if items is None:
        return ()
    if isinstance(items, str | CheckSpec | Check) or _is_function(items):
        items = [items]
    named: Iterable[tuple[str | None, Any]]
    if isinstance(items, Mapping):
        named = ((str(k), v) for k, v in items.items())
    else:
        named = ((None, item) for item in items)
    checks: list[Check] = []
    taken: set[str] = set()
    for name, item in named:
        check = _compile(item, name, namespace)
        base, n = check.name, 2
        explicit = check.spec.name is not None or name is not None
        if check.name in taken and explicit:
            raise UsageProblem(f"two checks are named {check.name!r}: give each its own name")
        while check.name in taken:
            check = Check(**{**vars(check), "name": f"{base}_{n}"})
            n += 1
        taken.add(check.name)
        checks.append(check)
    return tuple(checks)


def _compile(item: Any, name: str | None, namespace: Mapping[str, Any]) -> Check:
    if isinstance(item, Check):
        return Check(**{**vars(item), "name": name}) if name else item
    obj, default = None, None
    if isinstance(item, str):
        spec = parse_check(item)
    elif isinstance(item, CheckSpec):
        spec = item
    elif _is_schema(item):
        spec, obj = CheckSpec("schema", getattr(item, "__name__", "schema")), item
    elif callable(item):
        given = getattr(item, "__name__", "")
        default = given if given.isidentifier() else None  # a lambda is named "py"
        spec, obj = CheckSpec("py", given or "function"), item
    else:
        raise UsageProblem(
            f"a check is a spec such as 'contains:Paris', a function or a schema, not "
            f"{type(item).__name__}"
        )
    if name is not None:
        if not name.isidentifier():
            raise UsageProblem(f"check name {name!r} must be a Python name (letters, digits, _)")
        spec = CheckSpec(spec.kind, spec.arg, name, spec.threshold)
    shown = str(spec)
    if KINDS[spec.kind] in ("VAR", "FUNC") and obj is None:
        obj = _lookup(spec, namespace, shown)
    validator = _validator(obj, shown) if spec.kind == "schema" else None
    if spec.kind == "py" and not callable(obj):
        raise UsageProblem(f"check {shown!r}: {spec.arg} is a {type(obj).__name__}, not a function")
    threshold = spec.threshold
    if threshold is None:
        threshold = SIMILAR_THRESHOLD if spec.kind == "similar" else DEFAULT_THRESHOLD
    default = default or spec.kind.replace("-", "_")
    check = Check(spec.name or default, spec, threshold, obj, validator)
    arg = spec.arg or ""
    if KINDS[spec.kind] in _TEMPLATED and _braced(arg):
        check = Check(**{**vars(check), "fields": tuple(fields(arg))})
    if spec.kind == "regex" and not check.fields:  # {{ and }} are still braces to fill
        check = Check(**{**vars(check), "pattern": _compiled(check.fill({}) or "", shown)})
    return check


def _braced(text: str) -> bool:
    return "{" in text or "}" in text


def _lookup(spec: CheckSpec, namespace: Mapping[str, Any], shown: str) -> Any:
    what = "function" if spec.kind == "py" else "schema"
    if spec.arg not in namespace:
        raise UsageProblem(f"check {shown!r}: no {what} {spec.arg!r} in the notebook")
    return namespace[spec.arg]


def _is_function(obj: Any) -> bool:
    return callable(obj) and not isinstance(obj, type)


def _is_schema(obj: Any) -> bool:
    return isinstance(obj, Mapping) or is_model_class(obj)


def _validator(obj: Any, shown: str) -> Any:
    """A jsonschema validator for a JSON Schema dict (None for a Pydantic model class)."""
    return None if is_model_class(obj) else json_validator(obj, f"check {shown!r}")


def _compiled(pattern: str, shown: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise UsageProblem(f"check {shown!r}: the regex does not compile: {exc}") from None


# ---- checks laid out over a run's prompts -----------------------------------------------------
@dataclass(frozen=True, eq=False)
class CheckPlan:
    """The checks of a run, with each prompt's filled TEXT/PATTERN and its `--over` item."""

    checks: tuple[Check, ...]
    args: tuple[tuple[str | None, ...], ...]  # per prompt (Job.prompt_no), per check
    items: tuple[Mapping[str, Any], ...]  # per prompt: the --over item's fields ({} if none)


def plan_checks(
    checks: Sequence[Check],
    scopes: Sequence[Mapping[str, Any]],
    items: Sequence[Mapping[str, Any]],
) -> CheckPlan:
    """Fill every check for every prompt (`scopes`: one per prompt) now, so that a missing
    field stops the run before anything is sent."""
    args = tuple(tuple(c.fill(scope) for c in checks) for scope in scopes)
    return CheckPlan(tuple(checks), args, tuple(items))


def verdict_line(detail: Any) -> str:
    """A row's `checks` value as one short line: "✓ correct 1.00 · ✗ json 0.00 (not JSON…)"."""
    if not isinstance(detail, Mapping):
        return ""
    parts = []
    for name, v in detail.items():
        score = v.get("score")
        shown = "–" if score is None or score != score else f"{score:.2f}"
        part = f"{'✓' if v.get('pass') else '✗'} {name} {shown}"
        if not v.get("pass") and v.get("reason"):
            reason = str(v["reason"])
            part += f" ({reason if len(reason) <= 60 else reason[:59] + '…'})"
        parts.append(part)
    return " · ".join(parts)
