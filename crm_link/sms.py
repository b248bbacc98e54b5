"""SMS blasts and the outbox: every outbound SMS is a row whose state only moves forward."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from crm_link.db import Database, from_db_time, one_row, to_db_time
from crm_link.errors import NotFound, ValidationError
from crm_link.leases import DEFAULT_LEASE, in_doubt, renew, split_lapsed
from crm_link.touches import Touches, TouchInput

OUTBOX_STATES = ("queued", "sending", "sent", "delivered", "failed", "skipped", "unknown")
BLAST_STATES = ("scheduled", "running", "paused", "cancelled", "done")
# a delivery report may only move a message forward along these
_FORWARD = {
    "sending": {"sent", "delivered", "failed"},
    "unknown": {"sent", "delivered", "failed"},
    "sent": {"delivered", "failed"},
    "failed": {"delivered"},  # an "undelivered" later contradicted by a real delivery
}


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """A message to queue: who, what, when at the earliest, or skipped with a reason."""

    to_e164: str
    text: str
    channel: str
    not_before: datetime
    contact_id: int | None = None
    user_id: int | None = None
    survey_id: int | None = None  # a survey the customer's reply answers (followups/sms_reply.py)
    encoding: str = "gsm7"
    segments: int = 1
    state: str = "queued"
    reason: str | None = None
    dedupe_key: str | None = None
    time_zone: str | None = None
    followup_id: int | None = None  # the follow-up this text serves: closed once it is sent


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    id: int
    blast_id: int | None
    contact_id: int | None
    user_id: int | None
    to_e164: str
    text: str
    encoding: str
    segments: int
    channel: str
    state: str
    reason: str | None
    provider_id: str | None
    attempts: int
    not_before: datetime
    time_zone: str | None
    followup_id: int | None = None


@dataclass(frozen=True, slots=True)
class ReportUpdate:
    """A delivery report as the store applies it: our message id or the provider's, and a status."""

    channel: str
    message_id: int | None
    provider_id: str | None
    status: str  # sent | delivered | failed | undelivered (anything else is ignored)
    error_code: str | None = None
    error_text: str | None = None


def _msg(r: Any) -> OutboxMessage:
    return OutboxMessage(
        id=r["id"],
        blast_id=r["blast_id"],
        contact_id=r["contact_id"],
        user_id=r["user_id"],
        to_e164=r["to_e164"],
        text=r["text"],
        encoding=r["encoding"],
        segments=r["segments"],
        channel=r["channel"],
        state=r["state"],
        reason=r["reason"],
        provider_id=r["provider_id"],
        attempts=r["attempts"],
        not_before=from_db_time(r["not_before"]),  # type: ignore[arg-type]
        time_zone=r["time_zone"],
        followup_id=r["followup_id"],
    )


def _blast(r: Any) -> dict[str, Any]:
    return {
        "id": r["id"],
        "name": r["name"],
        "text": r["text"],
        "channel": r["channel"],
        "audience": json.loads(r["audience"]),
        "state": r["state"],
        "send_at": r["send_at"],
        "cron": r["cron"],
        "time_zone": r["time_zone"],
        "next_run_at": r["next_run_at"],
        "runs": r["runs"],
        "materialized_runs": r["materialized_runs"],
        "rate_per_second": r["rate_per_second"],
        "pause_reason": r["pause_reason"],
        "created_by": r["created_by"],
        "survey_id": r["survey_id"],
        "created_at": r["created_at"],
        "started_at": r["started_at"],
        "finished_at": r["finished_at"],
    }


def _sms_touch(msg: OutboxMessage, status: str, at: datetime, provider_id: str | None) -> TouchInput:
    return TouchInput(
        source_key=f"sms:{msg.id}",
        kind="sms",
        direction="outbound",
        started_at=at,
        contact_id=msg.contact_id,
        user_id=msg.user_id,
        channel=msg.channel,
        status=status,
        number=msg.to_e164,
        summary=msg.text[:500],
        payload={"blast_id": msg.blast_id, "segments": msg.segments, "provider_id": provider_id}
        | ({"followup_id": msg.followup_id} if msg.followup_id is not None else {}),
        # a text sent for a follow-up (a cadence step, a rep's text from My Day) closes it once sent
        close_followups=msg.followup_id is not None and status == "sent",
        followup_id=msg.followup_id,
        followup_result="sms sent",
    )


class SmsStore:
    """Blasts, outbox rows and their transitions (touches written in the same transaction)."""

    def __init__(self, db: Database, touches: Touches) -> None:
        self._db = db
        self._touches = touches

    # blasts ---------------------------------------------------------------------------------

    async def create_blast(
        self,
        *,
        name: str,
        text: str,
        channel: str,
        audience: dict[str, Any],
        created_by: int | None,
        send_at: datetime | None,
        cron: str | None,
        time_zone: str,
        rate_per_second: float | None,
        next_run_at: datetime | None,
        claim_lease: timedelta | None = None,
        survey_id: int | None = None,
    ) -> int:
        """Store a blast. With `claim_lease` its first run is claimed by the caller at birth (run 1,
        nothing due for a scheduler), to be materialized before the lease ends."""
        now = to_db_time(self._db.now())
        claimed = claim_lease is not None
        async with self._db.transaction() as tx:
            async with tx.execute(
                "INSERT INTO sms_blasts (name, text, channel, audience, state, send_at, cron, time_zone, next_run_at,"
                " rate_per_second, created_by, created_at, runs, claim_expires_at, survey_id)"
                " VALUES (?, ?, ?, ?, 'scheduled', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " RETURNING id",
                (
                    name,
                    text,
                    channel,
                    json.dumps(audience),
                    to_db_time(send_at) if send_at else None,
                    cron,
                    time_zone,
                    to_db_time(next_run_at) if next_run_at else None,
                    rate_per_second,
                    created_by,
                    now,
                    1 if claimed else 0,
                    to_db_time(self._db.now() + claim_lease) if claim_lease is not None else None,
                    survey_id,
                ),
            ) as cur:
                return int((await one_row(cur))[0])

    async def blast(self, blast_id: int) -> dict[str, Any]:
        row = await self._db.fetchone("SELECT * FROM sms_blasts WHERE id = ?", (blast_id,))
        if row is None:
            raise NotFound("blast", blast_id)
        return _blast(row)

    async def blasts(self, limit: int = 100) -> list[dict[str, Any]]:
        rows = await self._db.fetchall("SELECT * FROM sms_blasts ORDER BY id DESC LIMIT ?", (limit,))
        return [_blast(r) for r in rows]

    async def due_blasts(self, now: datetime) -> list[dict[str, Any]]:
        """Blasts with work for a scheduler: a run that is due, or a claimed run whose claimant
        stopped before materializing it (its lease ran out)."""
        at = to_db_time(now)
        rows = await self._db.fetchall(
            "SELECT * FROM sms_blasts WHERE state IN ('scheduled', 'running') AND ("
            " (materialized_runs = runs AND next_run_at IS NOT NULL AND next_run_at <= ?)"
            " OR (materialized_runs < runs AND claim_expires_at <= ?)) ORDER BY next_run_at",
            (at, at),
        )
        return [_blast(r) for r in rows]

    async def claim_run(
        self, blast: dict[str, Any], *, next_run_at: datetime | None, lease: timedelta
    ) -> int | None:
        """Claim the blast's due run exactly once, before anything is materialized; its run number.

        A compare-and-set on the blast as `blast` was read: a due run is claimed only while nobody
        else has claimed it (next_run_at unchanged, every earlier run materialized) and moves the
        blast to its next run; a run whose claim expired unmaterialized is taken over under a new
        lease, keeping its number. None when another scheduler (or the creator) got there first.
        """
        now = self._db.now()
        expires = to_db_time(now + lease)
        if blast["materialized_runs"] < blast["runs"]:
            rows = await self._db.write_returning(
                "UPDATE sms_blasts SET claim_expires_at = ? WHERE id = ? AND runs = ? AND materialized_runs < runs"
                " AND claim_expires_at <= ? AND state IN ('scheduled', 'running') RETURNING runs",
                (expires, blast["id"], blast["runs"], to_db_time(now)),
            )
        else:
            rows = await self._db.write_returning(
                "UPDATE sms_blasts SET runs = runs + 1, next_run_at = ?, claim_expires_at = ?"
                " WHERE id = ? AND runs = ? AND materialized_runs = runs AND next_run_at = ?"
                " AND state IN ('scheduled', 'running') RETURNING runs",
                (
                    to_db_time(next_run_at) if next_run_at else None,
                    expires,
                    blast["id"],
                    blast["runs"],
                    blast["next_run_at"],
                ),
            )
        return int(rows[0][0]) if rows else None

    async def materialize(self, blast_id: int, run: int, rows: Sequence[OutboxRow]) -> tuple[int, int]:
        """Write the outbox rows of a claimed run (see `claim_run`) and mark the blast running, atomically.

        Returns (queued, skipped); (0, 0) when this run was already materialized (a claimant whose lease
        ran out) or the blast was cancelled meanwhile. A recipient is in a run at most once.
        """
        now = to_db_time(self._db.now())
        async with self._db.transaction() as tx:
            if not await self._run_open(tx, blast_id, run):
                return 0, 0
            await self._insert_rows(tx, blast_id, run, rows, now)
            await self._mark_materialized(tx, blast_id, run, now)
        queued = sum(r.state == "queued" for r in rows)
        return queued, len(rows) - queued

    async def materialize_page(
        self, blast_id: int, run: int, rows: Sequence[OutboxRow], *, lease: timedelta | None = None
    ) -> bool:
        """Write one page of a claimed run's outbox rows (a run too big for one transaction), and
        renew the claim's lease by `lease`. The run stays unmaterialized — a one-off blast's rows
        wait, not due to any channel, until `finish_run` — so a claimant that dies part-way leaves the
        run to be taken over when its lease ends; the rewrite skips the numbers already written
        (one row per number in a run). False, writing nothing, when the run is no longer open
        (materialized by another claimant, or the blast cancelled: then marked as materialized)."""
        now = to_db_time(self._db.now())
        async with self._db.transaction() as tx:
            if not await self._run_open(tx, blast_id, run):
                return False
            await self._insert_rows(tx, blast_id, run, rows, now)
            if lease is not None:
                await tx.execute(
                    "UPDATE sms_blasts SET claim_expires_at = ? WHERE id = ? AND materialized_runs < ?",
                    (to_db_time(self._db.now() + lease), blast_id, run),
                )
        return True

    async def finish_run(self, blast_id: int, run: int) -> tuple[int, int] | None:
        """Mark a run written page by page as materialized and the blast running; the run's rows
        (not skipped, skipped), or None when the run was no longer open (see `materialize_page`)."""
        now = to_db_time(self._db.now())
        async with self._db.transaction() as tx:
            if not await self._run_open(tx, blast_id, run):
                return None
            await self._mark_materialized(tx, blast_id, run, now)
        rows = await self._db.fetchall(
            "SELECT state = 'skipped' AS skipped, count(*) AS n FROM sms_outbox WHERE blast_id = ? AND run = ?"
            " GROUP BY state = 'skipped'",
            (blast_id, run),
        )
        counts = {bool(r["skipped"]): int(r["n"]) for r in rows}
        return counts.get(False, 0), counts.get(True, 0)

    async def drop_run(self, blast_id: int, run: int, *, cancel_reason: str | None = None) -> bool:
        """Undo an unfinished run of a blast that failed validation, in one transaction: every row
        written for the run is deleted, and the blast with it — or, with `cancel_reason`, the blast
        is kept, cancelled with that reason, the run marked written (nothing to write, nothing
        due). False, changing nothing, once the run is materialized (its rows may be due)."""
        now = to_db_time(self._db.now())
        async with self._db.transaction() as tx:
            if cancel_reason is None:
                sql = (
                    "DELETE FROM sms_blasts WHERE id = ? AND materialized_runs < ? AND runs >= ? RETURNING id"
                )
                params: tuple[Any, ...] = (blast_id, run, run)
            else:
                sql = (
                    "UPDATE sms_blasts SET state = 'cancelled', pause_reason = ?, finished_at = ?,"
                    " materialized_runs = ?, claim_expires_at = NULL"
                    " WHERE id = ? AND materialized_runs < ? AND runs >= ? RETURNING id"
                )
                params = (cancel_reason, now, run, blast_id, run, run)
            async with tx.execute(sql, params) as cur:
                if await cur.fetchone() is None:
                    return False
            await tx.execute("DELETE FROM sms_outbox WHERE blast_id = ? AND run = ?", (blast_id, run))
        return True

    async def _run_open(self, tx: Any, blast_id: int, run: int) -> bool:
        """Whether run `run` is claimed and not yet materialized; a cancelled or finished blast's run
        is marked materialized (nothing to write) and is not open, nor is a blast deleted because it
        failed validation (see `drop_run`)."""
        async with tx.execute(
            "SELECT state, runs, materialized_runs FROM sms_blasts WHERE id = ?", (blast_id,)
        ) as cur:
            row = await cur.fetchone()
        if row is None:
            return False
        if not row["materialized_runs"] < run <= row["runs"]:
            return False
        if row["state"] in ("cancelled", "done"):
            await tx.execute(
                "UPDATE sms_blasts SET materialized_runs = ?, claim_expires_at = NULL WHERE id = ?",
                (run, blast_id),
            )
            return False
        return True

    async def _insert_rows(
        self, tx: Any, blast_id: int, run: int, rows: Sequence[OutboxRow], now: str
    ) -> None:
        await tx.executemany(
            "INSERT INTO sms_outbox (blast_id, run, contact_id, user_id, to_e164, time_zone, text, encoding, segments,"
            " channel, state, reason, not_before, created_at, updated_at, final_at, survey_id)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (  # a generator, read on the database's thread: no second copy of the rows
                (
                    blast_id,
                    run,
                    r.contact_id,
                    r.user_id,
                    r.to_e164,
                    r.time_zone,
                    r.text,
                    r.encoding,
                    r.segments,
                    r.channel,
                    r.state,
                    r.reason,
                    to_db_time(r.not_before),
                    now,
                    now,
                    now if r.state == "skipped" else None,
                    r.survey_id,
                )
                for r in rows
            ),
        )

    async def _mark_materialized(self, tx: Any, blast_id: int, run: int, now: str) -> None:
        await tx.execute(
            "UPDATE sms_blasts SET state = CASE WHEN state = 'paused' THEN 'paused' ELSE 'running' END,"
            " materialized_runs = ?, claim_expires_at = NULL, started_at = COALESCE(started_at, ?)"
            " WHERE id = ?",
            (run, now, blast_id),
        )

    async def set_blast_state(self, blast_id: int, state: str, *, reason: str | None = None) -> None:
        if state not in BLAST_STATES:
            raise ValidationError("state", f"must be one of {', '.join(BLAST_STATES)}")
        now = to_db_time(self._db.now())
        async with self._db.transaction() as tx:
            await tx.execute(
                "UPDATE sms_blasts SET state = ?, pause_reason = ?,"
                " finished_at = CASE WHEN ? IN ('cancelled', 'done') THEN ? ELSE finished_at END WHERE id = ?",
                (state, reason, state, now, blast_id),
            )
            if state == "cancelled":
                await tx.execute(
                    "UPDATE sms_outbox SET state = 'skipped', reason = 'cancelled', updated_at = ?, final_at = ?"
                    " WHERE blast_id = ? AND state = 'queued'",
                    (now, now, blast_id),
                )

    async def finish_blasts(self) -> list[int]:
        """Mark running one-off blasts with nothing left queued or sending as done."""
        now = to_db_time(self._db.now())
        async with self._db.transaction() as tx:
            async with tx.execute(
                "UPDATE sms_blasts SET state = 'done', finished_at = ? WHERE state = 'running' AND cron IS NULL"
                " AND materialized_runs = runs AND NOT EXISTS (SELECT 1 FROM sms_outbox o WHERE o.blast_id = sms_blasts.id"
                " AND o.state IN ('queued', 'sending')) RETURNING id",
                (now,),
            ) as cur:
                return [r[0] for r in await cur.fetchall()]

    async def progress(self, blast_id: int) -> dict[str, Any]:
        """Counts by state, segments and the latest errors of a blast."""
        counts = dict.fromkeys(OUTBOX_STATES, 0)
        segments = 0
        for r in await self._db.fetchall(
            "SELECT state, count(*), sum(segments) FROM sms_outbox WHERE blast_id = ? GROUP BY state",
            (blast_id,),
        ):
            counts[r[0]] = r[1]
            if r[0] not in ("skipped",):
                segments += r[2] or 0
        reasons = await self._db.fetchall(
            "SELECT state, reason, count(*) AS n FROM sms_outbox WHERE blast_id = ? AND state IN ('skipped', 'failed',"
            " 'unknown') AND reason IS NOT NULL GROUP BY state, reason ORDER BY n DESC LIMIT 20",
            (blast_id,),
        )
        return {
            "counts": counts,
            "total": sum(counts.values()),
            "segments": segments,
            "errors": [{"state": r[0], "reason": r[1], "count": r[2]} for r in reasons],
        }

    async def held(self, blast_id: int, reason: str) -> tuple[datetime | None, int]:
        """How many of a blast's messages wait in the queue held back for `reason` (quiet hours),
        and when the first of them may go."""
        row = await self._db.fetchone(
            "SELECT min(not_before), count(*) FROM sms_outbox WHERE blast_id = ? AND state = 'queued'"
            " AND reason = ?",
            (blast_id, reason),
        )
        if row is None or not row[1]:
            return None, 0
        return from_db_time(row[0]), row[1]

    # single messages ------------------------------------------------------------------------

    async def enqueue(self, row: OutboxRow) -> OutboxMessage | None:
        """Queue one message (a rep's text, an opt-out confirmation); None if its dedupe key exists."""
        now = to_db_time(self._db.now())
        async with self._db.transaction() as tx:
            async with tx.execute(
                "INSERT INTO sms_outbox (dedupe_key, contact_id, user_id, to_e164, time_zone, text, encoding, segments,"
                " channel, state, reason, not_before, created_at, updated_at, followup_id)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING *",
                (
                    row.dedupe_key,
                    row.contact_id,
                    row.user_id,
                    row.to_e164,
                    row.time_zone,
                    row.text,
                    row.encoding,
                    row.segments,
                    row.channel,
                    row.state,
                    row.reason,
                    to_db_time(row.not_before),
                    now,
                    now,
                    row.followup_id,
                ),
            ) as cur:
                r = await cur.fetchone()
            if r is not None and row.survey_id is not None:  # a survey text: the reply may answer it
                await tx.execute("UPDATE sms_outbox SET survey_id = ? WHERE id = ?", (row.survey_id, r["id"]))
        return _msg(r) if r else None

    async def message(self, message_id: int) -> OutboxMessage:
        row = await self._db.fetchone("SELECT * FROM sms_outbox WHERE id = ?", (message_id,))
        if row is None:
            raise NotFound("message", message_id)
        return _msg(row)

    # the sender's transitions ---------------------------------------------------------------

    async def recover_after_crash(
        self, channel: str, *, owner: str | None = None, starting: bool = True
    ) -> int:
        """A channel's rows left `sending` by a stopped process become `unknown`: never resent blindly.

        Taken: rows whose lease ran out (their instance stopped renewing it); at start-up also the
        rows `owner` (this instance's id) held before it restarted, and on a store one process owns
        (SQLite) every `sending` row. A live instance (`starting=False`) never takes its own rows.
        Each gets a touch with status unknown, so the customer's history shows the message may have gone.
        """
        now = self._db.now()
        which, params = in_doubt(self._db, owner, now, starting=starting)
        async with self._db.transaction() as tx:
            async with tx.execute(
                "UPDATE sms_outbox SET state = 'unknown', reason = 'process stopped while sending',"
                f" updated_at = ? WHERE channel = ? AND state = 'sending'{which} RETURNING *",
                (to_db_time(now), channel, *params),
            ) as cur:
                rows = [_msg(r) for r in await cur.fetchall()]
            for msg in rows:
                await self._touches.record_in(tx, _sms_touch(msg, "unknown", now, None))
        return len(rows)

    async def claim(
        self,
        channel: str,
        now: datetime,
        limit: int,
        *,
        owner: str | None = None,
        lease: timedelta = DEFAULT_LEASE,
    ) -> list[OutboxMessage]:
        """Mark up to `limit` due queued messages of a channel `sending` (committed before any send),
        held by `owner` until `now + lease` (renew() extends it while they are being sent).

        Claimers sharing the store take disjoint rows, each a full batch while enough are due."""
        ts = to_db_time(now)
        async with self._db.transaction() as tx:
            async with tx.execute(
                "UPDATE sms_outbox SET state = 'sending', attempts = attempts + 1, updated_at = ?, owner = ?,"
                " lease_until = ? WHERE state = 'queued' AND id IN (SELECT o.id FROM sms_outbox o"
                " WHERE o.channel = ? AND o.state = 'queued'"
                " AND o.not_before <= ? AND (o.blast_id IS NULL OR EXISTS (SELECT 1 FROM sms_blasts b"
                " WHERE b.id = o.blast_id AND b.state = 'running')) ORDER BY o.not_before, o.id LIMIT ?"
                f"{self._db.skip_locked()}) RETURNING *",
                (ts, owner, to_db_time(now + lease), channel, ts, limit),
            ) as cur:
                rows = await cur.fetchall()
        return sorted((_msg(r) for r in rows), key=lambda m: m.id)

    async def renew(self, channel: str, owner: str, until: datetime) -> int:
        """Extend to `until` the lease of the channel's rows `owner` is sending; how many."""
        return await renew(self._db, "sms_outbox", owner, until, channel=channel)

    async def hold(self, message_id: int, until: datetime, reason: str) -> None:
        """Put a claimed message back in the queue until `until` (quiet hours, retry later)."""
        async with self._db.transaction() as tx:
            await tx.execute(
                "UPDATE sms_outbox SET state = 'queued', not_before = ?, reason = ?, updated_at = ?"
                " WHERE id = ? AND state = 'sending'",
                (to_db_time(until), reason, to_db_time(self._db.now()), message_id),
            )

    async def settle(
        self,
        outcomes: Sequence[tuple[OutboxMessage, str, str | None, str | None, str | None]],
        *,
        owner: str | None = None,
    ) -> list[int]:
        """Record send outcomes (message, state sent|failed|unknown, provider id, reason, code) and touches.

        With `owner` (the instance that claimed them): the outcome of a row it no longer holds (its
        lease lapsed and another instance took the row as in doubt, or queued it again) is not
        recorded, neither on the row nor as a touch; their ids are returned."""
        now = self._db.now()
        ts = to_db_time(now)
        async with self._db.transaction() as tx:
            # a row settled already (a delivery report beat this settle) is still this owner's
            outcomes, lapsed = await split_lapsed(
                tx, "sms_outbox", outcomes, owner, settled=("sent", "delivered", "failed")
            )
            # one statement for the window's rows, one batch for their touches
            await tx.executemany(
                "UPDATE sms_outbox SET state = ?, provider_id = COALESCE(?, provider_id), reason = ?,"
                " error_code = ?, updated_at = ?, sent_at = CASE WHEN ? = 'sent' THEN ? ELSE sent_at END,"
                " final_at = CASE WHEN ? IN ('failed') THEN ? ELSE final_at END WHERE id = ? AND state = 'sending'"
                " AND (? IS NULL OR owner = ?)",
                [
                    (state, provider_id, reason, code, ts, state, ts, state, ts, msg.id, owner, owner)
                    for msg, state, provider_id, reason, code in outcomes
                ],
            )
            # a delivery report can beat the settle of its own window (the gateway answered, the
            # handset reported back, then this transaction ran): the row has moved on already, so
            # it keeps its later state, gets its send time, and its touch says where it is now
            sent = [
                (ts, provider_id, msg.id) for msg, state, provider_id, _r, _c in outcomes if state == "sent"
            ]
            await tx.executemany(
                "UPDATE sms_outbox SET sent_at = ?, provider_id = COALESCE(provider_id, ?)"
                " WHERE id = ? AND sent_at IS NULL AND state IN ('sent', 'delivered', 'failed')",
                sent,
            )
            ahead: dict[int, str] = {}
            ids = [i for _, _, i in sent]
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                async with tx.execute(
                    f"SELECT id, state FROM sms_outbox WHERE id IN ({','.join('?' * len(chunk))})"
                    " AND state IN ('delivered', 'failed')",
                    chunk,
                ) as cur:
                    ahead.update((r[0], r[1]) for r in await cur.fetchall())
            await self._touches.record_many_in(
                tx,
                [
                    _sms_touch(msg, ahead.get(msg.id, state), now, provider_id)
                    for msg, state, provider_id, _reason, _code in outcomes
                    if state in ("sent", "unknown")
                ],
            )
            # a follow-up's text that could not go: the follow-up stays open as a call to make
            await tx.executemany(
                "UPDATE followups SET channel = 'call', note = note || ?, updated_at = ?"
                " WHERE id = ? AND status = 'open'",
                [
                    (f"\nSMS not sent ({reason or 'failed'}): call instead", ts, msg.followup_id)
                    for msg, state, _pid, reason, _code in outcomes
                    if state == "failed" and msg.followup_id is not None
                ],
            )
            # a failure report that overtook this settle (the row is `failed` already and its
            # follow-up was made a call): the touch just recorded must not leave it closed
            await tx.executemany(
                "UPDATE followups SET status = 'open', result = NULL, closed_at = NULL,"
                " closed_by_user_id = NULL, closed_by_touch_id = NULL, updated_at = ?"
                " WHERE id = ? AND status = 'done' AND result = 'sms sent'"
                " AND EXISTS (SELECT 1 FROM sms_outbox o WHERE o.id = ? AND o.state = 'failed')",
                [
                    (ts, msg.followup_id, msg.id)
                    for msg, state, _pid, _reason, _code in outcomes
                    if state == "sent" and msg.followup_id is not None
                ],
            )
        return lapsed

    async def apply_report(
        self,
        channel: str,
        *,
        message_id: int | None,
        provider_id: str | None,
        status: str,
        error_code: str | None,
        error_text: str | None,
    ) -> OutboxMessage | None:
        """Apply a delivery report if it moves the message forward; None when unmatched or stale."""
        (updated,) = await self.apply_reports(
            [ReportUpdate(channel, message_id, provider_id, status, error_code, error_text)]
        )
        return updated

    async def apply_reports(self, reports: Sequence[ReportUpdate]) -> list[OutboxMessage | None]:
        """Apply delivery reports in order, in one transaction: for each, the message it moved
        forward (as it is after the whole batch), or None when unmatched or stale."""
        matched: list[int | None] = [None] * len(reports)
        async with self._db.transaction() as tx:
            states: dict[int, tuple[str, str]] = {}  # id -> (channel, state)
            ids = sorted({r.message_id for r in reports if r.message_id is not None})
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                async with tx.execute(
                    f"SELECT id, channel, state FROM sms_outbox WHERE id IN ({','.join('?' * len(chunk))})",
                    chunk,
                ) as cur:
                    states.update((r[0], (r[1], r[2])) for r in await cur.fetchall())
            by_provider: dict[tuple[str, str], int | None] = {}
            for r in reports:
                if r.message_id is None and r.provider_id and (r.channel, r.provider_id) not in by_provider:
                    async with tx.execute(
                        "SELECT id, channel, state FROM sms_outbox WHERE channel = ? AND provider_id = ?",
                        (r.channel, r.provider_id),
                    ) as cur:
                        row = await cur.fetchone()
                    by_provider[(r.channel, r.provider_id)] = row[0] if row else None
                    if row is not None:
                        states[row[0]] = (row[1], row[2])
            now = to_db_time(self._db.now())
            outbox: list[tuple[object, ...]] = []
            reopen: list[tuple[object, ...]] = []  # a follow-up's text the network could not deliver
            touches: list[tuple[object, ...]] = []
            for i, r in enumerate(reports):
                if r.status not in ("sent", "delivered", "failed", "undelivered"):
                    continue
                target = "failed" if r.status == "undelivered" else r.status
                if r.message_id is not None:
                    mid: int | None = r.message_id
                elif r.provider_id:
                    mid = by_provider[(r.channel, r.provider_id)]
                else:
                    mid = None
                if mid is None or mid not in states:
                    continue
                row_channel, state = states[mid]
                if row_channel != r.channel or target not in _FORWARD.get(state, set()):
                    continue
                states[mid] = (row_channel, target)
                matched[i] = mid
                reason = r.error_text if target == "failed" else None
                outbox.append((target, r.error_code, target, reason, r.provider_id, now, target, now, mid))
                touches.append((target, now, f"sms:{mid}"))
                if target == "failed":
                    reopen.append((f"\nSMS not delivered ({reason or 'failed'}): call instead", now, mid))
            if outbox:
                await tx.executemany(
                    "UPDATE sms_outbox SET state = ?, error_code = COALESCE(?, error_code),"
                    " reason = CASE WHEN ? = 'sent' THEN NULL ELSE COALESCE(?, reason) END,"
                    " provider_id = COALESCE(provider_id, ?), updated_at = ?,"
                    " final_at = CASE WHEN ? IN ('delivered', 'failed') THEN ? ELSE final_at END WHERE id = ?",
                    outbox,
                )
                await tx.executemany(
                    "UPDATE touches SET status = ?, updated_at = ? WHERE source_key = ?", touches
                )
            if reopen:
                # the follow-up its send closed is open again on its assignee's day, as a call to
                # make with the reason
                await tx.executemany(
                    "UPDATE followups SET status = 'open', result = NULL, closed_at = NULL,"
                    " closed_by_user_id = NULL, closed_by_touch_id = NULL, channel = 'call',"
                    " note = note || ?, updated_at = ?"
                    " WHERE id = (SELECT followup_id FROM sms_outbox WHERE id = ?)"
                    " AND (status = 'open' OR (status = 'done' AND result = 'sms sent'))",
                    reopen,
                )
            rows: dict[int, OutboxMessage] = {}
            moved = sorted({m for m in matched if m is not None})
            for start in range(0, len(moved), 500):
                chunk = moved[start : start + 500]
                async with tx.execute(
                    f"SELECT * FROM sms_outbox WHERE id IN ({','.join('?' * len(chunk))})", chunk
                ) as cur:
                    rows.update((r["id"], _msg(r)) for r in await cur.fetchall())
        return [rows[m] if m is not None else None for m in matched]

    async def unknown_messages(self, channel: str) -> list[tuple[OutboxMessage, datetime]]:
        """A channel's rows in doubt, with when they were last touched (when sending began)."""
        rows = await self._db.fetchall(
            "SELECT * FROM sms_outbox WHERE channel = ? AND state = 'unknown' ORDER BY id", (channel,)
        )
        return [(_msg(r), from_db_time(r["updated_at"])) for r in rows]  # type: ignore[misc]

    async def unknown_ids(self, blast_id: int) -> list[int]:
        rows = await self._db.fetchall(
            "SELECT id FROM sms_outbox WHERE blast_id = ? AND state = 'unknown' ORDER BY id", (blast_id,)
        )
        return [r[0] for r in rows]

    async def requeue_unknown(self, message_ids: Sequence[int]) -> int:
        """An operator decided these `unknown` rows were not sent: queue them again."""
        marks = ",".join("?" * len(message_ids))
        async with self._db.transaction() as tx:
            async with tx.execute(
                f"UPDATE sms_outbox SET state = 'queued', updated_at = ? WHERE state = 'unknown' AND id IN ({marks})",
                (to_db_time(self._db.now()), *message_ids),
            ) as cur:
                return cur.rowcount

    async def sent_in_window(self, channel: str, since: datetime) -> int:
        row = await self._db.fetchone(
            "SELECT count(*) FROM sms_outbox WHERE channel = ? AND sent_at >= ?", (channel, to_db_time(since))
        )
        return int(row[0]) if row else 0
