"""llm_magic: compare LLM backends side by side from a Jupyter cell.

    %load_ext llm_magic
    %%llm local:smollm2 ollama:llama3.2 openai:gpt-4o-mini
    Explain recursion in one sentence.

Loading the extension imports no SDK, no pandas and no llama.cpp: they load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__

__all__ = [
    "Panel",
    "__version__",
    "available",
    "check_targets",
    "compare",
    "complete",
    "load_ipython_extension",
]

if TYPE_CHECKING:
    from .api import compare, complete
    from .availability import available, check_targets
    from .panel import Panel

_LAZY = {
    "available": "availability",
    "check_targets": "availability",
    "compare": "api",
    "complete": "api",
    "Panel": "panel",
}


def __getattr__(name: str) -> Any:
    # Keeps `import llm_magic` and `%load_ext llm_magic` light: the API loads on first use.
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'llm_magic' has no attribute {name!r}")


def load_ipython_extension(ipython: Any) -> None:
    """`%load_ext llm_magic`: register `%%llm` / `%llm` and make `%config LLMMagics` work."""
    from .magics import LLMMagics

    magics = LLMMagics(ipython, parent=ipython)
    ipython.register_magics(magics)
    if magics not in ipython.configurables:
        ipython.configurables.append(magics)
