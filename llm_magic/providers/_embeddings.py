"""Reading an embeddings reply, the same way for every HTTP provider: the body bounded in size,
the vectors checked (one per text, numbers only, one length, a sane length) before anyone
computes with them. A reply that breaks a rule is one BadResponse line, never a crash.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

from .. import errors
from .base import Embeddings

if TYPE_CHECKING:  # the embedded model reads vectors too, and needs no HTTP stack
    from ._http import Exchange

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_DIMENSIONS",
    "data_list",
    "read_json",
    "read_vectors",
    "token_count",
]

# 64 texts of 16,384 dimensions written as JSON floats (~20 bytes each) is about 21 MB.
MAX_BODY_BYTES = 32 * 1024 * 1024
MAX_DIMENSIONS = 16_384  # the largest embedding models give 4,096; more is a broken reply


def read_json(exchange: Exchange, path: str) -> Any:
    """The reply's body as JSON, read up to MAX_BODY_BYTES."""
    body = exchange.body(MAX_BODY_BYTES)
    try:
        return json.loads(body)
    except ValueError:
        shown = body[:60].decode("utf-8", "replace")
        raise exchange.error(
            errors.BadResponse, f"{path} replied with something that is not JSON: {shown!r}"
        ) from None


def read_vectors(raw: Any, count: int, provider: str) -> list[list[float]]:
    """`raw` (the reply's list of vectors) as `count` vectors of floats of one length."""

    def bad(why: str) -> errors.BadResponse:
        return errors.BadResponse(f"embeddings reply: {why}", provider=provider)

    if not isinstance(raw, list):
        raise bad("no list of vectors")
    if len(raw) != count:
        raise bad(f"{len(raw)} vectors for {count} texts")
    vectors: list[list[float]] = []
    size = None
    for vector in raw:
        if not isinstance(vector, list) or not vector:
            raise bad("a vector is not a list of numbers")
        if size is None:
            size = len(vector)
            if size > MAX_DIMENSIONS:
                raise bad(f"{size:,} dimensions (at most {MAX_DIMENSIONS:,} are read)")
        elif len(vector) != size:
            raise bad(f"vectors of {size} and {len(vector)} dimensions")
        if not all(type(x) in (float, int) for x in vector):  # bool is no number here
            raise bad("a vector holds something that is not a number")
        floats = [float(x) for x in vector]
        if not all(math.isfinite(x) for x in floats):
            raise bad("a vector holds NaN or infinity")
        vectors.append(floats)
    return vectors


def token_count(value: Any) -> int | None:
    """A token count from a reply, or None when it is missing or not a whole number."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def data_list(reply: Any, count: int, provider: str) -> Embeddings:
    """The reply OpenAI and Mistral send: {"data": [{"embedding": [...], "index": i}, ...],
    "model", "usage": {"prompt_tokens", ...}}; entries are put back in `index` order."""
    data = reply.get("data") if isinstance(reply, dict) else None
    if not isinstance(data, list) or not all(isinstance(d, dict) for d in data):
        raise errors.BadResponse('embeddings reply without a "data" list', provider=provider)
    indices = [d.get("index") for d in data]
    if all(isinstance(i, int) and not isinstance(i, bool) for i in indices):
        if sorted(indices) != list(range(len(data))):  # type: ignore[type-var]
            raise errors.BadResponse("embeddings reply: indices out of range", provider=provider)
        data = [d for _, d in sorted(zip(indices, data, strict=True), key=lambda p: p[0])]
    vectors = read_vectors([d.get("embedding") for d in data], count, provider)
    usage = reply.get("usage") if isinstance(reply.get("usage"), dict) else {}
    model = reply.get("model")
    return Embeddings(
        vectors, token_count(usage.get("prompt_tokens")), model if isinstance(model, str) else None
    )
