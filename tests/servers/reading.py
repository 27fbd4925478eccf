"""Helpers for tests that read these servers' raw wire bytes (SSE and NDJSON) with httpx2."""

from __future__ import annotations

import json
from typing import Any

import httpx2

__all__ = ["delta_text", "ndjson_lines", "post_stream", "sse_data", "sse_json"]


def post_stream(
    client: httpx2.Client, url: str, body: Any, **kw: Any
) -> tuple[bytes, Exception | None]:
    """POST and read the streamed body: (bytes received, the httpx2 error that ended it or None)."""
    got = b""
    try:
        with client.stream("POST", url, json=body, **kw) as r:
            for part in r.iter_bytes():
                got += part
    except httpx2.HTTPError as exc:
        return got, exc
    return got, None


def sse_data(raw: bytes) -> list[str]:
    """The `data:` payloads of the complete events; asserts each is one `data: ` line + blank."""
    out = []
    for event in raw.decode().split("\n\n")[:-1]:
        assert event.startswith("data: ") and "\n" not in event, event
        out.append(event[len("data: ") :])
    return out


def sse_json(raw: bytes) -> list[dict[str, Any]]:
    """The JSON events of an SSE stream, without the final [DONE]."""
    return [json.loads(e) for e in sse_data(raw) if e != "[DONE]"]


def ndjson_lines(raw: bytes) -> list[dict[str, Any]]:
    """Every line of an NDJSON body as JSON; asserts the body ends with a newline."""
    text = raw.decode()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def delta_text(chunks: list[dict[str, Any]]) -> str:
    """Concatenated delta.content of OpenAI-style chunks (chunks with no choices are skipped)."""
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
