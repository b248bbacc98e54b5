"""The one clock: everything that needs "now" is handed a Clock; only `system_clock` reads the wall.

Tests, the demo and benchmarks pass their own (a `ManualClock`, a virtual clock), so no behaviour
depends on the day the code runs.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    """Now, as an aware UTC datetime (the only read of the wall clock)."""
    return datetime.now(UTC)


class ManualClock:
    """A clock that moves only when told (tests, simulations)."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("ManualClock needs an aware datetime")
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta | None = None, **kw: float) -> datetime:
        """Move forward by `delta` or by timedelta keywords (hours=2); the new now."""
        self.now += delta if delta is not None else timedelta(**kw)
        return self.now

    def set(self, when: datetime) -> None:
        self.now = when
