"""Follow-ups and cadence rules in the store: lists, state changes (done, reschedule, hand-off, claim,
no answer), cadence follow-ups written idempotently, the sweep's scan, typed attributes, manager figures."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from crm_link.db import Database, from_db_time, one_row, to_db_time
from crm_link.errors import Conflict, NotFound, ValidationError
from crm_link.models import FollowUp, Page, check_limit, decode_cursor, encode_cursor
from crm_link.segments import compile_filter

FOLLOWUP_SELECT = (
    "SELECT f.*, u.username AS assignee_username, trim(c.first_name || ' ' || c.last_name) AS contact_name,"
    " k.name AS cadence_name FROM followups f JOIN contacts c ON c.id = f.contact_id"
    " LEFT JOIN users u ON u.id = f.assignee_id LEFT JOIN cadences k ON k.id = f.cadence_id"
)
ATTRIBUTE_TYPES = ("text", "number", "date", "boolean")
# results of a closed follow-up that do not count as a success in the manager's figures
UNSUCCESSFUL = ("not interested", "wrong number", "do not call", "no answer", "busy", "escalated")


def end_of_day(now: datetime, time_zone: str | None) -> datetime:
    """Midnight at the end of `now`'s day in the zone."""
    tz = ZoneInfo(time_zone or "UTC")
    local = now.astimezone(tz)
    return datetime.combine(local.date() + timedelta(days=1), time(0), tzinfo=tz)


def followup_of(r: Any) -> FollowUp:
    """A follow-up row (selected with FOLLOWUP_SELECT) as a record."""
    return FollowUp(
        id=r["id"],
        contact_id=r["contact_id"],
        contact_name=r["contact_name"],
        assignee_id=r["assignee_id"],
        assignee_username=r["assignee_username"],
        kind=r["kind"],
        due_at=from_db_time(r["due_at"]),  # type: ignore[arg-type]
        note=r["note"],
        status=r["status"],
        created_by_touch_id=r["created_by_touch_id"],
        closed_by_touch_id=r["closed_by_touch_id"],
        pool=r["pool"],
        cadence_id=r["cadence_id"],
        cadence_name=r["cadence_name"],
        step=r["step"],
        channel=r["channel"],
        result=r["result"],
        attempts=r["attempts"],
        escalated_reason=r["escalated_reason"],
    )


@dataclass(frozen=True, slots=True)
class CadenceRow:
    id: int
    name: str
    date_field: str
    steps: list[dict[str, Any]]
    assign: str
    filter: Any
    retry_hours: int
    max_attempts: int
    escalate_to: str
    active: bool
    starts_on: date

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "date_field": self.date_field,
            "steps": self.steps,
            "assign": self.assign,
            "filter": self.filter,
            "retry_hours": self.retry_hours,
            "max_attempts": self.max_attempts,
            "escalate_to": self.escalate_to,
            "active": self.active,
            "starts_on": self.starts_on.isoformat(),
        }


def _cadence(r: Any) -> CadenceRow:
    return CadenceRow(
        id=r["id"],
        name=r["name"],
        date_field=r["date_field"],
        steps=json.loads(r["steps"]),
        assign=r["assign"],
        filter=json.loads(r["filter"]) if r["filter"] else None,
        retry_hours=r["retry_hours"],
        max_attempts=r["max_attempts"],
        escalate_to=r["escalate_to"],
        active=bool(r["active"]),
        starts_on=date.fromisoformat(r["starts_on"]),
    )


@dataclass(frozen=True, slots=True)
class NewFollowup:
    """A cadence follow-up to write; `source_key` makes writing it again a no-op."""

    contact_id: int
    source_key: str
    cadence_id: int
    step: int
    anchor: date
    due_at: datetime
    channel: str
    reason: str
    assignee_id: int | None
    pool: str | None


@dataclass(frozen=True, slots=True)
class ScannedContact:
    id: int
    owner_id: int | None
    time_zone: str | None
    dates: dict[str, Any]
    matches: dict[int, bool]


class FollowupStore:
    """Follow-ups, cadence rules, typed attributes."""

    def __init__(self, db: Database) -> None:
        self._db = db

    # cadences ---------------------------------------------------------------------------------

    async def cadences(self) -> list[CadenceRow]:
        return [_cadence(r) for r in await self._db.fetchall("SELECT * FROM cadences ORDER BY name, id")]

    async def cadence(self, cadence_id: int) -> CadenceRow:
        row = await self._db.fetchone("SELECT * FROM cadences WHERE id = ?", (cadence_id,))
        if row is None:
            raise NotFound("cadence", cadence_id)
        return _cadence(row)

    async def save_cadence(
        self, cadence_id: int | None, spec: Mapping[str, Any], starts_on: date
    ) -> CadenceRow:
        """Insert (cadence_id None) or replace a rule. A rule that is (re)activated or whose date
        field changes starts again today: steps whose day passed before then are never made."""
        now = to_db_time(self._db.now())
        values = _cadence_values(spec)
        async with self._db.transaction() as tx:
            async with tx.execute(
                "SELECT id FROM cadences WHERE name = ? AND id IS NOT ?", (spec["name"], cadence_id)
            ) as cur:
                if await cur.fetchone():
                    raise Conflict("name", f"a cadence named {spec['name']!r} exists")
            if cadence_id is None:
                async with tx.execute(
                    "INSERT INTO cadences (name, date_field, steps, assign, filter, retry_hours, max_attempts,"
                    " escalate_to, active, starts_on, created_at, updated_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                    (*values, starts_on.isoformat(), now, now),
                ) as cur:
                    cadence_id = int((await one_row(cur))[0])
            else:
                async with tx.execute(
                    "SELECT active, date_field, starts_on FROM cadences WHERE id = ?", (cadence_id,)
                ) as cur:
                    old = await cur.fetchone()
                if old is None:
                    raise NotFound("cadence", cadence_id)
                restart = (not old["active"] and spec["active"]) or old["date_field"] != spec["date_field"]
                await tx.execute(
                    "UPDATE cadences SET name = ?, date_field = ?, steps = ?, assign = ?, filter = ?,"
                    " retry_hours = ?, max_attempts = ?, escalate_to = ?, active = ?, starts_on = ?,"
                    " updated_at = ? WHERE id = ?",
                    (
                        *values,
                        starts_on.isoformat() if restart else old["starts_on"],
                        now,
                        cadence_id,
                    ),
                )
        return await self.cadence(cadence_id)

    async def delete_cadence(self, cadence_id: int) -> int:
        """Remove a rule; its open follow-ups are cancelled (done ones stay in the history)."""
        now = to_db_time(self._db.now())
        async with self._db.transaction() as tx:
            async with tx.execute(
                "UPDATE followups SET status = 'cancelled', result = 'cadence deleted', closed_at = ?,"
                " updated_at = ? WHERE cadence_id = ? AND status = 'open'",
                (now, now, cadence_id),
            ) as cur:
                cancelled = cur.rowcount
            async with tx.execute("DELETE FROM cadences WHERE id = ?", (cadence_id,)) as cur:
                if cur.rowcount == 0:
                    raise NotFound("cadence", cadence_id)
        return cancelled

    async def seed_once(self, key: str, specs: Sequence[Mapping[str, Any]], starts_on: date) -> bool:
        """Insert `specs` the first time `key` is seen (the shipped defaults); False afterwards, even
        when an admin has since deleted them.

        One transaction that takes the key first: two processes starting at once on a fresh store
        (each seeding) write the defaults once, and neither fails on the other's names.
        """
        now = to_db_time(self._db.now())
        async with self._db.transaction() as tx:
            async with tx.execute(
                "INSERT INTO followup_state (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING"
                " RETURNING key",
                (key, now),
            ) as cur:
                if await cur.fetchone() is None:
                    return False  # seeded before (by this process or another)
            await tx.executemany(
                "INSERT INTO cadences (name, date_field, steps, assign, filter, retry_hours, max_attempts,"
                " escalate_to, active, starts_on, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO NOTHING",
                [(*_cadence_values(spec), starts_on.isoformat(), now, now) for spec in specs],
            )
        return True

    async def get_state(self, key: str) -> str | None:
        row = await self._db.fetchone("SELECT value FROM followup_state WHERE key = ?", (key,))
        return row[0] if row else None

    async def set_state(self, key: str, value: str) -> None:
        async with self._db.transaction() as tx:
            await tx.execute(
                "INSERT INTO followup_state (key, value) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    # typed attributes -----------------------------------------------------------------------

    async def attribute_types(self) -> dict[str, str]:
        rows = await self._db.fetchall("SELECT name, type FROM attribute_types ORDER BY name")
        return {r[0]: r[1] for r in rows}

    async def set_attribute_types(self, types: Mapping[str, str], *, source: str = "inferred") -> None:
        """Record attribute types; a declared type is never overwritten by an inferred one."""
        for name, kind in types.items():
            if kind not in ATTRIBUTE_TYPES:
                raise ValidationError(
                    f"attributes.{name}", f"type must be one of {', '.join(ATTRIBUTE_TYPES)}"
                )
        async with self._db.transaction() as tx:
            await tx.executemany(
                "INSERT INTO attribute_types (name, type, source) VALUES (?, ?, ?)"
                " ON CONFLICT (name) DO UPDATE SET type = excluded.type, source = excluded.source"
                " WHERE attribute_types.source != 'declared' OR excluded.source = 'declared'",
                [(n, k, source) for n, k in types.items()],
            )

    # follow-ups: reads ----------------------------------------------------------------------

    async def get(self, followup_id: int) -> FollowUp:
        row = await self._db.fetchone(FOLLOWUP_SELECT + " WHERE f.id = ?", (followup_id,))
        if row is None:
            raise NotFound("follow-up", followup_id)
        return followup_of(row)

    async def search(
        self,
        *,
        assignee_id: int | None = None,
        pool: str | None = None,
        mine: tuple[int, Sequence[str]] | None = None,
        state: str = "open",
        due_before: datetime | None = None,
        due_after: datetime | None = None,
        contact_id: int | None = None,
        cadence_id: int | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Page:
        """Follow-ups by filter, soonest due first. `mine` = (user id, their pools): assigned to the
        user, or unclaimed in one of their pools."""
        limit = check_limit(limit)
        where: list[str] = []
        params: list[Any] = []
        if state != "all":
            if state not in ("open", "done", "cancelled"):
                raise ValidationError("state", "must be open, done, cancelled or all")
            where.append("f.status = ?")
            params.append(state)
        if assignee_id is not None:
            where.append("f.assignee_id = ?")
            params.append(assignee_id)
        if pool is not None:
            where.append("f.pool = ? AND f.assignee_id IS NULL")
            params.append(pool)
        if mine is not None:
            uid, pools = mine
            cond = "f.assignee_id = ?"
            params.append(uid)
            if pools:
                cond += f" OR (f.assignee_id IS NULL AND f.pool IN ({','.join('?' * len(pools))}))"
                params += list(pools)
            where.append(f"({cond})")
        for value, sql in ((due_before, "f.due_at < ?"), (due_after, "f.due_at >= ?")):
            if value is not None:
                where.append(sql)
                params.append(to_db_time(value))
        if contact_id is not None:
            where.append("f.contact_id = ?")
            params.append(contact_id)
        if cadence_id is not None:
            where.append("f.cadence_id = ?")
            params.append(cadence_id)
        if cursor:
            due, last = decode_cursor(cursor, str, int)
            where.append("(f.due_at > ? OR (f.due_at = ? AND f.id > ?))")
            params += [due, due, last]
        sql = FOLLOWUP_SELECT + (" WHERE " + " AND ".join(where) if where else "")
        rows = await self._db.fetchall(sql + " ORDER BY f.due_at, f.id LIMIT ?", [*params, limit + 1])
        items = [followup_of(r) for r in rows[:limit]]
        nxt = encode_cursor(rows[limit - 1]["due_at"], items[-1].id) if len(rows) > limit else None
        return Page(items, nxt)

    async def served_by(
        self, contact_id: int, user_id: int | None, pools: Sequence[str], until: datetime
    ) -> FollowUp | None:
        """The follow-up a touch with this contact serves: the soonest open one due by `until`,
        assigned to this user, or unclaimed in one of their pools, or unassigned."""
        params: list[Any] = [contact_id, to_db_time(until), user_id]
        pool_sql = ""
        if pools:
            pool_sql = f" OR f.pool IN ({','.join('?' * len(pools))})"
            params += list(pools)
        row = await self._db.fetchone(
            FOLLOWUP_SELECT + " WHERE f.contact_id = ? AND f.status = 'open' AND f.due_at < ?"
            f" AND (f.assignee_id = ? OR (f.assignee_id IS NULL AND (f.pool IS NULL{pool_sql})))"
            " ORDER BY f.due_at, f.id LIMIT 1",
            params,
        )
        return followup_of(row) if row else None

    # follow-ups: writes ---------------------------------------------------------------------

    async def create(
        self,
        contact_id: int,
        due_at: datetime,
        *,
        note: str = "",
        assignee_id: int | None = None,
        pool: str | None = None,
        kind: str = "followup",
        source_key: str | None = None,
        created_by_touch_id: int | None = None,
    ) -> tuple[FollowUp, bool]:
        """A follow-up; with a `source_key` already used, the existing one (and False)."""
        now = to_db_time(self._db.now())
        async with self._db.transaction() as tx:
            async with tx.execute("SELECT 1 FROM contacts WHERE id = ?", (contact_id,)) as cur:
                if await cur.fetchone() is None:
                    raise ValidationError("contact_id", f"no contact {contact_id}")
            async with tx.execute(
                "INSERT INTO followups (contact_id, assignee_id, pool, kind, due_at, note, source_key,"
                " created_by_touch_id, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT DO NOTHING RETURNING id",
                (
                    contact_id,
                    assignee_id,
                    pool if assignee_id is None else None,
                    kind,
                    to_db_time(due_at),
                    note,
                    source_key,
                    created_by_touch_id,
                    now,
                    now,
                ),
            ) as cur:
                row = await cur.fetchone()
        if row is not None:
            return await self.get(int(row[0])), True
        found = await self._db.fetchone(
            FOLLOWUP_SELECT + " WHERE f.source_key = ? OR (f.created_by_touch_id = ? AND f.kind = ?)",
            (source_key, created_by_touch_id, kind),
        )
        if found is None:  # pragma: no cover - a conflict names an existing row
            raise Conflict("source_key", "a conflicting follow-up vanished")
        return followup_of(found), False

    async def _change(
        self, followup_id: int, sets: str, params: Sequence[Any], *, state: str = "open"
    ) -> FollowUp:
        now = to_db_time(self._db.now())
        rows = await self._db.write_returning(
            f"UPDATE followups SET {sets}, updated_at = ? WHERE id = ? AND status = ? RETURNING id",
            [*params, now, followup_id, state],
        )
        if not rows:
            current = await self.get(followup_id)  # NotFound when absent
            raise Conflict("id", f"follow-up {followup_id} is {current.status}, not {state}")
        return await self.get(followup_id)

    async def done(
        self,
        followup_id: int,
        *,
        result: str,
        note: str = "",
        user_id: int | None = None,
        touch_id: int | None = None,
    ) -> FollowUp:
        """Close an open follow-up with its result (and the touch that did the work)."""
        now = to_db_time(self._db.now())
        return await self._change(
            followup_id,
            "status = 'done', result = ?, note = CASE WHEN ? != '' THEN note || ? ELSE note END,"
            " closed_at = ?, closed_by_user_id = ?, closed_by_touch_id = COALESCE(?, closed_by_touch_id)",
            [result, note, f"\n{note}" if note else "", now, user_id, touch_id],
        )

    async def reschedule(self, followup_id: int, due_at: datetime, *, note: str = "") -> FollowUp:
        return await self._change(
            followup_id,
            "due_at = ?, note = CASE WHEN ? != '' THEN note || ? ELSE note END",
            [to_db_time(due_at), note, f"\n{note}" if note else ""],
        )

    async def assign(
        self, followup_id: int, *, assignee_id: int | None, pool: str | None, note: str = ""
    ) -> FollowUp:
        """Hand a follow-up to a user or a pool (unclaimed there)."""
        return await self._change(
            followup_id,
            "assignee_id = ?, pool = ?, note = CASE WHEN ? != '' THEN note || ? ELSE note END",
            [assignee_id, pool if assignee_id is None else None, note, f"\n{note}" if note else ""],
        )

    async def claim(self, followup_id: int, user_id: int) -> FollowUp:
        """Take an unclaimed pool follow-up; Conflict if someone was first."""
        rows = await self._db.write_returning(
            "UPDATE followups SET assignee_id = ?, updated_at = ? WHERE id = ? AND status = 'open'"
            " AND assignee_id IS NULL RETURNING id",
            (user_id, to_db_time(self._db.now()), followup_id),
        )
        if not rows:
            current = await self.get(followup_id)
            who = current.assignee_username or current.status
            raise Conflict("id", f"follow-up {followup_id} is already taken ({who})")
        return await self.get(followup_id)

    async def no_answer(
        self,
        followup_id: int,
        *,
        retry_at: datetime | None,
        escalate: tuple[int | None, str | None, str] | None,
    ) -> FollowUp:
        """Count a failed attempt: try again at `retry_at`, or hand it to (user, pool) with a reason."""
        if escalate is None:
            assert retry_at is not None
            return await self._change(
                followup_id, "attempts = attempts + 1, due_at = ?", [to_db_time(retry_at)]
            )
        assignee_id, pool, reason = escalate
        return await self._change(
            followup_id,
            "attempts = attempts + 1, assignee_id = ?, pool = ?, escalated_reason = ?, due_at = ?",
            [assignee_id, pool if assignee_id is None else None, reason, to_db_time(self._db.now())],
        )

    async def move_owner(self, contact_id: int, old_owner_id: int | None, new_owner_id: int | None) -> int:
        """Give the old owner's open follow-ups of a contact to the new owner; how many moved."""
        rows = await self._db.write_returning(
            "UPDATE followups SET assignee_id = ?, pool = NULL, updated_at = ?"
            " WHERE contact_id = ? AND status = 'open' AND assignee_id IS ? RETURNING id",
            (new_owner_id, to_db_time(self._db.now()), contact_id, old_owner_id),
        )
        return len(rows)

    # SMS and email steps, replies ------------------------------------------------------------

    async def due_steps(self, now: datetime, limit: int = 200) -> list[FollowUp]:
        """Open SMS/email cadence steps due by `now` that have no outbox row yet (a row, once
        written, is the step's send: a restart never queues it again)."""
        rows = await self._db.fetchall(
            FOLLOWUP_SELECT + " WHERE f.channel IN ('sms', 'email') AND f.status = 'open' AND f.due_at <= ?"
            " AND f.cadence_id IS NOT NULL"
            " AND NOT EXISTS (SELECT 1 FROM sms_outbox o WHERE o.followup_id = f.id)"
            " AND NOT EXISTS (SELECT 1 FROM email_outbox e WHERE e.followup_id = f.id)"
            " ORDER BY f.due_at, f.id LIMIT ?",
            (to_db_time(now), limit),
        )
        return [followup_of(r) for r in rows]

    async def step_not_sent(self, followup_id: int, reason: str) -> FollowUp:
        """An SMS/email step that cannot go (opted out, no number, no template): it stays open on
        its assignee's day as a call to make, with the reason."""
        return await self._change(
            followup_id, "channel = 'call', note = note || ?", [f"\n{reason}: call instead"]
        )

    async def texted_for(self, number: str, since: datetime) -> FollowUp | None:
        """The follow-up the latest text sent to this number since `since` was sent for, if any."""
        row = await self._db.fetchone(
            FOLLOWUP_SELECT + " JOIN sms_outbox o ON o.followup_id = f.id WHERE o.to_e164 = ?"
            " AND o.sent_at >= ? ORDER BY o.sent_at DESC, o.id DESC LIMIT 1",
            (number, to_db_time(since)),
        )
        return followup_of(row) if row else None

    async def answered(self, followup_id: int, *, touch_id: int, note: str) -> FollowUp:
        """Record a customer's reply on a follow-up: an open one is closed `replied` by that touch;
        a closed one (its text closed it when sent) gets the result `replied`. Conflict if it already
        has a reply."""
        now = to_db_time(self._db.now())
        rows = await self._db.write_returning(
            "UPDATE followups SET result = 'replied', note = note || ?, updated_at = ?,"
            " closed_by_touch_id = CASE WHEN status = 'open' THEN ? ELSE closed_by_touch_id END,"
            " closed_at = CASE WHEN status = 'open' THEN ? ELSE closed_at END,"
            " status = CASE WHEN status = 'open' THEN 'done' ELSE status END"
            " WHERE id = ? AND status != 'cancelled' AND COALESCE(result, '') != 'replied' RETURNING id",
            (f"\n{note}", now, touch_id, now, followup_id),
        )
        if not rows:
            raise Conflict("id", f"follow-up {followup_id} already has a reply or was cancelled")
        return await self.get(followup_id)

    # cadence follow-ups ---------------------------------------------------------------------

    async def scan(
        self,
        first_id: int,
        last_id: int,
        fields: Sequence[str],
        ranges: Mapping[str, Sequence[tuple[date, date]]] | None,
        filters: Mapping[int, Any],
        today: date,
    ) -> list[ScannedContact]:
        """Contacts with id in [first_id, last_id] and their date fields; with `ranges`, only those with
        a date inside one of its field's ranges. `filters` (rule id -> segment filter) are evaluated."""
        cols = [f"json_extract(c.attributes, '$.{f}')" for f in fields]
        params: list[Any] = []
        extra = []
        for rid, flt in filters.items():
            compiled = compile_filter(flt, today)
            extra.append(f"CASE WHEN {compiled.sql} THEN 1 ELSE 0 END AS r{rid}")
            params += compiled.params
        where = ["c.id BETWEEN ? AND ?"]
        params += [first_id, last_id]
        if ranges is not None:
            ors = []
            for f, spans in ranges.items():
                for lo, hi in spans:
                    ors.append(f"substr(json_extract(c.attributes, '$.{f}'), 1, 10) BETWEEN ? AND ?")
                    params += [lo.isoformat(), hi.isoformat()]
            if not ors:
                return []
            where.append("(" + " OR ".join(ors) + ")")
        sql = (
            "SELECT c.id, c.owner_id, c.time_zone"
            + "".join(f", {c}" for c in cols)
            + "".join(f", {e}" for e in extra)
            + f" FROM contacts c WHERE {' AND '.join(where)} ORDER BY c.id"
        )
        rows = await self._db.fetchall(sql, params)
        n = len(fields)
        rids = list(filters)
        return [
            ScannedContact(
                id=r[0],
                owner_id=r[1],
                time_zone=r[2],
                dates={f: r[3 + i] for i, f in enumerate(fields)},
                matches={rid: bool(r[3 + n + j]) for j, rid in enumerate(rids)},
            )
            for r in rows
        ]

    async def max_contact_id(self) -> int:
        row = await self._db.fetchone("SELECT COALESCE(MAX(id), 0) FROM contacts")
        return int(row[0]) if row else 0

    async def write_planned(self, items: Sequence[NewFollowup], *, move_contacts: Sequence[int] = ()) -> int:
        """Write cadence follow-ups in one transaction; ones already written (same key) are left alone.

        For `move_contacts` (their date just changed), an open cadence follow-up whose anchor is no
        longer the contact's date is moved to the new one (same rule and step) or, when the new
        plan has no such step now, cancelled with the reason. Returns how many were created.
        """
        now = to_db_time(self._db.now())
        created = 0
        async with self._db.transaction() as tx:
            if move_contacts:
                wanted = {(i.contact_id, i.cadence_id, i.step): i for i in items}
                marks = ",".join("?" * len(move_contacts))
                async with tx.execute(
                    f"SELECT id, contact_id, cadence_id, step, anchor FROM followups WHERE contact_id IN ({marks})"
                    " AND status = 'open' AND cadence_id IS NOT NULL",
                    list(move_contacts),
                ) as cur:
                    open_rows = await cur.fetchall()
                current_anchor = {(i.contact_id, i.cadence_id): i.anchor.isoformat() for i in items}
                for r in open_rows:
                    new = wanted.get((r["contact_id"], r["cadence_id"], r["step"]))
                    if new is not None and new.anchor.isoformat() == r["anchor"]:
                        continue
                    if new is not None:
                        await tx.execute(
                            "UPDATE followups SET anchor = ?, due_at = ?, source_key = ?, updated_at = ?"
                            " WHERE id = ? AND NOT EXISTS (SELECT 1 FROM followups WHERE source_key = ?)",
                            (
                                new.anchor.isoformat(),
                                to_db_time(new.due_at),
                                new.source_key,
                                now,
                                r["id"],
                                new.source_key,
                            ),
                        )
                    elif current_anchor.get((r["contact_id"], r["cadence_id"])) != r["anchor"]:
                        await tx.execute(
                            "UPDATE followups SET status = 'cancelled', result = 'date changed', closed_at = ?,"
                            " updated_at = ? WHERE id = ?",
                            (now, now, r["id"]),
                        )
            before = tx.total_changes
            await tx.executemany(
                "INSERT INTO followups (contact_id, assignee_id, pool, kind, due_at, note, source_key, cadence_id,"
                " step, anchor, channel, created_at, updated_at) VALUES (?, ?, ?, 'cadence', ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT DO NOTHING",
                [
                    (
                        i.contact_id,
                        i.assignee_id,
                        i.pool if i.assignee_id is None else None,
                        to_db_time(i.due_at),
                        i.reason,
                        i.source_key,
                        i.cadence_id,
                        i.step,
                        i.anchor.isoformat(),
                        i.channel,
                        now,
                        now,
                    )
                    for i in items
                ],
            )
            created = tx.total_changes - before
        return created

    # manager figures ------------------------------------------------------------------------

    async def figures_by_assignee(
        self, *, day_start: datetime, day_end: datetime, week_start: datetime, now: datetime
    ) -> list[dict[str, Any]]:
        """Per user: due today, past due, done this week, success rate of those done."""
        bad = ",".join("?" * len(UNSUCCESSFUL))
        rows = await self._db.fetchall(
            "SELECT u.id, u.username, COALESCE(NULLIF(u.display_name, ''), u.username) AS name,"
            " SUM(CASE WHEN f.status = 'open' AND f.due_at >= ? AND f.due_at < ? THEN 1 ELSE 0 END),"
            " SUM(CASE WHEN f.status = 'open' AND f.due_at < ? THEN 1 ELSE 0 END),"
            " SUM(CASE WHEN f.status = 'done' AND f.closed_at >= ? THEN 1 ELSE 0 END),"
            f" SUM(CASE WHEN f.status = 'done' AND f.closed_at >= ? AND f.result NOT IN ({bad}) THEN 1 ELSE 0 END),"
            " SUM(CASE WHEN f.status = 'open' AND f.escalated_reason IS NOT NULL THEN 1 ELSE 0 END)"
            " FROM users u JOIN followups f ON f.assignee_id = u.id"
            " WHERE u.active = 1 GROUP BY u.id ORDER BY u.username",
            (
                to_db_time(day_start),
                to_db_time(day_end),
                to_db_time(now),
                to_db_time(week_start),
                to_db_time(week_start),
                *UNSUCCESSFUL,
            ),
        )
        out = []
        for r in rows:
            done, good = r[5] or 0, r[6] or 0
            out.append(
                {
                    "user": r[1],
                    "name": r[2],
                    "due_today": r[3] or 0,
                    "past_due": r[4] or 0,
                    "done_week": done,
                    "success_rate": round(good / done, 3) if done else None,
                    "escalated_open": r[7] or 0,
                }
            )
        return out


def _cadence_values(spec: Mapping[str, Any]) -> tuple[Any, ...]:
    """A cadence spec as the columns name … active of `cadences`."""
    return (
        spec["name"],
        spec["date_field"],
        json.dumps(spec["steps"]),
        spec["assign"],
        json.dumps(spec["filter"]) if spec.get("filter") is not None else None,
        spec["retry_hours"],
        spec["max_attempts"],
        spec["escalate_to"],
        int(spec["active"]),
    )
