"""What every view shows of a model's text: a bounded excerpt, redacted, its controls visible.

The DataFrame keeps every character as the server sent it. The views — the live columns, the
end-of-run view, `side_by_side()`, the panel, and the text/plain twin of each — show an
`excerpt()`: at most `STREAM_TAIL` characters of an answer that is still streaming (its newest)
and at most `SHOWN_HEAD` of a finished one (its first), with a note saying how many were left
out. So the bytes a run sends to the front-end stay bounded whatever an answer's length.
Cutting first keeps the cost of every later step (redaction, `visible()`, Markdown) bounded too.

`visible()` is the one place that decides how text that could act instead of being read is
shown: ANSI/OSC escape sequences and every other C0/C1 control but newline and tab (they could
recolour a terminal, retitle it or write to its clipboard) become `\\x1b`-style text, bidi
overrides and isolates (they reorder what the reader sees) become `<U+202E>`, and lone
surrogates (which UTF-8 cannot carry, so publishing them would fail) become U+FFFD.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from llm_magic.errors import redact

__all__ = ["SHOWN_HEAD", "STREAM_TAIL", "Excerpt", "Tail", "excerpt", "render_spacing", "visible"]

STREAM_TAIL = 4_000  # characters of a streaming answer shown: its newest
SHOWN_HEAD = 20_000  # characters of a finished answer shown: its first
# A live view sends at most about this many characters a second, and spends at most this share
# of the time rendering (Markdown of a dozen long columns is slow): `render_spacing()`.
_CHARS_PER_S = 500_000
_BUSY_MAX = 0.25
# Redaction reads a little past the cut, so a key that crosses it is removed whole rather than
# half shown (keys are far shorter than this).
_REDACT_MARGIN = 512

_ACTIVE = re.compile(
    "\r\n|[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)


def _shown(char: str) -> str:
    if char == "\r\n":
        return "\n"  # a Windows line end is just a line end
    code = ord(char)
    if 0xD800 <= code <= 0xDFFF:
        return "\ufffd"
    return f"<U+{code:04X}>" if code > 0xFF else f"\\x{code:02x}"


def _shown_in_markup(match: re.Match[str]) -> str:
    return _shown(match.group()).replace("<", "&lt;").replace(">", "&gt;")


def visible(text: str, *, markup: bool = False) -> str:
    """`text` with controls, bidi overrides and lone surrogates shown as inert text.

    `markup=True` is for HTML that a renderer made (it may decode `&#x202e;` into the
    character): the replacements are then HTML-escaped, so `<U+202E>` does not read as a tag.
    """
    if markup:
        return _ACTIVE.sub(_shown_in_markup, text)
    return _ACTIVE.sub(lambda m: _shown(m.group()), text)


@dataclass(frozen=True)
class Excerpt:
    """The part of an answer a view shows and how much it leaves out. `text` is redacted but
    not yet made visible: each view does that as its medium needs (`plain()`, html.escape)."""

    text: str
    earlier: int = 0  # characters left out before it (the oldest of a streaming answer)
    later: int = 0  # characters left out after it (the end of a long finished answer)

    @property
    def note(self) -> str:
        if self.earlier:
            return f"… {self.earlier:,} earlier characters"
        if self.later:
            return f"… {self.later:,} more characters in the DataFrame"
        return ""

    def plain(self) -> str:
        """The excerpt as plain text to show, its note on a line of its own where the gap is."""
        text = visible(self.text)
        if self.earlier:
            return f"{self.note}\n{text}"
        if self.later:
            return f"{text}\n{self.note}"
        return text


def excerpt(
    text: str, *, streaming: bool = False, limit: int | None = None, skipped: int = 0
) -> Excerpt:
    """What a view shows of `text`: its newest `limit` characters while it streams (default
    STREAM_TAIL), its first `limit` once finished (default SHOWN_HEAD). The cost depends on
    `limit`, not on the length of `text`. `skipped`: characters of a streaming answer that
    came before `text` and are no longer held (a `Tail` drops them)."""
    if streaming:
        limit = STREAM_TAIL if limit is None else limit
        if len(text) <= limit:
            return Excerpt(redact(text), earlier=skipped)
        start = len(text) - limit
        tail = redact(text[max(0, start - _REDACT_MARGIN) :])[-limit:]
        return Excerpt(tail, earlier=skipped + start)
    limit = SHOWN_HEAD if limit is None else limit
    if len(text) <= limit:
        return Excerpt(redact(text))
    head = redact(text[: limit + _REDACT_MARGIN])[:limit]
    return Excerpt(head, later=len(text) - limit)


class Tail:
    """The newest characters of an answer heard piece by piece, in bounded memory: what a live
    view needs while it streams (the whole answer comes with its row at the end). Appending is
    amortised O(len(piece)); the caller serialises calls (a view's lock)."""

    _KEEP = STREAM_TAIL + _REDACT_MARGIN  # what excerpt(streaming=True) reads

    def __init__(self, text: str = "") -> None:
        self._pieces = [text]
        self._held = len(text)
        self.length = len(text)  # every character heard, held or not

    def append(self, piece: str) -> None:
        self._pieces.append(piece)
        self._held += len(piece)
        self.length += len(piece)
        if self._held > 2 * self._KEEP:  # drop the oldest, at most once per _KEEP characters
            self._pieces = ["".join(self._pieces)[-self._KEEP :]]
            self._held = len(self._pieces[0])

    def text(self) -> str:
        """What is held (the newest characters; all of them for a text set whole)."""
        if len(self._pieces) > 1:
            self._pieces = ["".join(self._pieces)]  # later calls return this same object
        return self._pieces[0]

    @property
    def skipped(self) -> int:
        """Characters heard but no longer held."""
        return self.length - self._held


def render_spacing(interval: float, cost: float, size: int) -> float:
    """Seconds a live view waits after a render that took `cost` seconds and sent `size`
    characters: `interval`, or longer, so that wide columns of long answers neither flood the
    front-end nor take the CPU from the workers that read the streams."""
    return max(interval, size / _CHARS_PER_S, cost / _BUSY_MAX)
