"""The messaging report: SMS and email counts per blast, email template or month."""

from __future__ import annotations

from typing import Any

from crm_link.errors import ValidationError
from crm_link.reports import utc_text
from crm_link.store import Store
from reports.periods import Period

GROUPS = ("blast", "template", "month")
COUNTS = (
    "sent",
    "delivered",
    "failed",
    "opted_out",
    "replies",
    "email_sent",
    "email_bounced",
    "email_unsubscribed",
)
COLUMNS = ("key", *COUNTS)
DEFINITIONS: dict[str, str] = {
    "sent": "SMS handed to the gateway (Twilio, Kannel, the modem) in the period",
    "delivered": "of those, SMS the carrier confirmed delivered (delivery report)",
    "failed": "SMS the gateway or carrier reported failed (also ones refused before sending, counted on "
    "the day they failed)",
    "opted_out": "STOP (or another opt-out word) replies, counted for the last SMS sent to that "
    "number before the reply",
    "replies": "inbound SMS from a number, counted for the last SMS sent to it before the reply "
    "(opt-outs included)",
    "email_sent": "emails the dealer's mail server accepted",
    "email_bounced": "emails the mail server refused (permanent failure after retries), counted on the "
    "day they failed",
    "email_unsubscribed": "unsubscribe clicks, counted for the last email sent to that customer before it",
}


async def _figures(store: Store, period: Period, group: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    months = [(k, utc_text(start)) for k, start in period.months()]
    data = await store.reports.messaging(utc_text(period.start), utc_text(period.end), group, months)
    keys = [k for k, _ in months] if group == "month" else sorted(data, key=str)
    rows = [{"key": str(k)} | {c: int(data.get(k, {}).get(c, 0)) for c in COUNTS} for k in keys]
    totals = {"key": "total"} | {c: sum(int(r[c]) for r in rows) for c in COUNTS}
    return rows, totals


async def messaging_report(store: Store, period: Period, group: str) -> dict[str, Any]:
    """`{rows: [{key, sent, delivered, failed, opted_out, replies, email_…}], totals: {…},
    previous: {from, to, totals}}`; `previous` holds the same group's totals for the period of equal
    length just before (per blast: blast SMS only; per template: email only; per month: everything)."""
    if group not in GROUPS:
        raise ValidationError("group", f"must be one of {', '.join(GROUPS)}")
    rows, totals = await _figures(store, period, group)
    before = period.previous()
    _, prev = await _figures(store, before, group)
    return {
        "from": period.first.isoformat(),
        "to": period.last.isoformat(),
        "time_zone": period.zone,
        "group": group,
        "rows": rows,
        "totals": totals,
        "previous": {"from": before.first.isoformat(), "to": before.last.isoformat(), "totals": prev},
        "definitions": DEFINITIONS,
    }
