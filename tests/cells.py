"""Running a `%%llm` cell in a test and getting its whole DataFrame (the cell itself shows a
compact view; `_llm` holds every column)."""

from __future__ import annotations

import pandas as pd
from IPython.core.interactiveshell import InteractiveShell


def run_frame(ip: InteractiveShell, cell: str) -> pd.DataFrame:
    ip.run_cell(cell)
    return ip.user_ns["_llm"]
