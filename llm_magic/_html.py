"""HTML building blocks shared by the live view, `df.llm.side_by_side()` and the panel.

Model text is untrusted. Every view shows an excerpt of it (view_text: bounded, redacted,
controls visible) and escapes it; Markdown is rendered by markdown-it-py (CommonMark plus
tables and strikethrough) with raw HTML off, images shown as links (a model's image would be
fetched from wherever it points, unasked) and only http, https and mailto links live. The one
exception is `fmt="html"`, the user's explicit choice to render a model's HTML. Styles are
inline (not a <style> block) so a notebook reopened untrusted, whose sanitizer drops <style>,
still lays out; colours come from JupyterLab's CSS variables with fallbacks that read on light
and dark themes alike.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from html import escape as _html_escape
from typing import Any

from llm_magic._view_text import Excerpt, excerpt, visible
from llm_magic.errors import UsageProblem

__all__ = [
    "FORMATS",
    "Entry",
    "EntryCache",
    "answer_html",
    "caption_text",
    "check_format",
    "escape",
    "grid_html",
    "markdown_html",
]

FORMATS: tuple[str, ...] = ("markdown", "text", "code", "json", "html")

_MONO = "var(--jp-code-font-family,ui-monospace,SFMono-Regular,Menlo,Consolas,monospace)"
_BORDER = "var(--jp-border-color2,rgba(128,128,128,.35))"
_S_WRAP = "overflow-x:auto;max-width:100%"
_S_GRID = (
    "display:grid;gap:6px;align-items:stretch;"
    "color:var(--jp-content-font-color1,inherit);font-size:var(--jp-content-font-size1,13px)"
)
_S_HEAD = (
    "font-weight:600;padding:2px 6px;overflow-wrap:anywhere;"
    "border-bottom:2px solid var(--jp-border-color1,rgba(128,128,128,.5))"
)
_S_CELL = (
    f"border:1px solid {_BORDER};border-radius:4px;padding:6px;min-width:0;max-height:28em;"
    "overflow:auto;background:var(--jp-layout-color1,transparent)"
)
_S_LABEL = f"{_S_CELL};font-style:italic;background:var(--jp-layout-color2,transparent)"
_S_PRE = (
    f"margin:0;padding:0;border:0;background:transparent;color:inherit;white-space:pre-wrap;"
    f"overflow-wrap:anywhere;font-family:{_MONO};font-size:var(--jp-code-font-size,12px)"
)
_S_MARKDOWN = "overflow-wrap:anywhere"
_S_CAPTION = "font-size:11px;opacity:.7;margin-top:4px"
_S_ERROR = (
    "color:var(--jp-error-color1,#d9534f);font-weight:600;margin-top:4px;white-space:pre-wrap"
)
_S_SEP = f"border-top:1px dashed {_BORDER};margin-top:6px;padding-top:6px"
_S_TAG = "font-size:11px;opacity:.7"


def escape(text: object) -> str:
    """Any text as inert HTML: controls made visible, then escaped (quotes too, so the result
    is safe inside attributes)."""
    return _html_escape(visible(str(text)), quote=True)


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise UsageProblem(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
    return fmt


@dataclass(frozen=True)
class Entry:
    """One answer inside a cell: a grid cell stacks several when a prompt was repeated."""

    text: str
    caption: str = ""
    error: str | None = None
    tag: str = ""  # small label above the text, e.g. "#1" for a repeat
    pending: bool = False  # still streaming: its newest text is shown, else its first
    limit: int | None = None  # characters of text shown at most (view_text's default)
    skipped: int = 0  # characters of a streaming answer before `text`, no longer held


# ---- Markdown ------------------------------------------------------------------------------
_LINK_SCHEMES = ("http:", "https:", "mailto:")
_SCHEME = re.compile(r"^[a-z][a-z0-9+.\-]*:")


def _link_allowed(url: str) -> bool:
    """Live links only to the web and to mail; a relative link or an anchor is harmless.
    (markdown-it's own check lets data:image/png through; nothing a model writes needs it.)"""
    url = url.strip().lower()
    return url.startswith(_LINK_SCHEMES) or not _SCHEME.match(url)


@functools.cache
def _markdown() -> Any:
    # Imported on first use: `%load_ext` must stay light; the first Markdown view pays.
    from markdown_it import MarkdownIt

    # breaks: a single newline stays a line break, as chat UIs show a model's text (a haiku
    # must not become one line); everything else renders as in JupyterLab.
    md = MarkdownIt("commonmark", {"html": False, "breaks": True})
    md.enable(["table", "strikethrough"])
    md.disable("image")  # "![alt](url)" shows as "!" and a link: nothing loads unasked
    md.validateLink = _link_allowed  # a refused link stays as its literal text
    return md


def markdown_html(text: str) -> str:
    """Markdown rendered to HTML with no way for the text to inject HTML or script."""
    # visible() before (controls and surrogates) and after (characters decoded from entities)
    return visible(_markdown().render(visible(text)), markup=True)


# ---- one answer ------------------------------------------------------------------------------
_FENCED = re.compile(r"\A\s*(`{3,}|~{3,})[^\n]*\n(.*?)(?:\n[ \t]*\1[`~]*[ \t]*)?\s*\Z", re.S)


def _unfence(text: str) -> str:
    """The inside of a text that is one fenced block (models wrap code and JSON in fences)."""
    m = _FENCED.match(text)
    return m.group(2) if m else text


def _pre(text: str) -> str:
    return f'<pre style="{_S_PRE}">{escape(text)}</pre>'


def _as_json(text: str) -> str | None:
    """The text pretty-printed when it is JSON (inside a fence or not), else None."""
    try:
        value = json.loads(_unfence(text))
    except ValueError:
        return None
    # decoding may have turned "\\u202e" escapes into the characters themselves
    return visible(json.dumps(value, indent=2, ensure_ascii=False))


def _body_html(shown: Excerpt, fmt: str) -> str:
    """The HTML of an excerpt's text in the given format; escaped unless fmt is "html"."""
    text = shown.text
    if fmt == "html":
        return visible(text, markup=True)  # the user asked for the model's HTML with -f html
    if fmt == "markdown":
        return f'<div style="{_S_MARKDOWN}">{markdown_html(text)}</div>'
    if fmt == "code":
        return f'<pre style="{_S_PRE}"><code>{escape(_unfence(text))}</code></pre>'
    if fmt == "json":
        return _pre(_as_json(text) or text)  # not JSON (yet, while streaming): as it is
    return _pre(text)


def _note_html(text: str) -> str:
    return f'<div style="{_S_CAPTION}">{escape(text)}</div>'


def _entry_html(entry: Entry, fmt: str, first: bool) -> str:
    parts = [f'<div style="{_S_SEP}">' if not first else "<div>"]
    if entry.tag:
        parts.append(f'<div style="{_S_TAG}">{escape(entry.tag)}</div>')
    shown = excerpt(entry.text, streaming=entry.pending, limit=entry.limit, skipped=entry.skipped)
    if shown.earlier:
        parts.append(_note_html(shown.note))
    if entry.text or not (entry.error or entry.pending):
        parts.append(f'<div class="llm-answer">{_body_html(shown, fmt)}</div>')
    elif entry.pending:
        parts.append(_note_html("waiting…"))
    if shown.later:
        parts.append(_note_html(shown.note))
    if entry.error:
        parts.append(f'<div style="{_S_ERROR}">error: {escape(entry.error)}</div>')
    caption = entry.caption or ("streaming…" if entry.pending and entry.text else "")
    # -f json as a check, on finished answers shown whole (a cut one cannot be judged)
    judged = fmt == "json" and entry.text and not entry.pending and not shown.later
    if judged and _as_json(shown.text) is None:
        caption = " · ".join(filter(None, ["not valid JSON", caption]))
    if caption:
        parts.append(_note_html(caption))
    parts.append("</div>")
    return "".join(parts)


class EntryCache:
    """Each entry's HTML, kept while the entry stays the same: a live view that re-renders
    every tenth of a second redoes only the answers that changed. Keys are the caller's
    (a position in the grid); comparing an unchanged entry is cheap, its text being the
    very same string object."""

    def __init__(self, fmt: str) -> None:
        self.fmt = check_format(fmt)
        self._kept: dict[Hashable, tuple[Entry, bool, str]] = {}

    def html(self, key: Hashable, entry: Entry, first: bool = True) -> str:
        kept = self._kept.get(key)
        if kept is not None and kept[1] == first and kept[0] == entry:
            return kept[2]
        out = _entry_html(entry, self.fmt, first)
        self._kept[key] = (entry, first, out)
        return out


def answer_html(entry: Entry, fmt: str = "markdown", cache: EntryCache | None = None) -> str:
    """One answer on its own, without a grid (the live view of a single target)."""
    inner = cache.html("answer", entry) if cache else _entry_html(entry, check_format(fmt), True)
    return f'<div class="llm-magic" style="{_S_WRAP}">{inner}</div>'


# ---- the grid --------------------------------------------------------------------------------
Row = tuple[str | None, Sequence[Sequence[Entry]]]


def _label_html(label: str) -> str:
    """A row's prompt, bounded as an answer is (an --over item may be a whole document)."""
    shown = excerpt(label)
    return _pre(shown.text) + (_note_html(shown.note) if shown.later else "")


def grid_html(
    columns: Sequence[str], rows: Sequence[Row], fmt: str, cache: EntryCache | None = None
) -> str:
    """Side-by-side grid: a header per column, then per row an optional label and one cell per
    column; a cell stacks its entries. Every string from a model or user is escaped. With a
    `cache` (made for the same fmt), entries are keyed by their place in the grid."""
    cache = cache or EntryCache(fmt)
    labelled = any(label is not None for label, _ in rows)
    track = f"repeat({max(len(columns), 1)},minmax(14em,1fr))"
    template = f"minmax(8em,.6fr) {track}" if labelled else track
    out = [f'<div class="llm-magic" style="{_S_WRAP}">']
    out.append(f'<div style="{_S_GRID};grid-template-columns:{template}">')
    if labelled:
        out.append(f'<div style="{_S_HEAD}">prompt</div>')
    out.extend(f'<div style="{_S_HEAD}">{escape(c)}</div>' for c in columns)
    for r, (label, cells) in enumerate(rows):
        if labelled:
            out.append(f'<div style="{_S_LABEL}">{_label_html(label or "")}</div>')
        for c, entries in enumerate(cells):
            inner = "".join(cache.html((r, c, i), e, i == 0) for i, e in enumerate(entries))
            out.append(f'<div style="{_S_CELL}">{inner}</div>')
    out.append("</div></div>")
    return "".join(out)


def _known(x: object) -> bool:
    """False for None, NaN and pandas NA (float(NA) raises TypeError)."""
    try:
        return x is not None and not math.isnan(float(x))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def caption_text(
    latency_s: float | None = None,
    completion_tokens: int | None = None,
    tokens_per_s: float | None = None,
    *,
    estimated: bool = False,
    cached: bool = False,
) -> str:
    """The small line under an answer: "0.84 s · 42 tok · 51 tok/s" (None and NaN skipped)."""

    parts = []
    if _known(latency_s):
        parts.append(f"{latency_s:.2f} s")
    if _known(completion_tokens):
        parts.append(f"{'~' if estimated else ''}{int(completion_tokens)} tok")  # type: ignore[arg-type]
    if _known(tokens_per_s):
        parts.append(f"{tokens_per_s:.0f} tok/s")
    if cached:
        parts.append("cached")
    return " · ".join(parts)
