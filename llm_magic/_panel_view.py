"""The panel's HTML and chart, as pure functions of the run's state (no widgets here).

Everything a model or a user wrote is escaped, its controls made visible (html.escape). Styles
are inline and use JupyterLab's CSS variables with fallbacks that read on light and dark themes
(and in VS Code, which maps only some of them); the chart has a transparent background and grey
text for the same reason.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from llm_magic import _html as html
from llm_magic._records import RunRecord

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "STATES",
    "chart_png",
    "column_html",
    "header_html",
    "metrics_html",
    "note_html",
    "status_html",
]

_BORDER = "var(--jp-border-color2,rgba(128,128,128,.35))"
_DIM = "opacity:.7"
_COLOURS = {
    "waiting": "var(--jp-ui-font-color2,#888)",
    "streaming": "var(--jp-brand-color1,#1976d2)",
    "done": "var(--jp-success-color1,#2e7d32)",
    "error": "var(--jp-error-color1,#d32f2f)",
    "stopped": "var(--jp-warn-color1,#ef6c00)",
}
STATES: tuple[str, ...] = tuple(_COLOURS)
_PHASES = {  # phase -> (symbol, colour)
    "ready": ("○", _COLOURS["waiting"]),
    "running": ("●", _COLOURS["streaming"]),
    "done": ("✓", _COLOURS["done"]),
    "stopped": ("■", _COLOURS["stopped"]),
    "failed": ("✕", _COLOURS["error"]),
    "all failed": ("✕", _COLOURS["error"]),  # the run went fine, but no target answered
    "problem": ("!", _COLOURS["error"]),
}


def header_html(version: str) -> str:
    return (
        '<div style="display:flex;align-items:baseline;gap:10px;flex-wrap:wrap;'
        'color:var(--jp-ui-font-color1,inherit)">'
        '<span style="font-size:15px;font-weight:600">LLM comparison</span>'
        f'<span style="font-size:12px;{_DIM}">one prompt, every target, side by side · '
        f"llm_magic {html.escape(version)}</span></div>"
    )


def note_html(text: str) -> str:
    """A small dim line (model discovery, hints)."""
    return f'<div style="font-size:11px;{_DIM};overflow-wrap:anywhere">{html.escape(text)}</div>'


def column_html(
    label: str, entries: Sequence[html.Entry], cache: html.EntryCache | None = None
) -> str:
    """One target's column: its label, then one entry per repeat, as Markdown (or in the
    cache's format) with nothing from the model left able to act as HTML."""
    fmt = cache.fmt if cache is not None else "markdown"
    return html.grid_html([label], [(None, [list(entries)])], fmt, cache)


def _chip(text: str, state: str) -> str:
    colour = _COLOURS.get(state, _COLOURS["waiting"])
    return (
        f'<span style="border:1px solid {colour};color:{colour};border-radius:10px;'
        f'padding:0 8px;white-space:nowrap">{html.escape(text)}</span>'
    )


def status_html(phase: str, message: str, chips: Sequence[tuple[str, str]] = ()) -> str:
    """The line next to Run/Stop: the phase, a message (elapsed time, a problem), and one chip
    per column with its state, e.g. ("local:smollm2 · streaming", "streaming")."""
    symbol, colour = _PHASES.get(phase, _PHASES["ready"])
    parts = [
        '<div class="llm-panel-status" style="display:flex;flex-wrap:wrap;gap:6px;'
        "align-items:center;font-size:12px;line-height:22px;"
        'color:var(--jp-ui-font-color1,inherit)">',
        f'<span style="color:{colour};font-weight:600">{symbol} {html.escape(phase)}</span>',
    ]
    if message:
        parts.append(f'<span style="overflow-wrap:anywhere">{html.escape(message)}</span>')
    parts.extend(_chip(text, state) for text, state in chips)
    parts.append("</div>")
    return "".join(parts)


def _num(value: float | None, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return format(value, fmt)


def _cost(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "—"
    return "free" if value == 0 else f"${value:.6f}".rstrip("0").rstrip(".")


def metrics_html(records: Sequence[RunRecord], show_repeat: bool = False) -> str:
    """One table row per answer: latency, ttft, tokens, tokens/s, cost, error."""
    heads = [
        "target",
        *(["#"] if show_repeat else []),
        "latency (s)",
        "ttft (s)",
        "tokens",
        "tokens/s",
        "cost",
        "error",
    ]
    cell = f"padding:3px 8px;border-bottom:1px solid {_BORDER};text-align:right"
    left = cell.replace("text-align:right", "text-align:left")
    rows = [
        "<tr>"
        + "".join(
            f'<th style="{left if i == 0 or h == "error" else cell};font-weight:600">'
            f"{html.escape(h)}</th>"
            for i, h in enumerate(heads)
        )
        + "</tr>"
    ]
    for r in records:
        tokens = (
            "—"
            if r.completion_tokens is None
            else (f"{'~' if r.tokens_estimated else ''}{r.completion_tokens}")
        )
        error = r.error or ""
        target = html.escape(r.target)
        if r.fallback_from:
            target += f' <span style="{_DIM}">(after {html.escape(r.fallback_from)} failed)</span>'
        values = [
            (left, target),
            *([(cell, str(r.repeat + 1))] if show_repeat else []),
            (cell, _num(r.latency_s, ".2f")),
            (cell, _num(r.ttft_s, ".2f")),
            (cell, html.escape(tokens)),
            (cell, _num(r.tokens_per_s, ".1f")),
            (cell, html.escape(_cost(r.cost_usd))),
            (
                f"{left};color:var(--jp-error-color1,#d32f2f);max-width:28em;"
                "overflow-wrap:anywhere",
                html.escape(error),
            ),
        ]
        rows.append("<tr>" + "".join(f'<td style="{s}">{v}</td>' for s, v in values) + "</tr>")
    return (
        '<div class="llm-panel-metrics" style="overflow-x:auto;max-width:100%">'
        '<table style="border-collapse:collapse;font-size:12px;'
        "font-variant-numeric:tabular-nums;color:var(--jp-content-font-color1,inherit);"
        'margin:0">' + "".join(rows) + "</table></div>"
    )


_CHARTED = (
    ("latency_p50", "latency (s)"),
    ("ttft_p50", "time to first token (s)"),
    ("tokens_per_s", "tokens/s"),
)


def chart_png(frame: pd.DataFrame) -> bytes | None:
    """Median latency, ttft and tokens/s per target as horizontal bars; PNG bytes.

    Drawn on a bare Figure (no pyplot): the run ends on a worker thread, and a pyplot figure
    made there would pop up in whatever cell the inline backend flushes next. None without
    matplotlib or without a single answer that did not fail.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    summary = frame.llm.summary()
    if len(summary) == 0 or (summary["errors"] >= summary["n"]).all():
        return None
    targets = [str(t) for t in summary.index]
    grey = "#8a8a8a"  # reads on white and on dark backgrounds
    height = 0.9 + 0.42 * len(targets)
    fig = Figure(figsize=(9.6, height), dpi=110, layout="constrained")
    axes: Any = fig.subplots(1, len(_CHARTED), sharey=True)
    colours = [f"C{i % 10}" for i in range(len(targets))]
    positions = list(range(len(targets)))
    for ax, (column, title) in zip(axes, _CHARTED, strict=True):
        values = [float(v) for v in summary[column].astype("float64")]
        known = [0.0 if math.isnan(v) else v for v in values]
        bars = ax.barh(positions, known, color=colours, height=0.6)
        labels = ["n/a" if math.isnan(v) else f"{v:.2f}" if v < 10 else f"{v:.0f}" for v in values]
        ax.bar_label(bars, labels=labels, padding=3, color=grey, fontsize=8)
        ax.set_title(title, color=grey, fontsize=9)
        ax.set_facecolor("none")
        ax.tick_params(colors=grey, labelsize=8)
        for spine in ax.spines.values():
            spine.set_color(grey)
            spine.set_alpha(0.4)
        ax.spines[["top", "right"]].set_visible(False)
        ax.margins(x=0.25)
    axes[0].set_yticks(positions, targets)  # the y axis is shared: set it once
    axes[0].invert_yaxis()  # first target on top, as in the columns
    buf = io.BytesIO()
    fig.savefig(buf, format="png", transparent=True)
    return buf.getvalue()
