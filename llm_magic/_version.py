"""The package version, in a module of its own so that any module can read it without
importing the package's public face (and whatever that imports)."""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"  # kept equal to pyproject.toml's by tests/test_imports.py
