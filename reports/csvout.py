"""Reports as CSV: the same rows and totals the JSON answer has, one header line."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any


def _cell(value: Any) -> str:
    if value is None:
        return ""
    text = str(value)
    # a spreadsheet runs a cell that starts with these as a formula
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") and not _number(text) else text


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def to_csv(report: dict[str, Any], columns: Sequence[str]) -> str:
    """The report's rows then its totals line, in `columns` order."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\r\n")
    w.writerow(columns)
    for row in [*report["rows"], report["totals"]]:
        w.writerow([_cell(row.get(c)) for c in columns])
    return out.getvalue()
