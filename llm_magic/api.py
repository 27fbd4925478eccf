"""The Python API, and the one path every run takes (the magic and the panel call `run`).

compare(["Why is the sky blue?"], ["local:smollm2", "ollama:llama3.2"]) -> DataFrame
complete("Say hi", "openai:gpt-4o-mini") -> Completion
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import import_module
from typing import TYPE_CHECKING, Any

from . import providers, ranges
from .config import load_file_config, resolve_setting
from .errors import ProviderError, UsageProblem
from .providers.base import Message, Options
from .records import RunRecord
from .runner import Events, Job, Policy, run_jobs
from .store import record_run
from .targets import TargetSpec, resolve_targets

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Completion", "Session", "compare", "complete", "plan_jobs", "run", "session"]


def _no_settings() -> Mapping[str, Any]:
    return {}


@dataclass
class Session:
    """What lives for the whole kernel: aliases made with `%llm alias` and the last result."""

    aliases: dict[str, str] = field(default_factory=dict)
    last: list[RunRecord] = field(default_factory=list)
    # --chat: the messages exchanged so far with each target, keyed by the target as written.
    conversations: dict[str, list[Message]] = field(default_factory=dict)
    # The `%config LLMMagics` settings, wired in by the loaded extension, so that compare(),
    # complete() and the panel follow them as %%llm does. Without IPython: none.
    settings: Callable[[], Mapping[str, Any]] = field(default=_no_settings, repr=False)

    def remember(self, jobs: Sequence[Job], records: Sequence[RunRecord]) -> None:
        """Extend each target's conversation with the turn that just succeeded."""
        for job, record in zip(jobs, records, strict=True):
            if record.error is None:
                turn = [Message("user", job.prompt), Message("assistant", record.output)]
                self.conversations.setdefault(job.spec.label, []).extend(turn)

    def all_aliases(self) -> dict[str, str]:
        return {**load_file_config().aliases, **self.aliases}

    def specs(self, targets: Sequence[str]) -> list[TargetSpec]:
        """Parse target words; raises UsageProblem before anything is sent."""
        configured = self.settings().get("default_target")
        default = resolve_setting("default_target", None, configured).value
        known = providers.known_providers()
        return resolve_targets(list(targets), self.all_aliases(), known, default)


session = Session()


@dataclass(frozen=True)
class Completion:
    """One answer from `complete()`; str() gives the text."""

    text: str
    record: RunRecord

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        short = self.text if len(self.text) <= 60 else self.text[:59] + "…"
        return f"Completion({short!r}, target={self.record.target!r})"

    def _repr_markdown_(self) -> str:
        from .display import safe_markdown

        return safe_markdown(self.text)


def plan_jobs(
    prompts: Sequence[str],
    specs: Sequence[TargetSpec],
    options: Options,
    *,
    system: str | Sequence[str] | None = None,
    repeat: int = 1,
    conversations: Mapping[str, Sequence[Message]] | None = None,
) -> list[Job]:
    """One job per prompt x target x repeat, in that order.

    `system` is one system prompt for all, or one per prompt (--over renders it per item).
    With `conversations` (--chat), each target's earlier turns go before the new prompt.
    An empty prompt (an empty field, a blank `--over` item) is a UsageProblem: never sent.
    """
    ranges.check("repeat", repeat, "")
    for i, prompt in enumerate(prompts):
        if not prompt.strip():
            which = f"prompt {i + 1} of {len(prompts)}" if len(prompts) > 1 else "the prompt"
            raise UsageProblem(f"{which} is empty once its fields are filled: nothing to send")
    systems = [system] * len(prompts) if system is None or isinstance(system, str) else system
    jobs: list[Job] = []
    for prompt_no, prompt in enumerate(prompts):
        said = systems[prompt_no]
        head = (Message("system", said),) if said else ()
        for spec in specs:
            prior = tuple(conversations.get(spec.label, ())) if conversations else ()
            messages = head + prior + (Message("user", prompt),)
            for r in range(repeat):
                jobs.append(Job(len(jobs), prompt, messages, spec, options, r, prompt_no))
    return jobs


def make_options(
    *,
    temperature: float | None = None,
    max_tokens: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    stop: Sequence[str] | None = None,
    stream: bool = True,
    timeout: float | None = None,
    configured: Mapping[str, Any] | None = None,
) -> Options:
    configured = configured or {}
    sampling = {"temperature": temperature, "max_tokens": max_tokens, "top_p": top_p, "seed": seed}
    for name, value in sampling.items():
        ranges.check(name, value, "")  # the magic's parser has checked its own; the API's too
    return Options(
        temperature=temperature,
        max_tokens=max_tokens,
        top_p=top_p,
        seed=seed,
        stop=tuple(stop) if stop else None,
        stream=stream,
        read_timeout=float(resolve_setting("timeout", timeout, configured.get("timeout")).value),
        connect_timeout=float(
            resolve_setting("connect_timeout", None, configured.get("connect_timeout")).value
        ),
    )


def make_policy(
    *,
    retries: int | None = None,
    concurrency: int | None = None,
    cache: bool | None = None,
    configured: Mapping[str, Any] | None = None,
) -> Policy:
    configured = configured or {}
    file = load_file_config()
    # One answer at a time per embedded model process-wide: a second would only queue on the
    # model's lock, and its latency would then include the wait. Queued here, before the clock.
    limits = {"local": 1, **file.limits}
    return Policy(
        retries=int(resolve_setting("retries", retries, configured.get("retries")).value),
        concurrency=int(
            resolve_setting("concurrency", concurrency, configured.get("concurrency")).value
        ),
        limits=limits,
        prices=file.prices,
        cache=bool(resolve_setting("cache", cache, configured.get("cache")).value),
    )


def run(
    jobs: Sequence[Job],
    policy: Policy,
    events: Events | None = None,
    session: Session = session,
    stop: threading.Event | None = None,
) -> list[RunRecord]:
    """Run planned jobs, log them, and remember them as the session's last result.

    Setting `stop` from another thread (the panel's Stop button) cancels the run the way a
    KeyboardInterrupt does: RunInterrupted carries the rows so far.
    """
    _import_in_background("llm_magic.results")
    try:
        records = run_jobs(jobs, providers.get_provider, policy, events, stop=stop)
    except KeyboardInterrupt as interrupt:
        session.last = list(getattr(interrupt, "records", []))
        record_run(session.last)
        raise
    session.last = records
    record_run(records)  # never raises: a log that cannot be written is one stderr line
    return records


def _import_in_background(module: str) -> None:
    """Import pandas (via results) while the first answers stream, not after them: the main
    thread is idle during a run, and the first cell of a session is what users time."""
    if module not in sys.modules:
        threading.Thread(target=import_module, args=(module,), daemon=True).start()


def compare(
    prompts: str | Sequence[str],
    targets: str | Sequence[str] | None = None,
    *,
    system: str | None = None,
    repeat: int = 1,
    temperature: float | None = None,
    max_tokens: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    stop: Sequence[str] | None = None,
    stream: bool = True,
    timeout: float | None = None,
    retries: int | None = None,
    concurrency: int | None = None,
) -> pd.DataFrame:
    """Send every prompt to every target; one DataFrame row per prompt x target x repeat.

    A failing target gives rows with `error` set; it never raises for a provider's failure.
    """
    from .results import to_dataframe

    prompt_list = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompt_list:
        raise UsageProblem("compare() got no prompts: nothing to send")
    target_list = [targets] if isinstance(targets, str) else list(targets or [])
    if targets is not None and not target_list:
        raise UsageProblem("compare() got no targets; leave targets out for the default one")
    specs = session.specs(target_list)
    configured = session.settings()
    options = make_options(
        temperature=temperature,
        max_tokens=max_tokens,
        top_p=top_p,
        seed=seed,
        stop=stop,
        stream=stream,
        timeout=timeout,
        configured=configured,
    )
    jobs = plan_jobs(prompt_list, specs, options, system=system, repeat=repeat)
    policy = make_policy(retries=retries, concurrency=concurrency, configured=configured)
    return to_dataframe(run(jobs, policy))


def complete(prompt: str, target: str | None = None, **options: Any) -> Completion:
    """One prompt to one target.

    Raises the provider's error (`llm_magic.errors.AuthFailed`, `RateLimited`, `TimedOut`, ...)
    when no text came back. A stream that broke after some text returns that partial answer,
    with the error in `answer.record.error`.
    """
    if target is not None and not isinstance(target, str):
        raise UsageProblem("complete() takes one target (a string); compare() takes several")
    specs = session.specs([target] if target else [])
    configured = session.settings()
    policy = make_policy(retries=options.pop("retries", None), configured=configured)
    system = options.pop("system", None)
    jobs = plan_jobs([prompt], specs, make_options(**options, configured=configured), system=system)
    (record,) = run(jobs, policy)
    if record.error is not None and not record.output:
        raise record.failure or ProviderError(record.error)
    return Completion(record.output, record)
