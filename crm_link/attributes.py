"""Typed attributes (pure): infer a column's type from its values, convert text to that type.

Numbers are stored as JSON numbers, dates as ISO text (YYYY-MM-DD, so they sort and compare as
dates), booleans as true/false: segments then compare them as such ("visits >= 3" selects 3 and 10).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import date, datetime
from typing import Any

from crm_link.errors import ValidationError

TYPES = ("text", "number", "date", "boolean")
_NUMBER = re.compile(r"^-?(0|[1-9]\d{0,17})(\.\d+)?$")
_TRUE = {"true", "yes", "y"}
_FALSE = {"false", "no", "n"}


def to_number(text: str) -> int | float | None:
    """'10' -> 10, '2.5' -> 2.5; None for anything else (leading zeros such as zip codes stay text)."""
    t = text.strip()
    if not _NUMBER.match(t):
        return None
    return float(t) if "." in t else int(t)


def to_date(text: str, date_format: str = "") -> str | None:
    """An ISO date, or one in `date_format` (e.g. %m/%d/%Y), as 'YYYY-MM-DD'; None if neither."""
    t = text.strip()
    if len(t) >= 10 and t[4] == "-":
        try:
            return date.fromisoformat(t[:10]).isoformat()
        except ValueError:
            pass
    if date_format:
        try:
            return datetime.strptime(t, date_format).date().isoformat()
        except ValueError:
            return None
    return None


def to_boolean(text: str) -> bool | None:
    t = text.strip().lower()
    return True if t in _TRUE else False if t in _FALSE else None


def infer(values: Iterable[str], date_format: str = "") -> str:
    """The narrowest type every non-empty value fits: number, date, boolean, else text."""
    seen = [v for v in values if v.strip()]
    if not seen:
        return "text"
    for kind, conv in (
        ("number", to_number),
        ("date", lambda v: to_date(v, date_format)),
        ("boolean", to_boolean),
    ):
        if all(conv(v) is not None for v in seen):
            return kind
    return "text"


def convert(text: str, kind: str, name: str, date_format: str = "") -> Any:
    """`text` as a value of `kind`; ValidationError naming attributes.<name> when it is not one."""
    if kind == "text":
        return text
    value: Any
    if kind == "number":
        value = to_number(text)
        what = "a number"
    elif kind == "date":
        value = to_date(text, date_format)
        what = "a date (YYYY-MM-DD" + (f" or {date_format}" if date_format else "") + ")"
    elif kind == "boolean":
        value = to_boolean(text)
        what = "yes/no"
    else:
        raise ValidationError(f"attributes.{name}", f"unknown type {kind!r}")
    if value is None:
        raise ValidationError(f"attributes.{name}", f"{text!r} is not {what}")
    return value
