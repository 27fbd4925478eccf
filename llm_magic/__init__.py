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
    "Completion",
    "Panel",
    "__version__",
    "available",
    "batch_file",
    "batches",
    "check_targets",
    "collect",
    "compare",
    "complete",
    "load_ipython_extension",
    "read_batch_output",
]

if TYPE_CHECKING:
    from ._api import Completion, compare, complete
    from ._availability import available, check_targets
    from ._batch_collect import batches, collect
    from ._batch_files import batch_file, read_batch_output
    from ._panel import Panel

_LAZY = {
    "available": "_availability",
    "check_targets": "_availability",
    "batch_file": "_batch_files",
    "read_batch_output": "_batch_files",
    "batches": "_batch_collect",
    "collect": "_batch_collect",
    "compare": "_api",
    "complete": "_api",
    "Completion": "_api",
    "Panel": "_panel",
}


def __getattr__(name: str) -> Any:
    # Keeps `import llm_magic` and `%load_ext llm_magic` light: the API loads on first use.
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'llm_magic' has no attribute {name!r}")


def load_ipython_extension(ipython: Any) -> None:
    """`%load_ext llm_magic`: register `%%llm` / `%llm` and make `%config LLMMagics` work."""
    from ._magics import LLMMagics

    magics = LLMMagics(ipython, parent=ipython)
    ipython.register_magics(magics)
    if magics not in ipython.configurables:
        ipython.configurables.append(magics)
