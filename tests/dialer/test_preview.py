"""Preview dialing over the API: next call with its pop, dial, dispositions, call-backs, bad input."""

from __future__ import annotations

from datetime import timedelta

from cti.ami.server import AmiTestServer
from switchboard.keys import DIALER
from tests.dialer.conftest import FixedClock, Office, add_customers, settle, until


async def test_preview_flow_with_callback_and_do_not_call(
    office: Office, pbx: AmiTestServer, clock: FixedClock
) -> None:
    app, store, manager, rep, other = office.app, office.store, office.manager, office.jsmith, office.agarcia
    clock.advance(hours=3)  # 10:30 New York
    jane, pat = await add_customers(store, ["+12127365001", "+12127365002"], owner="jsmith")
    resp = await manager.post(
        "/api/v1/call-lists",
        {
            "name": "Follow-ups",
            "mode": "preview",
            "contact_ids": [jane, pat],
            "start": True,
            "retry_minutes": 15,
        },
    )
    assert resp.status == 201, await resp.text()
    list_id = (await resp.json())["id"]
    # a second list with Pat, to see "do not call" reach it too
    resp = await manager.post("/api/v1/call-lists", {"name": "Service", "contact_ids": [pat], "start": True})
    service_list = (await resp.json())["id"]

    nxt = await (await rep.post("/api/v1/agent/next-call", {"list_id": list_id})).json()
    assert nxt["entry"]["contact_id"] == jane and nxt["pop"]["contact"]["name"] == "Customer0 Test"
    assert nxt["local_time"] == "10:30" and nxt["list"]["name"] == "Follow-ups"
    # asking again hands back the same entry; another rep gets the other one
    again = await (await rep.post("/api/v1/agent/next-call", {"list_id": list_id})).json()
    assert again["entry"]["id"] == nxt["entry"]["id"]
    theirs = await (await other.post("/api/v1/agent/next-call", {"list_id": list_id})).json()
    assert theirs["entry"]["contact_id"] == pat
    # a rep cannot dial an entry someone else holds
    resp = await rep.post(f"/api/v1/agent/entries/{theirs['entry']['id']}/dial")
    assert resp.status == 409 and (await resp.json())["error"]["field"] == "entry_id"

    resp = await rep.post(f"/api/v1/agent/entries/{nxt['entry']['id']}/dial")
    assert resp.status == 202, await resp.text()
    attempt = await resp.json()

    async def originated() -> bool:
        return any(a.name == "Originate" for a in pbx.actions)

    await until(originated)
    originate = next(a for a in pbx.actions if a.name == "Originate")
    assert originate.get("Channel") == "PJSIP/1001" and originate.get("Exten") == "+12127365001"
    await settle(app)
    done = await store.call_lists.attempt(attempt["id"])
    assert done.state == "answered" and done.touch_id is not None

    callback_at = clock() + timedelta(hours=2)
    resp = await rep.post(
        f"/api/v1/call-attempts/{attempt['id']}/disposition",
        {
            "disposition": "call back",
            "note": "at lunch, call after 12:30",
            "callback_at": callback_at.isoformat(),
        },
    )
    assert resp.status == 200, await resp.text()
    entry = await store.call_lists.entry(nxt["entry"]["id"])
    assert entry.state == "pending" and entry.next_at == callback_at and entry.result == "call back"
    touch = await store.touches.get(done.touch_id)
    assert touch.summary == "at lunch, call after 12:30" and touch.payload["disposition"] == "call back"
    followups = await store.touches.open_followups(jane)
    assert [f.kind for f in followups] == ["callback"]
    # the call-back is not handed to anyone before its time, and then only to the rep who set it
    held = await (await other.post("/api/v1/agent/next-call", {})).json()
    assert held["entry"]["id"] == theirs["entry"]["id"]
    assert (await (await rep.post("/api/v1/agent/next-call", {"list_id": list_id})).json())["entry"] is None
    clock.advance(hours=2)
    await app[DIALER].sweep()  # the other rep's 15-minute lease has run out
    mine = await (await rep.post("/api/v1/agent/next-call", {"list_id": list_id})).json()
    assert mine["entry"]["id"] == entry.id  # call-backs first
    assert [a["disposition"] for a in mine["attempts"]] == ["call back"]
    # skip it for now (no attempt counted), it comes back after the retry delay
    resp = await rep.post(f"/api/v1/agent/entries/{entry.id}/skip", {"reason": "in a meeting", "later": True})
    assert resp.status == 200 and (await resp.json())["attempts"] == 1

    # the other rep's customer asks not to be called: the flag is set, every list skips them
    resp = await other.post(f"/api/v1/agent/entries/{theirs['entry']['id']}/dial")
    assert resp.status == 409  # its lease expired while the clock moved on two hours
    theirs = await (await other.post("/api/v1/agent/next-call", {"list_id": list_id})).json()
    assert theirs["entry"]["contact_id"] == pat
    resp = await other.post(f"/api/v1/agent/entries/{theirs['entry']['id']}/dial")
    assert resp.status == 202
    att2 = await resp.json()
    await settle(app)
    resp = await other.post(f"/api/v1/call-attempts/{att2['id']}/disposition", {"disposition": "do not call"})
    assert resp.status == 200
    assert (await store.contacts.get(pat)).do_not_call
    service = await (await manager.get(f"/api/v1/call-lists/{service_list}")).json()
    assert service["counts"]["skipped"] == 1 and service["skipped"] == {"do not call": 1}

    # bad dispositions name the field
    resp = await rep.post(f"/api/v1/call-attempts/{attempt['id']}/disposition", {"disposition": "maybe"})
    assert resp.status == 400 and (await resp.json())["error"]["field"] == "disposition"
    resp = await rep.post(f"/api/v1/call-attempts/{attempt['id']}/disposition", {"disposition": "call back"})
    assert resp.status == 400 and (await resp.json())["error"]["field"] == "callback_at"
    resp = await rep.post(f"/api/v1/call-attempts/{att2['id']}/disposition", {"disposition": "sold"})
    assert resp.status == 409  # another agent's call

    body = await (await manager.get(f"/api/v1/call-lists/{list_id}")).json()
    assert body["attempts"]["total"] == 2 and body["reached"] == 2 and body["connect_rate"] == 1.0
    assert body["dispositions"] == {"call back": 1, "do not call": 1}


async def test_nothing_is_dialed_outside_calling_hours(
    office: Office, pbx: AmiTestServer, clock: FixedClock
) -> None:
    store, manager, rep = office.store, office.manager, office.jsmith
    (chicago,) = await add_customers(store, ["+13127365001"])
    resp = await manager.post("/api/v1/call-lists", {"name": "x", "contact_ids": [chicago], "start": True})
    list_id = (await resp.json())["id"]
    # 06:30 in Chicago
    assert (await (await rep.post("/api/v1/agent/next-call", {})).json())["entry"] is None
    clock.advance(hours=14, minutes=20)  # 20:50 in Chicago: it can be handed out...
    nxt = await (await rep.post("/api/v1/agent/next-call", {})).json()
    assert nxt["entry"]["time_zone"] == "America/Chicago"
    clock.advance(minutes=15)  # ...but at 21:05 it is not dialed
    resp = await rep.post(f"/api/v1/agent/entries/{nxt['entry']['id']}/dial")
    err = (await resp.json())["error"]
    assert resp.status == 400 and err["code"] == "outside_calling_hours" and "21:05" in err["message"]
    assert "calls open Tue 08:00 their time" in err["message"]
    assert not [a for a in pbx.actions if a.name == "Originate"]
    # a list whose own calling hours run to 22:00 may call the same customer at 21:05
    resp = await manager.post(
        "/api/v1/call-lists",
        {
            "name": "late",
            "contact_ids": [chicago],
            "calling_hours": {"start": "09:00", "end": "22:00"},
            "start": True,
        },
    )
    late = (await resp.json())["id"]
    nxt = await (await rep.post("/api/v1/agent/next-call", {"list_id": late})).json()
    resp = await rep.post(f"/api/v1/agent/entries/{nxt['entry']['id']}/dial")
    assert resp.status == 202, await resp.text()

    async def originated() -> bool:
        return [a.get("Exten") for a in pbx.actions if a.name == "Originate"] == ["+13127365001"]

    await until(originated)
    # moving to the other list gave back the entry held in the first
    assert (await (await manager.get(f"/api/v1/call-lists/{list_id}")).json())["counts"]["pending"] == 1


async def test_bad_lists_are_refused_naming_the_field(office: Office) -> None:
    store, manager, rep = office.store, office.manager, office.jsmith
    (cid,) = await add_customers(store, ["+12127365001"])
    cases = [
        ({"contact_ids": [cid]}, "name"),
        ({"name": "x", "mode": "predictive", "contact_ids": [cid]}, "mode"),
        ({"name": "x"}, "contact_ids"),
        ({"name": "x", "contact_ids": [cid], "tag": "vip"}, "contact_ids"),
        ({"name": "x", "contact_ids": [999]}, "contact_ids"),
        ({"name": "x", "tag": "nobody-has-this"}, "contact_ids"),
        ({"name": "x", "contact_ids": [cid], "max_attempts": 0}, "max_attempts"),
        (
            {"name": "x", "contact_ids": [cid], "calling_hours": {"start": "21:00", "end": "08:00"}},
            "calling_hours.end",
        ),
        ({"name": "x", "contact_ids": [cid], "window": {"start": "2026-13-01"}}, "window.start"),
        ({"name": "x", "contact_ids": [cid], "agents": ["nobody"]}, "agents"),
        ({"name": "x", "segment": "no such segment"}, None),
        (
            {"name": "x", "segment": {"filter": {"field": "password_hash", "op": "eq", "value": 1}}},
            "filter.field",
        ),
        ({"name": "x", "csv": "phone\n+12127365001\n12\n"}, "csv"),
    ]
    for body, field in cases:
        resp = await manager.post("/api/v1/call-lists", body)
        assert 400 <= resp.status < 500, (body, resp.status)
        if field:
            assert (await resp.json())["error"]["field"] == field, (body, await resp.text())
    assert (await store.call_lists.all()) == []  # nothing half-written
    assert (await rep.post("/api/v1/call-lists", {"name": "x", "contact_ids": [cid]})).status == 403
    resp = await manager.post(
        "/api/v1/call-lists", {"name": "csv", "csv": "phone,name\n(212) 736-5001,A\n212-736-5099,B\n"}
    )
    assert resp.status == 201
    body = await resp.json()
    assert body["build"] == {"added": 2} and body["state"] == "draft"


async def test_segments_api_and_a_list_from_a_segment(office: Office) -> None:
    store, manager = office.store, office.manager
    await add_customers(store, ["+12127365001", "+12127365002"])
    f = {"field": "first_name", "op": "eq", "value": "Customer1"}
    resp = await manager.post("/api/v1/segments/preview", {"filter": f})
    assert (await resp.json())["count"] == 1
    resp = await manager.post("/api/v1/segments", {"name": "Customer one", "filter": f})
    assert resp.status == 201 and (await resp.json())["count"] == 1
    resp = await manager.post("/api/v1/segments", {"name": "Customer one", "filter": f})
    assert resp.status == 409
    resp = await manager.post("/api/v1/call-lists", {"name": "seg", "segment": "Customer one"})
    body = await resp.json()
    assert (
        resp.status == 201 and body["build"] == {"added": 1} and body["source"]["segment"] == "Customer one"
    )
    assert len((await (await manager.get("/api/v1/call-lists")).json())["items"]) == 1


async def test_list_control_pause_resume_stop(office: Office) -> None:
    store, manager, rep = office.store, office.manager, office.jsmith
    (cid,) = await add_customers(store, ["+12127365001"])
    resp = await manager.post(
        "/api/v1/call-lists", {"name": "c", "mode": "progressive", "contact_ids": [cid]}
    )
    list_id = (await resp.json())["id"]
    assert (await rep.post(f"/api/v1/call-lists/{list_id}/start")).status == 403
    states = []
    for action, status in [
        ("pause", 409),
        ("start", 200),
        ("start", 409),
        ("pause", 200),
        ("resume", 200),
        ("stop", 200),
        ("resume", 409),
    ]:
        resp = await manager.post(f"/api/v1/call-lists/{list_id}/{action}")
        assert resp.status == status, (action, await resp.text())
        if status == 200:
            states.append((await resp.json())["state"])
    assert states == ["running", "paused", "running", "stopped"]
    # a rep sees the list they may work and its progress, not the controls
    body = await (await rep.get(f"/api/v1/call-lists/{list_id}")).json()
    assert body["counts"]["pending"] == 1 and body["state"] == "stopped"
    audit = await store.db.fetchall(
        "SELECT action FROM audit_log WHERE action LIKE 'call_list.%' ORDER BY id"
    )
    assert [a[0] for a in audit] == [
        "call_list.create",
        "call_list.start",
        "call_list.pause",
        "call_list.resume",
        "call_list.stop",
    ]
