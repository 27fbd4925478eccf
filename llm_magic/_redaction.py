"""Hiding secrets: what counts as one, and `redact` — the one verb for hiding them.

A secret is any of:
- a key this process sent or was given: the transport registers the credential of every
  `Authorization`, `Proxy-Authorization` and `x-api-key` header it sends and every key a
  provider is built with (`add_secret`), wherever it came from (environment, config, code);
- the value of an environment variable named `*API_KEY`, `*_TOKEN` or `*_SECRET`, or named by a
  config file's `api_key_env` (`add_secret_variable`), as the environment is when redacting;
- anything shaped like a key: a `Bearer` token, `sk-…`, `xai-…`, `gsk-…`, `pk-…`.

`redact(text)` hides them in text; `redact_url(url)` hides what a URL may carry (userinfo
password, query values), whose values we cannot know; `redact_key(key)` shows a key as a hint
of which one is set (`sk-…ab`). Registered secrets are kept for the life of the process: a key
rotated away may still be echoed by a server that saw it.
"""

from __future__ import annotations

import base64
import os
import re
import threading

__all__ = [
    "NO_KEY",
    "Redactor",
    "add_header_secrets",
    "add_secret",
    "add_secret_variable",
    "redact",
    "redact_key",
    "redact_url",
]

# What is sent to a server that wants no key (the openai SDK refuses to start without one):
# public, so never taken for a secret.
NO_KEY = "not-needed"

# Environment variables whose values are secrets by their name alone.
_SECRET_NAME = re.compile(r"(API_KEY|_TOKEN|_SECRET)$")
# Bearer tokens and well-known key shapes, redacted even when they came from somewhere else.
_KEY_SHAPES = re.compile(r"(Bearer\s+)\S+|\b(sk|xai|gsk|pk)-[A-Za-z0-9_\-]{8,}")
# Text that holds none of these cannot match _KEY_SHAPES; `in` finds that out far faster than
# the regex's scan (0.3 s for a 5 MB answer, paid on every write of it).
_SHAPE_MARKS = ("Bearer", "sk-", "xai-", "pk-")
_SHORTEST_ENV = 4  # an environment value shorter than this is no key
# A registered value is hidden even inside model text, so it must be long enough to be a key:
# placeholders such as "EMPTY" or "ollama", which local servers' docs tell users to send, would
# otherwise garble every answer that holds the word.
_SHORTEST_SENT = 8
_CREDENTIAL_HEADERS = ("authorization", "proxy-authorization", "x-api-key")

_lock = threading.Lock()
_sent: set[str] = set()  # guarded by _lock
_variables: set[str] = set()  # guarded by _lock
_added = 0  # how many values _sent has had: a Redactor made earlier sees it grew


def add_secret(value: str | None) -> None:
    """Hide `value` from every text redacted from now on, in every thread."""
    global _added
    if value and len(value) >= _SHORTEST_SENT and value != NO_KEY and value not in _sent:
        with _lock:
            _sent.add(value)
            _added += 1


def add_secret_variable(name: str) -> None:
    """Treat the environment variable `name` as holding a secret, whatever its name says."""
    if name and name not in _variables:
        with _lock:
            _variables.add(name)


def add_header_secrets(headers: object) -> None:
    """Register the credentials among request headers (anything with `.get(name)`)."""
    get = getattr(headers, "get", None)
    if get is None:
        return
    for name in _CREDENTIAL_HEADERS:
        value = get(name)
        if not value:
            continue
        scheme, _, credential = value.partition(" ")
        if not credential or name == "x-api-key":
            add_secret(value)
            continue
        add_secret(credential)
        if scheme.lower() == "basic":  # user:password, base64: its password is the secret
            try:
                decoded = base64.b64decode(credential, validate=True).decode("utf-8")
            except ValueError:
                continue
            add_secret(decoded.partition(":")[2])


class Redactor:
    """`redact` for many texts at once: the secrets are gathered once, when it is made.

    A run makes one for all its answers: reading the environment is most of redact()'s cost,
    and a run's requests were all sent with the keys of that moment. A key registered after
    it was made (a provider built, a request sent during the run) is taken in at the next call.
    """

    def __init__(self) -> None:
        with _lock:
            variables = list(_variables)
        self._environment = {
            v
            for k, v in os.environ.items()
            if len(v) >= _SHORTEST_ENV and (_SECRET_NAME.search(k) or k in variables)
        }
        self._added = -1
        self._secrets: list[str] = []

    def _refresh(self) -> None:
        with _lock:
            self._added, secrets = _added, self._environment | _sent
        secrets.discard(NO_KEY)
        self._secrets = sorted(secrets, key=len, reverse=True)  # a key inside a longer one

    def __call__(self, text: str) -> str:
        if self._added != _added:
            self._refresh()
        for secret in self._secrets:
            text = text.replace(secret, "***")
        if not any(mark in text for mark in _SHAPE_MARKS):
            return text
        return _KEY_SHAPES.sub(lambda m: (m.group(1) or "") + "***", text)


def redact(text: str) -> str:
    """`text` with every known secret replaced by `***` (the environment read now)."""
    return Redactor()(text)


def redact_url(url: str) -> str:
    """A URL as it may be shown: `http://user:***@host/v1?key=***`.

    The password of the userinfo is hidden (a userinfo without one is hidden whole: it is
    usually a token), and so is the value of every query parameter (a bare parameter whole).
    Only for showing: what is sent keeps the URL as it is.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:  # "host:port" as OLLAMA_HOST allows
        scheme, rest = "", url
    # The authority ends at the first / ? #; its userinfo at its last @ (as urlsplit reads it).
    end = next((i for i, c in enumerate(rest) if c in "/?#"), len(rest))
    authority, tail = rest[:end], rest[end:]
    userinfo, at, host = authority.rpartition("@")
    if at:
        user, colon, _ = userinfo.partition(":")
        authority = f"{user}:***@{host}" if colon else f"***@{host}"
    path, question, query = tail.partition("?")
    if question:
        query, hash_, fragment = query.partition("#")
        params = [p.partition("=") for p in query.split("&")]
        hidden = "&".join(f"{k}=***" if eq else ("***" if k else "") for k, eq, _ in params)
        path = f"{path}?{hidden}{hash_}{fragment}"
    return f"{scheme}{sep}{authority}{path}"


def redact_key(key: str | None) -> str | None:
    """A key as a status table may show it: a hint of which key is set, never the key."""
    if not key:
        return None
    return key[:3] + "…" + key[-2:] if len(key) > 12 else "***"
