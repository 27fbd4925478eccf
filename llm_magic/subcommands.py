"""`%llm SUBCOMMAND ...`: one function per subcommand, found by name.

Each handler takes the LLMMagics instance (for the session, the shell and %config values) and
the already-counted argument words, and returns what the cell should show (or None).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import providers
from .command import usage_text
from .errors import UsageProblem
from .targets import check_alias

if TYPE_CHECKING:
    from .magics import LLMMagics

__all__ = ["HANDLERS", "run_subcommand"]

Handler = Callable[["LLMMagics", list[str]], Any]
HANDLERS: dict[str, Handler] = {}


def handler(name: str) -> Callable[[Handler], Handler]:
    def add(fn: Handler) -> Handler:
        HANDLERS[name] = fn
        return fn

    return add


def run_subcommand(magics: LLMMagics, name: str, args: list[str]) -> Any:
    fn = HANDLERS.get(name)
    if fn is None:
        raise UsageProblem(f"%llm {name} is not available in this version")
    return fn(magics, args)


@handler("help")
def _help(magics: LLMMagics, args: list[str]) -> None:
    print(usage_text())


@handler("reset")
def _reset(magics: LLMMagics, args: list[str]) -> None:
    """`%llm reset` forgets every --chat conversation; `%llm reset TARGET` just that one's."""
    conversations = magics.session.conversations
    if not args:
        conversations.clear()
        return
    for target in args:
        if target not in conversations:
            known = ", ".join(conversations) or "none yet"
            raise UsageProblem(f"no --chat conversation with {target!r}; conversations: {known}")
        del conversations[target]


@handler("alias")
def _alias(magics: LLMMagics, args: list[str]) -> Any:
    """`%llm alias` lists aliases; `%llm alias NAME TARGET` adds one for this session."""
    session = magics.session
    if not args:
        return dict(sorted(session.all_aliases().items()))
    if len(args) != 2:
        raise UsageProblem("usage: %llm alias NAME TARGET   (e.g. %llm alias fast groq:llama3)")
    name, target = args
    # A bad name, target or alias cycle fails now, not at the next run.
    check_alias(name, target, session.all_aliases(), providers.known_providers())
    session.aliases[name] = target
    return None


@handler("history")
def _history(magics: LLMMagics, args: list[str]) -> Any:
    """`%llm history [N]`: the last N logged rows (default 20), oldest first, as a DataFrame
    with the schema of a run's."""
    from .errors import ConfigProblem
    from .results import to_dataframe
    from .store import default_store

    count = int(args[0]) if args else 20  # parse_subcommand has checked it is a whole number >= 1
    store = default_store()
    if store.problem is not None:
        raise ConfigProblem(f"the run log cannot be read: {store.problem}")
    return to_dataframe(store.history(count))
