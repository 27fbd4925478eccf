"""What a finished row counts: tokens (estimated when the provider gave none), tokens/s and
cost, measured the same way for every provider."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ._pricing import cost_usd
from ._records import RunRecord
from .providers.base import Message

__all__ = ["account", "estimate_tokens"]


def estimate_tokens(text: str) -> int:
    """Rough count for servers that report none: about four characters a token in English."""
    return 0 if not text else max(1, round(len(text) / 4))


def account(
    record: RunRecord, messages: Sequence[Message], prices: Mapping[str, Mapping[str, float]]
) -> None:
    """Token counts (estimated when the provider gave none), tokens/s and cost."""
    if record.error is not None and not record.output:
        record.prompt_tokens = record.completion_tokens = None
    elif record.completion_tokens is None or record.prompt_tokens is None:
        record.tokens_estimated = True
        if record.prompt_tokens is None:
            record.prompt_tokens = sum(estimate_tokens(m.content) for m in messages)
        if record.completion_tokens is None:
            record.completion_tokens = estimate_tokens(record.output)
    if record.prompt_tokens is not None and record.completion_tokens is not None:
        record.total_tokens = record.prompt_tokens + record.completion_tokens
    record.tokens_per_s = _rate(record)
    record.cost_usd = cost_usd(
        record.provider, record.model, record.prompt_tokens, record.completion_tokens, prices
    )
    if record.cost_usd is None and record.model != record.target.split(":", 1)[1]:
        # The server may report a dated snapshot name; price the name that was asked for too.
        record.cost_usd = cost_usd(
            record.provider,
            record.target.split(":", 1)[1],
            record.prompt_tokens,
            record.completion_tokens,
            prices,
        )


def _rate(record: RunRecord) -> float | None:
    """Tokens per second of generation: after the first token when the answer streamed in
    pieces; over the whole latency when it came at once (no stream, or a server that buffers),
    since then the time spent generating cannot be told apart from the wait for the first."""
    tokens, latency = record.completion_tokens, record.latency_s
    if not tokens or latency is None:
        return None
    streamed = record.ttft_s is not None and record.pieces > 1
    if streamed and tokens <= 1:
        return None  # one token has no generation interval to measure
    generating = latency - record.ttft_s if streamed and record.ttft_s is not None else latency
    return tokens / generating if generating > 0 else None
