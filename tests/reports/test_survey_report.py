"""The survey report against a seeded set of responses whose figures are computed here, independently:
responses, satisfaction rate, average score, NPS, response rate by month/agent/list, reasons ranked,
corrections counted at their current version; CSV; the printable page."""

from __future__ import annotations

import csv
import io
import random
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from crm_link.call_lists import ListSpec
from crm_link.clock import ManualClock
from crm_link.contacts import validate_contact
from crm_link.surveys import NewResponse
from followups.surveys import parse_survey, score
from switchboard.app import create_app
from switchboard.keys import STORE
from tests.conftest import make_api

NPS_SURVEY: dict[str, Any] = {
    "name": "Recommend",
    "questions": [
        {
            "key": "nps",
            "text": "Would you recommend us (0-10)?",
            "type": "scale",
            "min": 0,
            "max": 10,
            "required": True,
        },
        {
            "key": "why",
            "text": "Why not?",
            "type": "multi",
            "options": ["price", "waiting time", "advisor", "car not ready"],
            "show_if": {"key": "nps", "op": "lte", "value": 6},
        },
    ],
    "dissatisfied_if": {"key": "nps", "op": "lte", "value": 3},
}


async def test_survey_report_figures_match_an_independent_count(aiohttp_client: Any, settings: Any) -> None:
    clock = ManualClock(datetime(2026, 4, 1, 15, 0, tzinfo=UTC))
    client = await aiohttp_client(create_app(settings, clock=clock))
    store = client.server.app[STORE]
    boss = await make_api(client, "maria", "manager")
    ann = await make_api(client, "ann", "rep")
    bob = await make_api(client, "bob", "rep")
    agents = {"ann": ann.user.id, "bob": bob.user.id}
    sid = (await (await boss.post("/api/v1/surveys", NPS_SURVEY)).json())["id"]
    spec = parse_survey(NPS_SURVEY)
    cl, _ = await store.call_lists.create(ListSpec(name="Spring", survey_id=sid), contact_ids=[], now=clock())
    rnd = random.Random(14)
    seeded: list[dict[str, Any]] = []
    for i in range(90):
        month = rnd.choice([4, 5, 6])
        when = datetime(2026, month, rnd.randint(1, 28), 16, rnd.randint(0, 59), tzinfo=UTC)
        who = rnd.choice(["ann", "bob"])
        nps = rnd.randint(0, 10)
        answers: dict[str, Any] = {"nps": nps}
        if nps <= 6:
            answers["why"] = sorted(
                rnd.sample(["price", "waiting time", "advisor", "car not ready"], rnd.randint(0, 2))
            )
            if not answers["why"]:
                del answers["why"]
        contact = await store.contacts.create(
            validate_contact({"first_name": f"C{i}", "phones": [f"+1212555{1000 + i}"]}, region="US")
        )
        clock.set(when)
        s = score(spec, answers)
        r = await store.surveys.record(
            NewResponse(
                survey_id=sid,
                survey_version=1,
                source_key=f"seed:{i}",
                contact_id=contact.id,
                answers=answers,
                score=s.score,
                satisfied=s.satisfied,
                dissatisfied=s.dissatisfied,
                reasons=s.reasons,
                summary="seeded",
                agent_id=agents[who],
                list_id=cl.id if i % 2 else None,
            )
        )
        seeded.append(
            {
                "id": r.id,
                "month": f"2026-{month:02d}",
                "agent": who,
                "answers": answers,
                "list": "Spring" if i % 2 else "",
            }
        )
    # a manager corrects one: the report counts the corrected answers
    fixed = seeded[0]
    r = await client.put(
        f"/api/v1/survey-responses/{fixed['id']}",
        json={"answers": {"nps": 10}, "reason": "misheard"},
        headers={"Authorization": f"Bearer {boss.token}"},
    )
    assert r.status == 200, await r.json()
    fixed["answers"] = {"nps": 10}
    clock.set(datetime(2026, 7, 2, 15, 0, tzinfo=UTC))

    def expect(rows: list[dict[str, Any]]) -> dict[str, Any]:
        scores = [r["answers"]["nps"] for r in rows]
        n = len(scores)
        return {
            "responses": n,
            "satisfaction_rate": round(sum(s >= 7 for s in scores) / n, 4) if n else None,
            "avg_score": round(sum(scores) / n, 3) if n else None,
            "nps": round(100 * (sum(s >= 9 for s in scores) - sum(s <= 6 for s in scores)) / n, 1)
            if n
            else None,
        }

    url = f"/api/v1/reports/surveys/{sid}?from=2026-04-01&to=2026-06-30"
    for group, field in (("month", "month"), ("agent", "agent"), ("list", "list")):
        rep = await (await boss.get(url + f"&group={group}")).json()
        want_total = expect(seeded)
        assert {k: rep[k] for k in want_total} == want_total
        assert rep["response_rate"] == 1.0  # nobody unreachable yet
        keys = sorted({s[field] for s in seeded})
        got = {row["key"]: row for row in rep["rows"]}
        assert sorted(got) == keys
        for k in keys:
            want = expect([s for s in seeded if s[field] == k])
            assert {f: got[k][f] for f in want} == want, (group, k)
    reasons = Counter(x for s in seeded for x in s["answers"].get("why", []))
    ranked = sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))
    rep = await (await boss.get(url + "&group=month")).json()
    assert [(r["reason"], r["count"]) for r in rep["reasons"]] == ranked
    # a period holding only May
    may = await (
        await boss.get(f"/api/v1/reports/surveys/{sid}?from=2026-05-01&to=2026-05-31&group=agent")
    ).json()
    assert may["responses"] == sum(s["month"] == "2026-05" for s in seeded)
    # CSV: the same rows and totals
    text = await (await boss.get(url + "&group=agent&format=csv")).text()
    lines = list(csv.DictReader(io.StringIO(text)))
    assert [ln["key"] for ln in lines] == ["ann", "bob", "total"]
    assert int(lines[-1]["responses"]) == 90
    # bad input names the field; reps do not see reports
    for q, field in (("group=week", "group"), ("from=2026-13-01", "from"), ("format=xml", "format")):
        r = await boss.get(f"/api/v1/reports/surveys/{sid}?{q}")
        assert r.status == 400 and (await r.json())["error"]["field"] == field
    assert (await ann.get(url)).status == 403
    # the printable page: totals, the Pareto of reasons, the rate line over months
    page = await (await boss.get(f"/surveys/{sid}/report?from=2026-04-01&to=2026-06-30")).text()
    assert "<svg" in page and ranked[0][0] in page and "Satisfaction rate by month" in page


async def test_rollup_report_counts_local_month_edges_and_corrections(tmp_path: Any) -> None:
    """Responses on the partial UTC days at local month edges land in their local month; a correction
    is counted as the response now stands (the rollup follows it)."""
    from zoneinfo import ZoneInfo

    from crm_link.store import Store
    from reports.periods import Period
    from reports.surveys import survey_report

    zone = "America/Chicago"
    clock = ManualClock(datetime(2026, 4, 1, 12, 0, tzinfo=UTC))
    async with Store(str(tmp_path / "r.db"), time_zone=zone, clock=clock) as store:
        ann = await store.users.add("ann", role="rep", password="x" * 12)
        bob = await store.users.add("bob", role="rep", password="x" * 12)
        sid = (await store.surveys.create(parse_survey(NPS_SURVEY).to_dict(), user_id=None)).id
        spec = parse_survey(NPS_SURVEY)
        local = [  # (local time, score, agent)
            (datetime(2026, 3, 31, 23, 50), 10, ann),  # before the period
            (datetime(2026, 4, 1, 0, 10), 9, ann),
            (datetime(2026, 4, 30, 23, 30), 2, bob),  # UTC May 1st, local April
            (datetime(2026, 5, 1, 0, 30), 8, bob),
            (datetime(2026, 5, 15, 12, 0), 5, ann),
            (datetime(2026, 5, 31, 20, 0), 3, bob),  # UTC June 1st, local May
            (datetime(2026, 6, 30, 23, 59), 7, ann),  # UTC July 1st, local June
            (datetime(2026, 7, 1, 0, 1), 0, ann),  # after the period
        ]
        ids = []
        for i, (when, nps, agent) in enumerate(local):
            clock.set(when.replace(tzinfo=ZoneInfo(zone)))
            answers: dict[str, Any] = {"nps": nps} | ({"why": ["price"]} if nps <= 6 else {})
            s = score(spec, answers)
            contact = await store.contacts.create(
                validate_contact({"first_name": f"E{i}", "phones": [f"+1212555{2000 + i}"]}, region="US")
            )
            r = await store.surveys.record(
                NewResponse(
                    survey_id=sid,
                    survey_version=1,
                    source_key=f"e:{i}",
                    contact_id=contact.id,
                    answers=answers,
                    score=s.score,
                    satisfied=s.satisfied,
                    dissatisfied=s.dissatisfied,
                    reasons=s.reasons,
                    summary="x",
                    agent_id=agent.id,
                )
            )
            ids.append(r.id)
        # the manager corrects the 2 to a 9 (no reason now)
        fixed = score(spec, {"nps": 9})
        await store.surveys.correct(
            ids[2],
            {"nps": 9},
            score=9,
            satisfied=fixed.satisfied,
            dissatisfied=False,
            reasons=[],
            summary="x",
            user_id=ann.id,
            reason="typo",
        )
        period = Period(datetime(2026, 4, 1).date(), datetime(2026, 6, 30).date(), zone)
        by_month = await survey_report(store, sid, period, "month")
        assert [(r["key"], r["responses"]) for r in by_month["rows"]] == [
            ("2026-04", 2),
            ("2026-05", 3),
            ("2026-06", 1),
        ]
        assert by_month["responses"] == 6 and by_month["avg_score"] == round((9 + 9 + 8 + 5 + 3 + 7) / 6, 3)
        assert by_month["reasons"] == [{"reason": "price", "count": 2}]  # 5 and 3; the corrected 2 has none
        by_agent = await survey_report(store, sid, period, "agent")
        assert [(r["key"], r["responses"]) for r in by_agent["rows"]] == [("ann", 3), ("bob", 3)]


async def test_the_reports_surveys_tab_opens_the_newest_survey_for_the_same_period(
    aiohttp_client: Any, settings: Any
) -> None:
    clock = ManualClock(datetime(2026, 4, 1, 15, 0, tzinfo=UTC))
    client = await aiohttp_client(create_app(settings, clock=clock))
    boss = await make_api(client, "maria", "manager")
    ann = await make_api(client, "ann", "rep")
    # no survey yet: the tab opens the page where a manager builds one
    resp = await boss.get("/reports/surveys", allow_redirects=False)
    assert resp.status == 302 and resp.headers["Location"] == "/surveys"
    await boss.post("/api/v1/surveys", NPS_SURVEY)
    newest = (await (await boss.post("/api/v1/surveys", dict(NPS_SURVEY, name="Service"))).json())["id"]
    page = await (await boss.get("/reports")).text()
    assert 'href="/reports/surveys?' in page  # the tab is shown on /reports
    resp = await boss.get("/reports/surveys?from=2026-03-01&to=2026-03-31", allow_redirects=False)
    assert resp.status == 302
    assert resp.headers["Location"] == f"/surveys/{newest}/report?from=2026-03-01&to=2026-03-31"
    resp = await ann.get("/reports/surveys", allow_redirects=False)
    assert resp.status == 403
