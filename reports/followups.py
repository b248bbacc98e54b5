"""The follow-up report: due, done, past due and success rate per salesperson, cadence rule or call
list, with the same figures for the period before (one definition per figure)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from crm_link.errors import ValidationError
from crm_link.reports import FOLLOWUP_COUNTS, NOT_REACHED, utc_text
from crm_link.store import Store
from reports.periods import Period

GROUPS = ("assignee", "rule", "list")
COLUMNS = ("key", "due", "done", "past_due", "attempted", "reached", "success_rate")
DEFINITIONS: dict[str, str] = {
    "due": "follow-ups falling due in the period (their due time, on days in the dealership's zone)",
    "done": "follow-ups closed as done in the period, whenever they were due",
    "past_due": "follow-ups still open after their due time at the end of the period (or now, for a "
    "period that has not ended): open then, whether closed later or not",
    "attempted": "follow-ups closed as done in the period (each was worked)",
    "reached": "of those, the ones closed with a result saying the customer was reached: any result "
    "other than " + ", ".join(NOT_REACHED),
    "success_rate": "reached ÷ attempted",
    "key": "per salesperson (a pool's unclaimed follow-ups as 'pool: name'), cadence rule (empty: "
    "added by hand), or call list the customer is on (a customer on two lists counts in both)",
}


def _row(key: str, c: dict[str, int]) -> dict[str, Any]:
    out: dict[str, Any] = {"key": key} | {n: int(c.get(n, 0)) for n in FOLLOWUP_COUNTS}
    out["success_rate"] = round(out["reached"] / out["attempted"], 4) if out["attempted"] else None
    return out


async def _figures(store: Store, period: Period, group: str, now: datetime) -> dict[str, Any]:
    lo, hi = utc_text(period.start), utc_text(period.end)
    cutoff = utc_text(min(period.end, now))
    data = await store.reports.followups(lo, hi, cutoff, group)
    if group == "list":  # a customer may be on several lists or none: the totals are counted apart
        total = (await store.reports.followups(lo, hi, cutoff, "all")).get("", {})
    else:  # each follow-up has exactly one assignee key and one rule key: the rows add up to the totals
        total = {n: sum(c[n] for c in data.values()) for n in FOLLOWUP_COUNTS}
    rows = [_row(str(k), data[k]) for k in sorted(data, key=str)]
    return {
        "from": period.first.isoformat(),
        "to": period.last.isoformat(),
        "rows": rows,
        "totals": _row("total", total),
    }


async def followup_report(store: Store, period: Period, group: str, *, now: datetime) -> dict[str, Any]:
    """`{rows: [{key, due, done, past_due, success_rate, …}], totals: {…}, previous: {…}}`; `previous`
    holds the same figures for the period of equal length just before."""
    if group not in GROUPS:
        raise ValidationError("group", f"must be one of {', '.join(GROUPS)}")
    current = await _figures(store, period, group, now)
    previous = await _figures(store, period.previous(), group, now)
    return {
        "from": current["from"],
        "to": current["to"],
        "time_zone": period.zone,
        "group": group,
        "rows": current["rows"],
        "totals": current["totals"],
        "previous": previous,
        "definitions": DEFINITIONS,
    }
