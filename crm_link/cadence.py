"""When to contact a customer next if nobody says: the dealership's follow-up cadence (pure)."""

from __future__ import annotations

import calendar
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

# after-sale milestones measured from the purchase date
AFTER_SALE = (
    (timedelta(days=4), "4-day after-sale call: running well? referrals?"),
    (timedelta(days=25), "25-day call before the manufacturer's survey"),
    ("17m", "17-month call: ready to trade up?"),
)
PROSPECT_DAYS = 7
CALL_AT = time(10, 0)


def _add_months(d: date, months: int) -> date:
    y, m = divmod(d.month - 1 + months, 12)
    year, month = d.year + y, m + 1
    return date(year, month, min(d.day, calendar.monthrange(year, month)[1]))


def _purchase_date(attributes: dict[str, Any]) -> date | None:
    value = attributes.get("purchase_date")
    if not isinstance(value, str):
        return None
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        return None


def next_cadence(
    attributes: dict[str, Any], now: datetime, time_zone: str | None
) -> tuple[datetime, str] | None:
    """The next due follow-up (10:00 local on its day) and its note, or None when the cadence is done."""
    tz = ZoneInfo(time_zone or "UTC")
    today = now.astimezone(tz).date()
    bought = _purchase_date(attributes)
    if bought is None:
        day, note = today + timedelta(days=PROSPECT_DAYS), "follow up on the prospect"
    else:
        for offset, label in AFTER_SALE:
            due = _add_months(bought, 17) if offset == "17m" else bought + offset  # type: ignore[operator]
            if due > today:
                day, note = due, label
                break
        else:
            return None
    return datetime.combine(day, CALL_AT, tzinfo=tz), note


def end_of_day(now: datetime, time_zone: str | None) -> datetime:
    """Midnight at the end of `now`'s day in the zone."""
    tz = ZoneInfo(time_zone or "UTC")
    local = now.astimezone(tz)
    return datetime.combine(local.date() + timedelta(days=1), time(0), tzinfo=tz)
