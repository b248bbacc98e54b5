"""Calling hours in the customer's local time, with holidays (pure)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from crm_link.errors import ValidationError


def parse_hhmm(value: str, field: str) -> time:
    """'08:00' → time(8, 0); ValidationError naming the field otherwise."""
    try:
        hh, mm = value.split(":")
        return time(int(hh), int(mm))
    except (ValueError, AttributeError):
        raise ValidationError(field, f"expected HH:MM, got {value!r}") from None


def parse_holidays(values: Iterable[str], field: str = "calling_hours.holidays") -> frozenset[date]:
    out = set()
    for v in values:
        try:
            out.add(date.fromisoformat(v))
        except (TypeError, ValueError):
            raise ValidationError(field, f"expected YYYY-MM-DD dates, got {v!r}") from None
    return frozenset(out)


@lru_cache(maxsize=1024)
def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


@dataclass(frozen=True, slots=True)
class CallingHours:
    """Dial between `start` and `end` local time, never on a holiday (a local date)."""

    start: time = time(8, 0)
    end: time = time(21, 0)
    holidays: frozenset[date] = frozenset()

    @classmethod
    def of(cls, start: str, end: str, holidays: Iterable[str] = ()) -> CallingHours:
        s, e = parse_hhmm(start, "calling_hours.start"), parse_hhmm(end, "calling_hours.end")
        if s >= e:
            raise ValidationError("calling_hours.end", "must be later than the start")
        return cls(s, e, parse_holidays(holidays))

    def is_open(self, zone_name: str, now: datetime) -> bool:
        local = now.astimezone(zone(zone_name))
        return local.date() not in self.holidays and self.start <= local.time() < self.end

    def open_zones(self, zones: Iterable[str], now: datetime) -> list[str]:
        return [z for z in zones if self.is_open(z, now)]

    def next_open(self, zone_name: str, now: datetime) -> datetime:
        """The next moment calling is allowed in that zone (now if it is open)."""
        tz = zone(zone_name)
        local = now.astimezone(tz)
        for days in range(0, 370):
            day = local.date() + timedelta(days=days)
            if day in self.holidays:
                continue
            opens = datetime.combine(day, self.start, tz)
            closes = datetime.combine(day, self.end, tz)
            if local < closes:
                return max(opens, local).astimezone(now.tzinfo)
        return now + timedelta(days=370)


def in_window(today: date, start: str | None, end: str | None) -> bool:
    """Whether a list's date window (inclusive, either end open) contains `today`."""
    if start and today < date.fromisoformat(start):
        return False
    return not (end and today > date.fromisoformat(end))
