"""Owner routing of call-list entries: a customer's own salesperson gets their entry first.

Preview ("Next customer") only orders: the rep's own customers first, then unowned and other reps'
customers. Progressive also holds an owned customer's entry back from the other agents until it has
been due for `owner_wait` (0 = no hold), so a free owner is rung for their own customer first.
"""

from __future__ import annotations

from datetime import datetime, timedelta


def others_due_by(now: datetime, owner_wait: timedelta) -> datetime | None:
    """The latest due time at which another rep's customer may go to this agent; None when any may
    (no wait). An entry due at `now - owner_wait` or earlier has waited long enough for its owner."""
    if owner_wait <= timedelta(0):
        return None
    return now - owner_wait
