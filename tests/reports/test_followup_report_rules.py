"""The follow-up report per cadence rule and call list, from a real day's work: a rule and two call
lists made through the API, the sweep puts the rule's follow-ups on the owners' days, reps work them
by calls they disposition; the report's rows per rule, per list and per salesperson say what happened."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from crm_link.clock import ManualClock
from cti.directory import InterfaceDirectory
from cti.events import CallAnswered, CallRinging
from cti.service import CallService
from switchboard.app import create_app
from switchboard.keys import FOLLOWUPS, HUB, STORE
from switchboard.settings import Settings
from tests.conftest import make_api

NOW0 = datetime(2026, 6, 10, 14, 0, tzinfo=UTC)  # the Wednesday before, when the rule was made
NOW = datetime(2026, 6, 15, 14, 0, tzinfo=UTC)  # Monday 09:00 in Chicago
TODAY = date(2026, 6, 15)


@pytest.fixture
async def app_client(aiohttp_client: Any, settings: Settings) -> tuple[Any, ManualClock]:
    settings.attributes = {"test_drive_date": "date"}  # no built-in rule counts from it
    settings.followups.lookahead_days = 3  # a follow-up is made 3 days before it is due
    clock = ManualClock(NOW0)
    return await aiohttp_client(create_app(settings, clock=clock)), clock


async def test_rows_per_rule_list_and_rep_after_a_sweep_and_dispositioned_calls(app_client: Any) -> None:
    app_client, clock = app_client
    app = app_client.server.app
    ann = await make_api(app_client, "ann", "rep", extension="1001")
    bob = await make_api(app_client, "bob", "rep", extension="1002")
    boss = await make_api(app_client, "maria", "manager")

    resp = await boss.post(
        "/api/v1/cadences",
        {
            "name": "Test drive",
            "date_field": "test_drive_date",
            "steps": [{"offset": "+2d", "channel": "call", "reason": "how was the drive?"}],
            "assign": "owner",
        },
    )
    assert resp.status == 201, await resp.text()

    async def customer(name: str, phone: str, owner: str, drove: date) -> int:
        body = {
            "first_name": name,
            "last_name": "Test",
            "phones": [phone],
            "owner": owner,
            "attributes": {"test_drive_date": drove.isoformat()},
        }
        resp = await boss.post("/api/v1/contacts", body)
        assert resp.status == 201, await resp.text()
        return int((await resp.json())["id"])

    c1 = await customer("One", "+13125550101", "ann", TODAY - timedelta(days=2))  # due today
    c2 = await customer("Two", "+13125550102", "bob", TODAY - timedelta(days=2))  # due today
    c3 = await customer("Three", "+13125550103", "ann", TODAY - timedelta(days=1))  # due tomorrow
    await customer("Five", "+13125550105", "bob", TODAY - timedelta(days=5))  # due last Friday

    async def made() -> list[tuple[str, str]]:
        listed = await (await boss.get("/api/v1/followups?state=all&rule=Test drive")).json()
        return sorted((f["contact_name"], f["assignee"]) for f in listed["items"])

    assert await made() == [("Five Test", "bob")]  # the others are not due within 3 days yet
    # Monday: the day's sweep makes the follow-ups that now fall within 3 days
    clock.set(NOW)
    await app[FOLLOWUPS].sweep(restart=True)
    assert await made() == [
        ("Five Test", "bob"),
        ("One Test", "ann"),
        ("Three Test", "ann"),
        ("Two Test", "bob"),
    ]

    lists = {}
    for name, ids in (("June service", [c1, c3]), ("Walk-ins", [c2, c1])):
        resp = await boss.post("/api/v1/call-lists", {"name": name, "mode": "preview", "contact_ids": ids})
        assert resp.status == 201, await resp.text()
        lists[name] = f"{name} #{(await resp.json())['id']}"

    # ann reaches One and books her; bob leaves Two a message
    calls = CallService(
        app[STORE],
        app[HUB],
        InterfaceDirectory(app[STORE], {"PJSIP/1001": "ann", "PJSIP/1002": "bob"}),
        source="asterisk",
    )
    for cid, who, number, ext, api, result in (
        ("r1", "ann", "+13125550101", "PJSIP/1001", ann, "appointment set"),
        ("r2", "bob", "+13125550102", "PJSIP/1002", bob, "left message"),
    ):
        await calls.handle(CallRinging(cid, "outbound", ext[-4:], number, ext, None, NOW))
        await calls.handle(CallAnswered(cid, ext, NOW + timedelta(seconds=5)))
        resp = await api.post(f"/api/v1/calls/{cid}/disposition", {"disposition": result, "note": who})
        assert resp.status == 200, await resp.text()

    async def rows(group: str, **q: str) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
        query = {"from": "2026-06-15", "to": "2026-06-21", "group": group} | q
        resp = await boss.get("/api/v1/reports/followups?" + "&".join(f"{k}={v}" for k, v in query.items()))
        assert resp.status == 200, await resp.text()
        data = await resp.json()
        return {r["key"]: r for r in data["rows"]}, data

    def figures(r: dict[str, Any]) -> tuple[int, int, int, int, int, float | None]:
        return (r["due"], r["done"], r["past_due"], r["attempted"], r["reached"], r["success_rate"])

    by_rule, data = await rows("rule")
    # due this week: One, Two (today), Three (tomorrow); Five fell due last week and is still open
    assert figures(by_rule["Test drive"]) == (3, 2, 1, 2, 1, 0.5)
    assert figures(data["totals"]) == (3, 2, 1, 2, 1, 0.5)
    assert figures(data["previous"]["totals"])[:3] == (1, 0, 1)  # Five: due last week, open at its end

    by_list, data = await rows("list")
    assert set(by_list) == set(lists.values())
    assert figures(by_list[lists["June service"]]) == (2, 1, 0, 1, 1, 1.0)  # One reached, Three not due
    assert figures(by_list[lists["Walk-ins"]]) == (2, 2, 0, 2, 1, 0.5)  # One reached, Two only got a message
    assert figures(data["totals"]) == (3, 2, 1, 2, 1, 0.5)  # One counts on both lists, once in total

    by_rep, _ = await rows("assignee")
    assert figures(by_rep["ann"]) == (2, 1, 0, 1, 1, 1.0)
    assert figures(by_rep["bob"]) == (1, 1, 1, 1, 0, 0.0)
