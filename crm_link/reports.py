"""Report queries: call figures (from call_facts, written as calls end) and messaging figures.

Every figure a report shows is counted here, once; `reports/` turns the counts into rates, CSV and
charts. Periods arrive as UTC bounds (epoch seconds for calls, store time text for messages) that
the caller computed from days in the dealership's zone.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from crm_link import message_rollups
from crm_link.call_lists import NOT_REACHED as LIST_NOT_REACHED
from crm_link.call_rollups import COUNTS, WAIT_COLUMNS, local_parts, ms, rebuild, write_with_rollups
from crm_link.db import Database, from_db_time
from crm_link.errors import ValidationError

log = logging.getLogger("crm_link.reports")

OUTCOMES = ("answered", "missed", "abandoned", "busy", "no_answer")
CALL_GROUPS = {
    "agent": "COALESCE(u.username, '')",
    "queue": "f.queue",
    "line": "f.line",
    "day": "f.local_day",
    "hour": "f.local_hour",
    "weekday_hour": "f.weekday * 100 + f.local_hour",
    "all": "''",
}
FOLLOWUP_COUNTS = ("due", "done", "past_due", "attempted", "reached")
# closing results that say the customer was not reached (any other result of a done follow-up was):
# the call lists' own (a disposition such as "left message" that retries the customer) and these
NOT_REACHED = (*LIST_NOT_REACHED, "wrong number", "voicemail", "left voicemail", "escalated")
# per group: the follow-ups' own columns it is counted by (as expressions, so that SQLite reads
# the index range of the figure rather than a whole index that happens to be in the group's order),
# the key made from them (over the counts per those columns, aliased f) and the joins the key needs:
# the counts come from followups alone, by index, and only the few count rows are joined
FOLLOWUP_GROUPS: dict[str, tuple[tuple[tuple[str, str], ...], str, str]] = {
    "assignee": (
        (("assignee_id", "f.assignee_id + 0"), ("pool", "f.pool || ''")),
        "COALESCE(u.username, CASE WHEN f.pool IS NOT NULL THEN 'pool: ' || f.pool ELSE '' END)",
        " LEFT JOIN users u ON u.id = f.assignee_id",
    ),
    "rule": (
        (("cadence_id", "f.cadence_id + 0"),),
        "COALESCE(k.name, '')",
        " LEFT JOIN cadences k ON k.id = f.cadence_id",
    ),
    "list": (
        (("contact_id", "f.contact_id + 0"),),
        "l.name || ' #' || CAST(l.id AS TEXT)",
        " JOIN (SELECT DISTINCT list_id, contact_id FROM call_list_entries) e ON e.contact_id = f.contact_id"
        " JOIN call_lists l ON l.id = e.list_id",
    ),
    "all": ((), "''", ""),
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
    line: str | None = None  # inbound: the number the customer dialled (the DID)

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
                *local_parts(started.timestamp(), zone),  # weekday: 0 = Sunday … 6 = Saturday
                ms(fig.wait_s),
                ms(fig.talk_s),
                fig.line or "",
            )
        )
    if params:
        await write_with_rollups(tx, params, _FACT_UPSERT)


_FACT_UPSERT = (
    "INSERT INTO call_facts (touch_id, direction, outcome, user_id, queue, number, started_s,"
    " answered_s, ended_s, wait_s, talk_s, local_day, local_hour, weekday, wait_ms, talk_ms, line)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (touch_id) DO UPDATE SET direction = excluded.direction,"
    " outcome = excluded.outcome, user_id = excluded.user_id, queue = excluded.queue,"
    " number = excluded.number, started_s = excluded.started_s, answered_s = excluded.answered_s,"
    " ended_s = excluded.ended_s, wait_s = excluded.wait_s, talk_s = excluded.talk_s,"
    " local_day = excluded.local_day, local_hour = excluded.local_hour, weekday = excluded.weekday,"
    " wait_ms = excluded.wait_ms, talk_ms = excluded.talk_ms, line = excluded.line"
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
        done = 0
        if await self._db.fetchone("SELECT name FROM report_backfill WHERE name = 'call_facts'") is not None:
            done = await self._backfill_facts(batch)
        await self.check_rollups()
        return done

    async def check_rollups(self) -> None:
        """Rebuild the daily rollups if they are not in the store's zone (new, or the zone changed)."""
        if await self.rollup_zone() != self.time_zone:
            await self.rebuild_rollups()
        if await self.message_zone() != self.time_zone:
            await self.rebuild_message_rollups()

    async def rebuild_rollups(self) -> None:
        """Recompute the facts' local days and the daily rollups in the store's zone (one transaction)."""
        async with self._db.transaction() as tx:
            n = await rebuild(tx, self.time_zone)
        log.info("event=call_rollups_rebuilt calls=%d zone=%s", n, self.time_zone)

    async def _backfill_facts(self, batch: int) -> int:
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

    async def calls(self, lo: float, hi: float, group: str, callback_within_min: int) -> dict[str, Any]:
        """Call counts per group for calls that started in [lo, hi) (epoch seconds).

        Returns {"rows": {key: counts}, "waits": {key: {whole seconds: calls}}} where counts hold
        the rollup COUNTS and called_back_in_time. Whole days (in the zone the rollups are kept in)
        come from the daily rollups, the partial days at either edge from the call facts; without
        rollups in that zone, everything comes from the facts.
        """
        if group not in CALL_GROUPS:
            raise ValidationError("group", f"must be one of {', '.join(CALL_GROUPS)}")
        zone = await self.rollup_zone()
        days = _full_days(lo, hi, zone) if zone else None
        if days is None:
            return await self.calls_from_facts(lo, hi, group, callback_within_min)
        first, last, a, b = days
        out = await self._calls_from_rollups(first, last, group, callback_within_min)
        for x, y in ((lo, a), (b, hi)):
            if x < y:
                _merge(out, await self.calls_from_facts(x, y, group, callback_within_min))
        return out

    async def rollup_zone(self) -> str | None:
        """The zone the daily rollups are kept in (None before they were first built)."""
        row = await self._db.fetchone("SELECT zone FROM call_rollup_zone")
        return row["zone"] if row else None

    async def _calls_from_rollups(self, first: str, last: str, group: str, cb_min: int) -> dict[str, Any]:
        dim, key = _ROLLUP_KEYS[group]
        where = " WHERE r.dim = ? AND r.local_day >= ? AND r.local_day <= ?"
        sums = ", ".join(f"SUM(r.{c}) AS {c}" for c in COUNTS)
        names: dict[str, str] = {}
        if group == "agent":  # user ids to names here: the rollups keep the id (a rename follows)
            names = {
                str(u["id"]): u["username"] for u in await self._db.fetchall("SELECT id, username FROM users")
            }
        rows: dict[Any, dict[str, float]] = {}
        waits: dict[Any, dict[int, int]] = {}

        def key_of(raw: Any) -> Any:
            if group == "agent":
                return names.get(raw, "")
            return raw

        plain = [(i, c) for i, c in enumerate(COUNTS, 1) if c not in WAIT_COLUMNS]
        steps = [(i, int(c.removeprefix("wait_le_"))) for i, c in enumerate(COUNTS, 1) if c in WAIT_COLUMNS]
        for r in await self._db.fetchall(
            f"SELECT {key} AS k, {sums} FROM call_rollups r{where} GROUP BY k", (dim, first, last)
        ):
            v = tuple(r)
            k = key_of(v[0])
            c = rows.setdefault(k, {"called_back_in_time": 0})
            hist = waits.setdefault(k, {})
            for i, name in plain:
                c[name] = c.get(name, 0) + (v[i] or 0)
            for i, step in steps:
                if v[i]:
                    hist[step] = hist.get(step, 0) + v[i]
        for r in await self._db.fetchall(
            f"SELECT {key} AS k, SUM(r.n) AS n FROM call_rollup_callbacks r{where} AND r.minutes <= ? GROUP BY k",
            (dim, first, last, cb_min),
        ):
            c = rows.setdefault(key_of(r["k"]), {"called_back_in_time": 0})
            c["called_back_in_time"] = c.get("called_back_in_time", 0) + int(r["n"])
        return {"rows": rows, "waits": waits}

    async def calls_from_facts(self, lo: float, hi: float, group: str, cb_min: int) -> dict[str, Any]:
        """The same counts as `calls`, counted from the call facts alone."""
        key = CALL_GROUPS[group]
        base = " FROM call_facts f LEFT JOIN users u ON u.id = f.user_id WHERE f.started_s >= ? AND f.started_s < ?"
        ans = "f.direction = 'inbound' AND f.outcome = 'answered'"
        una = "f.direction = 'inbound' AND f.outcome IN ('missed', 'abandoned')"
        cb = f"{una} AND f.callback_s IS NOT NULL"
        rows = await self._db.fetchall(
            f"SELECT {key} AS k,"
            " SUM(CASE WHEN f.direction = 'inbound' THEN 1 ELSE 0 END) AS inbound,"
            " SUM(CASE WHEN f.direction = 'outbound' THEN 1 ELSE 0 END) AS outbound,"
            f" SUM(CASE WHEN {ans} THEN 1 ELSE 0 END) AS answered,"
            " SUM(CASE WHEN f.outcome = 'missed' THEN 1 ELSE 0 END) AS missed,"
            " SUM(CASE WHEN f.outcome = 'abandoned' THEN 1 ELSE 0 END) AS abandoned,"
            " SUM(CASE WHEN f.direction = 'outbound' AND f.outcome = 'answered' THEN 1 ELSE 0 END)"
            " AS outbound_answered,"
            f" SUM(CASE WHEN {ans} THEN COALESCE(f.wait_ms, 0) ELSE 0 END) AS wait_ms,"
            f" SUM(CASE WHEN {ans} AND f.wait_ms IS NOT NULL THEN 1 ELSE 0 END) AS wait_n,"
            " SUM(COALESCE(f.talk_ms, 0)) AS talk_ms,"
            f" SUM(CASE WHEN {una} THEN 1 ELSE 0 END) AS unanswered,"
            f" SUM(CASE WHEN {cb} THEN 1 ELSE 0 END) AS called_back,"
            f" SUM(CASE WHEN {cb} THEN f.callback_ms ELSE 0 END) AS callback_ms,"
            f" SUM(CASE WHEN {cb} AND f.callback_ms <= ? THEN 1 ELSE 0 END) AS called_back_in_time"
            + base
            + " GROUP BY k",
            (cb_min * 60_000, lo, hi),
        )
        out: dict[Any, dict[str, float]] = {
            r["k"]: {k: r[k] or 0 for k in r.keys() if k != "k"} for r in rows
        }
        # waits as a histogram of whole seconds (rounded up); the report puts them on its steps
        waits: dict[Any, dict[int, int]] = {}
        for r in await self._db.fetchall(
            f"SELECT {key} AS k, CAST(f.wait_s AS INTEGER)"
            " + CASE WHEN f.wait_s > CAST(f.wait_s AS INTEGER) THEN 1 ELSE 0 END AS w, COUNT(*) AS n"
            + base
            + f" AND {ans} AND f.wait_s IS NOT NULL GROUP BY k, w",
            (lo, hi),
        ):
            waits.setdefault(r["k"], {})[int(r["w"])] = int(r["n"])
        return {"rows": out, "waits": waits}

    async def messaging(self, lo: str, hi: str, group: str, months: list[tuple[str, str]]) -> dict[Any, dict]:
        """SMS and email counts per blast, template or month for messages sent in [lo, hi) (store
        time text); `months`: (key, UTC start) of each local month in the period, oldest first.

        Whole days (in the zone the rollups are kept in) come from the daily rollups, partial days at
        either edge from the outboxes; without rollups in a zone, everything from the outboxes.
        """
        if group not in ("blast", "template", "month"):
            raise ValidationError("group", "must be one of blast, template, month")
        zone = await self.message_zone()
        days = message_rollups.whole_days(lo, hi, zone) if zone else None
        if days is None:
            return await self.messaging_from_outboxes(lo, hi, group, months)
        first, last, a, b = days
        out = await message_rollups.read(self._db, first, last, group)
        for x, y in ((lo, a), (b, hi)):
            if x < y:
                for k, counts in (await self.messaging_from_outboxes(x, y, group, months)).items():
                    row = out.setdefault(k, {})
                    for name, v in counts.items():
                        row[name] = row.get(name, 0) + (v or 0)
        return out

    async def message_zone(self) -> str | None:
        """The zone the messaging rollups are kept in (None before they were first built)."""
        row = await self._db.fetchone("SELECT zone FROM message_rollup_zone")
        return row["zone"] if row else None

    async def rebuild_message_rollups(self) -> None:
        """Recompute the messaging rollups in the store's zone (one transaction)."""
        async with self._db.transaction() as tx:
            n = await message_rollups.rebuild(tx, self.time_zone)
        log.info("event=message_rollups_rebuilt messages=%d zone=%s", n, self.time_zone)

    async def messaging_from_outboxes(
        self, lo: str, hi: str, group: str, months: list[tuple[str, str]]
    ) -> dict[Any, dict]:
        """The same counts as `messaging`, counted from the outboxes, replies and unsubscribes alone.

        An SMS counts when it was sent (never sent: when it failed or was skipped); an email when it
        was sent (bounced: when it failed). A reply or opt-out counts for the last SMS sent to that
        number at or before it, an unsubscribe for the last email sent to that contact (ties: the
        later row); so a reply after the period still counts for a message sent in it.
        """

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
                " AND o2.sent_at IS NOT NULL AND o2.sent_at <= t0.started_at ORDER BY o2.sent_at DESC, o2.id DESC LIMIT 1)"
                " AS outbox_id, CASE WHEN json_extract(t0.payload, '$.keyword') = 'stop' THEN 1 ELSE 0 END AS stop"
                " FROM touches t0 WHERE t0.kind = 'sms' AND t0.direction = 'inbound' AND t0.started_at >= ?"
                ") t JOIN sms_outbox o ON o.id = t.outbox_id LEFT JOIN sms_blasts b ON b.id = o.blast_id"
                f" WHERE {in_period}{extra} GROUP BY k",
                [*key_params, lo, lo, hi, lo, hi],
            ):
                add(r["k"], replies=r["replies"], opted_out=r["opted_out"])
        if group in ("template", "month"):
            email_at = "COALESCE(o.sent_at, CASE WHEN o.state = 'failed' THEN o.updated_at END)"
            if group == "template":
                key_sql, key_params = "COALESCE(tp.name, '')", []
            else:
                key_sql, key_params = month_of(email_at)
            for r in await self._db.fetchall(
                f"SELECT {key_sql} AS k,"
                " SUM(CASE WHEN o.state = 'sent' THEN 1 ELSE 0 END) AS sent,"
                " SUM(CASE WHEN o.state = 'failed' THEN 1 ELSE 0 END) AS bounced"
                " FROM email_outbox o LEFT JOIN email_templates tp ON tp.id = o.template_id"
                f" WHERE {email_at} >= ? AND {email_at} < ? GROUP BY k",
                [*key_params, lo, hi],
            ):
                add(r["k"], email_sent=r["sent"], email_bounced=r["bounced"])
            # an unsubscribe counts for the last email sent to that contact before it
            for r in await self._db.fetchall(
                f"SELECT {key_sql} AS k, COUNT(*) AS n FROM ("
                " SELECT (SELECT e.id FROM email_outbox e WHERE e.contact_id = CAST(a.object_id AS INTEGER)"
                " AND e.sent_at IS NOT NULL AND e.sent_at <= a.at ORDER BY e.sent_at DESC, e.id DESC LIMIT 1) AS email_id"
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
        by, key, join = FOLLOWUP_GROUPS[group]
        cols = ", ".join(f"{expr} AS {name}" for name, expr in by)
        group_by = f" GROUP BY {', '.join(expr for _, expr in by)}" if by else ""
        miss = ",".join("?" * len(NOT_REACHED))
        out: dict[Any, dict[str, int]] = {}

        async def count(sums: dict[str, str], where: str, params: list[Any]) -> None:
            # counted per the group's own columns from followups alone (one index range), then keyed
            items = ", ".join(f"{expr} AS {name}" for name, expr in sums.items())
            inner = f"SELECT {cols + ', ' if cols else ''}{items} FROM followups f WHERE {where}{group_by}"
            totals = ", ".join(f"SUM(f.{name}) AS {name}" for name in sums)
            for r in await self._db.fetchall(
                f"SELECT {key} AS k, {totals} FROM ({inner}) f{join} GROUP BY k", params
            ):
                if any(r[name] for name in sums):
                    row = out.setdefault(r["k"], dict.fromkeys(FOLLOWUP_COUNTS, 0))
                    for name in sums:
                        row[name] += int(r[name] or 0)

        # due: by due_at
        await count({"due": "COUNT(*)"}, "f.due_at >= ? AND f.due_at < ?", [lo, hi])
        # done (= attempted) and reached: by (status, closed_at)
        reached = f"SUM(CASE WHEN COALESCE(LOWER(f.result), '') NOT IN ({miss}) THEN 1 ELSE 0 END)"
        await count(
            {"done": "COUNT(*)", "attempted": "COUNT(*)", "reached": reached},
            "f.status = 'done' AND f.closed_at >= ? AND f.closed_at < ?",
            [*NOT_REACHED, lo, hi],
        )
        # past due: open now (by status, due_at), or closed at or after the cut-off (by status, closed_at)
        await count(
            {"past_due": "COUNT(*)"},
            "f.status = 'open' AND f.due_at < ? AND f.created_at < ?",
            [cutoff, cutoff],
        )
        await count(
            {"past_due": "COUNT(*)"},
            "f.status IN ('done', 'cancelled') AND f.closed_at >= ? AND f.due_at < ? AND f.created_at < ?",
            [cutoff, cutoff, cutoff],
        )
        # a group whose only follow-ups in the period were closed in it but not as done (cancelled, or
        # reopened since) still has its row, of zeros
        distinct = cols or "1 AS one"
        for r in await self._db.fetchall(
            f"SELECT DISTINCT {key} AS k FROM (SELECT {distinct} FROM followups f"
            f" WHERE f.status IN ('open', 'cancelled') AND f.closed_at >= ? AND f.closed_at < ?{group_by}) f{join}",
            [lo, hi],
        ):
            out.setdefault(r["k"], dict.fromkeys(FOLLOWUP_COUNTS, 0))
        return out


_ROLLUP_KEYS = {
    "agent": ("agent", "r.dim_key"),
    "queue": ("queue", "r.dim_key"),
    "line": ("line", "r.dim_key"),
    "day": ("day", "r.local_day"),
    "hour": ("hour", "CAST(r.dim_key AS INTEGER)"),
    "weekday_hour": ("hour", "r.weekday * 100 + CAST(r.dim_key AS INTEGER)"),
    "all": ("day", "''"),
}


def _full_days(lo: float, hi: float, zone_name: str) -> tuple[str, str, float, float] | None:
    """The whole days in [lo, hi) in the zone: (first, last, first's start, the end of last)."""
    zone = ZoneInfo(zone_name)
    midnight = lambda d: datetime.combine(d, time(0), zone).timestamp()  # noqa: E731
    first = datetime.fromtimestamp(lo, UTC).astimezone(zone).date()
    if midnight(first) < lo:
        first += timedelta(days=1)
    last = datetime.fromtimestamp(hi, UTC).astimezone(zone).date() - timedelta(days=1)
    if last < first:
        return None
    return first.isoformat(), last.isoformat(), midnight(first), midnight(last + timedelta(days=1))


def _merge(into: dict[str, Any], more: dict[str, Any]) -> None:
    for k, counts in more["rows"].items():
        row = into["rows"].setdefault(k, {})
        for name, v in counts.items():
            row[name] = row.get(name, 0) + (v or 0)
    for k, hist in more["waits"].items():
        into_hist = into["waits"].setdefault(k, {})
        for w, n in hist.items():
            into_hist[w] = into_hist.get(w, 0) + n


def utc_text(dt: datetime) -> str:
    """A bound as store time text."""
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
