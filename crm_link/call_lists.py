"""Call lists: entries claimed under a lease, dial attempts as a durable state machine, results.

An entry is `pending` until a dialer or an agent claims it (`in_progress`, with a lease owner and
an expiry); an attempt row is written before anything is dialed, so after a crash every call in
doubt is visible (`dialing` becomes `unknown` when its lease expires, unless the call's touch shows
how it ended) and nothing is dialed twice at once. All times are UTC.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from crm_link.db import Database, from_db_time, is_unique_violation, one_row, to_db_time
from crm_link.errors import Conflict, NotFound, ValidationError
from crm_link.models import iso
from crm_link.phones import zone_for_number

MODES = ("preview", "progressive")
LIST_STATES = ("draft", "running", "paused", "stopped", "done")
ENTRY_STATES = ("pending", "in_progress", "done", "skipped")
OUTCOMES = ("answered", "busy", "noanswer", "failed", "unknown")
# dispositions after which the customer counts as not reached (the attempt is retried)
NOT_REACHED = ("no answer", "busy", "left message")


@dataclass(slots=True)
class ListSpec:
    name: str
    mode: str = "preview"
    priority: int = 0
    max_attempts: int = 3
    retry_minutes: int = 60
    busy_retry_minutes: int = 240
    calling_start: str | None = None
    calling_end: str | None = None
    window_start: str | None = None  # dates, YYYY-MM-DD, in the dealer's zone
    window_end: str | None = None
    source: dict[str, Any] = field(default_factory=dict)
    survey_id: int | None = None  # the survey its calls ask


@dataclass(frozen=True, slots=True)
class CallList:
    id: int
    name: str
    mode: str
    state: str
    priority: int
    max_attempts: int
    retry_minutes: int
    busy_retry_minutes: int
    calling_start: str | None
    calling_end: str | None
    window_start: str | None
    window_end: str | None
    source: dict[str, Any]
    created_by: int | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    agent_ids: tuple[int, ...] = ()
    survey_id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "mode": self.mode,
            "state": self.state,
            "priority": self.priority,
            "max_attempts": self.max_attempts,
            "retry_minutes": self.retry_minutes,
            "busy_retry_minutes": self.busy_retry_minutes,
            "calling_hours": (
                {"start": self.calling_start, "end": self.calling_end} if self.calling_start else None
            ),
            "window": {"start": self.window_start, "end": self.window_end},
            "source": self.source,
            "agent_ids": list(self.agent_ids),
            "survey_id": self.survey_id,
            "created_at": iso(self.created_at),
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
        }


@dataclass(frozen=True, slots=True)
class Entry:
    id: int
    list_id: int
    contact_id: int | None
    number: str | None
    time_zone: str
    priority: int
    state: str
    reason: str | None
    result: str | None
    attempts: int
    no_contact: int
    next_at: datetime
    agent_id: int | None
    lease_owner: str | None
    lease_until: datetime | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "list_id": self.list_id,
            "contact_id": self.contact_id,
            "number": self.number,
            "time_zone": self.time_zone,
            "state": self.state,
            "reason": self.reason,
            "result": self.result,
            "attempts": self.attempts,
            "next_at": iso(self.next_at),
            "agent_id": self.agent_id,
        }


@dataclass(frozen=True, slots=True)
class Attempt:
    id: int
    entry_id: int
    list_id: int
    contact_id: int | None
    agent_id: int | None
    number: str
    state: str
    source: str
    call_id: str | None
    touch_id: int | None
    disposition: str | None
    note: str
    error: str | None
    started_at: datetime
    ended_at: datetime | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "entry_id": self.entry_id,
            "list_id": self.list_id,
            "contact_id": self.contact_id,
            "agent_id": self.agent_id,
            "number": self.number,
            "state": self.state,
            "call_id": self.call_id,
            "touch_id": self.touch_id,
            "disposition": self.disposition,
            "note": self.note,
            "error": self.error,
            "started_at": iso(self.started_at),
            "ended_at": iso(self.ended_at),
        }


def _list(row: Any, agents: Sequence[int] = ()) -> CallList:
    return CallList(
        id=row["id"],
        name=row["name"],
        mode=row["mode"],
        state=row["state"],
        priority=row["priority"],
        max_attempts=row["max_attempts"],
        retry_minutes=row["retry_minutes"],
        busy_retry_minutes=row["busy_retry_minutes"],
        calling_start=row["calling_start"],
        calling_end=row["calling_end"],
        window_start=row["window_start"],
        window_end=row["window_end"],
        source=json.loads(row["source"]),
        created_by=row["created_by"],
        created_at=from_db_time(row["created_at"]),  # type: ignore[arg-type]
        started_at=from_db_time(row["started_at"]),
        finished_at=from_db_time(row["finished_at"]),
        agent_ids=tuple(agents),
        survey_id=row["survey_id"],
    )


def _entry(row: Any) -> Entry:
    return Entry(
        id=row["id"],
        list_id=row["list_id"],
        contact_id=row["contact_id"],
        number=row["number"],
        time_zone=row["time_zone"],
        priority=row["priority"],
        state=row["state"],
        reason=row["reason"],
        result=row["result"],
        attempts=row["attempts"],
        no_contact=row["no_contact"],
        next_at=from_db_time(row["next_at"]),  # type: ignore[arg-type]
        agent_id=row["agent_id"],
        lease_owner=row["lease_owner"],
        lease_until=from_db_time(row["lease_until"]),
    )


def _attempt(row: Any) -> Attempt:
    return Attempt(
        id=row["id"],
        entry_id=row["entry_id"],
        list_id=row["list_id"],
        contact_id=row["contact_id"],
        agent_id=row["agent_id"],
        number=row["number"],
        state=row["state"],
        source=row["source"],
        call_id=row["call_id"],
        touch_id=row["touch_id"],
        disposition=row["disposition"],
        note=row["note"],
        error=row["error"],
        started_at=from_db_time(row["started_at"]),  # type: ignore[arg-type]
        ended_at=from_db_time(row["ended_at"]),
    )


class CallLists:
    """Lists, entries, attempts: building, claiming, finishing, counting."""

    def __init__(self, db: Database, default_time_zone: str) -> None:
        self.db = db
        self.default_time_zone = default_time_zone
        self._zones: dict[int, list[str]] = {}

    # -- building ------------------------------------------------------------------------------

    async def create(
        self,
        spec: ListSpec,
        *,
        contact_ids: Sequence[int] = (),
        numbers: Sequence[tuple[str, int | None]] = (),
        agent_ids: Sequence[int] = (),
        created_by: int | None = None,
        now: datetime,
    ) -> tuple[CallList, dict[str, int]]:
        """A list and its entries in one transaction; returns the list and the skip reasons counted."""
        if spec.mode not in MODES:
            raise ValidationError("mode", f"must be one of: {', '.join(MODES)}")
        stamp = to_db_time(now)
        async with self.db.transaction() as tx:
            cur = await tx.execute(
                "INSERT INTO call_lists (name, mode, state, source, priority, max_attempts, retry_minutes,"
                " busy_retry_minutes, calling_start, calling_end, window_start, window_end, created_by,"
                " created_at, updated_at, survey_id) VALUES (?, ?, 'draft', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " RETURNING id",
                (
                    spec.name,
                    spec.mode,
                    json.dumps(spec.source),
                    spec.priority,
                    spec.max_attempts,
                    spec.retry_minutes,
                    spec.busy_retry_minutes,
                    spec.calling_start,
                    spec.calling_end,
                    spec.window_start,
                    spec.window_end,
                    created_by,
                    stamp,
                    stamp,
                    spec.survey_id,
                ),
            )
            list_id = int((await one_row(cur))[0])
            await tx.executemany(
                "INSERT INTO call_list_agents (list_id, user_id) VALUES (?, ?)",
                [(list_id, a) for a in dict.fromkeys(agent_ids)],
            )
            summary = await self._add_entries_in(tx, list_id, contact_ids, numbers, now, spec.priority)
        return await self.get(list_id), summary

    async def add_entries(
        self,
        list_id: int,
        *,
        contact_ids: Sequence[int] = (),
        numbers: Sequence[tuple[str, int | None]] = (),
        now: datetime,
    ) -> dict[str, int]:
        """More entries for an existing list (contacts already in it, or reached in it, are skipped)."""
        cl = await self.get(list_id)
        async with self.db.transaction() as tx:
            return await self._add_entries_in(tx, list_id, contact_ids, numbers, now, cl.priority)

    async def _add_entries_in(
        self,
        tx: Any,
        list_id: int,
        contact_ids: Sequence[int],
        numbers: Sequence[tuple[str, int | None]],
        now: datetime,
        priority: int,
    ) -> dict[str, int]:
        stamp = to_db_time(now)
        async with tx.execute(
            "SELECT number, contact_id FROM call_list_entries WHERE list_id = ?", (list_id,)
        ) as cur:
            existing = await cur.fetchall()
        seen_numbers = {r[0] for r in existing if r[0]}
        seen_contacts = {r[1] for r in existing if r[1] is not None}
        rows: list[tuple[Any, ...]] = []
        summary: dict[str, int] = {"added": 0}

        def skip(contact_id: int | None, reason: str) -> None:
            summary[reason] = summary.get(reason, 0) + 1
            rows.append((list_id, contact_id, None, self.default_time_zone, priority, "skipped", reason))

        ids = list(dict.fromkeys(contact_ids))
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            async with tx.execute(
                f"SELECT c.id, c.do_not_call, c.time_zone, p.e164, p.valid FROM contacts c "
                f"LEFT JOIN contact_phones p ON p.contact_id = c.id WHERE c.id IN ({marks}) "
                f"ORDER BY c.id, p.position, p.id",
                chunk,
            ) as cur:
                found: dict[int, list[Any]] = {}
                for r in await cur.fetchall():
                    found.setdefault(r[0], []).append(r)
            for cid in chunk:
                phones = found.get(cid)
                if phones is None:
                    raise ValidationError("contact_ids", f"no contact {cid}")
                if cid in seen_contacts:
                    summary["already in this list"] = summary.get("already in this list", 0) + 1
                    continue
                seen_contacts.add(cid)
                first = phones[0]
                if first[1]:
                    skip(cid, "do not call")
                    continue
                numbers_of = [r[3] for r in phones if r[3] is not None]
                valid = [r[3] for r in phones if r[3] is not None and r[4]]
                if not numbers_of:
                    skip(cid, "no number")
                    continue
                if not valid:
                    skip(cid, "invalid number")
                    continue
                number = next((n for n in valid if n not in seen_numbers), None)
                if number is None:
                    skip(cid, "duplicate number")
                    continue
                seen_numbers.add(number)
                zone = first[2] or zone_for_number(number) or self.default_time_zone
                rows.append((list_id, cid, number, zone, priority, "pending", None))
                summary["added"] += 1
        for number, number_contact in numbers:
            if number in seen_numbers:
                skip(number_contact, "duplicate number")
                continue
            seen_numbers.add(number)
            rows.append(
                (
                    list_id,
                    number_contact,
                    number,
                    zone_for_number(number) or self.default_time_zone,
                    priority,
                    "pending",
                    None,
                )
            )
            summary["added"] += 1
        await tx.executemany(
            "INSERT INTO call_list_entries (list_id, contact_id, number, time_zone, priority, state, reason,"
            f" next_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, '{stamp}', '{stamp}')",
            rows,
        )
        self._zones.pop(list_id, None)
        return summary

    # -- lists ---------------------------------------------------------------------------------

    async def get(self, list_id: int) -> CallList:
        row = await self.db.fetchone("SELECT * FROM call_lists WHERE id = ?", (list_id,))
        if row is None:
            raise NotFound("call list", list_id)
        agents = await self.db.fetchall(
            "SELECT user_id FROM call_list_agents WHERE list_id = ? ORDER BY user_id", (list_id,)
        )
        return _list(row, [a[0] for a in agents])

    async def all(self, *, states: Sequence[str] = LIST_STATES) -> list[CallList]:
        marks = ",".join("?" * len(states))
        rows = await self.db.fetchall(
            f"SELECT * FROM call_lists WHERE state IN ({marks}) ORDER BY priority DESC, id", list(states)
        )
        agents = await self.db.fetchall("SELECT list_id, user_id FROM call_list_agents ORDER BY user_id")
        by_list: dict[int, list[int]] = {}
        for a in agents:
            by_list.setdefault(a[0], []).append(a[1])
        return [_list(r, by_list.get(r["id"], ())) for r in rows]

    async def set_state(self, list_id: int, state: str, now: datetime) -> CallList:
        if state not in LIST_STATES:
            raise ValidationError("state", f"must be one of: {', '.join(LIST_STATES)}")
        stamp = to_db_time(now)
        async with self.db.transaction() as tx:
            await tx.execute(
                "UPDATE call_lists SET state = ?, updated_at = ?,"
                " started_at = CASE WHEN ? = 'running' AND started_at IS NULL THEN ? ELSE started_at END,"
                " finished_at = CASE WHEN ? IN ('stopped', 'done') THEN ? ELSE NULL END WHERE id = ?",
                (state, stamp, state, stamp, state, stamp, list_id),
            )
        return await self.get(list_id)

    async def zones(self, list_id: int) -> list[str]:
        """The time zones of a list's entries (fixed once built; cached)."""
        zones = self._zones.get(list_id)
        if zones is None:
            rows = await self.db.fetchall(
                "SELECT DISTINCT time_zone FROM call_list_entries WHERE list_id = ?", (list_id,)
            )
            zones = self._zones[list_id] = [r[0] for r in rows]
        return zones

    async def finish_if_empty(self, list_id: int, now: datetime) -> bool:
        """Mark a running list done when nothing is left to dial; True if it was."""
        left = "SELECT 1 FROM call_list_entries WHERE list_id = ? AND state IN ('pending', 'in_progress')"
        if await self.db.fetchall(left + " LIMIT 1", (list_id,)):
            return False  # the usual answer, read without taking the write lock
        rows = await self.db.write_returning(
            f"UPDATE call_lists SET state = 'done', finished_at = ?, updated_at = ? WHERE id = ? AND "
            f"state = 'running' AND NOT EXISTS ({left}) RETURNING id",
            (to_db_time(now), to_db_time(now), list_id, list_id),
        )
        return bool(rows)

    # -- claiming ------------------------------------------------------------------------------

    async def claim(
        self,
        list_id: int,
        *,
        zones: Sequence[str],
        now: datetime,
        owner: str,
        lease: timedelta,
        agent_id: int | None = None,
        others_due_by: datetime | None = None,
        sole: bool = False,
    ) -> Entry | None:
        """Lease the next due entry of a list whose zone is open: the agent's callbacks first, then
        their own customers (contacts.owner_id = agent_id), then by priority and due time. With
        `others_due_by`, another user's customer is taken only if it was due by then (its owner's
        head start). None when nothing is due.

        `sole`: the owner (an agent, `agent:<id>`) holds one entry at most, on every instance
        sharing the store: when it holds one already, that entry is returned (it may be of another
        list) and nothing more is leased. Two claims racing for one agent are settled by the unique
        index on agents' leases: the loser's UPDATE fails and it returns the winner's entry."""
        if sole:
            try:
                entry = await self._claim(list_id, zones, now, owner, lease, agent_id, others_due_by, True)
            except Exception as exc:
                if not is_unique_violation(exc):
                    raise
                entry = None
            if entry is None:
                held = await self.held_by(owner)
                return held[0] if held else None
            return entry
        return await self._claim(list_id, zones, now, owner, lease, agent_id, others_due_by, False)

    async def _claim(
        self,
        list_id: int,
        zones: Sequence[str],
        now: datetime,
        owner: str,
        lease: timedelta,
        agent_id: int | None,
        others_due_by: datetime | None,
        sole: bool,
    ) -> Entry | None:
        if not zones:
            return None
        stamp = to_db_time(now)
        lock = self.db.skip_locked()  # claimers sharing the store pass over each other's candidates
        # one statement: the best candidate of each open zone (an index seek each), the agent's due
        # call-backs ranked first, and the lease taken atomically
        branch = (
            "SELECT * FROM (SELECT id, priority, next_at, 2 AS rank FROM call_list_entries WHERE list_id = ? "
            "AND state = 'pending' AND time_zone = ? AND next_at <= ? AND (agent_id IS NULL OR agent_id = ?) "
            + (
                ""
                if others_due_by is None
                else "AND (next_at <= ? OR contact_id IS NULL OR NOT EXISTS (SELECT 1 FROM contacts c WHERE "
                "c.id = call_list_entries.contact_id AND c.owner_id IS NOT NULL AND c.owner_id <> ?)) "
            )
            + f"ORDER BY priority DESC, next_at, id LIMIT 1{lock})"
        )
        branches: list[str] = []
        params: list[Any] = [owner, to_db_time(now + lease), stamp]
        marks = ",".join("?" * len(zones))
        if agent_id is not None:
            branches.append(
                "SELECT * FROM (SELECT id, priority, next_at, 0 AS rank FROM call_list_entries WHERE "
                f"agent_id = ? AND state = 'pending' AND next_at <= ? AND list_id = ? AND time_zone IN ({marks}) "
                f"ORDER BY next_at, id LIMIT 1{lock})"
            )
            params += [agent_id, stamp, list_id, *zones]
            # the agent's own customers: through contacts_owner, then the entries of each contact
            # (CROSS JOIN keeps that order in SQLite, which otherwise may walk the whole list)
            branches.append(
                "SELECT * FROM (SELECT e.id, e.priority, e.next_at, 1 AS rank FROM contacts c "
                "CROSS JOIN call_list_entries e WHERE e.contact_id = c.id AND c.owner_id = ? AND e.list_id = ? "
                f"AND e.state = 'pending' AND e.next_at <= ? AND e.time_zone IN ({marks}) "
                "AND (e.agent_id IS NULL OR e.agent_id = ?) ORDER BY e.priority DESC, e.next_at, e.id LIMIT 1"
                f"{self.db.skip_locked('e')})"
            )
            params += [agent_id, list_id, stamp, *zones, agent_id]
        for zone in zones:
            branches.append(branch)
            params += [list_id, zone, stamp, agent_id]
            if others_due_by is not None:
                params += [to_db_time(others_due_by), agent_id if agent_id is not None else -1]
        held = ""
        if sole:  # an entry the owner holds already (committed) stops the claim here
            held = (
                "AND NOT EXISTS (SELECT 1 FROM call_list_entries h WHERE h.lease_owner = ? "
                "AND h.state = 'in_progress') "
            )
            params.append(owner)
        rows = await self.db.write_returning(
            "UPDATE call_list_entries SET state = 'in_progress', lease_owner = ?, lease_until = ?, updated_at = ? "
            "WHERE state = 'pending' AND id = (SELECT id FROM (" + " UNION ALL ".join(branches) + ") "
            "ORDER BY rank, priority DESC, next_at, id LIMIT 1) " + held + "RETURNING *",
            params,
        )
        return _entry(rows[0]) if rows else None

    async def entry(self, entry_id: int) -> Entry:
        row = await self.db.fetchone("SELECT * FROM call_list_entries WHERE id = ?", (entry_id,))
        if row is None:
            raise NotFound("call list entry", entry_id)
        return _entry(row)

    async def held_by(self, owner: str) -> list[Entry]:
        rows = await self.db.fetchall(
            "SELECT * FROM call_list_entries WHERE state = 'in_progress' AND lease_owner = ? ORDER BY id",
            (owner,),
        )
        return [_entry(r) for r in rows]

    async def renew(self, owner: str, entry_ids: Sequence[int], until: datetime) -> None:
        if not entry_ids:
            return
        marks = ",".join("?" * len(entry_ids))
        async with self.db.transaction() as tx:
            await tx.execute(
                f"UPDATE call_list_entries SET lease_until = ? WHERE lease_owner = ? AND "
                f"state = 'in_progress' AND id IN ({marks})",
                (to_db_time(until), owner, *entry_ids),
            )

    async def release(
        self, entry_id: int, owner: str, now: datetime, *, next_at: datetime | None = None
    ) -> None:
        """Give a claimed entry back to the queue (an agent passes on it, a dial never started)."""
        async with self.db.transaction() as tx:
            await tx.execute(
                "UPDATE call_list_entries SET state = 'pending', lease_owner = NULL, lease_until = NULL, "
                "next_at = ?, updated_at = ? WHERE id = ? AND state = 'in_progress' AND lease_owner = ?",
                (to_db_time(next_at or now), to_db_time(now), entry_id, owner),
            )

    async def skip(self, entry_id: int, owner: str, reason: str, now: datetime) -> Entry:
        async with self.db.transaction() as tx:
            cur = await tx.execute(
                "UPDATE call_list_entries SET state = 'skipped', reason = ?, lease_owner = NULL, "
                "lease_until = NULL, updated_at = ? WHERE id = ? AND state = 'in_progress' AND lease_owner = ?",
                (reason, to_db_time(now), entry_id, owner),
            )
            if cur.rowcount == 0:
                raise Conflict("entry_id", "this entry is not held by you")
        return await self.entry(entry_id)

    # -- attempts ------------------------------------------------------------------------------

    async def start_attempt(
        self, entry_id: int, *, owner: str, agent_id: int | None, source: str, now: datetime, lease: timedelta
    ) -> Attempt | None:
        """Write the attempt before dialing; refused unless `owner` holds the entry's lease. Every
        dial passes here, so this is where the do-not-call flag is read: None when the customer is
        on it now (the entry is skipped with that reason)."""
        stamp = to_db_time(now)
        async with self.db.transaction() as tx:
            async with tx.execute(
                "SELECT e.*, c.do_not_call FROM call_list_entries e LEFT JOIN contacts c ON c.id = e.contact_id"
                " WHERE e.id = ? AND e.state = 'in_progress' AND e.lease_owner = ?",
                (entry_id, owner),
            ) as cur:
                row = await cur.fetchone()
            if row is None:
                raise Conflict(
                    "entry_id", "this entry is not held by you (its lease expired or it was taken)"
                )
            if row["do_not_call"]:
                await tx.execute(
                    "UPDATE call_list_entries SET state = 'skipped', reason = 'do not call', lease_owner = NULL,"
                    " lease_until = NULL, updated_at = ? WHERE id = ?",
                    (stamp, entry_id),
                )
                return None
            async with tx.execute(
                "SELECT 1 FROM call_attempts WHERE entry_id = ? AND state = 'dialing'", (entry_id,)
            ) as cur:
                if await cur.fetchone():
                    raise Conflict("entry_id", "this entry is being dialed")
            cur = await tx.execute(
                "INSERT INTO call_attempts (entry_id, list_id, contact_id, agent_id, number, state, source,"
                " started_at) VALUES (?, ?, ?, ?, ?, 'dialing', ?, ?) RETURNING id",
                (entry_id, row["list_id"], row["contact_id"], agent_id, row["number"], source, stamp),
            )
            attempt_id = int((await one_row(cur))[0])
            await tx.execute(
                "UPDATE call_list_entries SET attempts = attempts + 1, last_attempt_at = ?, lease_until = ?,"
                " updated_at = ? WHERE id = ?",
                (stamp, to_db_time(now + lease), stamp, entry_id),
            )
        assert attempt_id is not None
        return await self.attempt(attempt_id)

    async def attempt(self, attempt_id: int) -> Attempt:
        row = await self.db.fetchone("SELECT * FROM call_attempts WHERE id = ?", (attempt_id,))
        if row is None:
            raise NotFound("call attempt", attempt_id)
        return _attempt(row)

    async def attempt_by_call(self, call_id: str) -> Attempt | None:
        row = await self.db.fetchone("SELECT * FROM call_attempts WHERE call_id = ?", (call_id,))
        return _attempt(row) if row else None

    async def attempt_by_touch(self, touch_id: int) -> Attempt | None:
        row = await self.db.fetchone(
            "SELECT * FROM call_attempts WHERE touch_id = ? ORDER BY id DESC LIMIT 1", (touch_id,)
        )
        return _attempt(row) if row else None

    async def open_attempts(self, *, agent_id: int | None = None) -> list[Attempt]:
        """Attempts still dialing (or talking), whichever instance placed them; one agent's if given."""
        if agent_id is None:
            rows = await self.db.fetchall("SELECT * FROM call_attempts WHERE state = 'dialing' ORDER BY id")
        else:
            rows = await self.db.fetchall(
                "SELECT * FROM call_attempts WHERE state = 'dialing' AND agent_id = ? ORDER BY id",
                (agent_id,),
            )
        return [_attempt(r) for r in rows]

    async def set_call_id(self, attempt_id: int, call_id: str) -> None:
        async with self.db.transaction() as tx:
            await tx.execute("UPDATE call_attempts SET call_id = ? WHERE id = ?", (call_id, attempt_id))

    async def cancel_attempt(self, attempt_id: int, error: str, now: datetime) -> None:
        """The agent's leg failed, so the customer was never dialed: the attempt does not count."""
        stamp = to_db_time(now)
        async with self.db.transaction() as tx:
            async with tx.execute(
                "SELECT entry_id FROM call_attempts WHERE id = ? AND state = 'dialing'", (attempt_id,)
            ) as cur:
                row = await cur.fetchone()
            if row is None:
                return
            await tx.execute(
                "UPDATE call_attempts SET state = 'cancelled', error = ?, ended_at = ? WHERE id = ?",
                (error, stamp, attempt_id),
            )
            await tx.execute(
                "UPDATE call_list_entries SET attempts = max(attempts - 1, 0), state = 'pending', "
                "lease_owner = NULL, lease_until = NULL, next_at = ?, updated_at = ? "
                "WHERE id = ? AND state = 'in_progress'",
                (stamp, stamp, row[0]),
            )

    async def finish_attempt(
        self,
        attempt_id: int,
        outcome: str,
        *,
        now: datetime,
        touch_id: int | None = None,
        error: str | None = None,
    ) -> Attempt | None:
        """Close an attempt with how the call went and move its entry on (retry, done); None if the
        attempt was already final. A late result for an `unknown` attempt still settles it."""
        if outcome not in OUTCOMES:
            raise ValidationError("outcome", f"must be one of: {', '.join(OUTCOMES)}")
        async with self.db.transaction() as tx:
            changed = await self._finish_in(tx, attempt_id, outcome, now, touch_id, error)
        return await self.attempt(attempt_id) if changed else None

    async def _finish_in(
        self, tx: Any, attempt_id: int, outcome: str, now: datetime, touch_id: int | None, error: str | None
    ) -> bool:
        stamp = to_db_time(now)
        async with tx.execute(
            "SELECT a.*, e.state AS entry_state, e.attempts AS entry_attempts, e.no_contact, "
            "l.max_attempts, l.retry_minutes, l.busy_retry_minutes FROM call_attempts a "
            "JOIN call_list_entries e ON e.id = a.entry_id JOIN call_lists l ON l.id = a.list_id "
            "WHERE a.id = ?",
            (attempt_id,),
        ) as cur:
            a = await cur.fetchone()
        if a is None or a["state"] not in ("dialing", "unknown"):
            return False
        late = a["state"] == "unknown"
        await tx.execute(
            "UPDATE call_attempts SET state = ?, touch_id = COALESCE(?, touch_id), error = ?, "
            "ended_at = COALESCE(ended_at, ?) WHERE id = ?",
            (outcome, touch_id, error, stamp, attempt_id),
        )
        if late and outcome != "answered":
            return True  # the entry was moved on when the attempt became unknown
        if late and a["entry_state"] not in ("pending",):
            return True  # it was taken again (or finished) meanwhile; the attempt row is the record
        disposition = a["disposition"]
        if outcome == "answered" and disposition:
            await self._apply_disposition(tx, a["entry_id"], disposition, None, a["agent_id"], now)
            return True
        if outcome == "answered":
            await tx.execute(
                "UPDATE call_list_entries SET state = 'done', result = 'reached', lease_owner = NULL, "
                "lease_until = NULL, updated_at = ? WHERE id = ?",
                (stamp, a["entry_id"]),
            )
            return True
        await self._retry_or_close(tx, a, outcome, now)
        return True

    async def _retry_or_close(self, tx: Any, a: Any, outcome: str, now: datetime) -> None:
        stamp = to_db_time(now)
        no_contact = a["no_contact"] + (1 if outcome in ("busy", "noanswer", "unknown", "failed") else 0)
        if a["entry_attempts"] >= a["max_attempts"]:
            await tx.execute(
                "UPDATE call_list_entries SET state = 'done', result = ?, no_contact = ?, lease_owner = NULL,"
                " lease_until = NULL, updated_at = ? WHERE id = ?",
                ({"noanswer": "no answer"}.get(outcome, outcome), no_contact, stamp, a["entry_id"]),
            )
            await self._survey_unreachable_in(tx, a["entry_id"], a["agent_id"], now)
            return
        minutes = a["busy_retry_minutes"] if no_contact >= 2 else a["retry_minutes"]
        await tx.execute(
            "UPDATE call_list_entries SET state = 'pending', no_contact = ?, lease_owner = NULL, "
            "lease_until = NULL, next_at = ?, updated_at = ? WHERE id = ?",
            (no_contact, to_db_time(now + timedelta(minutes=minutes)), stamp, a["entry_id"]),
        )

    async def set_disposition(
        self,
        attempt_id: int,
        disposition: str,
        *,
        note: str = "",
        callback_at: datetime | None = None,
        agent_id: int | None = None,
        now: datetime,
    ) -> Attempt:
        """The agent's disposition closes the attempt's entry (or schedules the call back); given
        while the call is live, it is applied when the call ends."""
        async with self.db.transaction() as tx:
            async with tx.execute("SELECT * FROM call_attempts WHERE id = ?", (attempt_id,)) as cur:
                a = await cur.fetchone()
            if a is None:
                raise NotFound("call attempt", attempt_id)
            await tx.execute(
                "UPDATE call_attempts SET disposition = ?, note = ? WHERE id = ?",
                (disposition, note, attempt_id),
            )
            if a["state"] in ("answered", "busy", "noanswer", "failed", "unknown"):
                await self._apply_disposition(
                    tx, a["entry_id"], disposition, callback_at, agent_id or a["agent_id"], now
                )
            elif callback_at is not None:
                # the call is still live: keep the callback time for when it ends
                await tx.execute(
                    "UPDATE call_list_entries SET next_at = ? WHERE id = ?",
                    (to_db_time(callback_at), a["entry_id"]),
                )
        return await self.attempt(attempt_id)

    async def _apply_disposition(
        self,
        tx: Any,
        entry_id: int,
        disposition: str,
        callback_at: datetime | None,
        agent_id: int | None,
        now: datetime,
    ) -> None:
        stamp = to_db_time(now)
        async with tx.execute(
            "SELECT e.*, l.max_attempts, l.retry_minutes, l.busy_retry_minutes FROM call_list_entries e "
            "JOIN call_lists l ON l.id = e.list_id WHERE e.id = ?",
            (entry_id,),
        ) as cur:
            e = await cur.fetchone()
        if e is None or e["state"] == "skipped":
            return
        if disposition == "call back":
            when = to_db_time(callback_at) if callback_at else e["next_at"]
            await tx.execute(
                "UPDATE call_list_entries SET state = 'pending', result = 'call back', agent_id = ?, "
                "next_at = ?, lease_owner = NULL, lease_until = NULL, updated_at = ? WHERE id = ?",
                (agent_id, when, stamp, entry_id),
            )
            return
        if disposition in NOT_REACHED:
            if e["attempts"] < e["max_attempts"]:
                minutes = e["busy_retry_minutes"] if e["no_contact"] + 1 >= 2 else e["retry_minutes"]
                await tx.execute(
                    "UPDATE call_list_entries SET state = 'pending', result = ?, no_contact = no_contact + 1,"
                    " next_at = ?, lease_owner = NULL, lease_until = NULL, updated_at = ? WHERE id = ?",
                    (disposition, to_db_time(now + timedelta(minutes=minutes)), stamp, entry_id),
                )
                return
        await tx.execute(
            "UPDATE call_list_entries SET state = 'done', result = ?, lease_owner = NULL, lease_until = NULL,"
            " updated_at = ? WHERE id = ?",
            (disposition, stamp, entry_id),
        )
        if disposition in NOT_REACHED:
            await self._survey_unreachable_in(tx, entry_id, agent_id, now)
        if disposition == "do not call" and e["contact_id"] is not None:
            await tx.execute(
                "UPDATE call_list_entries SET state = 'skipped', reason = 'do not call', updated_at = ? "
                "WHERE contact_id = ? AND state = 'pending'",
                (stamp, e["contact_id"]),
            )

    async def _survey_unreachable_in(
        self, tx: Any, entry_id: int, agent_id: int | None, now: datetime
    ) -> None:
        """A list with a survey whose customer was not reached after the last attempt: recorded as
        unreachable (the response rate's denominator needs it), once per entry."""
        stamp = to_db_time(now)
        await tx.execute(
            "INSERT INTO survey_responses (survey_id, survey_version, source_key, contact_id, channel, status,"
            " list_id, agent_id, answered_at, created_at, updated_at)"
            " SELECT l.survey_id, s.current_version, 'unreachable:' || e.id, e.contact_id, 'call', 'unreachable',"
            " l.id, ?, ?, ?, ? FROM call_list_entries e JOIN call_lists l ON l.id = e.list_id"
            " JOIN surveys s ON s.id = l.survey_id WHERE e.id = ? AND e.contact_id IS NOT NULL"
            " AND NOT EXISTS (SELECT 1 FROM survey_responses r WHERE r.list_id = l.id"
            " AND r.contact_id = e.contact_id AND r.status = 'completed')"
            " ON CONFLICT DO NOTHING",
            (agent_id, stamp, stamp, stamp, entry_id),
        )

    async def expire_leases(self, now: datetime) -> list[Attempt]:
        """Return entries whose lease ran out to the queue. A `dialing` attempt of such an entry is
        settled from its call's touch when the call is over, else marked `unknown` (never redialed at
        once: the entry waits its retry delay). Returns the attempts it settled."""
        stamp = to_db_time(now)
        settled: list[int] = []
        # every dialer tick asks: look on the reader first, take the write lock only when needed
        if not await self.db.fetchall(
            "SELECT 1 FROM call_list_entries WHERE state = 'in_progress' AND lease_until < ? LIMIT 1",
            (stamp,),
        ):
            return []
        async with self.db.transaction() as tx:
            async with tx.execute(
                # instances sharing the store each settle other entries, never the same attempt twice
                "SELECT id FROM call_list_entries WHERE state = 'in_progress' AND lease_until < ?"
                f"{self.db.skip_locked()}",
                (stamp,),
            ) as cur:
                expired = [r[0] for r in await cur.fetchall()]
            for entry_id in expired:
                async with tx.execute(
                    "SELECT a.id, a.source, a.call_id, t.id AS touch_id, t.status, t.ended_at, t.payload "
                    "FROM call_attempts a LEFT JOIN touches t ON t.source_key = a.source || ':' || a.call_id "
                    "WHERE a.entry_id = ? AND a.state = 'dialing'",
                    (entry_id,),
                ) as cur:
                    open_attempts = await cur.fetchall()
                if not open_attempts:
                    await tx.execute(
                        "UPDATE call_list_entries SET state = 'pending', lease_owner = NULL, lease_until = NULL,"
                        " updated_at = ? WHERE id = ? AND state = 'in_progress'",
                        (stamp, entry_id),
                    )
                    continue
                for a in open_attempts:
                    outcome = "unknown"
                    if a["touch_id"] is not None and a["ended_at"] is not None:
                        outcome = outcome_of_touch(a["status"], json.loads(a["payload"]))
                    await self._finish_in(tx, a["id"], outcome, now, a["touch_id"], None)
                    settled.append(a["id"])
        return [await self.attempt(i) for i in settled]

    # -- results -------------------------------------------------------------------------------

    async def stats(self, list_id: int) -> dict[str, Any]:
        """Counts by entry state, attempts, connect rate, results by disposition, per agent."""
        counts = dict.fromkeys(ENTRY_STATES, 0)
        results: Counter[str] = Counter()
        skipped: Counter[str] = Counter()
        for state, result, reason, n in await self.db.fetchall(
            "SELECT state, result, reason, count(*) FROM call_list_entries WHERE list_id = ?"
            " GROUP BY state, result, reason",
            (list_id,),
        ):
            counts[state] += n
            if state in ("done", "skipped"):
                results[result or reason or state] += n
            if state == "skipped":
                skipped[reason] += n
        attempts: Counter[str] = Counter()
        dispositions: Counter[str] = Counter()
        for state, disposition, n in await self.db.fetchall(
            "SELECT state, disposition, count(*) FROM call_attempts WHERE list_id = ? GROUP BY state, disposition",
            (list_id,),
        ):
            attempts[state] += n
            if disposition is not None:
                dispositions[disposition] += n
        attempted = sum(v for k, v in attempts.items() if k not in ("cancelled", "dialing"))
        reached = attempts.get("answered", 0)
        agents = [
            {
                "user_id": r[0],
                "username": r[1],
                "attempts": r[2],
                "reached": r[3],
                "connect_rate": round(r[3] / r[2], 3) if r[2] else None,
                "dispositions": json.loads(r[4]) if r[4] else {},
            }
            for r in await self.db.fetchall(
                "SELECT a.agent_id, u.username, count(*), sum(a.state = 'answered'), "
                "(SELECT json_group_object(d, n) FROM (SELECT disposition AS d, count(*) AS n FROM call_attempts "
                " WHERE list_id = a.list_id AND agent_id IS a.agent_id AND disposition IS NOT NULL GROUP BY d)) "
                "FROM call_attempts a LEFT JOIN users u ON u.id = a.agent_id "
                "WHERE a.list_id = ? AND a.state NOT IN ('cancelled', 'dialing') GROUP BY a.agent_id, u.username, a.list_id",
                (list_id,),
            )
        ]
        total = sum(counts.values())
        with_disposition = sum(dispositions.values())
        return {
            "counts": counts,
            "total": total,
            "attempts": {"total": attempted, "in_flight": attempts.get("dialing", 0), **attempts},
            "reached": reached,
            "connect_rate": round(reached / attempted, 3) if attempted else None,
            "dispositions": dict(dispositions),
            "success_rate": {
                d: round(n / with_disposition, 3)
                for d, n in sorted(dispositions.items(), key=lambda x: -x[1])
            },
            "results": dict(results),
            "skipped": dict(skipped),
            "agents": agents,
        }

    async def entries(
        self, list_id: int, *, state: str | None = None, limit: int = 100, after_id: int = 0
    ) -> list[Entry]:
        if state is not None and state not in ENTRY_STATES:
            raise ValidationError("state", f"must be one of: {', '.join(ENTRY_STATES)}")
        rows = await self.db.fetchall(
            "SELECT * FROM call_list_entries WHERE list_id = ? AND (? IS NULL OR state = ?) AND id > ? "
            "ORDER BY id LIMIT ?",
            (list_id, state, state, after_id, limit),
        )
        return [_entry(r) for r in rows]

    async def attempts_of(self, *, list_id: int | None = None, entry_id: int | None = None) -> list[Attempt]:
        rows = await self.db.fetchall(
            "SELECT * FROM call_attempts WHERE (? IS NULL OR list_id = ?) AND (? IS NULL OR entry_id = ?) "
            "ORDER BY id",
            (list_id, list_id, entry_id, entry_id),
        )
        return [_attempt(r) for r in rows]

    async def pending_counts(self, list_ids: Sequence[int]) -> dict[int, int]:
        """Entries waiting to be called, per list."""
        if not list_ids:
            return {}
        marks = ",".join("?" * len(list_ids))
        rows = await self.db.fetchall(
            f"SELECT list_id, count(*) FROM call_list_entries WHERE state = 'pending' AND list_id IN ({marks}) "
            "GROUP BY list_id",
            list(list_ids),
        )
        return {lid: 0 for lid in list_ids} | {r[0]: r[1] for r in rows}

    async def callbacks_for(self, agent_id: int, until: datetime) -> list[dict[str, Any]]:
        """The agent's scheduled call-backs and the lists they come from (for My Day)."""
        rows = await self.db.fetchall(
            "SELECT e.*, l.name AS list_name, c.first_name, c.last_name FROM call_list_entries e "
            "JOIN call_lists l ON l.id = e.list_id LEFT JOIN contacts c ON c.id = e.contact_id "
            "WHERE e.agent_id = ? AND e.state = 'pending' AND e.next_at <= ? AND l.state IN ('running', 'paused')"
            " ORDER BY e.next_at LIMIT 50",
            (agent_id, to_db_time(until)),
        )
        return [
            _entry(r).to_dict()
            | {"list_name": r["list_name"], "name": f"{r['first_name'] or ''} {r['last_name'] or ''}".strip()}
            for r in rows
        ]


def outcome_of_touch(status: str, payload: dict[str, Any]) -> str:
    """How a finished call went, from its touch: answered, busy, noanswer or failed."""
    if status == "answered":
        return "answered"
    cause = payload.get("hangup_cause")
    if cause == 17:
        return "busy"
    if cause in (34, 38, 41, 42, 1, 3, 27, 28):
        return "failed"
    return "noanswer"
