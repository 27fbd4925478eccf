"""Text that UTF-8 can hold.

A Python string may hold lone surrogates (U+D800–U+DFFF on their own): JSON allows them as
escapes (`"\\ud800"`), so a server can send one, but UTF-8 cannot encode them, and SQLite, the
front-end and the terminal all need UTF-8. `utf8_safe` is the one place that mends such text:
the runner for answers, the store for everything it writes.
"""

from __future__ import annotations

__all__ = ["utf8_safe"]


def utf8_safe(text: str) -> tuple[str, int]:
    """`text` with every lone surrogate replaced by U+FFFD, and how many were replaced.

    A high and a low surrogate side by side are one character split in two (UTF-16 style):
    they are joined into it, not replaced. Text that needs no change is returned as is, at the
    cost of one scan.
    """
    if text.isascii():
        return text, 0
    try:
        text.encode("utf-8")
        return text, 0
    except UnicodeEncodeError:
        pass
    # Through UTF-16 with surrogatepass, whole pairs decode to their character and each lone
    # surrogate to one U+FFFD; counting U+FFFD before and after tells how many were lone.
    fixed = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return fixed, fixed.count("\ufffd") - text.count("\ufffd")
