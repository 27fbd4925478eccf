"""Escaped HTML building blocks shared by the live view and `df.llm.side_by_side()`.

Model text is untrusted: every function here escapes it, except `body_html(..., fmt="html")`, the
one explicit user choice to render a model's HTML. Styles are inline (not a <style> block) so a
notebook reopened untrusted, whose sanitizer drops <style>, still lays out; colours come from
JupyterLab's CSS variables with fallbacks that read on light and dark themes alike.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape as _html_escape

from llm_magic.errors import UsageProblem, redact

__all__ = [
    "FORMATS",
    "Entry",
    "body_html",
    "caption_text",
    "check_format",
    "escape",
    "grid_html",
    "safe_markdown",
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
_S_CAPTION = "font-size:11px;opacity:.7;margin-top:4px"
_S_ERROR = (
    "color:var(--jp-error-color1,#d9534f);font-weight:600;margin-top:4px;white-space:pre-wrap"
)
_S_SEP = f"border-top:1px dashed {_BORDER};margin-top:6px;padding-top:6px"
_S_TAG = "font-size:11px;opacity:.7"


def escape(text: object) -> str:
    """HTML-escape anything (quotes too, so the result is safe inside attributes)."""
    return _html_escape(str(text), quote=True)


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
    pending: bool = False  # still streaming


_FENCED = re.compile(r"\A\s*(`{3,}|~{3,})[^\n]*\n(.*?)(?:\n[ \t]*\1[`~]*[ \t]*)?\s*\Z", re.S)


def _unfence(text: str) -> str:
    """The inside of a text that is one fenced block (models wrap code and JSON in fences)."""
    m = _FENCED.match(text)
    return m.group(2) if m else text


def _pre(text: str) -> str:
    return f'<pre style="{_S_PRE}">{escape(text)}</pre>'


def _is_json(text: str) -> bool:
    try:
        json.loads(_unfence(text))
    except ValueError:
        return False
    return True


def body_html(text: str, fmt: str) -> str:
    """The HTML of one answer's text in the given format; escaped unless fmt is "html"."""
    text = redact(text)  # a model (or a proxy) may repeat a key it was sent
    if fmt == "html":
        return text  # the user asked for it with -f html
    if fmt == "code":
        return f'<pre style="{_S_PRE}"><code>{escape(_unfence(text))}</code></pre>'
    if fmt == "json":
        inner = _unfence(text)
        # not JSON (yet, while streaming): show the text as it is
        with contextlib.suppress(ValueError):
            text = json.dumps(json.loads(inner), indent=2, ensure_ascii=False)
        return _pre(text)
    # markdown and text: a grid cell cannot render markdown safely without a renderer, so both
    # show the escaped text with its line breaks kept
    return _pre(text)


def _entry_html(entry: Entry, fmt: str, first: bool) -> str:
    parts = [f'<div style="{_S_SEP}">' if not first else "<div>"]
    if entry.tag:
        parts.append(f'<div style="{_S_TAG}">{escape(entry.tag)}</div>')
    if entry.text or not (entry.error or entry.pending):
        parts.append(body_html(entry.text, fmt))
    elif entry.pending:
        parts.append(f'<div style="{_S_CAPTION}">waiting…</div>')
    if entry.error:
        parts.append(f'<div style="{_S_ERROR}">error: {escape(entry.error)}</div>')
    caption = entry.caption or ("streaming…" if entry.pending and entry.text else "")
    if fmt == "json" and entry.text and not entry.pending and not _is_json(entry.text):
        caption = " · ".join(filter(None, ["not valid JSON", caption]))  # -f json as a check
    if caption:
        parts.append(f'<div style="{_S_CAPTION}">{escape(caption)}</div>')
    parts.append("</div>")
    return "".join(parts)


Row = tuple[str | None, Sequence[Sequence[Entry]]]


def grid_html(columns: Sequence[str], rows: Sequence[Row], fmt: str) -> str:
    """Side-by-side grid: a header per column, then per row an optional label and one cell per
    column; a cell stacks its entries. Every string from a model or user is escaped."""
    labelled = any(label is not None for label, _ in rows)
    track = f"repeat({max(len(columns), 1)},minmax(14em,1fr))"
    template = f"minmax(8em,.6fr) {track}" if labelled else track
    out = [f'<div class="llm-magic" style="{_S_WRAP}">']
    out.append(f'<div style="{_S_GRID};grid-template-columns:{template}">')
    if labelled:
        out.append(f'<div style="{_S_HEAD}">prompt</div>')
    out.extend(f'<div style="{_S_HEAD}">{escape(c)}</div>' for c in columns)
    for label, cells in rows:
        if labelled:
            out.append(f'<div style="{_S_LABEL}">{_pre(label or "")}</div>')
        for entries in cells:
            inner = "".join(_entry_html(e, fmt, i == 0) for i, e in enumerate(entries))
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


# ---- Markdown that cannot carry HTML -------------------------------------------------------
# The frontend renders Markdown, and Markdown passes raw HTML through. Guessing exactly where the
# renderer sees code (where '<' is harmless text) is fragile, so safety never depends on it: no
# raw '<' from the model reaches the renderer. Outside code, '<' and '&' become entities. A fenced
# block or code span that holds no '<' goes through untouched (it keeps syntax highlighting, and
# even misread as text it holds nothing that can become a tag); one that holds a '<' becomes our
# own <pre>/<code> element with escaped content. Link targets with script schemes are broken.

_FENCE_OPEN = re.compile(r"^([ \t]*)(`{3,}|~{3,})(.*)$")
_SCRIPT_SCHEME = re.compile(r"(?i)(?:javascript|vbscript|data)\s*\\?:")
_LINK_OPEN = re.compile(r"\](?=\()")  # "](" of an inline link or image
_REF_DEF = re.compile(r"(?m)^(\s*\[[^\]\n]*\]):")
_CODE_SPAN = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)", re.S)
_MD_PUNCT = re.compile(r"([\\`*_{}\[\]()#+\-.!|~$])")


def _risky(segment: str) -> bool:
    return "<" in segment or bool(_SCRIPT_SCHEME.search(segment))


def _defuse_links(text: str) -> str:
    """Turn `[x](javascript:...)` and `[x]: javascript:...` into plain text."""
    if not _SCRIPT_SCHEME.search(text):
        return text
    text = _LINK_OPEN.sub(r"]\\", text)  # "]\(" is no link opener
    return _REF_DEF.sub(r"\1\\:", text)


def _escape_prose(text: str) -> str:
    text = _defuse_links(text)
    out, last = [], 0
    for m in _CODE_SPAN.finditer(text):
        out.append(text[last : m.start()].replace("&", "&amp;").replace("<", "&lt;"))
        span = m.group(0)
        if "<" in span:
            # markdown punctuation first (a later '#' would break the entities), then HTML
            out.append("<code>" + escape(_MD_PUNCT.sub(r"\\\1", m.group(2))) + "</code>")
        else:
            out.append(span)
        last = m.end()
    out.append(text[last:].replace("&", "&amp;").replace("<", "&lt;"))
    return "".join(out)


def _code_block(indent: str, lines: list[str]) -> str:
    # One line, newlines as entities: an HTML block inside a list item must not span lines.
    body = "&#10;".join(escape(line) for line in lines)
    return f"{indent}<pre><code>{body}</code></pre>"


def safe_markdown(text: str) -> str:
    """Markdown source from model text, with no way for the model to inject HTML or script."""
    text = redact(text)
    lines = text.split("\n")
    out: list[str] = []
    prose: list[str] = []
    i = 0
    while i < len(lines):
        m = _FENCE_OPEN.match(lines[i])
        if not m or (m.group(2)[0] == "`" and "`" in m.group(3)):
            prose.append(lines[i])
            i += 1
            continue
        indent, fence = m.group(1), m.group(2)
        end = i + 1
        while end < len(lines):
            close = lines[end].strip()
            if len(close) >= len(fence) and set(close) == {fence[0]}:
                break
            end += 1
        block = lines[i : end + 1]  # opener, body, closer (when there is one)
        if prose:
            out.append(_escape_prose("\n".join(prose)))
            prose = []
        if _risky("\n".join(block)):
            body = [ln[len(indent) :] if ln.startswith(indent) else ln for ln in lines[i + 1 : end]]
            out.append(_code_block(indent, body))
        else:
            out.append("\n".join(block))
        i = end + 1
    if prose:
        out.append(_escape_prose("\n".join(prose)))
    return "\n".join(out)
