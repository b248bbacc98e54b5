"""Report queries: call figures (from call_facts, written as calls end) and messaging figures.

Every figure a report shows is counted here, once; `reports/` turns the counts into rates, CSV and
charts. Periods arrive as UTC bounds (epoch seconds for calls, store time text for messages) that
the caller computed from days in the dealership's zone.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from crm_link.call_lists import NOT_REACHED as LIST_NOT_REACHED
from crm_link.db import Database, from_db_time
from crm_link.errors import ValidationError

log = logging.getLogger("crm_link.reports")

OUTCOMES = ("answered", "missed", "abandoned", "busy", "no_answer")
CALL_GROUPS = {
    "agent": "COALESCE(u.username, '')",
    "queue": "f.queue",
    "day": "f.local_day",
    "hour": "f.local_hour",
    "weekday_hour": "f.weekday * 100 + f.local_hour",
    "all": "''",
}
FOLLOWUP_COUNTS = ("due", "done", "past_due", "attempted", "reached")
# closing results that say the customer was not reached (any other result of a done follow-up was):
# the call lists' own (a disposition such as "left message" that retries the customer) and these
NOT_REACHED = (*LIST_NOT_REACHED, "wrong number", "voicemail", "left voicemail", "escalated")
FOLLOWUP_GROUPS = {
    "assignee": (
        "COALESCE(u.username, CASE WHEN f.pool IS NOT NULL THEN 'pool: ' || f.pool ELSE '' END)",
        "",
    ),
    "rule": ("COALESCE(k.name, '')", ""),
    "list": (
        "l.name || ' #' || CAST(l.id AS TEXT)",
        " JOIN (SELECT DISTINCT list_id, contact_id FROM call_list_entries) e ON e.contact_id = f.contact_id"
        " JOIN call_lists l ON l.id = e.list_id",
    ),
    "all": ("''", ""),
}
# a touch status as a call outcome (for calls written before call_facts existed)
_STATUS_OUTCOME = {"answered": "answered", "missed": "missed", "busy": "busy", "no answer": "no_answer"}


@dataclass(frozen=True, slots=True)
class CallFigures:
    """What a finished call adds to the call report (with the touch's own direction, agent, times)."""

    outcome: str  # answered | missed | abandoned (inbound) · answered | busy | no_answer (outbound)
    queue: str | None = None
    answered_at: datetime | None = None
    wait_s: float | None = None  # inbound: arrival to answer, or to the caller's hang-up if unanswered
    talk_s: float | None = None  # answer to hang-up

    def check(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValidationError("outcome", f"must be one of {', '.join(OUTCOMES)}")


def _epoch(value: str | datetime | None) -> float | None:
    if value is None:
        return None
    dt = from_db_time(value) if isinstance(value, str) else value
    assert dt is not None
    return dt.timestamp()


async def write_call_facts(tx: Any, rows: list[tuple[Any, CallFigures]], time_zone: str) -> None:
    """Upsert the facts of finished call touches (`rows`: the touch row as stored, its figures)."""
    zone = ZoneInfo(time_zone)
    params = []
    for row, fig in rows:
        if row["ended_at"] is None or row["direction"] not in ("inbound", "outbound"):
            continue
        started = from_db_time(row["started_at"])
        assert started is not None
        local = started.astimezone(zone)
        params.append(
            (
                row["id"],
                row["direction"],
                fig.outcome,
                row["user_id"],
                fig.queue or "",
                row["number"],
                started.timestamp(),
                _epoch(fig.answered_at),
                _epoch(row["ended_at"]),
                fig.wait_s,
                fig.talk_s,
                local.date().isoformat(),
                local.hour,
                local.isoweekday() % 7,  # 0 = Sunday … 6 = Saturday
            )
        )
    if params:
        await tx.executemany(
            "INSERT INTO call_facts (touch_id, direction, outcome, user_id, queue, number, started_s,"
            " answered_s, ended_s, wait_s, talk_s, local_day, local_hour, weekday)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (touch_id) DO UPDATE SET direction = excluded.direction,"
            " outcome = excluded.outcome, user_id = excluded.user_id, queue = excluded.queue,"
            " number = excluded.number, started_s = excluded.started_s, answered_s = excluded.answered_s,"
            " ended_s = excluded.ended_s, wait_s = excluded.wait_s, talk_s = excluded.talk_s,"
            " local_day = excluded.local_day, local_hour = excluded.local_hour, weekday = excluded.weekday",
            params,
        )


def figures_from_touch(row: Any) -> CallFigures:
    """The figures of a call touch stored before call_facts existed (from its status and payload)."""
    payload = json.loads(row["payload"])
    outcome = _STATUS_OUTCOME.get(row["status"], "missed" if row["direction"] == "inbound" else "no_answer")
    if outcome == "missed" and payload.get("abandoned"):
        outcome = "abandoned"
    answered_at = payload.get("answered_at")
    answered = datetime.fromisoformat(answered_at.replace("Z", "+00:00")) if answered_at else None
    started, ended = from_db_time(row["started_at"]), from_db_time(row["ended_at"])
    assert started is not None and ended is not None
    wait = None
    if row["direction"] == "inbound":
        wait = ((answered or ended) - started).total_seconds()
    return CallFigures(outcome, payload.get("queue"), answered, wait, payload.get("talk_s"))


class ReportStore:
    """The queries behind the call and messaging reports."""

    def __init__(self, db: Database, time_zone: str) -> None:
        self._db = db
        self.time_zone = time_zone

    async def backfill(self, batch: int = 5000) -> int:
        """Give calls that ended before call_facts existed their facts (once, after the migration)."""
        if await self._db.fetchone("SELECT name FROM report_backfill WHERE name = 'call_facts'") is None:
            return 0
        done, last = 0, 0
        while True:
            rows = await self._db.fetchall(
                "SELECT t.* FROM touches t LEFT JOIN call_facts f ON f.touch_id = t.id"
                " WHERE t.id > ? AND t.kind = 'call' AND t.ended_at IS NOT NULL"
                " AND t.direction IN ('inbound', 'outbound') AND f.touch_id IS NULL ORDER BY t.id LIMIT ?",
                (last, batch),
            )
            if not rows:
                break
            async with self._db.transaction() as tx:
                await write_call_facts(tx, [(r, figures_from_touch(r)) for r in rows], self.time_zone)
            done += len(rows)
            last = rows[-1]["id"]
        async with self._db.transaction() as tx:
            await tx.execute("DELETE FROM report_backfill WHERE name = 'call_facts'")
        log.info("event=call_facts_backfilled calls=%d", done)
        return done

    async def calls(self, lo: float, hi: float, group: str, callback_within_s: float) -> dict[str, Any]:
        """Call counts per group for calls that started in [lo, hi) (epoch seconds).

        Returns {"rows": {key: counts}, "waits": {key: {whole seconds: calls}}} where counts hold
        inbound, outbound, answered, missed, abandoned, outbound_answered, wait_sum, wait_n, talk_sum,
        unanswered, called_back, called_back_in_time, callback_sum.
        """
        if group not in CALL_GROUPS:
            raise ValidationError("group", f"must be one of {', '.join(CALL_GROUPS)}")
        key = CALL_GROUPS[group]
        base = " FROM call_facts f LEFT JOIN users u ON u.id = f.user_id WHERE f.started_s >= ? AND f.started_s < ?"
        rows = await self._db.fetchall(
            f"SELECT {key} AS k,"
            " SUM(CASE WHEN f.direction = 'inbound' THEN 1 ELSE 0 END) AS inbound,"
            " SUM(CASE WHEN f.direction = 'outbound' THEN 1 ELSE 0 END) AS outbound,"
            " SUM(CASE WHEN f.direction = 'inbound' AND f.outcome = 'answered' THEN 1 ELSE 0 END) AS answered,"
            " SUM(CASE WHEN f.outcome = 'missed' THEN 1 ELSE 0 END) AS missed,"
            " SUM(CASE WHEN f.outcome = 'abandoned' THEN 1 ELSE 0 END) AS abandoned,"
            " SUM(CASE WHEN f.direction = 'outbound' AND f.outcome = 'answered' THEN 1 ELSE 0 END)"
            " AS outbound_answered,"
            " SUM(CASE WHEN f.direction = 'inbound' AND f.outcome = 'answered' THEN f.wait_s ELSE 0 END)"
            " AS wait_sum,"
            " SUM(CASE WHEN f.direction = 'inbound' AND f.outcome = 'answered' AND f.wait_s IS NOT NULL"
            " THEN 1 ELSE 0 END) AS wait_n,"
            " SUM(COALESCE(f.talk_s, 0)) AS talk_sum" + base + " GROUP BY k",
            (lo, hi),
        )
        out: dict[Any, dict[str, float]] = {
            r["k"]: {k: r[k] or 0 for k in r.keys() if k != "k"} for r in rows
        }
        # waits as a histogram of whole seconds (rounded up): the p90 comes from it exactly
        waits: dict[Any, dict[int, int]] = {}
        for r in await self._db.fetchall(
            f"SELECT {key} AS k, CAST(f.wait_s AS INTEGER)"
            " + CASE WHEN f.wait_s > CAST(f.wait_s AS INTEGER) THEN 1 ELSE 0 END AS w, COUNT(*) AS n"
            + base
            + " AND f.direction = 'inbound' AND f.outcome = 'answered' AND f.wait_s IS NOT NULL GROUP BY k, w",
            (lo, hi),
        ):
            waits.setdefault(r["k"], {})[int(r["w"])] = int(r["n"])
        # unanswered inbound calls, and the first outbound call to the same number after each ended
        for r in await self._db.fetchall(
            "SELECT k, COUNT(*) AS unanswered, COUNT(cb) AS called_back,"
            " SUM(CASE WHEN cb IS NOT NULL AND cb - ended_s <= ? THEN 1 ELSE 0 END) AS in_time,"
            " SUM(CASE WHEN cb IS NOT NULL THEN cb - ended_s ELSE 0 END) AS cb_sum FROM ("
            f" SELECT {key} AS k, f.ended_s, (SELECT MIN(o.started_s) FROM call_facts o"
            " WHERE o.number = f.number AND o.direction = 'outbound' AND o.started_s >= f.ended_s) AS cb"
            + base
            + " AND f.direction = 'inbound' AND f.outcome IN ('missed', 'abandoned')) m GROUP BY k",
            (callback_within_s, lo, hi),
        ):
            row = out.setdefault(r["k"], {})
            row["unanswered"] = r["unanswered"]
            row["called_back"] = r["called_back"]
            row["called_back_in_time"] = r["in_time"] or 0
            row["callback_sum"] = r["cb_sum"] or 0
        return {"rows": out, "waits": waits}

    async def messaging(self, lo: str, hi: str, group: str, months: list[tuple[str, str]]) -> dict[Any, dict]:
        """SMS and email counts per blast, template or month for messages sent in [lo, hi) (store
        time text); `months`: (key, UTC start) of each local month in the period, oldest first.

        An SMS reply or opt-out counts for the last message sent to that number before it (within
        the same period's messages); an unsubscribe for the last email sent to that contact.
        """
        if group not in ("blast", "template", "month"):
            raise ValidationError("group", "must be one of blast, template, month")

        def month_of(col: str) -> tuple[str, list[str]]:
            if not months:
                return "''", []
            parts, params = [], []
            for k, start in reversed(months):
                parts.append(f"WHEN {col} >= ? THEN ?")
                params += [start, k]
            return "CASE " + " ".join(parts) + " END", params

        out: dict[Any, dict[str, int]] = {}

        def add(key: Any, **counts: int) -> None:
            row = out.setdefault(key, {})
            for k, v in counts.items():
                row[k] = row.get(k, 0) + (v or 0)

        sms_at = "COALESCE(o.sent_at, o.final_at)"
        in_period = "((o.sent_at >= ? AND o.sent_at < ?) OR (o.sent_at IS NULL AND o.final_at >= ? AND o.final_at < ?))"
        if group in ("blast", "month"):
            if group == "blast":
                key_sql, key_params = "COALESCE(b.name, '') || ' #' || CAST(o.blast_id AS TEXT)", list[Any]()
                extra = " AND o.blast_id IS NOT NULL"
            else:
                key_sql, key_params = month_of(sms_at)
                extra = ""
            for r in await self._db.fetchall(
                f"SELECT {key_sql} AS k,"
                " SUM(CASE WHEN o.sent_at IS NOT NULL THEN 1 ELSE 0 END) AS sent,"
                " SUM(CASE WHEN o.state = 'delivered' THEN 1 ELSE 0 END) AS delivered,"
                " SUM(CASE WHEN o.state = 'failed' THEN 1 ELSE 0 END) AS failed"
                f" FROM sms_outbox o LEFT JOIN sms_blasts b ON b.id = o.blast_id WHERE {in_period}{extra}"
                " GROUP BY k",
                [*key_params, lo, hi, lo, hi],
            ):
                add(r["k"], sent=r["sent"], delivered=r["delivered"], failed=r["failed"])
            # replies: inbound SMS from a number we sent to, counted for the last message before it
            for r in await self._db.fetchall(
                f"SELECT {key_sql} AS k, COUNT(*) AS replies,"
                " SUM(CASE WHEN t.stop = 1 THEN 1 ELSE 0 END) AS opted_out FROM ("
                " SELECT (SELECT o2.id FROM sms_outbox o2 WHERE o2.to_e164 = t0.number"
                " AND o2.sent_at IS NOT NULL AND o2.sent_at <= t0.started_at ORDER BY o2.sent_at DESC LIMIT 1)"
                " AS outbox_id, CASE WHEN json_extract(t0.payload, '$.keyword') = 'stop' THEN 1 ELSE 0 END AS stop"
                " FROM touches t0 WHERE t0.kind = 'sms' AND t0.direction = 'inbound' AND t0.started_at >= ?"
                ") t JOIN sms_outbox o ON o.id = t.outbox_id LEFT JOIN sms_blasts b ON b.id = o.blast_id"
                f" WHERE {in_period}{extra} GROUP BY k",
                [*key_params, lo, lo, hi, lo, hi],
            ):
                add(r["k"], replies=r["replies"], opted_out=r["opted_out"])
        if group in ("template", "month"):
            if group == "template":
                key_sql, key_params = "COALESCE(tp.name, '')", []
            else:
                key_sql, key_params = month_of("o.sent_at")
            for r in await self._db.fetchall(
                f"SELECT {key_sql} AS k,"
                " SUM(CASE WHEN o.state = 'sent' THEN 1 ELSE 0 END) AS sent,"
                " SUM(CASE WHEN o.state = 'failed' THEN 1 ELSE 0 END) AS bounced"
                " FROM email_outbox o LEFT JOIN email_templates tp ON tp.id = o.template_id"
                " WHERE o.sent_at >= ? AND o.sent_at < ? GROUP BY k",
                [*key_params, lo, hi],
            ):
                add(r["k"], email_sent=r["sent"], email_bounced=r["bounced"])
            # an unsubscribe counts for the last email sent to that contact before it
            for r in await self._db.fetchall(
                f"SELECT {key_sql} AS k, COUNT(*) AS n FROM ("
                " SELECT (SELECT e.id FROM email_outbox e WHERE e.contact_id = CAST(a.object_id AS INTEGER)"
                " AND e.sent_at IS NOT NULL AND e.sent_at <= a.at ORDER BY e.sent_at DESC LIMIT 1) AS email_id"
                " FROM audit_log a WHERE a.action = 'email.unsubscribe' AND a.at >= ?"
                ") x JOIN email_outbox o ON o.id = x.email_id"
                " LEFT JOIN email_templates tp ON tp.id = o.template_id"
                " WHERE o.sent_at >= ? AND o.sent_at < ? GROUP BY k",
                [*key_params, lo, lo, hi],
            ):
                add(r["k"], email_unsubscribed=r["n"])
        return out

    async def followups(self, lo: str, hi: str, cutoff: str, group: str) -> dict[Any, dict[str, int]]:
        """Follow-up counts per assignee, cadence rule, call list or 'all' (store time text bounds).

        due: due_at in [lo, hi). done: closed as done in [lo, hi). past_due: created before
        `cutoff` (the period's end or now, whichever is earlier), due before it and still open then
        (open now, or closed at or after it). attempted: done in [lo, hi); reached: of those, the ones
        whose result is not one of NOT_REACHED. A follow-up counts for each call list its customer is
        on (so list rows may add up to more than the totals).
        """
        if group not in FOLLOWUP_GROUPS:
            raise ValidationError(
                "group", f"must be one of {', '.join(g for g in FOLLOWUP_GROUPS if g != 'all')}"
            )
        key, join = FOLLOWUP_GROUPS[group]
        miss = ",".join("?" * len(NOT_REACHED))
        done_in = "f.status = 'done' AND f.closed_at >= ? AND f.closed_at < ?"
        rows = await self._db.fetchall(
            f"SELECT {key} AS k,"
            " SUM(CASE WHEN f.due_at >= ? AND f.due_at < ? THEN 1 ELSE 0 END) AS due,"
            f" SUM(CASE WHEN {done_in} THEN 1 ELSE 0 END) AS done,"
            " SUM(CASE WHEN f.created_at < ? AND f.due_at < ?"
            " AND (f.status = 'open' OR f.closed_at >= ?) THEN 1 ELSE 0 END) AS past_due,"
            f" SUM(CASE WHEN {done_in} THEN 1 ELSE 0 END) AS attempted,"
            f" SUM(CASE WHEN {done_in} AND COALESCE(LOWER(f.result), '') NOT IN ({miss}) THEN 1 ELSE 0 END)"
            " AS reached"
            " FROM followups f LEFT JOIN users u ON u.id = f.assignee_id"
            f" LEFT JOIN cadences k ON k.id = f.cadence_id{join}"
            " WHERE (f.due_at >= ? AND f.due_at < ?) OR (f.closed_at >= ? AND f.closed_at < ?)"
            " OR (f.created_at < ? AND f.due_at < ? AND (f.status = 'open' OR f.closed_at >= ?))"
            " GROUP BY k",
            [
                *(lo, hi, lo, hi, cutoff, cutoff, cutoff, lo, hi, lo, hi),
                *NOT_REACHED,
                *(lo, hi, lo, hi, cutoff, cutoff, cutoff),
            ],
        )
        return {r["k"]: {c: int(r[c] or 0) for c in FOLLOWUP_COUNTS} for r in rows}


def utc_text(dt: datetime) -> str:
    """A bound as store time text."""
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
