"""Email templates, send jobs and the outbox (states only move forward; touches in the same transaction)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from crm_link.db import Database, from_db_time, one_row, to_db_time
from crm_link.errors import Conflict, NotFound
from crm_link.leases import DEFAULT_LEASE, in_doubt, renew, split_lapsed
from crm_link.touches import Touches, TouchInput

EMAIL_STATES = ("queued", "sending", "sent", "failed", "skipped", "unknown")


@dataclass(frozen=True, slots=True)
class EmailRow:
    """One message to queue (already rendered), or skipped with a reason."""

    to_addr: str
    to_name: str
    subject: str
    html: str
    text: str
    message_id: str
    not_before: datetime
    contact_id: int | None
    user_id: int | None
    template_id: int | None
    state: str = "queued"
    reason: str | None = None
    close_followups: bool = False
    next_followup: str | None = None  # ISO time or "none"
    followup_id: int | None = None  # the follow-up this email serves: closed once it is sent


@dataclass(frozen=True, slots=True)
class OutboxEmail:
    id: int
    job_id: int | None
    template_id: int | None
    contact_id: int | None
    user_id: int | None
    to_addr: str
    to_name: str
    subject: str
    html: str
    text: str
    message_id: str
    state: str
    attempts: int
    close_followups: bool
    next_followup: str | None
    followup_id: int | None = None


def _email(r: Any) -> OutboxEmail:
    return OutboxEmail(
        r["id"],
        r["job_id"],
        r["template_id"],
        r["contact_id"],
        r["user_id"],
        r["to_addr"],
        r["to_name"],
        r["subject"],
        r["html"],
        r["text"],
        r["message_id"],
        r["state"],
        r["attempts"],
        bool(r["close_followups"]),
        r["next_followup"],
        r["followup_id"],
    )


def _template(r: Any) -> dict[str, Any]:
    return {
        "id": r["id"],
        "name": r["name"],
        "subject": r["subject"],
        "html": r["html"],
        "text": r["text"],
        "merge_codes": json.loads(r["merge_codes"]),
        "created_by": r["created_by"],
        "created_at": r["created_at"],
        "updated_at": r["updated_at"],
    }


class EmailStore:
    def __init__(self, db: Database, touches: Touches) -> None:
        self._db = db
        self._touches = touches

    async def secret(self, name: str) -> str:
        row = await self._db.fetchone("SELECT value FROM app_secrets WHERE name = ?", (name,))
        if row is None:
            raise NotFound("secret", name)
        return str(row[0])

    # templates ------------------------------------------------------------------------------

    async def save_template(
        self,
        *,
        template_id: int | None,
        name: str,
        subject: str,
        html: str,
        text: str,
        merge_codes: list[str],
        user_id: int | None,
    ) -> dict[str, Any]:
        now = to_db_time(self._db.now())
        async with self._db.transaction() as tx:
            async with tx.execute("SELECT id FROM email_templates WHERE name = ?", (name,)) as cur:
                row = await cur.fetchone()
            if row is not None and row[0] != template_id:
                raise Conflict("name", f"a template named {name!r} exists")
            if template_id is None:
                async with tx.execute(
                    "INSERT INTO email_templates (name, subject, html, text, merge_codes, created_by, created_at,"
                    " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                    (name, subject, html, text, json.dumps(merge_codes), user_id, now, now),
                ) as cur:
                    template_id = int((await one_row(cur))[0])
            else:
                async with tx.execute(
                    "UPDATE email_templates SET name = ?, subject = ?, html = ?, text = ?, merge_codes = ?,"
                    " updated_at = ? WHERE id = ?",
                    (name, subject, html, text, json.dumps(merge_codes), now, template_id),
                ) as cur:
                    if cur.rowcount == 0:
                        raise NotFound("template", template_id)
        return await self.template(template_id)

    async def template(self, template_id: int) -> dict[str, Any]:
        row = await self._db.fetchone("SELECT * FROM email_templates WHERE id = ?", (template_id,))
        if row is None:
            raise NotFound("template", template_id)
        return _template(row)

    async def delete_template(self, template_id: int) -> None:
        """Remove a template; jobs that used it keep their rendered messages."""
        async with self._db.transaction() as tx:
            async with tx.execute(
                "SELECT 1 FROM email_jobs WHERE template_id = ? AND state IN ('scheduled', 'running')",
                (template_id,),
            ) as cur:
                if await cur.fetchone():
                    raise Conflict("id", "a send job using this template is still running")
            await tx.execute(
                "UPDATE email_outbox SET template_id = NULL WHERE template_id = ?", (template_id,)
            )
            await tx.execute(
                "DELETE FROM email_jobs WHERE template_id = ? AND state IN ('done', 'cancelled')",
                (template_id,),
            )
            async with tx.execute("DELETE FROM email_templates WHERE id = ?", (template_id,)) as cur:
                if cur.rowcount == 0:
                    raise NotFound("template", template_id)

    async def templates(self) -> list[dict[str, Any]]:
        return [_template(r) for r in await self._db.fetchall("SELECT * FROM email_templates ORDER BY name")]

    # jobs -----------------------------------------------------------------------------------

    async def create_job(
        self,
        *,
        template_id: int,
        audience: dict[str, Any],
        send_at: datetime,
        next_followup: str | None,
        user_id: int | None,
        rows: Sequence[EmailRow],
    ) -> int:
        """A send job with its outbox rows, all in one transaction."""
        now = to_db_time(self._db.now())
        async with self._db.transaction() as tx:
            async with tx.execute(
                "INSERT INTO email_jobs (template_id, audience, state, send_at, next_followup, created_by, created_at)"
                " VALUES (?, ?, 'running', ?, ?, ?, ?) RETURNING id",
                (template_id, json.dumps(audience), to_db_time(send_at), next_followup, user_id, now),
            ) as cur:
                job_id = int((await one_row(cur))[0])
            await self._insert(tx, job_id, rows, now)
        return job_id

    async def enqueue(self, row: EmailRow) -> int:
        now = to_db_time(self._db.now())
        async with self._db.transaction() as tx:
            ids = await self._insert(tx, None, [row], now)
        return ids[0]

    async def _insert(self, tx: Any, job_id: int | None, rows: Sequence[EmailRow], now: str) -> list[int]:
        await tx.executemany(
            "INSERT INTO email_outbox (job_id, template_id, contact_id, user_id, to_addr, to_name, subject, html,"
            " text, message_id, state, reason, close_followups, next_followup, not_before, created_at, updated_at,"
            " followup_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (  # a generator: the rows' parameters are built in the database thread, not on the loop
                (
                    job_id,
                    r.template_id,
                    r.contact_id,
                    r.user_id,
                    r.to_addr,
                    r.to_name,
                    r.subject,
                    r.html,
                    r.text,
                    r.message_id,
                    r.state,
                    r.reason,
                    int(r.close_followups),
                    r.next_followup,
                    to_db_time(r.not_before),
                    now,
                    now,
                    r.followup_id,
                )
                for r in rows
            ),
        )
        ids: list[int] = []
        for start in range(0, len(rows), 500):
            chunk = [r.message_id for r in rows[start : start + 500]]
            async with tx.execute(
                f"SELECT message_id, id FROM email_outbox WHERE message_id IN ({','.join('?' * len(chunk))})",
                chunk,
            ) as cur:
                found = {r[0]: r[1] for r in await cur.fetchall()}
            ids += [found[m] for m in chunk]
        return ids

    async def job(self, job_id: int) -> dict[str, Any]:
        row = await self._db.fetchone("SELECT * FROM email_jobs WHERE id = ?", (job_id,))
        if row is None:
            raise NotFound("email job", job_id)
        counts = dict.fromkeys(EMAIL_STATES, 0)
        for r in await self._db.fetchall(
            "SELECT state, count(*) FROM email_outbox WHERE job_id = ? GROUP BY state", (job_id,)
        ):
            counts[r[0]] = r[1]
        errors = await self._db.fetchall(
            "SELECT state, reason, count(*) FROM email_outbox WHERE job_id = ? AND reason IS NOT NULL"
            " GROUP BY state, reason ORDER BY 3 DESC LIMIT 20",
            (job_id,),
        )
        return {
            "id": row["id"],
            "template_id": row["template_id"],
            "created_by": row["created_by"],
            "state": row["state"],
            "send_at": row["send_at"],
            "counts": counts,
            "total": sum(counts.values()),
            "errors": [{"state": e[0], "reason": e[1], "count": e[2]} for e in errors],
        }

    async def finish_jobs(self) -> None:
        async with self._db.transaction() as tx:
            await tx.execute(
                "UPDATE email_jobs SET state = 'done', finished_at = ? WHERE state = 'running' AND NOT EXISTS"
                " (SELECT 1 FROM email_outbox o WHERE o.job_id = email_jobs.id AND o.state IN ('queued', 'sending'))",
                (to_db_time(self._db.now()),),
            )

    # the sender's transitions ---------------------------------------------------------------

    async def recover_after_crash(self, *, owner: str | None = None, starting: bool = True) -> int:
        """Rows left `sending` by a stopped process become `unknown`, never resent blindly.

        Taken: rows whose lease ran out; at start-up also those `owner` (this instance) held before
        it restarted, and on a store one process owns (SQLite) every `sending` row. A live instance
        (`starting=False`) never takes its own rows."""
        now = self._db.now()
        which, params = in_doubt(self._db, owner, now, starting=starting)
        async with self._db.transaction() as tx:
            async with tx.execute(
                "UPDATE email_outbox SET state = 'unknown', reason = 'process stopped while sending', updated_at = ?"
                f" WHERE state = 'sending'{which}",
                (to_db_time(now), *params),
            ) as cur:
                return cur.rowcount

    async def requeue_unknown(self, job_id: int) -> int:
        """An operator decided a job's `unknown` emails were not sent: queue them again (same Message-ID).

        A finished job runs again until they are settled. How many were queued.
        """
        async with self._db.transaction() as tx:
            async with tx.execute(
                "UPDATE email_outbox SET state = 'queued', reason = NULL, updated_at = ?"
                " WHERE job_id = ? AND state = 'unknown'",
                (to_db_time(self._db.now()), job_id),
            ) as cur:
                n = cur.rowcount
            if n:
                await tx.execute(
                    "UPDATE email_jobs SET state = 'running', finished_at = NULL WHERE id = ? AND state = 'done'",
                    (job_id,),
                )
        return n

    async def claim(
        self, now: datetime, limit: int, *, owner: str | None = None, lease: timedelta = DEFAULT_LEASE
    ) -> list[OutboxEmail]:
        """Mark up to `limit` due queued emails `sending`, held by `owner` until `now + lease`.

        Claimers sharing the store take disjoint rows, each a full batch while enough are due."""
        ts = to_db_time(now)
        async with self._db.transaction() as tx:
            async with tx.execute(
                "UPDATE email_outbox SET state = 'sending', attempts = attempts + 1, updated_at = ?, owner = ?,"
                " lease_until = ? WHERE state = 'queued' AND id IN (SELECT id FROM email_outbox"
                " WHERE state = 'queued' AND not_before <= ? ORDER BY not_before, id"
                f" LIMIT ?{self._db.skip_locked()}) RETURNING *",
                (ts, owner, to_db_time(now + lease), ts, limit),
            ) as cur:
                rows = await cur.fetchall()
        return sorted((_email(r) for r in rows), key=lambda e: e.id)

    async def renew(self, owner: str, until: datetime) -> int:
        """Extend to `until` the lease of the emails `owner` is sending; how many."""
        return await renew(self._db, "email_outbox", owner, until)

    async def release(self, ids: Sequence[int]) -> None:
        """Claimed rows that were never attempted go back to the queue (a clean stop)."""
        if not ids:
            return
        async with self._db.transaction() as tx:
            await tx.execute(
                f"UPDATE email_outbox SET state = 'queued', attempts = attempts - 1 WHERE state = 'sending'"
                f" AND id IN ({','.join('?' * len(ids))})",
                list(ids),
            )

    async def retry_later(self, email_id: int, until: datetime, reason: str, code: int | None) -> None:
        async with self._db.transaction() as tx:
            await tx.execute(
                "UPDATE email_outbox SET state = 'queued', not_before = ?, reason = ?, code = ?, updated_at = ?"
                " WHERE id = ? AND state = 'sending'",
                (to_db_time(until), reason, code, to_db_time(self._db.now()), email_id),
            )

    async def settle(
        self,
        email: OutboxEmail,
        state: str,
        *,
        reason: str | None = None,
        code: int | None = None,
        next_followup: Any = None,
    ) -> list[int]:
        """Record the outcome; a sent email is a touch (and clears the due follow-up when asked)."""
        return await self.settle_many([(email, state, reason, code, next_followup)])

    async def settle_many(
        self,
        outcomes: Sequence[tuple[OutboxEmail, str, str | None, int | None, Any]],
        *,
        owner: str | None = None,
        lapsed: list[int] | None = None,
    ) -> list[int]:
        """Record several outcomes in one transaction, with a touch for each sent email. The ids of
        the follow-ups whose email failed for good and that are now calls to make.

        With `owner` (the instance that claimed them): the outcome of an email it no longer holds
        (its lease lapsed and another instance took it as in doubt, or queued it again) is not
        recorded, neither on the row nor as a touch; its id is appended to `lapsed`."""
        now = self._db.now()
        ts = to_db_time(now)
        async with self._db.transaction() as tx:
            outcomes, lost = await split_lapsed(tx, "email_outbox", outcomes, owner)
            if lapsed is not None:
                lapsed.extend(lost)
            await tx.executemany(
                "UPDATE email_outbox SET state = ?, reason = ?, code = ?, updated_at = ?,"
                " sent_at = CASE WHEN ? = 'sent' THEN ? ELSE sent_at END WHERE id = ? AND state = 'sending'"
                " AND (? IS NULL OR owner = ?)",
                [
                    (state, reason, code, ts, state, ts, email.id, owner, owner)
                    for email, state, reason, code, _ in outcomes
                ],
            )
            await self._touches.write_many_in(
                tx,
                [
                    TouchInput(
                        source_key=f"email:{email.id}",
                        kind="email",
                        direction="outbound",
                        started_at=now,
                        contact_id=email.contact_id,
                        user_id=email.user_id,
                        channel="smtp",
                        status="sent",
                        summary=email.subject,
                        payload={
                            "template_id": email.template_id,
                            "message_id": email.message_id,
                            "job_id": email.job_id,
                            "to": email.to_addr,
                        },
                        close_followups=email.followup_id is not None,
                        followup_id=email.followup_id,
                        followup_result="emailed",
                        next_followup=next_followup,
                    )
                    for email, state, _, _, next_followup in outcomes
                    if state == "sent"
                ],
            )
            # a follow-up's email the mail server refused for good: the follow-up stays open on its
            # assignee's day as a call to make, saying why
            to_call: list[int] = []
            for email, state, reason, _, _ in outcomes:
                if state != "failed" or email.followup_id is None:
                    continue
                async with tx.execute(
                    "UPDATE followups SET channel = 'call', note = note || ?, updated_at = ?"
                    " WHERE id = ? AND status = 'open' RETURNING id",
                    (f"\nEmail not sent ({reason or 'failed'}): call instead", ts, email.followup_id),
                ) as cur:
                    to_call.extend(int(r[0]) for r in await cur.fetchall())
        return to_call

    async def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(EMAIL_STATES, 0)
        for r in await self._db.fetchall("SELECT state, count(*) FROM email_outbox GROUP BY state"):
            counts[r[0]] = r[1]
        return counts

    async def message(self, email_id: int) -> OutboxEmail:
        row = await self._db.fetchone("SELECT * FROM email_outbox WHERE id = ?", (email_id,))
        if row is None:
            raise NotFound("email", email_id)
        return _email(row)

    async def sent_at(self, email_id: int) -> datetime | None:
        row = await self._db.fetchone("SELECT sent_at FROM email_outbox WHERE id = ?", (email_id,))
        return from_db_time(row[0]) if row else None
