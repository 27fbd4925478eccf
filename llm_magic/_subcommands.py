"""`%llm SUBCOMMAND ...`: one function per subcommand, found by name.

Each handler takes the session (aliases, --chat conversations), the `%config LLMMagics`
settings and the already-counted argument words, and returns what the cell should show (or
None). Nothing here knows the magic object: the magic calls
`run_subcommand(session, settings, name, args)`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from . import providers
from ._command import usage_text
from ._targets import check_alias
from .errors import UsageProblem

if TYPE_CHECKING:
    from ._session import Session

__all__ = ["HANDLERS", "run_subcommand"]

Settings = Mapping[str, Any]  # the %config LLMMagics values that are set
Handler = Callable[["Session", Settings, list[str]], Any]
HANDLERS: dict[str, Handler] = {}


def handler(name: str) -> Callable[[Handler], Handler]:
    def add(fn: Handler) -> Handler:
        HANDLERS[name] = fn
        return fn

    return add


def run_subcommand(session: Session, settings: Settings, name: str, args: list[str]) -> Any:
    fn = HANDLERS.get(name)
    if fn is None:
        raise UsageProblem(f"%llm {name} is not available in this version")
    return fn(session, settings, args)


@handler("help")
def _help(session: Session, settings: Settings, args: list[str]) -> None:
    print(usage_text())


@handler("reset")
def _reset(session: Session, settings: Settings, args: list[str]) -> None:
    """`%llm reset` forgets every --chat conversation; `%llm reset TARGET` just that one's."""
    conversations = session.conversations
    forget = list(args or conversations)
    for target in forget:  # all checked before any is forgotten
        if target not in conversations:
            known = ", ".join(conversations) or "none yet"
            raise UsageProblem(f"no --chat conversation with {target!r}; conversations: {known}")
    for target in forget:
        del conversations[target]
    print(
        f"forgot {len(forget)} conversation{'s' if len(forget) != 1 else ''}: "
        + (", ".join(forget) or "there were none")
    )


@handler("alias")
def _alias(session: Session, settings: Settings, args: list[str]) -> Any:
    """`%llm alias` lists aliases; `%llm alias NAME TARGET` adds one for this session."""
    if not args:
        return dict(sorted(session.all_aliases().items()))
    name, target = args  # parse_subcommand let through none or two
    # A bad name, target or alias cycle fails now, not at the next run.
    check_alias(name, target, session.all_aliases(), providers.known_providers())
    session.aliases[name] = target
    return None


@handler("history")
def _history(session: Session, settings: Settings, args: list[str]) -> Any:
    """`%llm history [N]`: the last N logged rows (default 20), oldest first, as a DataFrame
    with the schema of a run's plus `truncated` (the log kept the first max_log_chars)."""
    from . import results  # noqa: F401  (df.llm on the frame, as on a run's)
    from .errors import ConfigProblem
    from .store import default_store

    count = int(args[0]) if args else 20  # parse_subcommand has checked it is a whole number >= 1
    store = default_store()
    if store.problem is not None:
        raise ConfigProblem(f"the run log cannot be read: {store.problem}")
    return store.history_frame(count)


# -- backends: providers, status, models, pull, rm, show, ps, config -------------------------
# The work is in backends.py, discovery.py and manage.py, imported on first use. A server
# refusing (unknown model, failed pull, bad key) is not a typing mistake, but it is the whole
# answer: it is shown as one UsageError line in the server's own words, never a traceback.


def _one_line_refusals(fn: Handler) -> Handler:
    def run(session: Session, settings: Settings, args: list[str]) -> Any:
        from .errors import ProviderError

        try:
            return fn(session, settings, args)
        except ProviderError as exc:
            raise UsageProblem(exc.message) from None

    run.__doc__ = fn.__doc__
    return run


@handler("providers")
def _providers(session: Session, settings: Settings, args: list[str]) -> Any:
    """Every registered provider: configured?, key (masked), base URL and where it came from."""
    from ._manage import providers_table

    return providers_table()


@handler("status")
def _status(session: Session, settings: Settings, args: list[str]) -> Any:
    """Health of every configured backend and of local servers found on the usual ports."""
    from ._backends import status_table

    return status_table()


@handler("models")
@_one_line_refusals
def _models(session: Session, settings: Settings, args: list[str]) -> Any:
    """`%llm models [PROVIDER]`: one table of every reachable backend's models."""
    from ._backends import models_table

    frame, notes = models_table(args[0] if args else None)
    for note in notes:
        print(note)
    return frame


def _target(session: Session, word: str) -> Any:
    from ._manage import target_of

    return target_of(word, session.all_aliases())


@handler("pull")
@_one_line_refusals
def _pull(session: Session, settings: Settings, args: list[str]) -> None:
    """`%llm pull ollama:MODEL`, with a progress bar."""
    from ._manage import pull

    try:
        result = pull(_target(session, args[0]))
    except KeyboardInterrupt as exc:  # the stop button: one line on how far it got, no traceback
        raise UsageProblem(str(exc) or "pull interrupted") from None
    print(f"pulled {result.target} ({result.layers} layers, {result.total_bytes / 1e9:.2f} GB)")


@handler("rm")
@_one_line_refusals
def _rm(session: Session, settings: Settings, args: list[str]) -> None:
    """`%llm rm ollama:MODEL` deletes it from Ollama; `%llm rm local:MODEL` unloads it."""
    from ._manage import remove

    print(remove(_target(session, args[0])))


@handler("show")
@_one_line_refusals
def _show(session: Session, settings: Settings, args: list[str]) -> Any:
    """`%llm show TARGET`: what the backend knows about that model."""
    from ._manage import show

    return show(_target(session, args[0]))


@handler("ps")
@_one_line_refusals
def _ps(session: Session, settings: Settings, args: list[str]) -> Any:
    """Models loaded right now (Ollama's and the embedded ones)."""
    from ._manage import running_table

    frame, notes = running_table()
    for note in notes:
        print(note)
    return frame


@handler("config")
def _config(session: Session, settings: Settings, args: list[str]) -> Any:
    """Every resolved setting with its source; keys masked."""
    from ._manage import config_table

    return config_table(settings)


@handler("panel")
def _panel(session: Session, settings: Settings, args: list[str]) -> Any:
    """`%llm panel [TARGET ...]`: the comparison panel, with these targets chosen."""
    # A bad target is one UsageError line now, before any widget is built.
    session.specs(args)
    try:
        from ._panel import Panel
    except ImportError as exc:
        raise UsageProblem(str(exc)) from None
    return Panel(args or None, session=session)


# -- provider batches: batches, collect, cancel (the work is in _batch_collect.py) ----------------


@handler("batches")
@_one_line_refusals
def _batches(session: Session, settings: Settings, args: list[str]) -> Any:
    """Every batch in the store: id, provider, status, counts, created, cost so far."""
    from ._batch_collect import batches

    return batches()


@handler("collect")
@_one_line_refusals
def _collect(session: Session, settings: Settings, args: list[str]) -> Any:
    """`%llm collect ID|RUN_ID|all` (`df = %llm collect all`): the rows of ended batches."""
    from . import results  # noqa: F401  (df.llm on the frame)
    from ._batch_collect import collect

    return collect(args[0])


@handler("cancel")
@_one_line_refusals
def _cancel(session: Session, settings: Settings, args: list[str]) -> None:
    """`%llm cancel ID|RUN_ID`: cancel running batches; what they finished stays collectable."""
    from ._batch_collect import cancel

    print(cancel(args[0]))
