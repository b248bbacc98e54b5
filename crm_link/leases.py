"""Outbox rows claimed under a lease (the SMS and email outboxes): the statements both share.

A `sending` row names the instance that claimed it (`owner`) and how long its claim holds
(`lease_until`); the claimer renews the lease while it sends, and only a row whose lease ran out
is taken as in doubt by another instance (migration 0080).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

from crm_link.db import Database, to_db_time

# how long a claim holds when the claimer does not say (a live sender renews it while it sends)
DEFAULT_LEASE = timedelta(minutes=1)

Outcome = TypeVar("Outcome", bound=tuple[Any, ...])


def in_doubt(
    db: Database, owner: str | None, at: datetime, *, starting: bool
) -> tuple[str, tuple[str | None, ...]]:
    """The condition (` AND …`, and its parameters) a `sending` row meets when it is to be taken as
    in doubt at `at`: its lease ran out; at start-up also when `owner` (this instance) held it
    before it restarted, and on a store one process owns (SQLite) always. A live instance
    (`starting=False`) never takes its own rows."""
    now = to_db_time(at)
    if starting and not db.shared:
        return "", ()
    if starting:
        return " AND (lease_until IS NULL OR lease_until < ? OR owner = ?)", (now, owner)
    return " AND (lease_until IS NULL OR lease_until < ?) AND owner IS NOT ?", (now, owner)


async def renew(db: Database, table: str, owner: str, until: datetime, *, channel: str | None = None) -> int:
    """Extend to `until` the lease of the rows of `table` (of one channel when given) `owner` is
    sending; how many."""
    where, params = ("", ()) if channel is None else (" AND channel = ?", (channel,))
    async with db.transaction() as tx:
        async with tx.execute(
            f"UPDATE {table} SET lease_until = ? WHERE state = 'sending' AND owner = ?{where}",
            (to_db_time(until), owner, *params),
        ) as cur:
            return max(cur.rowcount, 0)


async def split_lapsed(
    tx: Any, table: str, outcomes: Sequence[Outcome], owner: str | None, *, settled: Sequence[str] = ()
) -> tuple[list[Outcome], list[int]]:
    """Send outcomes (each a tuple led by its claimed row, which has an `id`) split into those whose
    row `owner` still holds (`sending` under its claim, or already in one of the `settled` states)
    and the ids of the others: their lease lapsed and another instance took the row. Without an
    owner every outcome is kept."""
    if owner is None or not outcomes:
        return list(outcomes), []
    held: set[int] = set()
    ids = [o[0].id for o in outcomes]
    also = f" OR state IN ({','.join('?' * len(settled))})" if settled else ""
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        async with tx.execute(
            f"SELECT id FROM {table} WHERE id IN ({','.join('?' * len(chunk))})"
            f" AND ((state = 'sending' AND owner = ?){also})",
            (*chunk, owner, *settled),
        ) as cur:
            held.update(r[0] for r in await cur.fetchall())
    return [o for o in outcomes if o[0].id in held], [i for i in ids if i not in held]
