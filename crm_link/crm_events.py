"""The CRM event outbox: events (written by triggers in the changes' own transactions), their fan-out
to subscribers and each delivery's state machine (queued -> sending -> delivered | queued | dead)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from crm_link.db import Database, from_db_time, to_db_time
from crm_link.errors import NotFound, ValidationError
from crm_link.models import Page, check_limit, decode_cursor, encode_cursor

DELIVERY_STATES = ("queued", "sending", "delivered", "dead")


@dataclass(frozen=True, slots=True)
class CrmEvent:
    """One change, as sent to subscribers."""

    id: int
    uid: str
    type: str
    contact_id: int | None
    order_key: str
    at: datetime
    data: dict[str, Any]

    def envelope(self) -> dict[str, Any]:
        """The JSON body a subscriber receives (see docs/events/)."""
        return {
            "id": self.uid,
            "type": self.type,
            "sequence": self.id,
            "occurred_at": to_db_time(self.at).replace(".000000Z", "Z"),
            "contact_id": self.contact_id,
            "data": self.data,
        }


@dataclass(frozen=True, slots=True)
class Delivery:
    """One event on its way to one subscriber."""

    id: int
    subscriber: str
    state: str
    attempts: int
    next_attempt_at: datetime
    last_status: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None
    event: CrmEvent
    lease_owner: str | None = None  # the instance sending it now, or that delivered it
    lease_until: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "subscriber": self.subscriber,
            "state": self.state,
            "attempts": self.attempts,
            "next_attempt_at": to_db_time(self.next_attempt_at),
            "last_status": self.last_status,
            "last_error": self.last_error,
            "created_at": to_db_time(self.created_at),
            "delivered_at": to_db_time(self.delivered_at) if self.delivered_at else None,
            "lease_owner": self.lease_owner,
            "lease_until": to_db_time(self.lease_until) if self.lease_until else None,
            "event": self.event.envelope(),
        }


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one attempt came to: delivered, retry at `retry_at`, or dead (retry_at None, not ok)."""

    delivery_id: int
    ok: bool
    status: int | None
    error: str | None
    retry_at: datetime | None = None


_DELIVERY_SELECT = (
    "SELECT d.*, e.uid, e.type, e.contact_id, e.at, e.data, e.order_key AS e_order_key"
    " FROM crm_deliveries d JOIN crm_events e ON e.id = d.event_id"
)


def _event(r: Any) -> CrmEvent:
    return CrmEvent(
        id=r["event_id"] if "event_id" in r.keys() else r["id"],
        uid=r["uid"],
        type=r["type"],
        contact_id=r["contact_id"],
        order_key=r["order_key"],
        at=from_db_time(r["at"]),  # type: ignore[arg-type]
        data=json.loads(r["data"]),
    )


def _delivery(r: Any) -> Delivery:
    return Delivery(
        id=r["id"],
        subscriber=r["subscriber"],
        state=r["state"],
        attempts=r["attempts"],
        next_attempt_at=from_db_time(r["next_attempt_at"]),  # type: ignore[arg-type]
        last_status=r["last_status"],
        last_error=r["last_error"],
        created_at=from_db_time(r["created_at"]),  # type: ignore[arg-type]
        delivered_at=from_db_time(r["delivered_at"]),
        event=_event(r),
        lease_owner=r["lease_owner"],
        lease_until=from_db_time(r["lease_until"]),
    )


class CrmEvents:
    """Events and their deliveries; the worker in switchboard.webhooks drives them."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def emit_in(
        self, tx: Any, type_: str, contact_id: int | None, data: dict[str, Any], at: datetime
    ) -> None:
        """Write an event inside the caller's transaction (for changes no trigger sees, e.g. a merge)."""
        await tx.execute(
            "INSERT INTO crm_events (type, contact_id, order_key, at, data) VALUES (?, ?, ?, ?, ?)",
            (
                type_,
                contact_id,
                f"c:{contact_id}" if contact_id is not None else f"x:{type_}",
                to_db_time(at),
                json.dumps(data),
            ),
        )

    async def fan_out(
        self, subscribers: Sequence[tuple[str, Callable[[str], bool]]], limit: int = 500
    ) -> int:
        """Give the next unfanned events one delivery row per subscriber that wants their type."""
        now = to_db_time(self._db.now())
        if not await self._db.fetchone("SELECT 1 FROM crm_events WHERE fanned = 0 LIMIT 1", background=True):
            return 0  # nothing new: no write transaction
        async with self._db.transaction(background=True) as tx:
            async with tx.execute(
                "SELECT id, type, order_key FROM crm_events WHERE fanned = 0 ORDER BY id LIMIT ?", (limit,)
            ) as cur:
                rows = list(await cur.fetchall())
            if not rows:
                return 0
            await tx.executemany(
                "INSERT INTO crm_deliveries (event_id, subscriber, order_key, state, next_attempt_at,"
                " created_at, updated_at) VALUES (?, ?, ?, 'queued', ?, ?, ?) ON CONFLICT DO NOTHING",
                [
                    (r["id"], name, r["order_key"], now, now, now)
                    for r in rows
                    for name, wants in subscribers
                    if wants(r["type"])
                ],
            )
            await tx.execute(
                "UPDATE crm_events SET fanned = 1 WHERE fanned = 0 AND id <= ?", (rows[-1]["id"],)
            )
        return len(rows)

    async def expire_leases(self) -> int:
        """Deliveries whose sender stopped renewing its lease (a dead instance) are queued again:
        whoever claims them sends them again (at least once)."""
        ts = to_db_time(self._db.now())
        if not await self._db.fetchone(
            "SELECT 1 FROM crm_deliveries WHERE state = 'sending' AND lease_until <= ? LIMIT 1", (ts,)
        ):
            return 0  # the usual case, read without taking the write lock
        rows = await self._db.write_returning(
            "UPDATE crm_deliveries SET state = 'queued', updated_at = ?"
            " WHERE state = 'sending' AND lease_until <= ? RETURNING id",
            (ts, ts),
            background=True,
        )
        return len(rows)

    async def claim(self, subscriber: str, limit: int, *, owner: str, lease: timedelta) -> list[Delivery]:
        """Up to `limit` due deliveries, at most one per order key and only the oldest unfinished of
        each (a contact's events go one after another), marked `sending` under `owner`'s lease."""
        if limit <= 0:
            return []
        async with self._db.transaction(background=True) as tx:
            return await self._claim_in(tx, subscriber, limit, owner, lease)

    async def exchange(
        self, outcomes: Sequence[Outcome], claims: Sequence[tuple[str, int]], *, owner: str, lease: timedelta
    ) -> tuple[int, dict[str, list[Delivery]]]:
        """`settle(outcomes)` then `claim(subscriber, limit)` for each of `claims`, in one background
        transaction: the worker's whole turn takes the write lock once (after any waiting foreground
        writer) and reads the claimed rows on the writer, off the reader the screen-pops use."""
        claims = [(sub, n) for sub, n in claims if n > 0]
        if not outcomes and not claims:
            return 0, {}
        async with self._db.transaction(background=True) as tx:
            recorded = await self._settle_in(tx, outcomes, owner)
            claimed = {sub: await self._claim_in(tx, sub, n, owner, lease) for sub, n in claims}
        return recorded, claimed

    async def _claim_in(
        self, tx: Any, subscriber: str, limit: int, owner: str, lease: timedelta
    ) -> list[Delivery]:
        # `NOT (next_attempt_at > ?)`, not `<= ?`: the same rows, but SQLite then walks the queue in id
        # order (crm_deliveries_work) and stops at `limit`, instead of sorting every due row found
        # through crm_deliveries_due (230 ms under the write lock with 100k queued, against 0.1 ms)
        now = self._db.now()
        ts = to_db_time(now)
        rows = await tx.execute_fetchall(
            "UPDATE crm_deliveries SET state = 'sending', attempts = attempts + 1, updated_at = ?,"
            " lease_owner = ?, lease_until = ?"
            " WHERE id IN (SELECT d.id FROM crm_deliveries d WHERE d.subscriber = ? AND d.state = 'queued'"
            " AND NOT (d.next_attempt_at > ?) AND NOT EXISTS (SELECT 1 FROM crm_deliveries p"
            " WHERE p.subscriber = d.subscriber AND p.order_key = d.order_key"
            " AND p.state IN ('queued', 'sending') AND p.id < d.id) ORDER BY d.id LIMIT ?) RETURNING id",
            (ts, owner, to_db_time(now + lease), subscriber, ts, limit),
        )
        if not rows:
            return []
        ids = [r[0] for r in rows]
        got = await tx.execute_fetchall(
            _DELIVERY_SELECT + f" WHERE d.id IN ({','.join('?' * len(ids))}) ORDER BY d.id", ids
        )
        return [_delivery(r) for r in got]

    async def renew_leases(self, owner: str, lease: timedelta) -> int:
        """Extend the leases `owner` holds on deliveries it is sending (it is alive)."""
        now = self._db.now()
        rows = await self._db.write_returning(
            "UPDATE crm_deliveries SET lease_until = ? WHERE state = 'sending' AND lease_owner = ?"
            " AND lease_until > ? RETURNING id",
            (to_db_time(now + lease), owner, to_db_time(now)),
            background=True,
        )
        return len(rows)

    async def next_retry_at(self, subscriber: str) -> datetime | None:
        """The earliest future retry time among queued deliveries (None: none waits for one).

        Read right after a claim that took every due head, so any queued delivery due by now is
        behind another of its contact; a later one is a head waiting out its back-off (or, rarely,
        a row behind a re-driven one: waking for it early costs one empty claim). Indexed: walking
        the contacts' lines here cost half a second with 100k events queued, on the connection the
        screen-pops read through.
        """
        row = await self._db.fetchone(
            "SELECT next_attempt_at FROM crm_deliveries WHERE state = 'queued' AND next_attempt_at > ?"
            " AND subscriber = ? ORDER BY next_attempt_at LIMIT 1",
            (to_db_time(self._db.now()), subscriber),
            background=True,
        )
        return from_db_time(row[0]) if row else None

    async def settle(self, outcomes: Sequence[Outcome], *, owner: str) -> int:
        """Record attempts' outcomes in one transaction, each only if `owner` still holds its lease
        (one that expired and was taken over is the new holder's to record); how many were recorded."""
        if not outcomes:
            return 0
        async with self._db.transaction(background=True) as tx:
            return await self._settle_in(tx, outcomes, owner)

    async def _settle_in(self, tx: Any, outcomes: Sequence[Outcome], owner: str) -> int:
        if not outcomes:
            return 0
        ts = to_db_time(self._db.now())
        before = tx.total_changes
        await tx.executemany(
            "UPDATE crm_deliveries SET state = ?, last_status = ?, last_error = ?, updated_at = ?,"
            " next_attempt_at = COALESCE(?, next_attempt_at),"
            " delivered_at = CASE WHEN ? = 'delivered' THEN ? ELSE delivered_at END"
            " WHERE id = ? AND state = 'sending' AND lease_owner = ?",
            [
                (
                    state := "delivered" if o.ok else ("queued" if o.retry_at else "dead"),
                    o.status,
                    None if o.ok else o.error,
                    ts,
                    to_db_time(o.retry_at) if o.retry_at else None,
                    state,
                    ts,
                    o.delivery_id,
                    owner,
                )
                for o in outcomes
            ],
        )
        return int(tx.total_changes - before)

    async def redrive(
        self, delivery_ids: Sequence[int] | None = None, *, subscriber: str | None = None
    ) -> int:
        """Dead deliveries (these, or all of a subscriber's, or all) queued again with fresh attempts."""
        ts = to_db_time(self._db.now())
        sql = (
            "UPDATE crm_deliveries SET state = 'queued', attempts = 0, next_attempt_at = ?, updated_at = ?"
            " WHERE state = 'dead'"
        )
        params: list[Any] = [ts, ts]
        if delivery_ids is not None:
            if not delivery_ids:
                return 0
            sql += f" AND id IN ({','.join('?' * len(delivery_ids))})"
            params += list(delivery_ids)
        if subscriber is not None:
            sql += " AND subscriber = ?"
            params.append(subscriber)
        async with self._db.transaction() as tx:
            async with tx.execute(sql, params) as cur:
                return int(cur.rowcount)

    async def delivery(self, delivery_id: int) -> Delivery:
        row = await self._db.fetchone(_DELIVERY_SELECT + " WHERE d.id = ?", (delivery_id,))
        if row is None:
            raise NotFound("delivery", delivery_id)
        return _delivery(row)

    async def deliveries(
        self,
        *,
        state: str | None = None,
        subscriber: str | None = None,
        contact_id: int | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Page:
        """Deliveries, newest first, filtered by state, subscriber and contact."""
        limit = check_limit(limit)
        where: list[str] = []
        params: list[Any] = []
        if state is not None:
            if state not in DELIVERY_STATES:
                raise ValidationError("state", f"must be one of {', '.join(DELIVERY_STATES)}")
            where.append("d.state = ?")
            params.append(state)
        if subscriber is not None:
            where.append("d.subscriber = ?")
            params.append(subscriber)
        if contact_id is not None:
            where.append("e.contact_id = ?")
            params.append(contact_id)
        if cursor:
            (last_id,) = decode_cursor(cursor, int)
            where.append("d.id < ?")
            params.append(last_id)
        sql = (
            _DELIVERY_SELECT
            + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY d.id DESC LIMIT ?"
        )
        rows = await self._db.fetchall(sql, [*params, limit + 1])
        items = [_delivery(r) for r in rows[:limit]]
        return Page(items, encode_cursor(items[-1].id) if len(rows) > limit else None)

    async def counts(self, *, delivered: bool = True) -> dict[str, Any]:
        """Deliveries by subscriber and state, events not yet fanned out, the oldest waiting
        (`delivered=False`: without counting the delivered ones, which only grow). Exact: each count
        walks its rows (a 1M-event outbox takes 13-110 ms), so the delivery worker's periodic
        figures come from `waiting` instead."""
        # unfanned first: an event fanned out meanwhile then shows up in the deliveries read next, so
        # an outbox that is not empty is never read as drained
        unfanned = await self._db.fetchone("SELECT count(*) FROM crm_events WHERE fanned = 0")
        by_sub: dict[str, dict[str, int]] = {}
        for r in await self._db.fetchall(
            "SELECT subscriber, state, count(*) FROM crm_deliveries WHERE state != 'delivered'"
            " GROUP BY subscriber, state"
        ):
            by_sub.setdefault(r[0], dict.fromkeys(DELIVERY_STATES, 0))[r[1]] = r[2]
        for r in (
            await self._db.fetchall(
                "SELECT subscriber, count(*) FROM crm_deliveries WHERE state = 'delivered' GROUP BY subscriber"
            )
            if delivered
            else []
        ):
            by_sub.setdefault(r[0], dict.fromkeys(DELIVERY_STATES, 0))["delivered"] = r[1]
        backlog = sum(c["queued"] + c["sending"] for c in by_sub.values())
        return {
            "backlog": backlog,
            "unfanned": int(unfanned[0]) if unfanned else 0,
            "dead": sum(c["dead"] for c in by_sub.values()),
            "oldest_waiting_at": await self._oldest_waiting(background=False),
            "subscribers": by_sub,
        }

    async def waiting(self, cap: int) -> dict[str, Any]:
        """The outbox's figures for /healthz, each count stopping at `cap` (a figure equal to `cap`
        means `cap` or more): deliveries waiting (queued or sending), dead ones, events not yet
        fanned out, the oldest waiting. Each count walks at most `cap` index entries, so the cost
        stays the same however large the outbox grows; read on the store's background reader, never
        in front of a screen-pop's read."""
        # unfanned first, as in `counts`: an outbox that is not empty is never read as drained
        figures: dict[str, Any] = {}
        for key, where, params in (
            ("unfanned", "crm_events WHERE fanned = 0", ()),
            ("backlog", "crm_deliveries WHERE state IN ('queued', 'sending')", ()),
            ("dead", "crm_deliveries WHERE state = ?", ("dead",)),
        ):
            row = await self._db.fetchone(
                f"SELECT count(*) FROM (SELECT 1 FROM {where} LIMIT ?) AS capped",
                (*params, cap),
                background=True,
            )
            figures[key] = int(row[0]) if row else 0
        figures["oldest_waiting_at"] = await self._oldest_waiting(background=True)
        return figures

    async def _oldest_waiting(self, *, background: bool) -> str | None:
        """The event of the first queued or sending delivery (each an index seek; a min() over the
        join walked the whole backlog)."""
        waiting = [
            row[0]
            for state in ("queued", "sending")
            if (
                row := await self._db.fetchone(
                    "SELECT e.at FROM crm_deliveries d JOIN crm_events e ON e.id = d.event_id"
                    " WHERE d.state = ? ORDER BY d.id LIMIT 1",
                    (state,),
                    background=background,
                )
            )
        ]
        return min(waiting) if waiting else None

    async def prune(self, older_than: datetime) -> int:
        """Forget fanned-out events older than a time whose deliveries all arrived (or that had none)."""
        async with self._db.transaction(background=True) as tx:
            async with tx.execute(
                "DELETE FROM crm_events WHERE fanned = 1 AND at < ? AND NOT EXISTS (SELECT 1 FROM"
                " crm_deliveries d WHERE d.event_id = crm_events.id AND d.state != 'delivered')",
                (to_db_time(older_than),),
            ) as cur:
                return int(cur.rowcount)

    async def events_since(self, after_id: int, limit: int = 500) -> list[CrmEvent]:
        """Events in order after an id (tests, diagnostics)."""
        rows = await self._db.fetchall(
            "SELECT * FROM crm_events WHERE id > ? ORDER BY id LIMIT ?", (after_id, limit)
        )
        return [_event(r) for r in rows]


def backoff(attempts: int, first: float, cap: float) -> timedelta:
    """The wait before attempt `attempts + 1`: doubling from `first`, at most `cap` seconds."""
    return timedelta(seconds=min(cap, first * 2 ** max(0, attempts - 1)))
