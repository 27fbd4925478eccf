"""One row's exchanges with a model that has tools: the calls it asks for, and with
`--run-tools` the loop that runs them and sends their results back until the model answers in
text or `max_steps` requests were made.

The runner drives it (`_runner._fetch`): each successful request is a step; retries, the
deadline and cancelling stay the runner's. The row then reads as one answer: the final text,
tokens summed over the steps, latency from the first request to the last byte, `params`
saying how many steps it took.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from ._accounting import estimate_tokens
from ._records import RunRecord
from ._tools import CallAssembler, ToolBox, column_entry
from .providers.base import CancelToken, Message

__all__ = ["MOST_CALLS", "ToolSteps"]

MOST_CALLS = 32  # calls run from one answer; the rest get an error sent back


class ToolSteps:
    """The state of one row's tool loop; `messages` is what the next request sends."""

    def __init__(self, messages: Sequence[Message], box: ToolBox) -> None:
        self.box = box
        self.messages = list(messages)
        self.steps = 0
        self.entries: list[dict[str, Any]] = []
        self.assembler = CallAssembler()
        self._t0: float | None = None
        self._started_at = None
        self._ttft: float | None = None
        self._prompt = self._completion = 0
        self._estimated = False
        self._left_unrun = False

    def begin_attempt(self) -> None:
        """A new request (a retry too): the calls of a failed attempt are forgotten."""
        self.assembler = CallAssembler()

    def step_done(self, record: RunRecord, cancel: CancelToken) -> bool:
        """After a request that succeeded: count it, note its calls, and with run=True run them
        and queue their results. True when another request is due (the runner checks for a
        cancel or a deadline before it sends it)."""
        self._count(record)
        calls = self.assembler.calls()
        if not calls:
            return False
        if not self.box.run or self.steps >= self.box.max_steps or cancel.cancelled:
            self.entries.extend(column_entry(call) for call in calls)
            self._left_unrun = self.box.run
            return False
        said = record.output
        results = []
        for n, call in enumerate(calls):
            if n >= MOST_CALLS:  # a server may ask for thousands: the loop stays bounded
                entry = {**column_entry(call), "error": f"not run: over {MOST_CALLS} calls"}
                entry["result"] = f"error: {entry['error']}"
            else:
                entry = self.box.call(call, cancel)
            entry["step"] = self.steps
            self.entries.append(entry)
            results.append(Message("tool", entry["result"], tool_call_id=call.id, name=call.name))
        self.messages.append(Message("assistant", said, tool_calls=tuple(calls)))
        self.messages.extend(results)
        return True

    def _count(self, record: RunRecord) -> None:
        self.steps += 1
        end = time.perf_counter()
        began = end - (record.latency_s or 0.0)
        if self._t0 is None:
            self._t0, self._started_at = began, record.started_at
        if self._ttft is None and record.ttft_s is not None:
            self._ttft = began - self._t0 + record.ttft_s
        prompt, completion = record.prompt_tokens, record.completion_tokens
        if prompt is None or completion is None:
            self._estimated = True
        if prompt is None:
            prompt = sum(estimate_tokens(m.content) for m in self.messages)
        if completion is None:
            said = record.output + "".join(c.arguments for c in self.assembler.calls())
            completion = estimate_tokens(said)
        self._prompt += prompt
        self._completion += completion

    def finish(self, record: RunRecord) -> None:
        """The row as one answer: its calls, and with run=True the sums over the steps."""
        record.tool_calls = self.entries
        if not self.box.run or self._t0 is None:
            return
        record.params["steps"] = self.steps
        if self._left_unrun:
            record.params.setdefault("notes", []).append(
                f"stopped after max_steps={self.box.max_steps} with tool calls not run"
            )
        failed = [e for e in self.entries if "error" in e and "result" in e]
        if failed:
            record.params.setdefault("notes", []).append(
                f"{len(failed)} tool call(s) failed; their errors went back to the model"
            )
        record.started_at = self._started_at
        record.latency_s = time.perf_counter() - self._t0
        record.ttft_s = self._ttft
        if self.steps > 1:
            # The steps' tokens were generated across the whole loop, not after the first text:
            # tokens/s is over the loop's latency, as for an answer that came in one piece.
            record.pieces = min(record.pieces, 1)
        if record.error is None:  # a failed last step is not counted: account() clears it
            record.prompt_tokens, record.completion_tokens = self._prompt, self._completion
            record.tokens_estimated = record.tokens_estimated or self._estimated
