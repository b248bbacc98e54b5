"""The follow-up loop end to end: cadences from imported dates onto each owner's My Day, closing by a
call's disposition, pools and claims over the hub, reassignment, bad input, typed attributes."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crm_link.attributes import to_date
from crm_link.clock import ManualClock
from crm_link.contacts import validate_contact
from crm_link.errors import ValidationError
from cti.directory import InterfaceDirectory
from cti.events import CallAnswered, CallEnded, CallRinging
from cti.service import CallService
from followups.rules import Offset, Rule, Step, Window, plan
from switchboard.app import create_app
from switchboard.followups_ctx import import_with_followups
from switchboard.keys import FOLLOWUPS, HUB, SETTINGS, STORE
from switchboard.settings import Settings
from tests.conftest import Api, make_api

NOW = datetime(2026, 6, 15, 14, 0, tzinfo=UTC)  # 09:00 in Chicago, the dealership's zone


def _ago(**kw: int) -> str:
    today = NOW.date()
    if "months" in kw:
        m = today.month - 1 - kw["months"]
        y, m = today.year + m // 12, m % 12 + 1
        return date(y, m, today.day).isoformat()
    return (today - timedelta(**kw)).isoformat()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(NOW)


@pytest.fixture
async def fclient(aiohttp_client: Any, settings: Settings, clock: ManualClock) -> Any:
    settings.followups.pools = {"bdc": ["ann", "bob"]}
    settings.followups.unowned_pool = "bdc"
    settings.attributes = {"service_visits": "number"}
    return await aiohttp_client(create_app(settings, clock=clock))


async def _users(client: Any) -> tuple[Api, Api, Api]:
    ann = await make_api(client, "ann", "rep", extension="1001")
    bob = await make_api(client, "bob", "rep", extension="1002")
    boss = await make_api(client, "maria", "manager")
    return ann, bob, boss


def _csv(tmp_path: Path, rows: list[str], name: str = "c.csv") -> Path:
    p = tmp_path / name
    p.write_text("first_name,last_name,phone,owner,delivery_date,service_visits\n" + "\n".join(rows) + "\n")
    return p


async def _import(client: Any, path: Path) -> int:
    app = client.server.app
    report, made = await import_with_followups(app[SETTINGS], app[STORE], app[FOLLOWUPS], path)
    assert not report.errors, report.errors
    return made


# pure rules ---------------------------------------------------------------------------------


def test_offsets() -> None:
    assert Offset.parse("+4d").apply(date(2026, 1, 1)) == date(2026, 1, 5)
    assert Offset.parse("-30d").apply(date(2026, 3, 1)) == date(2026, 1, 30)
    assert Offset.parse("+17mo").apply(date(2025, 1, 31)) == date(2026, 6, 30)
    assert Offset.parse("+1y").apply(date(2024, 2, 29)) == date(2025, 2, 28)
    for bad in ("+4x", "4d", "+d", "", "+99999d", None, 4):
        with pytest.raises(ValidationError) as exc:
            Offset.parse(bad, "steps[0].offset")
        assert exc.value.field == "steps[0].offset"


@given(st.text(max_size=8))
def test_offset_parser_never_crashes(text: str) -> None:
    try:
        o = Offset.parse(text)
    except ValidationError:
        return
    assert str(o) == text.strip()


def test_plan_skips_steps_before_the_rule_and_outside_the_window() -> None:
    rule = Rule(
        1,
        "After-sale",
        "delivery_date",
        (Step(Offset.parse("+4d")), Step(Offset.parse("+25d")), Step(Offset.parse("+17mo"))),
        starts_on=date(2026, 6, 15),
    )
    w = Window(date(2026, 6, 15), catch_up_days=7, lookahead_days=0)
    steps = lambda d: [p.step for p in plan({"delivery_date": d}, [rule], w)]  # noqa: E731
    assert steps("2026-06-11") == [0]
    assert steps("2026-05-21") == [1]  # its +4d day passed before the rule existed
    assert steps("2025-01-15") == [2]
    assert steps("2026-06-14") == []  # +4d is not due yet
    assert steps("not a date") == []


# cadences from imported dates ---------------------------------------------------------------


async def test_imported_delivery_dates_put_exactly_those_on_each_owners_day(
    fclient: Any, tmp_path: Path, clock: ManualClock
) -> None:
    ann, bob, _ = await _users(fclient)
    path = _csv(
        tmp_path,
        [
            f"Four,Days,+1 312 555 0101,ann,{_ago(days=4)},1",
            f"TwentyFive,Days,+1 312 555 0102,bob,{_ago(days=25)},1",
            f"Seventeen,Months,+1 312 555 0103,ann,{_ago(months=17)},1",
            f"Ten,Days,+1 312 555 0104,bob,{_ago(days=10)},1",
        ],
    )
    assert await _import(fclient, path) > 0
    ann_day = await (await ann.get("/api/v1/me/day")).json()
    bob_day = await (await bob.get("/api/v1/me/day")).json()
    assert sorted((f["contact_name"], f["rule"], f["step"]) for f in ann_day["followups"]) == [
        ("Four Days", "After-sale", 0),
        ("Seventeen Months", "After-sale", 2),
    ]
    assert [(f["contact_name"], f["step"]) for f in bob_day["followups"]] == [("TwentyFive Days", 1)]
    # re-importing the same file makes nothing; the sweep makes nothing either
    assert await _import(fclient, path) == 0
    assert (await fclient.server.app[FOLLOWUPS].sweep()).created == 0
    # a corrected date moves the open follow-up (not a second one)
    fixed = _csv(tmp_path, [f"Four,Days,+1 312 555 0101,ann,{_ago(days=3)},1"], "fix.csv")
    await _import(fclient, fixed)
    listed = await (await ann.get("/api/v1/followups?state=all&rule=After-sale")).json()
    four = [f for f in listed["items"] if f["contact_name"] == "Four Days"]
    assert [(f["state"], f["due_at"][:10]) for f in four if f["step"] == 0] == [
        ("open", (NOW.date() + timedelta(days=1)).isoformat())
    ]
    # the next day's sweep picks up the step that comes due, once
    clock.advance(days=1)
    ann_day = await (await ann.get("/api/v1/me/day")).json()
    assert "Four Days" in [f["contact_name"] for f in ann_day["followups"]]


async def test_cadence_bad_input_names_the_field(fclient: Any) -> None:
    _, _, boss = await _users(fclient)
    base = {"name": "X", "date_field": "delivery_date", "steps": [{"offset": "+4d"}]}
    for body, field in (
        (base | {"date_field": "favourite_colour"}, "date_field"),
        (base | {"steps": [{"offset": "+4x"}]}, "steps[0].offset"),
        (base | {"assign": "pool:nowhere"}, "assign"),
        (base | {"assign": "user:ghost"}, "assign"),
        (base | {"escalate_to": "pool:nowhere"}, "escalate_to"),
        (base | {"steps": [{"offset": "+1d", "channel": "fax"}]}, "steps[0].channel"),
    ):
        resp = await boss.post("/api/v1/cadences", json=body)
        assert resp.status == 400, body
        assert (await resp.json())["error"]["field"] == field
    resp = await boss.post("/api/v1/cadences", json=base | {"assign": "pool:bdc"})
    assert resp.status == 201
    names = [c["name"] for c in (await (await boss.get("/api/v1/cadences")).json())["items"]]
    assert {"After-sale", "First service", "Lost customer", "Insurance expiry", "X"} <= set(names)


# closing by real work, routing, hand-off ----------------------------------------------------


async def test_an_answered_call_with_a_disposition_closes_the_followup_it_served(
    fclient: Any, tmp_path: Path
) -> None:
    ann, _, _ = await _users(fclient)
    await _import(fclient, _csv(tmp_path, [f"Four,Days,+1 312 555 0101,ann,{_ago(days=4)},1"]))
    (due,) = (await (await ann.get("/api/v1/me/day")).json())["followups"]
    app = fclient.server.app
    calls = CallService(
        app[STORE], app[HUB], InterfaceDirectory(app[STORE], {"PJSIP/1001": "ann"}), source="asterisk"
    )
    t0 = NOW
    await calls.handle(CallRinging("c1", "inbound", "+13125550101", "7000", "PJSIP/1001", "sales", t0))
    await calls.handle(CallAnswered("c1", "PJSIP/1001", t0 + timedelta(seconds=3)))
    # saving the note twice with a next time: one callback, and a past time is refused
    body = {"disposition": "appointment set", "note": "Booked", "next_followup_at": "2020-01-01T00:00:00Z"}
    resp = await ann.post("/api/v1/calls/c1/disposition", json=body)
    assert resp.status == 400 and (await resp.json())["error"]["field"] == "next_followup_at"
    for when in ("2026-06-20T15:00:00Z", "2026-06-21T15:00:00Z"):
        resp = await ann.post("/api/v1/calls/c1/disposition", json=body | {"next_followup_at": when})
        assert resp.status == 200, await resp.text()
    closed = await app[STORE].followups.get(due["id"])
    assert closed.status == "done" and closed.result == "appointment set"
    listed = await (await ann.get(f"/api/v1/followups?contact_id={due['contact_id']}")).json()
    assert [(f["due_at"], f["kind"]) for f in listed["items"] if f["kind"] != "cadence"] == [
        ("2026-06-21T15:00:00Z", "followup")
    ]


async def test_unowned_missed_call_goes_to_the_pool_and_a_claim_leaves_the_others_day(fclient: Any) -> None:
    ann, bob, _ = await _users(fclient)
    app = fclient.server.app
    walk_in = await app[STORE].contacts.create(
        validate_contact({"first_name": "Walk", "last_name": "In", "phones": ["+13125550199"]}, region="US")
    )
    assert walk_in.owner_id is None
    calls = CallService(app[STORE], app[HUB], InterfaceDirectory(app[STORE], {}), source="asterisk")
    await calls.handle(CallRinging("m1", "inbound", "+13125550199", "7000", "PJSIP/1009", "sales", NOW))
    await calls.handle(
        CallEnded(
            call_id="m1",
            direction="inbound",
            from_number="+13125550199",
            to_number="7000",
            answered=False,
            answered_by=None,
            queue="sales",
            started_at=NOW,
            answered_at=None,
            ended_at=NOW + timedelta(seconds=20),
            duration_s=20.0,
            talk_s=None,
            hangup_cause=16,
            hangup_cause_text="Normal Clearing",
            transferred_to=None,
        )
    )
    for api in (ann, bob):
        day = await (await api.get("/api/v1/me/day")).json()
        assert [(f["contact_name"], f["pool"]) for f in day["missed_calls"]] == [("Walk In", "bdc")]
    fid = day["missed_calls"][0]["id"]
    ws = await bob.client.ws_connect(f"/ws/agent?token={bob.token}")
    assert json.loads((await ws.receive(timeout=5)).data)["type"] == "hello"
    resp = await ann.post(f"/api/v1/followups/{fid}/claim", json={})
    assert resp.status == 200 and (await resp.json())["assignee"] == "ann"
    msg = json.loads((await ws.receive(timeout=5)).data)
    assert msg == {"type": "followup.claimed", "id": fid, "by": "ann"}
    assert (await (await bob.get("/api/v1/me/day")).json())["missed_calls"] == []
    resp = await bob.post(f"/api/v1/followups/{fid}/claim", json={})
    assert resp.status == 403
    await ws.close()


async def test_reassigning_the_owner_moves_open_followups_and_handoff_tells_the_new_one(
    fclient: Any, tmp_path: Path
) -> None:
    ann, bob, boss = await _users(fclient)
    await _import(fclient, _csv(tmp_path, [f"Four,Days,+1 312 555 0101,ann,{_ago(days=4)},1"]))
    (due,) = (await (await ann.get("/api/v1/me/day")).json())["followups"]
    resp = await boss.patch(f"/api/v1/contacts/{due['contact_id']}", json={"owner": "bob"})
    assert resp.status == 200 and (await resp.json())["followups_moved"] == 1
    assert (await (await ann.get("/api/v1/me/day")).json())["followups"] == []
    assert [f["id"] for f in (await (await bob.get("/api/v1/me/day")).json())["followups"]] == [due["id"]]
    audit = await fclient.server.app[STORE].audit.recent(action="contact.owner_change")
    assert audit[0]["detail"]["followups_moved"] == 1
    # bob hands it to the manager with a note: it is on her day and she is told live
    ws = await boss.client.ws_connect(f"/ws/agent?token={boss.token}")
    await ws.receive(timeout=5)
    resp = await bob.post(
        f"/api/v1/followups/{due['id']}/handoff", json={"to": "user:maria", "note": "unhappy"}
    )
    assert resp.status == 200
    msg = json.loads((await ws.receive(timeout=5)).data)
    assert msg["type"] == "followup.handoff" and msg["by"] == "bob" and msg["note"] == "unhappy"
    assert [f["id"] for f in (await (await boss.get("/api/v1/me/day")).json())["followups"]] == [due["id"]]
    resp = await boss.post(f"/api/v1/followups/{due['id']}/handoff", json={"to": "pool:nowhere"})
    assert resp.status == 400 and (await resp.json())["error"]["field"] == "to"
    await ws.close()


async def test_no_answer_retries_then_escalates_with_the_reason(
    fclient: Any, tmp_path: Path, clock: ManualClock
) -> None:
    ann, _, boss = await _users(fclient)
    await _import(fclient, _csv(tmp_path, [f"Four,Days,+1 312 555 0101,ann,{_ago(days=4)},1"]))
    (due,) = (await (await ann.get("/api/v1/me/day")).json())["followups"]
    for attempt in (1, 2):
        body = await (await ann.post(f"/api/v1/followups/{due['id']}/no-answer", json={})).json()
        assert body["attempts"] == attempt and body["assignee"] == "ann"
        assert body["due_at"] == (clock() + timedelta(hours=4)).isoformat().replace("+00:00", "Z")
    body = await (await ann.post(f"/api/v1/followups/{due['id']}/no-answer", json={})).json()
    assert body["assignee"] is None and body["pool"] == "managers"
    assert "no answer after 3 attempts" in body["escalated_reason"]
    assert due["id"] in [f["id"] for f in (await (await boss.get("/api/v1/me/day")).json())["followups"]]
    team = await (await boss.get("/api/v1/followups/team")).json()
    assert team["rows"] == [] or all(r["user"] != "ann" or r["due_today"] == 0 for r in team["rows"])


async def test_followup_api_refuses_the_past_and_done_records_the_result(fclient: Any) -> None:
    ann, _, boss = await _users(fclient)
    c = await (
        await ann.post("/api/v1/contacts", json={"first_name": "Pat", "phones": ["+13125550150"]})
    ).json()
    resp = await ann.post(
        "/api/v1/followups", json={"contact_id": c["id"], "due_at": "2020-01-01T00:00:00Z", "reason": "x"}
    )
    assert resp.status == 400 and (await resp.json())["error"]["field"] == "due_at"
    resp = await ann.post(
        "/api/v1/followups",
        json={"contact_id": c["id"], "due_at": "2026-06-15T20:00:00Z", "reason": "x", "assignee": "ghost"},
    )
    assert resp.status == 400 and (await resp.json())["error"]["field"] == "assignee"
    resp = await ann.post(
        "/api/v1/followups", json={"contact_id": c["id"], "due_at": "2026-06-15T20:00:00Z", "reason": "quote"}
    )
    f = await resp.json()
    assert resp.status == 201 and f["assignee"] == "ann"
    done = await (await ann.post(f"/api/v1/followups/{f['id']}/done", json={"result": "sold"})).json()
    assert done["state"] == "done" and done["result"] == "sold"
    resp = await ann.post(f"/api/v1/followups/{f['id']}/done", json={"result": "sold"})
    assert resp.status == 409
    team = await (await boss.get("/api/v1/followups/team")).json()
    assert [(r["user"], r["done_week"], r["success_rate"]) for r in team["rows"]] == [("ann", 1, 1.0)]
    page = await boss.client.get(
        "/followups/team?assignee=ann", headers={"Authorization": f"Bearer {boss.token}"}
    )
    assert page.status == 200 and "Open follow-ups of ann" in await page.text()


# typed attributes ---------------------------------------------------------------------------


async def test_visits_at_least_three_selects_3_and_10_not_2(fclient: Any, tmp_path: Path) -> None:
    await _users(fclient)
    rows = [f"V{n},X,+1 312 555 01{n:02d},ann,,{n}" for n in (2, 3, 10)]
    await _import(fclient, _csv(tmp_path, rows))
    store = fclient.server.app[STORE]
    ids = await store.segments.ids({"field": "attributes.service_visits", "op": "gte", "value": 3})
    names = [c.first_name for c in await store.contacts.get_many(ids)]
    assert names == ["V3", "V10"]
    assert (await store.followups.attribute_types())["service_visits"] == "number"


async def test_segment_date_operators(store: Any) -> None:
    from crm_link.contacts import validate_contact as vc

    today = date(2026, 6, 17)  # a Wednesday
    now = datetime(2026, 6, 17, 17, 0, tzinfo=UTC)
    dates = {
        "soon": "2026-06-27",
        "late": "2026-08-01",
        "ago5": "2026-06-12",
        "week": "1990-06-21",  # birthday on Sunday of this week
        "month": "1985-06-30",
        "july": "1985-07-01",
    }
    ids = {}
    for name, d in dates.items():
        c = await store.contacts.create(vc({"first_name": name, "attributes": {"d": d}}, region="US"))
        ids[c.id] = name

    async def names(op: str, value: Any = None) -> list[str]:
        got = await store.segments.ids({"field": "attributes.d", "op": op, "value": value}, now=now)
        return sorted(ids[i] for i in got)

    assert today.weekday() == 2
    assert await names("in_next_days", 10) == ["soon"]
    assert await names("days_ago", 5) == ["ago5"]
    assert await names("anniversary_this_week") == ["week"]
    assert await names("anniversary_this_month") == ["ago5", "month", "soon", "week"]


async def test_two_processes_seeding_one_fresh_store_at_once_write_the_defaults_once(
    settings: Settings, clock: ManualClock
) -> None:
    """Two `serve` starting at the same instant on a fresh file: both seed, neither fails, one set."""
    import asyncio

    from followups.rules import dealership_defaults
    from switchboard.app import open_store
    from switchboard.followups_ctx import build_service

    async with open_store(settings, clock=clock) as a, open_store(settings, clock=clock) as b:
        seeded = await asyncio.gather(
            build_service(settings, a, clock).ensure_defaults(),
            build_service(settings, b, clock).ensure_defaults(),
        )
        assert sorted(seeded) == [False, True]  # one of them wrote them, the other saw that
        names = [c.name for c in await a.followups.cadences()]
        assert sorted(names) == sorted(d["name"] for d in dealership_defaults())
        # an admin deletes one: a later start does not bring it back
        await b.followups.delete_cadence((await b.followups.cadences())[0].id)
        assert await build_service(settings, a, clock).ensure_defaults() is False
        assert len(await a.followups.cadences()) == len(names) - 1


async def test_an_import_in_the_dealerships_date_format_makes_the_same_followups(
    fclient: Any, tmp_path: Path
) -> None:
    """`[import] date_format = "%m/%d/%Y"`: a DMS export's 11/28/2026 is a date, typed and compared
    as one, and starts the cadence like an ISO date would; a value in neither form names its line."""
    ann, _, _ = await _users(fclient)
    app = fclient.server.app
    app[SETTINGS].import_.date_format = "%m/%d/%Y"
    four = NOW.date() - timedelta(days=4)
    path = _csv(tmp_path, [f"Four,Days,+1 312 555 0101,ann,{four:%m/%d/%Y},1"], "us.csv")
    made = await _import(fclient, path)
    (c,) = (await app[STORE].contacts.search(q="Four")).items
    assert c.attributes["delivery_date"] == four.isoformat()
    assert made > 0
    day = await (await ann.get("/api/v1/me/day")).json()
    assert [(f["contact_name"], f["rule"], f["step"]) for f in day["followups"]] == [
        ("Four Days", "After-sale", 0)
    ]
    bad = _csv(tmp_path, ["Bad,Date,+1 312 555 0102,ann,28.11.2026,1"], "bad.csv")
    report, _ = await import_with_followups(app[SETTINGS], app[STORE], app[FOLLOWUPS], bad)
    assert len(report.errors) == 1 and "delivery_date" in str(report.errors[0])


@given(
    st.dates(min_value=date(1900, 1, 1), max_value=date(2199, 12, 31)),
    st.sampled_from(["%m/%d/%Y", "%d.%m.%Y", "%d/%m/%Y", "%Y%m%d"]),
)
def test_a_date_in_the_import_format_or_iso_reads_as_that_day(day: date, fmt: str) -> None:
    assert to_date(day.strftime(fmt), fmt) == day.isoformat()
    assert to_date(day.isoformat(), fmt) == day.isoformat()
    assert to_date(day.strftime(fmt) + "x", fmt) is None
