"""What lives for the whole kernel: aliases, --chat conversations, the last result, %config.

A low module: the planner, the magic, the panel, subcommands and availability all take a
`Session` without importing each other.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import providers
from ._config import load_file_config, resolve_setting
from ._records import RunRecord
from ._targets import TargetSpec, resolve_targets
from .providers.base import Message

if TYPE_CHECKING:
    from ._runner import Job

__all__ = ["Session", "session"]


def _no_settings() -> Mapping[str, Any]:
    return {}


@dataclass
class Session:
    """Aliases made with `%llm alias`, --chat conversations, the last result, and the
    `%config LLMMagics` settings that every entry point follows."""

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
                # the user message as sent: its images stay in the conversation
                turn = [job.messages[-1], Message("assistant", record.output)]
                self.conversations.setdefault(job.spec.label, []).extend(turn)

    def all_aliases(self) -> dict[str, str]:
        return {**load_file_config().aliases, **self.aliases}

    def specs(self, targets: Sequence[str]) -> list[TargetSpec]:
        """Parse target words; raises UsageProblem before anything is sent."""
        configured = self.settings().get("default_target")
        default = resolve_setting("default_target", None, configured).value
        known = providers.known_providers()
        return resolve_targets(list(targets), self.all_aliases(), known, default)


session = Session()  # the kernel's; tests and panels may make their own
