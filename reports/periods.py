"""Report periods: days in the dealership's zone as UTC bounds (exact across DST changes)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from crm_link.errors import ValidationError

MAX_DAYS = 3660


@dataclass(frozen=True, slots=True)
class Period:
    """Days `first`..`last` (both included) in `zone`."""

    first: date
    last: date
    zone: str

    @property
    def start(self) -> datetime:
        return datetime.combine(self.first, time(0), ZoneInfo(self.zone))

    @property
    def end(self) -> datetime:
        """The first instant after the period (midnight after `last`)."""
        return datetime.combine(self.last + timedelta(days=1), time(0), ZoneInfo(self.zone))

    def days(self) -> list[date]:
        return [self.first + timedelta(days=i) for i in range((self.last - self.first).days + 1)]

    def months(self) -> list[tuple[str, datetime]]:
        """(YYYY-MM, its first instant, or the period's start for the first month) of each month."""
        out: list[tuple[str, datetime]] = []
        d = self.first
        while d <= self.last:
            start = self.start if not out else datetime.combine(d, time(0), ZoneInfo(self.zone))
            out.append((d.strftime("%Y-%m"), start))
            d = (d.replace(day=1) + timedelta(days=32)).replace(day=1)
        return out

    def previous(self) -> Period:
        """The period of the same length just before this one."""
        n = (self.last - self.first).days + 1
        return Period(self.first - timedelta(days=n), self.first - timedelta(days=1), self.zone)


def _day(value: str, field: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ValidationError(field, "must be a date YYYY-MM-DD") from None


def parse_period(raw_from: str | None, raw_to: str | None, *, today: date, zone: str) -> Period:
    """`from`/`to` query values (days, `to` included; each defaults to today) as a period."""
    first = _day(raw_from, "from") if raw_from else None
    last = _day(raw_to, "to") if raw_to else None
    first = first or last or today
    last = last or (first if raw_from and not raw_to and first > today else max(first, today))
    if last < first:
        raise ValidationError("to", "is before from")
    if (last - first).days >= MAX_DAYS:
        raise ValidationError("to", f"a period is at most {MAX_DAYS} days")
    return Period(first, last, zone)
