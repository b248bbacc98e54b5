"""The survey report: responses, satisfaction rate, average score, NPS (0-10 scales), response rate
per agent, list or month, and the reasons for dissatisfaction ranked (one definition per figure)."""

from __future__ import annotations

from typing import Any

from crm_link.errors import ValidationError
from crm_link.reports import utc_text
from crm_link.store import Store
from followups.surveys import spec_of
from reports.periods import Period

GROUPS = ("agent", "list", "month")
COLUMNS = (
    "key",
    "responses",
    "unreachable",
    "response_rate",
    "satisfaction_rate",
    "avg_score",
    "nps",
)
DEFINITIONS: dict[str, str] = {
    "responses": "completed surveys answered in the period (each call or SMS once)",
    "unreachable": "customers of a list carrying the survey not reached after its last attempt",
    "response_rate": "responses ÷ customers attempted (responses + unreachable)",
    "satisfaction_rate": "share of scored responses at or above the survey's satisfied_at on its score "
    "question, counting each response's current (corrected) answers",
    "avg_score": "mean of the score question's answers",
    "nps": "for a 0-10 score: % promoters (9-10) − % detractors (0-6), of scored responses",
    "reasons": "answers of the reasons question (each chosen option once per response), most first",
}


def _row(c: dict[str, Any], nps: bool) -> dict[str, Any]:
    attempted = c["responses"] + c["unreachable"]
    return {
        "key": c["key"],
        "responses": c["responses"],
        "unreachable": c["unreachable"],
        "response_rate": round(c["responses"] / attempted, 4) if attempted else None,
        "satisfaction_rate": round(c["satisfied"] / c["scored"], 4) if c["scored"] else None,
        "avg_score": round(c["score_sum"] / c["score_n"], 3) if c["score_n"] else None,
        "nps": round(100 * (c["promoters"] - c["detractors"]) / c["score_n"], 1)
        if nps and c["score_n"]
        else None,
    }


async def survey_report(store: Store, survey_id: int, period: Period, group: str) -> dict[str, Any]:
    """`{responses, satisfaction_rate, avg_score, nps, response_rate, rows: [...], reasons: [...]}`."""
    if group not in GROUPS:
        raise ValidationError("group", f"must be one of {', '.join(GROUPS)}")
    row = await store.surveys.get(survey_id)
    nps = spec_of(row.spec).is_nps
    lo, hi = utc_text(period.start), utc_text(period.end)
    months = [(name, utc_text(start)) for name, start in period.months()]
    groups, reasons = await store.surveys.report(survey_id, lo, hi, group, months)
    total = _empty("")  # every figure is a count or a sum: the groups add up to the totals
    for g in groups:
        for k, v in g.items():
            if k != "key":
                total[k] += v
    totals = _row(total | {"key": "total"}, nps)
    rows = [_row(g, nps) for g in groups]
    if group == "month":  # every month of the period, an empty one too (the line has no gaps)
        have = {r["key"]: r for r in rows}
        rows = [have.get(name) or _row(_empty(name), nps) for name, _ in months]
    return {
        "survey": {"id": row.id, "name": row.name, "version": row.version, "nps_scale": nps},
        "from": period.first.isoformat(),
        "to": period.last.isoformat(),
        "time_zone": period.zone,
        "group": group,
        **{k: totals[k] for k in COLUMNS if k != "key"},
        "totals": totals,
        "rows": rows,
        "reasons": [{"reason": r, "count": n} for r, n in reasons],
        "definitions": DEFINITIONS,
    }


def _empty(key: str) -> dict[str, Any]:
    return {
        "key": key,
        "responses": 0,
        "unreachable": 0,
        "satisfied": 0,
        "scored": 0,
        "score_sum": 0.0,
        "score_n": 0,
        "promoters": 0,
        "detractors": 0,
    }
