"""Quiet hours in the recipient's own time zone (pure)."""

from __future__ import annotations

from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

QUIET_HOURS = "quiet hours"  # the reason on a queued message held until quiet hours end


def _hm(text: str) -> time:
    h, m = text.split(":")
    return time(int(h) % 24, int(m))


def quiet_until(now: datetime, time_zone: str | None, quiet_start: str, quiet_end: str) -> datetime | None:
    """When quiet hours end if `now` falls inside them in that zone, else None.

    The window may wrap midnight (21:00-08:00). An unknown zone is treated as UTC.
    """
    try:
        tz = ZoneInfo(time_zone or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        tz = ZoneInfo("UTC")
    local = now.astimezone(tz)
    start, end = _hm(quiet_start), _hm(quiet_end)
    if start == end:
        return None
    t = local.time()
    if start < end:
        inside = start <= t < end
        end_day = local.date()
    else:
        inside = t >= start or t < end
        end_day = local.date() + timedelta(days=1) if t >= start else local.date()
    if not inside:
        return None
    # local wall time of the end; fold=0 picks the first occurrence on a DST fall-back day
    return datetime.combine(end_day, end, tzinfo=tz)
