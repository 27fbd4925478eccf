"""The one exception tree of llm_magic.

    LLMMagicError
    ├── UsageProblem            the user's input is wrong: one UsageError line, nothing sent
    │   ├── UnknownProvider     a target names a provider nobody registered
    │   └── TemplateProblem     the cell's {name} template cannot be rendered
    ├── ConfigProblem           the config file cannot be read or says something impossible
    └── ProviderError           talking to a backend failed; becomes the `error` of a row
        ├── TransportError      nothing usable came back over the wire
        │   ├── ConnectFailed   the connection was refused or could not be made
        │   └── TimedOut        connect or read timeout
        ├── StatusError         the server answered with an HTTP error status
        │   ├── AuthFailed      401, 403
        │   ├── NotFound        404
        │   ├── RateLimited     429 (carries retry_after)
        │   └── ServerFailed    5xx
        ├── StreamBroken        the stream ended or errored after it had started
        ├── BadResponse         the server said something that is not the protocol
        ├── DeadlinePassed      a row took longer in all than its --deadline
        ├── Cancelled           the user interrupted the run
        ├── ModelNotFound       a local model names no GGUF file (or the bundled one is missing)
        └── GGUFError           a model file is not GGUF, or its header is cut short or corrupt

    RunInterrupted (a KeyboardInterrupt)   a run was stopped; `records` holds every row

Every message is one line and never holds an API key: `redaction.redact()` hides every secret
the process knows of (redaction.py says which) when the error is made.
"""

from __future__ import annotations

from typing import Any

from ._redaction import redact

__all__ = [
    "AuthFailed",
    "BadResponse",
    "Cancelled",
    "ConfigProblem",
    "ConnectFailed",
    "DeadlinePassed",
    "GGUFError",
    "LLMMagicError",
    "ModelNotFound",
    "NotFound",
    "ProviderError",
    "RateLimited",
    "RunInterrupted",
    "ServerFailed",
    "StatusError",
    "StreamBroken",
    "TemplateProblem",
    "TimedOut",
    "TransportError",
    "UnknownProvider",
    "UsageProblem",
]

def one_line(text: str, limit: int = 300) -> str:
    """Collapse whitespace so a message fits one line of a DataFrame or a UsageError."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class LLMMagicError(Exception):
    """Base of every error llm_magic raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(one_line(redact(message)))

    @property
    def message(self) -> str:
        return str(self.args[0])

    def extended(self, more: str) -> LLMMagicError:
        """The same error with `more` after its message (a hint, how far it got), kept as one
        redacted line; returns itself so that `raise exc.extended(...)` reads as it does."""
        if more.strip():  # the message was trimmed at its birth; what is added stays whole
            self.args = (f"{self.message} {one_line(redact(more))}",)
        return self


class UsageProblem(LLMMagicError):
    """The user's input is wrong. The magic shows it as a single UsageError line."""


class UnknownProvider(UsageProblem):
    """A target names a provider that is not registered."""


class TemplateProblem(UsageProblem):
    """The prompt template cannot be rendered (missing name, unbalanced braces)."""


class ConfigProblem(LLMMagicError):
    """The configuration file is unreadable or inconsistent."""


class ProviderError(LLMMagicError):
    """A backend failed. `provider` names it; `retryable` tells the runner whether to try again."""

    retryable = False
    # The server that gave this error, when a pool of several chose it (providers/_pool.py).
    endpoint: str | None = None

    def __init__(self, message: str, *, provider: str = "") -> None:
        self.provider = provider
        super().__init__(f"{provider}: {message}" if provider else message)


class TransportError(ProviderError):
    """The request never produced a usable answer."""

    retryable = True


class ConnectFailed(TransportError):
    """The connection was refused or could not be made."""


class TimedOut(TransportError):
    """The connect or read timeout ran out."""


class StatusError(ProviderError):
    """The server answered with an HTTP error status; `message` holds the server's own words."""

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        status: int,
        retry_after: float | None = None,
    ) -> None:
        self.status = status
        self.retry_after = retry_after
        super().__init__(f"HTTP {status}: {message}", provider=provider)

    @property
    def retryable(self) -> bool:  # type: ignore[override]
        return self.status in (408, 409, 429) or self.status >= 500


class AuthFailed(StatusError):
    """401 or 403: the key is missing, wrong, or lacks permission."""


class NotFound(StatusError):
    """404: usually an unknown model."""


class RateLimited(StatusError):
    """429: slow down; `retry_after` says for how long when the server told."""


class ServerFailed(StatusError):
    """5xx: the server broke."""


class StreamBroken(ProviderError):
    """The stream failed after it had started; the text received so far is kept in the row."""


class BadResponse(ProviderError):
    """The server's reply does not follow the protocol (malformed line, missing field)."""


class DeadlinePassed(ProviderError):
    """The row's deadline (seconds in all, retries included) ran out; any text is kept."""


class Cancelled(ProviderError):
    """The user interrupted the run."""


class RunInterrupted(KeyboardInterrupt):
    """A run was interrupted (■, Ctrl-C, the panel's Stop); `records` holds every row, the
    finished ones and those marked interrupted. A KeyboardInterrupt, so Run All stops."""

    def __init__(self, records: list[Any]) -> None:
        super().__init__("interrupted")
        self.records = records


class ModelNotFound(ProviderError):
    """The local model names no GGUF file (or the bundled model is not installed)."""


class GGUFError(ProviderError):
    """The file is not a GGUF file, or its header is cut short or corrupt."""


_BY_STATUS: dict[int, type[StatusError]] = {
    401: AuthFailed,
    403: AuthFailed,
    404: NotFound,
    429: RateLimited,
}


def status_error(
    status: int, message: str, *, provider: str = "", retry_after: float | None = None
) -> StatusError:
    """The most specific StatusError for an HTTP status."""
    cls = _BY_STATUS.get(status) or (ServerFailed if status >= 500 else StatusError)
    return cls(message, provider=provider, status=status, retry_after=retry_after)
