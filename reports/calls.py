"""The call report: one definition per figure, from the call facts written as each call ended."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from crm_link.call_rollups import WAIT_STEPS, wait_step
from crm_link.errors import ValidationError
from crm_link.store import Store
from reports.periods import Period

GROUPS = ("agent", "day", "hour", "line", "queue", "weekday_hour")
WEEKDAYS = ("Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat")
COLUMNS = (
    "key",
    "inbound",
    "outbound",
    "answered",
    "missed",
    "abandoned",
    "answer_rate",
    "avg_wait_s",
    "p90_wait_s",
    "talk_s",
    "outbound_answered",
    "unanswered",
    "not_called_back",
    "avg_callback_s",
)

# what each figure means: shown on the reports page and in the README
DEFINITIONS: dict[str, str] = {
    "inbound": "calls from customers that reached an agent's phone or a queue, whatever happened next",
    "outbound": "calls placed by a rep to a customer (click-to-call, dialer)",
    "answered": "inbound calls an agent picked up (a call abandoned in the queue while an agent's "
    "phone rang is not answered)",
    "missed": "inbound calls nobody answered and the caller did not hang up on: rang out, no agent, "
    "the queue gave up, or closed by Switchboard when the PBX lost its end",
    "abandoned": "inbound calls the caller hung up on while waiting for an agent (Asterisk "
    "QueueCallerAbandon, unless the queue itself gave up: QUEUESTATUS TIMEOUT and the like are "
    "missed; Twilio: the caller left before ringing the agents ran out)",
    "answer_rate": "answered ÷ inbound (missed and abandoned count against it)",
    "avg_wait_s": "a wait is from the call's arrival (first channel / Twilio's arrival) to the moment "
    "an agent answered; the average is over answered inbound calls",
    "p90_wait_s": "9 in 10 answered inbound calls waited at most this long, on the steps "
    + ", ".join(str(s) for s in WAIT_STEPS[:-1])
    + " s (the smallest step that holds; waits rounded up to the whole second)",
    "talk_s": "seconds from answer to hang-up, summed over answered calls both ways",
    "outbound_answered": "outbound calls the customer answered (not busy, not unanswered)",
    "unanswered": "missed + abandoned",
    "not_called_back": "unanswered calls with no outbound call to the same number within the "
    "callback window after they ended",
    "avg_callback_s": "for unanswered calls that were called back (any time later), the average time "
    "from the end of the missed call to the start of the first outbound call to that number",
}
DEFAULT_CALLBACK_MIN = 60


def p90(hist: dict[int, int]) -> int | None:
    """The smallest wait step (WAIT_STEPS) within which at least 9 in 10 waits of a histogram
    {whole seconds or step: count} lie (the nearest-rank 90th percentile, on the steps)."""
    steps: dict[int, int] = {}
    for value, count in hist.items():
        steps[wait_step(value)] = steps.get(wait_step(value), 0) + count
    hist = steps
    n = sum(hist.values())
    if n == 0:
        return None
    rank = math.ceil(0.9 * n)
    seen = 0
    for value in sorted(hist):
        seen += hist[value]
        if seen >= rank:
            return value
    return max(hist)  # unreachable


def _row(key: str, c: dict[str, float], waits: dict[int, int]) -> dict[str, Any]:
    g = lambda name: c.get(name, 0) or 0  # noqa: E731
    inbound, answered = int(g("inbound")), int(g("answered"))
    unanswered = int(g("unanswered"))
    return {
        "key": key,
        "inbound": inbound,
        "outbound": int(g("outbound")),
        "answered": answered,
        "missed": int(g("missed")),
        "abandoned": int(g("abandoned")),
        "answer_rate": round(answered / inbound, 4) if inbound else None,
        "avg_wait_s": round(g("wait_ms") / g("wait_n") / 1000, 1) if g("wait_n") else None,
        "p90_wait_s": p90(waits),
        "talk_s": round(g("talk_ms") / 1000),
        "outbound_answered": int(g("outbound_answered")),
        "unanswered": unanswered,
        "not_called_back": unanswered - int(g("called_back_in_time")),
        "avg_callback_s": round(g("callback_ms") / g("called_back") / 1000, 1) if g("called_back") else None,
    }


def _key(group: str, raw: Any) -> str:
    if group == "hour":
        return f"{int(raw):02d}"
    if group == "weekday_hour":
        return f"{WEEKDAYS[int(raw) // 100]} {int(raw) % 100:02d}"
    return "" if raw is None else str(raw)


async def call_report(
    store: Store,
    period: Period,
    group: str,
    *,
    callback_within_min: int = DEFAULT_CALLBACK_MIN,
    line_names: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """`{rows: [{key, inbound, …}], totals: {…}, previous: {from, to, totals}}` for calls that started
    in the period; `previous` holds the totals of the period of equal length just before. Per line,
    each row also has `name`, the line's name from `line_names` (`[lines]`) or None."""
    if group not in GROUPS:
        raise ValidationError("group", f"must be one of {', '.join(GROUPS)}")
    data = await store.reports.calls(
        period.start.timestamp(), period.end.timestamp(), group, callback_within_min
    )
    counts, waits = data["rows"], data["waits"]
    keys = list(counts)
    if group == "day":  # every day of the period, quiet ones too (a chart's x axis)
        keys = [d.isoformat() for d in period.days()]
    elif group == "hour":
        keys = list(range(24))
    elif group == "weekday_hour":
        keys = [d * 100 + h for d in range(7) for h in range(24)]
    rows = [_row(_key(group, k), counts.get(k, {}), waits.get(k, {})) for k in keys]
    if group in ("agent", "line", "queue"):
        rows.sort(key=lambda r: r["key"])
    if group == "line":
        names = line_names or {}
        rows = [{"key": r["key"], "name": names.get(r["key"])} | r for r in rows]
    total: dict[str, float] = {}
    all_waits: dict[int, int] = {}
    for c in counts.values():
        for name, v in c.items():
            total[name] = total.get(name, 0) + (v or 0)
    for hist in waits.values():
        for w, n in hist.items():
            all_waits[w] = all_waits.get(w, 0) + n
    before = period.previous()
    prev = await store.reports.calls(
        before.start.timestamp(), before.end.timestamp(), "all", callback_within_min
    )
    return {
        "from": period.first.isoformat(),
        "to": period.last.isoformat(),
        "time_zone": period.zone,
        "group": group,
        "callback_within_min": callback_within_min,
        "rows": rows,
        "totals": _row("total", total, all_waits),
        # the same figures for the period of equal length just before (the same definitions)
        "previous": {
            "from": before.first.isoformat(),
            "to": before.last.isoformat(),
            "totals": _row("total", prev["rows"].get("", {}), prev["waits"].get("", {})),
        },
        "definitions": DEFINITIONS,
    }
