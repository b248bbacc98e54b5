"""Daily messaging rollups, exact: per local day, blast and email template, what the outboxes hold.

Triggers (migration 0022) keep `message_rollups` equal to the SMS and email outboxes in the same
transaction as every change: a message's state, its send time, a delivery report days later, a reply
(linked to the last SMS sent to that number at or before it) or an unsubscribe (to the last email
sent to that customer). A time's local day is read from `message_days`, the zone's local midnights as
store time text, which `rebuild` fills; this module builds them and reads whole days back.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from crm_link.db import from_db_time, to_db_time

# the days message_days holds (times outside them fall back to counting the outboxes)
FIRST_DAY = date(1990, 1, 1)
END_DAY = date(2100, 1, 1)
SMS_COUNTS = ("sms", "sent", "delivered", "failed", "replies", "opted_out")
EMAIL_COUNTS = ("emails", "email_sent", "email_bounced", "email_unsubscribed")
COUNTS = SMS_COUNTS + EMAIL_COUNTS
_SMS_AT = "COALESCE(o.sent_at, o.final_at)"
_EMAIL_AT = "COALESCE(o.sent_at, CASE WHEN o.state = 'failed' THEN o.updated_at END)"
_DAY = "COALESCE((SELECT c.local_day FROM message_days c WHERE c.utc_start <= {} ORDER BY c.utc_start DESC LIMIT 1), '')"


def midnights(zone_name: str) -> list[tuple[str, str]]:
    """(UTC store time of local midnight, local day) of every day FIRST_DAY..END_DAY in the zone."""
    zone = ZoneInfo(zone_name)
    out, d = [], FIRST_DAY
    while d < END_DAY:
        out.append((to_db_time(datetime.combine(d, time(0), zone)), d.isoformat()))
        d += timedelta(days=1)
    return out


async def rebuild(tx: Any, zone_name: str) -> int:
    """Fill the calendar for `zone_name` and recompute the rollups from both outboxes (a new store,
    or the dealership's zone changed); how many messages were counted."""
    await tx.execute("DELETE FROM message_days")
    await tx.executemany(
        "INSERT INTO message_days (utc_start, local_day) VALUES (?, ?)", midnights(zone_name)
    )
    await tx.execute("DELETE FROM message_rollups")
    rows: dict[tuple[str, str, str], list[int]] = {}

    def add(key: tuple[str, str, str], offset: int, values: list[int]) -> None:
        row = rows.setdefault(key, [0] * len(COUNTS))
        for i, v in enumerate(values):
            row[offset + i] += int(v or 0)

    n = 0
    async with tx.execute(
        f"SELECT {_DAY.format(_SMS_AT)} AS day, o.blast_id, COUNT(*),"
        " SUM(CASE WHEN o.sent_at IS NOT NULL THEN 1 ELSE 0 END),"
        " SUM(CASE WHEN o.state = 'delivered' THEN 1 ELSE 0 END),"
        " SUM(CASE WHEN o.state = 'failed' THEN 1 ELSE 0 END), SUM(o.replies), SUM(o.opt_outs)"
        f" FROM sms_outbox o WHERE {_SMS_AT} IS NOT NULL GROUP BY day, o.blast_id"
    ) as cur:
        for r in await cur.fetchall():
            values = list(tuple(r)[2:])
            n += int(values[0])
            add(("all", r[0], ""), 0, values)
            if r[1] is not None:
                add(("blast", r[0], str(r[1])), 0, values)
    async with tx.execute(
        f"SELECT {_DAY.format(_EMAIL_AT)} AS day, o.template_id, COUNT(*),"
        " SUM(CASE WHEN o.state = 'sent' THEN 1 ELSE 0 END),"
        " SUM(CASE WHEN o.state = 'failed' THEN 1 ELSE 0 END), SUM(o.unsubscribes)"
        f" FROM email_outbox o WHERE {_EMAIL_AT} IS NOT NULL GROUP BY day, o.template_id"
    ) as cur:
        for r in await cur.fetchall():
            values = list(tuple(r)[2:])
            n += int(values[0])
            add(("all", r[0], ""), len(SMS_COUNTS), values)
            add(("template", r[0], "" if r[1] is None else str(r[1])), len(SMS_COUNTS), values)
    cols = ", ".join(COUNTS)
    await tx.executemany(
        f"INSERT INTO message_rollups (dim, local_day, dim_key, {cols}) VALUES (?, ?, ?, {', '.join('?' * len(COUNTS))})",
        [(*k, *v) for k, v in rows.items()],
    )
    await tx.execute("DELETE FROM message_rollup_zone")
    await tx.execute("INSERT INTO message_rollup_zone (zone) VALUES (?)", (zone_name,))
    return n


def whole_days(lo: str, hi: str, zone_name: str) -> tuple[str, str, str, str] | None:
    """The whole local days in [lo, hi) (store time text): (first, last, first's start, the end of
    last as store time text); None when there is none or they are outside the calendar."""
    zone = ZoneInfo(zone_name)
    start, end = from_db_time(lo), from_db_time(hi)
    assert start is not None and end is not None
    first = start.astimezone(zone).date()
    if datetime.combine(first, time(0), zone) < start:
        first += timedelta(days=1)
    last = end.astimezone(zone).date() - timedelta(days=1)
    if last < first or first < FIRST_DAY or last >= END_DAY:
        return None
    a = datetime.combine(first, time(0), zone)
    b = datetime.combine(last + timedelta(days=1), time(0), zone)
    return first.isoformat(), last.isoformat(), to_db_time(a.astimezone(UTC)), to_db_time(b.astimezone(UTC))


async def read(db: Any, first: str, last: str, group: str) -> dict[Any, dict[str, int]]:
    """Counts per blast ("name #id"), template name or month (YYYY-MM) of the whole days
    first..last, in the report's names (sent, …, email_unsubscribed); keys with no message left out."""
    dim = {"blast": "blast", "template": "template", "month": "all"}[group]
    key = "substr(r.local_day, 1, 7)" if group == "month" else "r.dim_key"
    sums = ", ".join(f"SUM(r.{c}) AS {c}" for c in COUNTS)
    rows = await db.fetchall(
        f"SELECT {key} AS k, {sums} FROM message_rollups r WHERE r.dim = ? AND r.local_day >= ?"
        " AND r.local_day <= ? GROUP BY k",
        (dim, first, last),
    )
    names: dict[str, str] = {}
    if group == "blast":
        names = {
            str(b["id"]): f"{b['name'] or ''} #{b['id']}"
            for b in await db.fetchall("SELECT id, name FROM sms_blasts")
        }
    elif group == "template":
        names = {
            str(t["id"]): t["name"] or "" for t in await db.fetchall("SELECT id, name FROM email_templates")
        }
    out: dict[Any, dict[str, int]] = {}
    for r in rows:
        if not (r["sms"] or r["emails"]):
            continue
        if group == "blast":
            k = names.get(r["k"], f" #{r['k']}")
        elif group == "template":
            k = names.get(r["k"], "")
        else:
            k = r["k"]
        row = out.setdefault(k, {})
        for c in COUNTS:
            if c in ("sms", "emails"):
                continue
            name = "opted_out" if c == "opted_out" else c
            row[name] = row.get(name, 0) + int(r[c] or 0)
    return out
