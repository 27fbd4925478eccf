"""What the provider test files share: the sentinel keys, the conversation, and how a stream is
drained into its chunks and the error that ended it."""

from __future__ import annotations

from collections.abc import Iterator

from llm_magic import errors
from llm_magic.providers.base import Chunk, Message

KEY = "sk-SENTINEL-abc123456789"
PLAIN_KEY = "SENTINEL0plain0key0123"  # no well-known key shape: only our own scrubbing hides it
MSGS = [Message("system", "be brief"), Message("user", "why is the sky blue")]
REPLY = "Because of Rayleigh scattering."


def drain(it: Iterator[Chunk]) -> tuple[list[Chunk], errors.ProviderError | None]:
    """Every chunk a stream yields, and the error that ended it (None when it ended well)."""
    chunks: list[Chunk] = []
    try:
        for chunk in it:
            chunks.append(chunk)
    except errors.ProviderError as exc:
        return chunks, exc
    return chunks, None


def text_of(chunks: list[Chunk]) -> str:
    return "".join(c.text for c in chunks)
