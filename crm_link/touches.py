"""Touches (every call, SMS, email, note on a customer's history) and follow-ups."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from crm_link.db import Database, from_db_time, to_db_time
from crm_link.errors import NotFound, StoreError, ValidationError
from crm_link.followups import FOLLOWUP_SELECT, end_of_day, followup_of
from crm_link.models import (
    DIRECTIONS,
    TOUCH_KINDS,
    FollowUp,
    Page,
    Touch,
    check_limit,
    decode_cursor,
    encode_cursor,
)
from crm_link.reports import CallFigures, write_call_facts

log = logging.getLogger("crm_link.touches")

NextFollowup = datetime | Literal["none"] | None


@dataclass(slots=True)
class TouchInput:
    """One touch to record; `source_key` makes recording it again an update, never a second row."""

    source_key: str
    kind: str
    direction: str
    started_at: datetime
    contact_id: int | None = None
    user_id: int | None = None
    channel: str = ""
    status: str = ""
    number: str | None = None
    ended_at: datetime | None = None
    duration_s: float | None = None
    summary: str = ""
    payload: dict[str, Any] = field(default_factory=dict)
    # close the follow-up this touch served: `followup_id`, else the contact's soonest one due today
    # that is this user's (or nobody's); its result is `followup_result` (else the touch's status)
    close_followups: bool = False
    followup_id: int | None = None
    followup_result: str = ""
    next_followup: NextFollowup = None
    followup_note: str = ""
    followup_kind: str = "followup"
    followup_assignee_id: int | None = None
    call: CallFigures | None = None  # a finished call's report figures (written with its end)

    def check(self) -> None:
        if not self.source_key or len(self.source_key) > 200:
            raise ValidationError("source_key", "must be 1-200 characters")
        if self.kind not in TOUCH_KINDS:
            raise ValidationError("kind", f"must be one of {', '.join(TOUCH_KINDS)}")
        if self.direction not in DIRECTIONS:
            raise ValidationError("direction", f"must be one of {', '.join(DIRECTIONS)}")
        if self.started_at.tzinfo is None:
            raise ValidationError("started_at", "must carry a time zone")
        if len(self.summary) > 10_000:
            raise ValidationError("summary", "is longer than 10,000 characters")
        if self.call is not None:
            self.call.check()


_TOUCH_SELECT = "SELECT t.*, u.username FROM touches t LEFT JOIN users u ON u.id = t.user_id"
_UPSERT = (
    "INSERT INTO touches (source_key, contact_id, user_id, kind, direction, channel, status, number,"
    " started_at, ended_at, duration_s, summary, payload, created_at, updated_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (source_key) DO UPDATE SET"
    " contact_id = COALESCE(excluded.contact_id, contact_id), user_id = COALESCE(excluded.user_id, user_id),"
    " status = CASE WHEN excluded.status != '' THEN excluded.status ELSE status END,"
    " number = COALESCE(excluded.number, number), ended_at = COALESCE(excluded.ended_at, ended_at),"
    " duration_s = COALESCE(excluded.duration_s, duration_s),"
    " summary = CASE WHEN excluded.summary != '' THEN excluded.summary ELSE summary END,"
    " payload = json_patch(payload, excluded.payload), updated_at = excluded.updated_at"
)
_FOLLOWUP_SELECT = FOLLOWUP_SELECT


def _touch(r: Any, created: bool = False) -> Touch:
    return Touch(
        id=r["id"],
        source_key=r["source_key"],
        contact_id=r["contact_id"],
        user_id=r["user_id"],
        username=r["username"],
        kind=r["kind"],
        direction=r["direction"],
        channel=r["channel"],
        status=r["status"],
        number=r["number"],
        started_at=from_db_time(r["started_at"]),  # type: ignore[arg-type]
        ended_at=from_db_time(r["ended_at"]),
        duration_s=r["duration_s"],
        summary=r["summary"],
        payload=json.loads(r["payload"]),
        created=created,
    )


_followup = followup_of


class Touches:
    """The history of every contact, written exactly once per source event."""

    def __init__(self, db: Database, default_time_zone: str) -> None:
        self._db = db
        self.default_time_zone = default_time_zone
        self._queue: asyncio.Queue[tuple[TouchInput, asyncio.Future[Touch]]] | None = None
        self._flusher: asyncio.Task[None] | None = None
        self.max_batch = 500
        self.unowned_pool: str | None = None  # where follow-ups of customers nobody owns go
        # told of each follow-up add_followup makes (a missed call, an SMS reply): the app puts it live
        # on its assignee's My Day
        self.on_followup: Callable[[FollowUp], Awaitable[object]] | None = None

    # group commit ---------------------------------------------------------------------------

    async def start_batching(self) -> None:
        """Record concurrent touches in shared transactions (group commit) from now on."""
        self._queue = asyncio.Queue()
        self._flusher = asyncio.create_task(self._flush_loop(), name="touch-group-commit")

    async def stop_batching(self) -> None:
        """Finish what is queued, then go back to one transaction per call."""
        queue, task = self._queue, self._flusher
        if queue is None or task is None:
            return
        await queue.join()
        self._queue = None
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        self._flusher = None

    async def _flush_loop(self) -> None:
        assert self._queue is not None
        queue = self._queue
        while True:
            batch = [await queue.get()]
            while len(batch) < self.max_batch and not queue.empty():
                batch.append(queue.get_nowait())
            try:
                results = await self._record_batch([item for item, _ in batch])
                for (_, fut), touch in zip(batch, results, strict=True):
                    if not fut.done():
                        fut.set_result(touch)
            except Exception:
                # one bad touch must not sink its neighbours: retry each on its own
                for item, fut in batch:
                    try:
                        (touch,) = await self._record_batch([item])
                    except Exception as exc:
                        if not fut.done():
                            fut.set_exception(exc)
                    else:
                        if not fut.done():
                            fut.set_result(touch)
            finally:
                for _ in batch:
                    queue.task_done()

    # writes ---------------------------------------------------------------------------------

    async def record(self, item: TouchInput) -> Touch:
        """Insert or update the touch for `item.source_key`; returns once it is committed."""
        item.check()
        if self._queue is not None:
            fut: asyncio.Future[Touch] = asyncio.get_running_loop().create_future()
            await self._queue.put((item, fut))
            return await fut
        (touch,) = await self._record_batch([item])
        return touch

    async def record_many(self, items: Sequence[TouchInput]) -> list[Touch]:
        """Record several touches in one transaction (all or none)."""
        for item in items:
            item.check()
        return await self._record_batch(list(items))

    async def _record_batch(self, items: list[TouchInput]) -> list[Touch]:
        async with self._db.transaction() as tx:
            return await self.record_many_in(tx, items)

    async def record_with_followup(
        self, item: TouchInput, due_at: datetime, *, kind: str, note: str
    ) -> tuple[Touch, FollowUp | None]:
        """Record a touch of a known contact together with the follow-up it asks for (a missed
        call's call-back on the owner's day): one transaction, so no reader, crash or CRM subscriber
        sees the missed call without its follow-up. Recording the same touch again makes no second
        follow-up (None)."""
        item.check()
        if item.contact_id is None:
            raise ValidationError("contact_id", "a follow-up needs the touch's contact")
        async with self._db.transaction() as tx:
            touch = await self.record_in(tx, item)
            followup_id = await self.add_followup_in(
                tx, item.contact_id, due_at, kind=kind, note=note, created_by_touch_id=touch.id
            )
        return touch, await self.followup_made(followup_id)

    async def record_in(self, tx: Any, item: TouchInput) -> Touch:
        """Record one touch inside an open transaction."""
        (touch,) = await self.record_many_in(tx, [item])
        return touch

    async def record_many_in(self, tx: Any, items: list[TouchInput]) -> list[Touch]:
        """Upsert touches inside an open transaction with a handful of statements for the whole batch.

        The first write of a source key creates the row (and its follow-ups); later writes of the
        same key fill in what they know (status, end, duration, summary, payload merged), never a
        second row.
        """
        return await self._upsert_many_in(tx, items, read_back=True)

    async def write_many_in(self, tx: Any, items: list[TouchInput]) -> None:
        """`record_many_in` for a caller that does not need the touches back (a mail merge settling
        a window): rows are read back only where a follow-up or a call's facts need them."""
        await self._upsert_many_in(tx, items, read_back=False)

    async def _upsert_many_in(self, tx: Any, items: list[TouchInput], *, read_back: bool) -> list[Touch]:
        if not items:
            return []

        def makes_followups(i: TouchInput) -> bool:
            return i.contact_id is not None and bool(i.close_followups or i.next_followup)

        keys = list(dict.fromkeys(i.source_key for i in items))
        # whether a key is new matters to its follow-ups (made once) and to the touches returned
        new_matters = (
            keys if read_back else list(dict.fromkeys(i.source_key for i in items if makes_followups(i)))
        )
        existing: set[str] = set()
        for start in range(0, len(new_matters), 500):
            chunk = new_matters[start : start + 500]
            async with tx.execute(
                f"SELECT source_key FROM touches WHERE source_key IN ({','.join('?' * len(chunk))})", chunk
            ) as cur:
                existing.update(r[0] for r in await cur.fetchall())
        now = to_db_time(self._db.now())
        await tx.executemany(
            _UPSERT,
            [
                (
                    i.source_key,
                    i.contact_id,
                    i.user_id,
                    i.kind,
                    i.direction,
                    i.channel,
                    i.status,
                    i.number,
                    to_db_time(i.started_at),
                    to_db_time(i.ended_at) if i.ended_at else None,
                    i.duration_s,
                    i.summary,
                    json.dumps(i.payload),
                    now,
                    now,
                )
                for i in items
            ],
        )
        wanted = (
            keys
            if read_back
            else list(dict.fromkeys(i.source_key for i in items if makes_followups(i) or i.call is not None))
        )
        rows: dict[str, Any] = {}
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            async with tx.execute(
                _TOUCH_SELECT + f" WHERE t.source_key IN ({','.join('?' * len(chunk))})", chunk
            ) as cur:
                rows.update((r["source_key"], r) for r in await cur.fetchall())
        out: list[Touch] = []
        seen: set[str] = set()
        for item in items:
            created = item.source_key not in existing and item.source_key not in seen
            seen.add(item.source_key)
            if created and makes_followups(item):
                await self._followups_for(tx, rows[item.source_key]["id"], item)
            if read_back:
                out.append(_touch(rows[item.source_key], created))
        facts = [(rows[i.source_key], i.call) for i in items if i.call is not None]
        if facts:
            await write_call_facts(tx, facts, self.default_time_zone)
        return out

    async def _followups_for(self, tx: Any, touch_id: int, item: TouchInput) -> None:
        now = self._db.now()
        if item.close_followups:
            # only the follow-up this touch served: the one named, else the soonest one due today
            # that is this user's or nobody's (never another rep's, never a later one)
            if item.followup_id is not None:
                target = "id = ? AND contact_id = ?"
                params: list[Any] = [item.followup_id, item.contact_id]
            else:
                target = (
                    "id = (SELECT id FROM followups WHERE contact_id = ? AND status = 'open' AND due_at < ?"
                    " AND (assignee_id = ? OR (assignee_id IS NULL AND pool IS NULL)) ORDER BY due_at, id LIMIT 1)"
                )
                horizon = end_of_day(now, self.default_time_zone)
                params = [item.contact_id, to_db_time(horizon), item.user_id]
            await tx.execute(
                "UPDATE followups SET status = 'done', result = ?, closed_by_touch_id = ?, closed_by_user_id = ?,"
                f" closed_at = ?, updated_at = ? WHERE status = 'open' AND {target}",
                [
                    item.followup_result or item.status or item.kind,
                    touch_id,
                    item.user_id,
                    to_db_time(now),
                    to_db_time(now),
                    *params,
                ],
            )
        nxt = item.next_followup
        if isinstance(nxt, datetime):
            assignee = item.followup_assignee_id
            if assignee is None:
                async with tx.execute(
                    "SELECT COALESCE(?, owner_id) FROM contacts WHERE id = ?", (item.user_id, item.contact_id)
                ) as cur:
                    assignee = (await cur.fetchone())[0]
            await tx.execute(
                "INSERT INTO followups (contact_id, assignee_id, kind, due_at, note, created_by_touch_id, created_at,"
                " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (
                    item.contact_id,
                    assignee,
                    item.followup_kind,
                    to_db_time(nxt),
                    item.followup_note,
                    touch_id,
                    to_db_time(now),
                    to_db_time(now),
                ),
            )

    async def set_note(self, touch_id: int, note: str, *, disposition: str | None = None) -> Touch:
        """Put a rep's note (and disposition) on a touch, e.g. the call they just had."""
        patch = {"disposition": disposition} if disposition else {}
        async with self._db.transaction() as tx:
            async with tx.execute(
                "UPDATE touches SET summary = ?, payload = json_patch(payload, ?), updated_at = ? WHERE id = ?",
                (note, json.dumps(patch), to_db_time(self._db.now()), touch_id),
            ) as cur:
                if cur.rowcount == 0:
                    raise NotFound("touch", touch_id)
        return await self.get(touch_id)

    # reads ----------------------------------------------------------------------------------

    async def get(self, touch_id: int) -> Touch:
        row = await self._db.fetchone(_TOUCH_SELECT + " WHERE t.id = ?", (touch_id,))
        if row is None:
            raise NotFound("touch", touch_id)
        return _touch(row)

    async def by_source_key(self, source_key: str) -> Touch | None:
        row = await self._db.fetchone(_TOUCH_SELECT + " WHERE t.source_key = ?", (source_key,))
        return _touch(row) if row else None

    async def call_ended_since(self, user_id: int, contact_id: int, since: datetime) -> Touch | None:
        """The latest call this user took with this contact that ended at or after `since`."""
        row = await self._db.fetchone(
            _TOUCH_SELECT + " WHERE t.user_id = ? AND t.contact_id = ? AND t.kind = 'call'"
            " AND t.ended_at >= ? ORDER BY t.ended_at DESC LIMIT 1",
            (user_id, contact_id, to_db_time(since)),
        )
        return _touch(row) if row else None

    async def open_calls(self, channel: str, *, started_before: datetime | None = None) -> list[Touch]:
        """Call touches of a source that never got their end (still ringing or answered), oldest
        first; only those started before `started_before` when given."""
        sql = _TOUCH_SELECT + " WHERE t.kind = 'call' AND t.channel = ? AND t.ended_at IS NULL"
        params: tuple[Any, ...] = (channel,)
        if started_before is not None:
            sql += " AND t.started_at < ?"
            params += (to_db_time(started_before),)
        return [_touch(r) for r in await self._db.fetchall(sql + " ORDER BY t.started_at, t.id", params)]

    async def history(self, contact_id: int, *, limit: int | None = None, cursor: str | None = None) -> Page:
        """A contact's touches, newest first."""
        limit = check_limit(limit)
        where, params = "t.contact_id = ?", [contact_id]
        if cursor:
            started, last_id = decode_cursor(cursor, str, int)
            where += " AND (t.started_at < ? OR (t.started_at = ? AND t.id < ?))"
            params += [started, started, last_id]
        rows = await self._db.fetchall(
            _TOUCH_SELECT + f" WHERE {where} ORDER BY t.started_at DESC, t.id DESC LIMIT ?",
            [*params, limit + 1],
        )
        items = [_touch(r) for r in rows[:limit]]
        nxt = encode_cursor(rows[limit - 1]["started_at"], items[-1].id) if len(rows) > limit else None
        return Page(items, nxt)

    async def of_contacts(self, contact_ids: Sequence[int]) -> list[Touch]:
        """Every touch of these contacts, by contact, oldest first (for an export)."""
        if not contact_ids:
            return []
        marks = ",".join("?" * len(contact_ids))
        rows = await self._db.fetchall(
            _TOUCH_SELECT + f" WHERE t.contact_id IN ({marks}) ORDER BY t.contact_id, t.started_at, t.id",
            list(contact_ids),
        )
        return [_touch(r) for r in rows]

    async def count(self) -> int:
        row = await self._db.fetchone("SELECT count(*) FROM touches")
        return int(row[0]) if row else 0

    # follow-ups -----------------------------------------------------------------------------

    async def add_followup(
        self,
        contact_id: int,
        due_at: datetime,
        *,
        kind: str = "followup",
        note: str = "",
        assignee_id: int | None = None,
        created_by_touch_id: int | None = None,
        pool: str | None = None,
    ) -> FollowUp | None:
        """A follow-up (assigned to the contact's owner unless said, else to `pool`, else to the
        unowned pool); None if this touch already made one of this kind."""
        async with self._db.transaction() as tx:
            made = await self.add_followup_in(
                tx,
                contact_id,
                due_at,
                kind=kind,
                note=note,
                assignee_id=assignee_id,
                created_by_touch_id=created_by_touch_id,
                pool=pool,
            )
        return await self.followup_made(made)

    async def add_followup_in(
        self,
        tx: Any,
        contact_id: int,
        due_at: datetime,
        *,
        kind: str = "followup",
        note: str = "",
        assignee_id: int | None = None,
        created_by_touch_id: int | None = None,
        pool: str | None = None,
    ) -> int | None:
        """`add_followup` inside an open transaction: the new follow-up's id, None if this touch
        already made one of this kind. Hand the id to `followup_made` once committed."""
        if due_at.tzinfo is None:
            raise ValidationError("due_at", "must carry a time zone")
        async with tx.execute(
            "INSERT INTO followups (contact_id, assignee_id, pool, kind, due_at, note, created_by_touch_id,"
            " created_at) SELECT id, COALESCE(?, owner_id), CASE WHEN COALESCE(?, owner_id) IS NULL THEN COALESCE(?, ?) END,"
            " ?, ?, ?, ?, ? FROM contacts WHERE id = ? ON CONFLICT DO NOTHING RETURNING id",
            (
                assignee_id,
                assignee_id,
                pool,
                self.unowned_pool,
                kind,
                to_db_time(due_at),
                note,
                created_by_touch_id,
                to_db_time(self._db.now()),
                contact_id,
            ),
        ) as cur:
            row = await cur.fetchone()
        return None if row is None else int(row[0])

    async def followup_made(self, followup_id: int | None) -> FollowUp | None:
        """A committed follow-up from `add_followup_in`, told to `on_followup` (None stays None)."""
        if followup_id is None:
            return None
        made = await self.followup(followup_id)
        if self.on_followup is not None:
            await self.on_followup(made)
        return made

    async def followup(self, followup_id: int) -> FollowUp:
        row = await self._db.fetchone(_FOLLOWUP_SELECT + " WHERE f.id = ?", (followup_id,))
        if row is None:
            raise NotFound("follow-up", followup_id)
        return _followup(row)

    async def open_followups(self, contact_id: int) -> list[FollowUp]:
        rows = await self._db.fetchall(
            _FOLLOWUP_SELECT + " WHERE f.contact_id = ? AND f.status = 'open' ORDER BY f.due_at",
            (contact_id,),
        )
        return [_followup(r) for r in rows]

    async def due_for(self, user_id: int, until: datetime) -> list[FollowUp]:
        """Open follow-ups assigned to a user and due before `until` (overdue included), soonest first."""
        rows = await self._db.fetchall(
            _FOLLOWUP_SELECT + " WHERE f.assignee_id = ? AND f.status = 'open' AND f.due_at < ?"
            " ORDER BY f.due_at LIMIT 500",
            (user_id, to_db_time(until)),
        )
        return [_followup(r) for r in rows]

    async def close_followup(self, followup_id: int, status: str = "done") -> None:
        if status not in ("done", "cancelled"):
            raise ValidationError("status", "must be done or cancelled")
        async with self._db.transaction() as tx:
            await tx.execute(
                "UPDATE followups SET status = ?, closed_at = ? WHERE id = ? AND status = 'open'",
                (status, to_db_time(self._db.now()), followup_id),
            )


class Audit:
    """Who did what, when: plays, exports, logins, admin changes."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def write(
        self,
        action: str,
        *,
        user_id: int | None,
        object_type: str = "",
        object_id: object = "",
        **detail: Any,
    ) -> None:
        async with self._db.transaction() as tx:
            await self.write_in(
                tx, action, user_id=user_id, object_type=object_type, object_id=object_id, **detail
            )

    async def write_in(
        self,
        tx: Any,
        action: str,
        *,
        user_id: int | None,
        object_type: str = "",
        object_id: object = "",
        **detail: Any,
    ) -> None:
        """`write` inside an open transaction (the audit line commits with the change it records)."""
        await tx.execute(
            "INSERT INTO audit_log (at, user_id, action, object_type, object_id, detail) VALUES (?, ?, ?, ?, ?, ?)",
            (
                to_db_time(self._db.now()),
                user_id,
                action,
                object_type,
                str(object_id),
                json.dumps(detail, default=str),
            ),
        )

    async def recent(self, limit: int = 100, action: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT a.*, u.username FROM audit_log a LEFT JOIN users u ON u.id = a.user_id"
        params: list[Any] = []
        if action:
            sql += " WHERE a.action = ?"
            params.append(action)
        rows = await self._db.fetchall(sql + " ORDER BY a.id DESC LIMIT ?", [*params, limit])
        return [
            {
                "at": r["at"],
                "user": r["username"],
                "user_id": r["user_id"],
                "action": r["action"],
                "object_type": r["object_type"],
                "object_id": r["object_id"],
                "detail": json.loads(r["detail"]),
            }
            for r in rows
        ]


__all__ = ["Audit", "StoreError", "TouchInput", "Touches"]
