"""Markdown tables: GitHub pipe tables of numbers, with missing values as "–".

>>> print(markdown_table(["run", "UWA"], [["mtl", 61.234], ["nomtl", None]]))
| run | UWA |
|---|---|
| mtl | 61.23 |
| nomtl | – |
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

MISSING = "–"


def _cell(value: Any, floatfmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    if isinstance(value, float):
        return format(value, floatfmt)
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]], floatfmt: str = ".2f") -> str:
    """A GitHub pipe table: floats formatted with ``floatfmt``, ``None`` and NaN as "–",
    ``|`` in a cell escaped. Ends without a newline."""
    for row in rows:
        if len(row) != len(header):
            raise ValueError(f"row {list(row)} has {len(row)} cells, the header has {len(header)}")
    lines = ["| " + " | ".join(_cell(h, floatfmt) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(c, floatfmt) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def mean_std(mean: float | None, std: float | None) -> str | None:
    """``"50.00 ± 1.23"``; the mean alone without a std; ``None`` without a mean."""
    if mean is None:
        return None
    return f"{mean:.2f}" if std is None else f"{mean:.2f} ± {std:.2f}"
