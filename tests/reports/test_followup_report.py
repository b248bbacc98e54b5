"""The follow-up report over HTTP: follow-ups seeded with known due dates, closures and results
across two weeks for two reps; each figure tallied here; CSV equals JSON; bad input named."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from crm_link.clock import ManualClock
from crm_link.contacts import validate_contact
from reports.followups import COLUMNS
from switchboard.app import create_app
from switchboard.keys import STORE
from switchboard.settings import Settings
from tests.conftest import make_api

# Chicago is UTC-5 in June: the week 2026-06-08..14 runs 05:00Z on the 8th to 05:00Z on the 15th
NOW = datetime(2026, 6, 20, 15, 0, tzinfo=UTC)
P_START = datetime(2026, 6, 8, 5, 0, tzinfo=UTC)
P_END = datetime(2026, 6, 15, 5, 0, tzinfo=UTC)
PREV_START = datetime(2026, 6, 1, 5, 0, tzinfo=UTC)


@pytest.fixture
async def setup(aiohttp_client: Any, settings: Settings) -> Any:
    clock = ManualClock(datetime(2026, 5, 25, 12, 0, tzinfo=UTC))
    client = await aiohttp_client(create_app(settings, clock=clock))
    return client, clock


async def test_followup_figures_per_rep_against_the_previous_week(setup: Any) -> None:
    client, clock = setup
    store = client.app[STORE]
    ann = await make_api(client, "ann", "rep")
    bob = await make_api(client, "bob", "rep")
    boss = await make_api(client, "maria", "manager")
    contact = await store.contacts.create(
        validate_contact({"first_name": "Al", "last_name": "Ray"}, region="US")
    )
    # (assignee, due, closed at or None, result)
    seeds = [
        (ann, P_START + timedelta(hours=1), P_START + timedelta(hours=2), "sold"),
        (ann, P_START + timedelta(days=2), P_START + timedelta(days=2, hours=1), "no answer"),
        (ann, P_START + timedelta(days=3), None, None),  # past due at the period's end
        (ann, P_START - timedelta(hours=1), P_START + timedelta(days=1), "appointment"),  # prev due, done now
        (ann, P_END + timedelta(hours=1), None, None),  # due after the period
        (bob, P_START + timedelta(days=4), P_END + timedelta(days=1), "sold"),  # past due at the end
        (bob, P_END - timedelta(minutes=1), None, None),  # due at 23:59 on the 14th: in, past due
        (bob, PREV_START + timedelta(days=1), PREV_START + timedelta(days=2), "busy"),  # previous week
        (bob, PREV_START, PREV_START + timedelta(hours=1), "sold"),  # previous week
    ]
    made = []
    for who, due, _, _ in seeds:
        f, _new = await store.followups.create(contact.id, due, assignee_id=who.user.id)
        made.append(f)
    for (who, _due, closed, result), f in sorted(zip(seeds, made, strict=True), key=lambda p: p[0][2] or NOW):
        if closed is not None:
            clock.set(closed)
            await store.followups.done(f.id, result=result, user_id=who.user.id)
    clock.set(NOW)

    def tally(lo: datetime, hi: datetime, who: Any) -> dict[str, Any]:
        mine = [s for s in seeds if who is None or s[0] is who]
        cut = min(hi, NOW)
        done = [s for s in mine if s[2] is not None and lo <= s[2] < hi]
        reached = [s for s in done if s[3] not in ("no answer", "busy")]
        return {
            "due": sum(1 for s in mine if lo <= s[1] < hi),
            "done": len(done),
            "past_due": sum(1 for s in mine if s[1] < cut and (s[2] is None or s[2] >= cut)),
            "attempted": len(done),
            "reached": len(reached),
            "success_rate": round(len(reached) / len(done), 4) if done else None,
        }

    resp = await boss.get("/api/v1/reports/followups?from=2026-06-08&to=2026-06-14&group=assignee")
    assert resp.status == 200, await resp.text()
    data = await resp.json()
    rows = {r["key"]: r for r in data["rows"]}
    for who in (ann, bob):
        expect = tally(P_START, P_END, who)
        assert {k: rows[who.user.username][k] for k in expect} == expect
    assert rows["ann"]["due"] == 3 and rows["ann"]["success_rate"] == pytest.approx(2 / 3, abs=1e-4)
    assert {k: data["totals"][k] for k in tally(P_START, P_END, None)} == tally(P_START, P_END, None)
    prev = data["previous"]
    assert (prev["from"], prev["to"]) == ("2026-06-01", "2026-06-07")
    assert {k: prev["totals"][k] for k in tally(PREV_START, P_START, None)} == tally(
        PREV_START, P_START, None
    )
    assert {r["key"]: r["success_rate"] for r in prev["rows"]}["bob"] == 0.5

    # CSV: the same rows and totals
    resp = await boss.get("/api/v1/reports/followups?from=2026-06-08&to=2026-06-14&group=assignee&format=csv")
    assert resp.status == 200
    lines = list(csv.DictReader(io.StringIO(await resp.text())))
    assert [ln["key"] for ln in lines] == [*rows, "total"]
    for ln, r in zip(lines, [*data["rows"], data["totals"]], strict=True):
        assert ln == {c: "" if r[c] is None else str(r[c]) for c in COLUMNS}

    # by rule: hand-made follow-ups have no rule
    resp = await boss.get("/api/v1/reports/followups?from=2026-06-08&to=2026-06-14&group=rule")
    only = (await resp.json())["rows"]
    assert [r["key"] for r in only] == [""] and only[0]["due"] == data["totals"]["due"]

    for query, field in (("group=day", "group"), ("from=June", "from"), ("format=xls", "format")):
        resp = await boss.get(f"/api/v1/reports/followups?{query}")
        assert resp.status == 400
        assert (await resp.json())["error"]["field"] == field
    resp = await ann.get("/api/v1/reports/followups")
    assert resp.status == 403
