"""Which jobs of a `--batch` run go to a provider's batch API, and what `--batch` refuses.

The rule (README, "Big runs"): `--batch` sends every target whose provider has a batch API
as batches and runs the others live, saying so in one line. A cell where no target has one
is refused before anything is sent: it asked for batches and would get none, so running it
live is a fallback nobody asked for (drop `--batch` for that). A fallback chain `a|b` runs
live: a batch cannot try `b` once `a` has failed.
"""

from __future__ import annotations

from collections.abc import Sequence

from . import providers
from ._request import Request
from ._targets import TargetSpec
from .errors import UsageProblem

__all__ = ["batchable", "check_batch"]


def batchable(spec: TargetSpec) -> bool:
    return len(spec.chain) == 1 and providers.batch_wire(spec.primary.provider) is not None


def check_batch(request: Request, specs: Sequence[TargetSpec]) -> None:
    """UsageProblem for a batch request that cannot be one; nothing for any other request."""
    if request.wait and not request.batch:
        raise UsageProblem("--wait waits for --batch batches: add --batch")
    if not request.batch:
        return
    if request.chat:
        raise UsageProblem("--batch cannot go with --chat: a conversation needs each answer now")
    if request.checks:
        raise UsageProblem(
            "--check is not taken with --batch: score the collected frame with df.llm.check()"
        )
    if request.tools:
        raise UsageProblem("--tools is not taken with --batch: a batch sends no result back")
    if not any(batchable(spec) for spec in specs):
        named = ", ".join(spec.label for spec in specs)
        raise UsageProblem(
            f"--batch: no batch API for {named} (openai, mistral, or a [providers.NAME] table"
            " with batch = true have one); drop --batch to run live"
        )
