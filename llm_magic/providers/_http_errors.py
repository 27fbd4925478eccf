"""Reading what went wrong on the wire: httpx2 exceptions and HTTP error statuses become
`llm_magic.errors`, with the server's own message (whatever shape its error body has), its
`Retry-After`, and every message redacted."""

from __future__ import annotations

import email.utils
import html
import json
import re
import time
from typing import Any

import httpx2

from .. import errors
from .._redaction import redact
from ..errors import ProviderError
from ._sockets import Refused

__all__ = ["error_text", "map_exception", "retry_after", "status_error_from"]

_MESSAGE_LIMIT = 240


def retry_after(headers: Any) -> float | None:
    """Seconds the server asked us to wait: `retry-after-ms`, else `retry-after` (s or date)."""
    if headers is None:
        return None
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(float(raw_ms) / 1000.0, 0.0)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(float(raw), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(when.timestamp() - time.time(), 0.0)


def _shorten(text: str, limit: int = _MESSAGE_LIMIT) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _detail_text(detail: Any) -> str:
    """FastAPI-style `[{"loc": [...], "msg": ..., "type": ...}]` as `body.x: msg (type)`."""
    parts = []
    for item in detail if isinstance(detail, list) else [detail]:
        if isinstance(item, dict) and "msg" in item:
            loc = ".".join(str(p) for p in item.get("loc") or [])
            kind = f" ({item['type']})" if item.get("type") else ""
            parts.append(f"{loc}: {item['msg']}{kind}" if loc else f"{item['msg']}{kind}")
        else:
            parts.append(_message_of(item) or json.dumps(item, ensure_ascii=False))
    return "; ".join(p for p in parts if p)


def _message_of(body: Any) -> str:
    """The human part of an error body, whatever shape the server chose."""
    if isinstance(body, str):
        return body
    if isinstance(body, list):
        return _detail_text(body)
    if not isinstance(body, dict):
        return "" if body is None else str(body)
    for key in ("error", "message", "detail"):
        value = body.get(key)
        if value in (None, "", [], {}):
            continue
        if key == "detail" or (isinstance(value, dict) and "detail" in value):
            text = _detail_text(value.get("detail") if isinstance(value, dict) else value)
        else:
            text = _message_of(value)
        if text:
            return text
    return json.dumps(body, ensure_ascii=False)


def error_text(body: str | bytes, fallback: str = "") -> str:
    """A readable one-line message from an error body: JSON in any known shape, or plain text."""
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    body = body.strip()
    if not body:
        return fallback
    try:
        parsed = json.loads(body)
    except ValueError:
        if body.startswith("<"):  # a proxy's or web server's HTML page: its title says enough
            title = re.search(r"<title[^>]*>(.*?)</title>", body, re.IGNORECASE | re.DOTALL)
            return _shorten(html.unescape(title.group(1))) if title else fallback or "HTML page"
        return _shorten(body)
    return _shorten(_message_of(parsed) or body) or fallback


def status_error_from(provider: str, response: httpx2.Response) -> errors.StatusError:
    """The StatusError for an HTTP error reply; the body must have been read."""
    reason = response.reason_phrase or "error"
    try:
        text = error_text(response.content, reason)
    except httpx2.HTTPError:
        text = reason
    return errors.status_error(
        response.status_code,
        redact(text),
        provider=provider,
        retry_after=retry_after(response.headers),
    )


def _what(exc: BaseException) -> str:
    detail = str(exc).strip()
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


def map_exception(
    provider: str,
    exc: BaseException,
    *,
    started: bool,
    cancelled: bool,
    timeouts: httpx2.Timeout | None = None,
) -> ProviderError:
    """The llm_magic error for an httpx2 exception met while talking to `provider`.

    `started`: text has been yielded already, so the failure is StreamBroken (the partial text
    stays valid, a retry would repeat it). `cancelled`: the user stopped the run.
    """
    if cancelled:
        return errors.Cancelled("cancelled", provider=provider)
    if isinstance(exc, Refused):  # a redirect, an unusable proxy: already said in full
        return exc.error
    read = timeouts.read if timeouts is not None else None
    connect = timeouts.connect if timeouts is not None else None
    if isinstance(exc, httpx2.ConnectTimeout):
        msg = f"connect timed out after {connect:g} s" if connect else "connect timed out"
        return errors.TimedOut(msg, provider=provider)
    if isinstance(exc, httpx2.TimeoutException):
        if isinstance(exc, httpx2.PoolTimeout):
            msg = "no free connection in the pool in time"
        elif isinstance(exc, httpx2.WriteTimeout):
            msg = "sending the request timed out"
        else:
            msg = f"no data for {read:g} s (read timeout)" if read else "read timed out"
        if started:
            return errors.StreamBroken(f"stream stalled: {msg}", provider=provider)
        return errors.TimedOut(msg, provider=provider)
    if isinstance(exc, httpx2.ConnectError):
        return errors.ConnectFailed(redact(f"cannot connect: {exc}"), provider=provider)
    if started:
        return errors.StreamBroken(redact(f"stream broken: {_what(exc)}"), provider=provider)
    if isinstance(exc, (httpx2.TransportError, httpx2.StreamError)):
        return errors.TransportError(
            redact(f"connection lost: {_what(exc)}"), provider=provider
        )
    return errors.BadResponse(redact(f"unexpected reply: {_what(exc)}"), provider=provider)
