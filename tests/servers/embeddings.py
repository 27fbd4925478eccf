"""What the fake embedding model answers, for the three embeddings endpoints.

A text's vector is a bag of its words hashed into DIMENSIONS slots, scaled to length 1 (as
OpenAI's and Mistral's vectors are): texts that share words point the same way, texts that share
none are at a right angle, so tests can say which answers are close. Token counts are words.

Wire facts the protocol files lack, with their sources (shared/protocols/ has no embeddings):
- OpenAI `POST /v1/embeddings` (platform.openai.com API reference, "Create embeddings", and
  the openai-python `CreateEmbeddingResponse` types): body `model`, `input` (a string or an
  array of strings; not an empty string), `encoding_format` "float" (the API's default) or
  "base64" (little-endian float32, what the Python SDK asks for by default), `dimensions`,
  `user`; reply `{"object": "list", "data": [{"object": "embedding", "index", "embedding"}],
  "model", "usage": {"prompt_tokens", "total_tokens"}}`.
- Ollama `POST /api/embed` (ollama docs/api.md, "Generate Embeddings"): body `model`, `input`
  (a string or a list), `truncate` (default true), `options`, `keep_alive`, `dimensions`; reply
  `{"model", "embeddings": [[...]], "total_duration", "load_duration", "prompt_eval_count"}`;
  an unknown model is a 404 `{"error": "model 'NAME' not found"}`.
- Mistral `POST /v1/embeddings` (docs.mistral.ai "Embeddings" and mistralai/client-python
  `EmbeddingRequest`, whose `inputs` goes out as `input`): body `model`, `input` (a string or a
  list), `output_dimension`, `output_dtype`, `encoding_format`, `metadata`, nothing else (the
  schema is closed: 422); reply `{"id", "object": "list", "data": [{"object": "embedding",
  "embedding", "index"}], "model", "usage": {"prompt_tokens", "completion_tokens": 0,
  "total_tokens"}}`.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import struct
from collections.abc import Callable
from typing import Any

from .base import Exchange, TestServer

__all__ = ["DIMENSIONS", "inputs_of", "serve_embeddings", "vector_of", "word_count"]

DIMENSIONS = 64
_WORD = re.compile(r"\w+")


def vector_of(text: str, dimensions: int = DIMENSIONS) -> list[float]:
    """The bag of `text`'s lower-cased words, hashed into `dimensions` slots, length 1."""
    vector = [0.0] * dimensions
    for word in _WORD.findall(text.lower()):
        slot = int.from_bytes(hashlib.sha256(word.encode()).digest()[:4], "big") % dimensions
        vector[slot] += 1.0
    norm = math.sqrt(sum(x * x for x in vector))
    if norm == 0.0:
        vector[0] = 1.0  # text without words: one fixed direction, never all zeros
        return vector
    return [x / norm for x in vector]


def float32_base64(vector: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


def word_count(texts: list[str]) -> int:
    return sum(len(t.split()) for t in texts)


def inputs_of(body: Any) -> list[str] | None:
    """The texts of an `input` field (a string or a list of strings), or None when it is
    neither."""
    value = body.get("input") if isinstance(body, dict) else None
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(t, str) for t in value):
        return list(value)
    return None


def serve_embeddings(
    server: TestServer,
    ex: Exchange,
    *,
    auth: Callable[[Exchange], bool],
    refuse: Callable[[int, str | None], None],
    answer: Callable[[str, list[str]], None],
    check: Callable[[dict[str, Any], str, list[str]], tuple[int, str] | None] = (
        lambda body, model, texts: None
    ),
) -> None:
    """One embeddings request through the fault knobs every endpoint shares: `delay`, the
    status knobs, `cut_after`/`stall_after` (no reply), `malformed_after` (a 200 that is not
    JSON), `error_after` (a 500), `token_delay` (time per text). `auth(ex)` answers a bad key
    itself; `refuse(status, message)` sends the protocol's error; `check(body, model, texts)`
    says what the protocol refuses (status, message), or None; `answer(model, texts)` replies."""
    with server.chat_slot():
        f = ex.faults
        ex.sleep(f.delay)
        if not auth(ex):
            return
        status = server.next_error_status(ex)
        if status is not None:
            return refuse(status, f.error_message)
        body = ex.body if isinstance(ex.body, dict) else {}
        model = body.get("model") if isinstance(body.get("model"), str) else ""
        texts = inputs_of(body)
        if texts is None:
            return refuse(400, "input must be a string or a list of strings")
        problem = check(body, model, texts)
        if problem is not None:
            return refuse(*problem)
        if ex.broken_plain_reply(lambda: refuse(500, f.error_message)):
            return
        ex.sleep(f.token_delay * len(texts))
        answer(model, texts)
