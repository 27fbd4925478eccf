"""The values each numeric option or setting may take.

One table for the cell's options, `%config`, the environment, the config file and the Python
API, so that all five refuse the same values with the same words, before anything is sent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .errors import UsageProblem

__all__ = ["RANGES", "Range", "check"]


@dataclass(frozen=True)
class Range:
    lo: float
    hi: float = math.inf
    lo_open: bool = False  # lo itself is not allowed
    whole: bool = False  # a whole number

    def _show(self, x: float) -> str:
        return str(int(x)) if self.whole else f"{x:g}"

    @property
    def allowed(self) -> str:
        lo = self._show(self.lo)
        if self.hi == math.inf:
            return f"greater than {lo}" if self.lo_open else f"{lo} or more"
        hi = self._show(self.hi)
        return f"greater than {lo} and at most {hi}" if self.lo_open else f"{lo} to {hi}"

    def problem(self, value: Any) -> str | None:
        """Why `value` is not allowed, in words; None when it is."""
        kind = "a whole number" if self.whole else "a number"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"{value!r} is not {kind}; allowed: {self.allowed}"
        if self.whole and not float(value).is_integer():
            return f"{value!r} is not {kind}; allowed: {self.allowed}"
        too_low = value <= self.lo if self.lo_open else value < self.lo
        if not math.isfinite(value) or too_low or value > self.hi:
            shown = self._show(value) if math.isfinite(value) else str(value)
            return f"{shown} is out of range; allowed: {self.allowed}"
        return None


_WHOLE_2_32 = Range(0, 2**32 - 1, whole=True)
_SECONDS = Range(0, lo_open=True)

RANGES: dict[str, Range] = {
    "temperature": Range(0, 2),
    "top_p": Range(0, 1, lo_open=True),
    "seed": _WHOLE_2_32,
    "max_tokens": Range(1, whole=True),
    "repeat": Range(1, 1000, whole=True),
    "timeout": _SECONDS,
    "connect_timeout": _SECONDS,
    "deadline": Range(0),  # 0: no deadline
    "retries": Range(0, 10, whole=True),
    "concurrency": Range(1, 256, whole=True),
    "max_log_chars": Range(0, whole=True),  # 0: no limit
    "max_steps": Range(1, 50, whole=True),  # requests per row while its tools run
}


def check(name: str, value: Any, where: str) -> None:
    """Raise UsageProblem (`where: name: why`) when `value` is outside `name`'s range.

    None (not set) and names without a range pass.
    """
    limits = RANGES.get(name)
    if value is None or limits is None:
        return
    why = limits.problem(value)
    if why is not None:
        raise UsageProblem(f"{where}: {name} {why}" if where else f"{name} {why}")
