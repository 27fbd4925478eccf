"""Targets: `provider:model`, aliases and fallback chains `a|b|c`.

A target word is split on its FIRST colon, so `ollama:llama3.2:1b` is provider `ollama`, model
`llama3.2:1b`, and `local:C:\\models\\x.gguf` keeps the whole path as the model. A word without a
colon is an alias; an alias may expand to another alias or to a chain. Every mistake is one
`UsageProblem` (or `UnknownProvider`) line.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from .errors import UnknownProvider, UsageProblem

__all__ = [
    "Target",
    "TargetSpec",
    "check_alias",
    "parse_target",
    "resolve_targets",
    "validate_alias_name",
]


@dataclass(frozen=True)
class Target:
    """One backend model: `provider:model`."""

    provider: str
    model: str

    def __str__(self) -> str:
        return f"{self.provider}:{self.model}"


@dataclass(frozen=True)
class TargetSpec:
    """What one target word means: a chain tried in order (usually of length one).

    `label` is the word as the user wrote it (an alias stays an alias), for column titles.
    """

    chain: tuple[Target, ...]
    label: str

    def __post_init__(self) -> None:
        if not self.chain:
            raise ValueError("a TargetSpec needs at least one Target")

    @property
    def primary(self) -> Target:
        return self.chain[0]

    @property
    def fallbacks(self) -> tuple[Target, ...]:
        return self.chain[1:]

    def __str__(self) -> str:
        return "|".join(str(t) for t in self.chain)


def _one_target(link: str, known: Collection[str], context: str) -> Target:
    provider, _, model = link.partition(":")
    if not provider:
        raise UsageProblem(
            f"{context}target {link!r} has no provider; write provider:model, e.g. ollama{link}"
        )
    if not model:
        raise UsageProblem(f"{context}target {link!r} has no model; write {provider}:MODEL")
    if provider not in known:
        names = sorted(known)
        message = f"{context}unknown provider {provider!r}; known providers: {', '.join(names)}"
        # Provider names are case-sensitive; point at the likely intended one.
        close = [n for n in names if n.lower() == provider.lower()]
        raise UnknownProvider(message + (f" (did you mean {close[0]!r}?)" if close else ""))
    return Target(provider, model)


def _expand(
    text: str,
    aliases: Mapping[str, str],
    known: Collection[str],
    path: tuple[str, ...],
) -> list[Target]:
    # `path` is the chain of aliases being expanded, to detect cycles and to say where an
    # error sits when it is inside an alias's value.
    context = f"alias {path[-1]!r} = {text!r}: " if path else ""
    if not text.strip():
        raise UsageProblem(f"{context}empty target; write provider:model, an alias, or a|b")
    if any(ch.isspace() for ch in text):
        raise UsageProblem(
            f"{context}target {text!r} contains whitespace; write provider:model with no spaces"
        )
    links = text.split("|")
    if not all(links):
        raise UsageProblem(
            f"{context}{text!r} has an empty link in its fallback chain; write a|b|c"
        )
    chain: list[Target] = []
    for link in links:
        if ":" in link:
            chain.append(_one_target(link, known, context))
        elif link in aliases:
            if link in path:
                raise UsageProblem(f"alias cycle: {' -> '.join((*path, link))}")
            chain.extend(_expand(aliases[link], aliases, known, (*path, link)))
        elif link in known:
            raise UsageProblem(f"{context}{link!r} needs a model: write {link}:MODEL")
        else:
            names = ", ".join(sorted(aliases))
            have = (
                f"aliases: {names}"
                if names
                else "no aliases are defined (add one with %llm alias NAME TARGET)"
            )
            raise UsageProblem(
                f"{context}{link!r} is neither provider:model nor a known alias; {have}"
            )
    return chain


def parse_target(text: str, aliases: Mapping[str, str], known: Collection[str]) -> TargetSpec:
    """Parse one target word (`provider:model`, an alias, or a chain `a|b|c`)."""
    label = text.strip()
    chain = _expand(label, aliases, known, ())
    seen: set[Target] = set()
    for target in chain:
        if target in seen:
            raise UsageProblem(
                f"the fallback chain {label!r} names {target} twice; each link must differ"
            )
        seen.add(target)
    return TargetSpec(tuple(chain), label)


def resolve_targets(
    words: Sequence[str],
    aliases: Mapping[str, str],
    known: Collection[str],
    default: str,
) -> list[TargetSpec]:
    """Parse the target words of a cell; no words means the default target."""
    if not words:
        try:
            return [parse_target(default, aliases, known)]
        except UsageProblem as exc:
            # Keep the class (UnknownProvider stays UnknownProvider), add where it came from.
            raise type(exc)(f"default target {default!r}: {exc.message}") from None
    specs: list[TargetSpec] = []
    # Keyed by the first link: `a` beside `a|b` would ask `a` twice in rows nothing tells apart.
    first_label: dict[Target, str] = {}
    for word in words:
        spec = parse_target(word, aliases, known)
        first = spec.chain[0]
        if first in first_label:
            earlier = first_label[first]
            how = "" if earlier == spec.label else f" (as {earlier!r} and {spec.label!r})"
            raise UsageProblem(
                f"target {first} is given twice{how}; to ask it several times use -r/--repeat N"
                " (in the panel: the repeat box)"
            )
        first_label[first] = spec.label
        specs.append(spec)
    return specs


_ALIAS_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")


def validate_alias_name(name: str, known: Collection[str] | None = None) -> str:
    """Check a name for `%llm alias NAME TARGET`; returns it unchanged.

    `known` is the provider names; by default the registry's current list.
    """
    if not _ALIAS_NAME.fullmatch(name):
        raise UsageProblem(
            f"alias name {name!r} is not allowed: use ASCII letters, digits, _ . - "
            "(starting with a letter or _), no ':' or '|'"
        )
    if known is None:
        from .providers import known_providers  # imported late: the registry reads config

        known = known_providers()
    if name in known:
        raise UsageProblem(f"alias name {name!r} is a provider name; choose another name")
    return name


def check_alias(
    name: str, target: str, aliases: Mapping[str, str], known: Collection[str]
) -> TargetSpec:
    """Validate `%llm alias NAME TARGET` before storing it: the name, the target, and that the new
    alias does not make a cycle with the existing ones. Returns what NAME will mean."""
    validate_alias_name(name, known)
    # Parse the name itself so a cycle reads from it: "alias cycle: fast -> best -> fast".
    return parse_target(name, {**aliases, name: target}, known)
