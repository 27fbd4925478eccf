"""Protocol-neutral pieces: what the fake model answers and how it is counted.

Counts are deterministic so tests can assert them: prompt_tokens is the number of
whitespace-delimited words across all message contents, completion_tokens the number of
streamed word chunks.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["Completion", "message_text", "plan_completion", "split_words", "sse"]

_WORD = re.compile(r"\s*\S+\s*")


def split_words(text: str) -> list[str]:
    """One chunk per word, each keeping the whitespace that follows it ("a b" -> "a ", "b")."""
    return _WORD.findall(text)


def message_text(content: Any) -> str:
    """Text of a message content: a string, or a list of parts ({"type": "text", "text": ...})."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [p.get("text", "") for p in content if isinstance(p, dict)]
        return " ".join(t for t in texts if isinstance(t, str))
    return ""


def _messages(messages: Any) -> list[dict[str, Any]]:
    return [m for m in messages if isinstance(m, dict)] if isinstance(messages, list) else []


@dataclass(frozen=True)
class Completion:
    model: str  # as reported back to the client
    words: list[str]
    finish_reason: str  # "stop", or "length" when max tokens cut the answer
    prompt_tokens: int
    created: int  # unix seconds, the same on every chunk of one answer
    id_hex: str  # a fresh random id, protocols format it their own way

    @property
    def text(self) -> str:
        return "".join(self.words)

    @property
    def completion_tokens(self) -> int:
        return len(self.words)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def plan_completion(
    reply: str | None,
    report_model: str | None,
    model: str,
    messages: Any,
    max_tokens: int | None,
    *,
    size: int | None = None,
    piece: int | None = None,
    reply_to: Callable[[str], str] | None = None,
) -> Completion:
    """What the fake model answers: `reply` (or `reply_to` of the last user message, or an echo
    of it), repeated to `size` characters when given, in pieces of `piece` characters (else one
    per word)."""
    msgs = _messages(messages)
    if reply is None:
        users = [message_text(m.get("content")) for m in msgs if m.get("role") == "user"]
        last = users[-1] if users else ""
        reply = reply_to(last) if reply_to else f"Echo from {model}: {last}".rstrip()
    if size is not None:
        unit = reply or "x"
        reply = (unit * (size // len(unit) + 1))[:size]
    if piece is None:
        words = split_words(reply)
    else:  # slices: linear in the answer's length, however long (megabytes) it is
        words = [reply[i : i + piece] for i in range(0, len(reply), max(1, piece))]
    finish = "stop"
    limited = isinstance(max_tokens, int) and not isinstance(max_tokens, bool) and max_tokens >= 0
    if limited and len(words) > max_tokens:
        words, finish = words[:max_tokens], "length"
    prompt_tokens = sum(len(message_text(m.get("content")).split()) for m in msgs)
    return Completion(
        model=report_model or model,
        words=words,
        finish_reason=finish,
        prompt_tokens=prompt_tokens,
        created=int(time.time()),
        id_hex=uuid.uuid4().hex,
    )


def sse(data: bytes) -> bytes:
    """One server-sent event carrying `data` (which must be a single line)."""
    return b"data: " + data + b"\n\n"
