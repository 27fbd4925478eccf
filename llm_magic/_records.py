"""RunRecord: one answer (prompt x target x repeat), the row before it becomes a DataFrame row.

The fields are the DataFrame's columns, in order. Nothing here imports pandas.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

__all__ = ["COLUMNS", "OPTIONAL_COLUMNS", "RunRecord"]


@dataclass(slots=True)  # no __dict__ per row: a run of 100,000 rows holds 100,000 of these
class RunRecord:
    run_id: str
    target: str  # "provider:model" that answered (or was last tried)
    provider: str
    model: str  # as the server reported it when it does
    prompt: str
    output: str = ""
    latency_s: float | None = None
    ttft_s: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    tokens_estimated: bool = False
    tokens_per_s: float | None = None
    cost_usd: float | None = None
    finish_reason: str | None = None
    error: str | None = None
    repeat: int = 0
    cached: bool = False
    fallback_from: str | None = None
    # Rows sent alike share one dict (the runner's): replace it, never change it in place.
    params: dict[str, Any] = field(default_factory=dict)
    started_at: datetime | None = None
    # Optional columns: a frame has one only when its run asked for what fills it (--tools);
    # the run log stores them all (NULL elsewhere).
    tool_calls: list[dict[str, Any]] | None = field(default=None, metadata={"column": "optional"})
    # Which of a target's several servers answered (its base URL, credentials masked); None
    # for a target with one server. In a frame when a target of the run has several servers.
    endpoint: str | None = field(default=None, metadata={"column": "optional"})
    # The exception behind `error`, so complete() can raise its own class. Not a column: it is
    # never shown, logged or cached, and it holds only the one-line, key-free message.
    failure: Exception | None = field(
        default=None, repr=False, compare=False, metadata={"column": False}
    )
    # How many pieces of text the answer came in: with one, the decode time is not observable.
    pieces: int = field(default=0, repr=False, compare=False, metadata={"column": False})
    # An embedding request's vectors, one per text (similar: checks). Not a column: the log
    # keeps the line `output` says instead, the cache keeps each text's vector on its own.
    vectors: list[list[float]] | None = field(
        default=None, repr=False, compare=False, metadata={"column": False}
    )

    @property
    def ok(self) -> bool:
        return self.error is None


COLUMNS: tuple[str, ...] = tuple(
    f.name for f in fields(RunRecord) if f.metadata.get("column", True) is True
)
OPTIONAL_COLUMNS: tuple[str, ...] = tuple(
    f.name for f in fields(RunRecord) if f.metadata.get("column") == "optional"
)
