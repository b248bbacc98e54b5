"""Domain events → screen-pops on the agent's WebSocket, one touch per call, missed-call follow-ups."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from crm_link.contacts import validate_contact
from cti.directory import InterfaceDirectory
from cti.events import CallAnswered, CallEnded, CallRinging
from cti.service import CallService
from switchboard.keys import HUB, STORE
from tests.conftest import Api

T0 = datetime(2026, 11, 22, 11, 17, 25, tzinfo=UTC)


async def _ws(api: Api) -> Any:
    ws = await api.client.ws_connect(f"/ws/agent?token={api.token}")
    hello = json.loads((await ws.receive(timeout=5)).data)
    assert hello["type"] == "hello"
    return ws


async def _next(ws: Any) -> dict[str, Any]:
    return json.loads((await ws.receive(timeout=5)).data)


def _service(client: Any, **kw: Any) -> CallService:
    store = client.server.app[STORE]
    directory = InterfaceDirectory(store, {"Local/agent1@agents/n": "jsmith"})
    return CallService(store, client.server.app[HUB], directory, source="asterisk", **kw)


def _ended(call_id: str, answered: bool, **kw: Any) -> CallEnded:
    base: dict[str, Any] = dict(
        call_id=call_id,
        direction="inbound",
        from_number="+15551234567",
        to_number="7000",
        answered=answered,
        answered_by="Local/agent1@agents/n" if answered else None,
        queue="sales",
        started_at=T0,
        answered_at=T0 + timedelta(seconds=2) if answered else None,
        ended_at=T0 + timedelta(seconds=9),
        duration_s=9.0,
        talk_s=7.0 if answered else None,
        hangup_cause=16,
        hangup_cause_text="Normal Clearing",
        transferred_to=None,
    )
    return CallEnded(**(base | kw))


async def test_known_caller_pops_then_one_touch(client: Any, admin: Api, rep: Api) -> None:
    store = client.server.app[STORE]
    jane = await store.contacts.create(
        validate_contact(
            {"first_name": "Jane", "last_name": "Doe", "phones": ["+15551234567"], "owner": "jsmith"},
            region="US",
        )
    )
    svc = _service(client)
    tab1, tab2 = await _ws(rep), await _ws(rep)
    await svc.handle(
        CallRinging("1795346245.0", "inbound", "+15551234567", "7000", "Local/agent1@agents/n", "sales", T0)
    )
    for tab in (tab1, tab2):
        pop = await _next(tab)
        assert pop["type"] == "screen_pop"
        assert pop["contact"]["name"] == "Jane Doe" and pop["contact"]["url"] == f"/contacts/{jane.id}"
        assert pop["call"]["state"] == "ringing" and pop["call"]["from"] == "+15551234567"
        assert pop["call"]["extension"] == "1001"
    # a tab opened during the call gets the live pop at once
    late = await rep.client.ws_connect(f"/ws/agent?token={rep.token}")
    await late.receive(timeout=5)
    assert (await _next(late))["contact"]["id"] == jane.id
    await svc.handle(CallAnswered("1795346245.0", "Local/agent1@agents/n", T0 + timedelta(seconds=2)))
    assert (await _next(tab1))["call"]["state"] == "answered"
    await svc.handle(_ended("1795346245.0", True))
    end = await _next(tab1)
    assert (
        end["type"] == "call_update" and end["call"]["state"] == "ended" and end["call"]["duration_s"] == 9.0
    )
    # replaying the end (a resync after reconnect) writes nothing new
    await svc.handle(_ended("1795346245.0", True))
    history = (await store.touches.history(jane.id)).items
    assert len(history) == 1
    t = history[0]
    assert (t.source_key, t.status, t.direction, t.username) == (
        "asterisk:1795346245.0",
        "answered",
        "inbound",
        "jsmith",
    )
    assert t.payload["queue"] == "sales" and t.payload["hangup_cause"] == 16
    for ws in (tab1, tab2, late):
        await ws.close()


async def test_unknown_caller_pops_null_contact_and_missed_call(client: Any, rep: Api) -> None:
    svc = _service(client)
    tab = await _ws(rep)
    await svc.handle(CallRinging("c2", "inbound", "+15550009999", "7000", "PJSIP/1001", "sales", T0))
    pop = await _next(tab)
    assert pop["contact"] is None and pop["candidates"] == []
    await svc.handle(_ended("c2", False, from_number="+15550009999"))
    assert (await _next(tab))["call"]["state"] == "missed"
    touch = await client.server.app[STORE].touches.by_source_key("asterisk:c2")
    assert touch.status == "missed" and touch.contact_id is None and touch.number == "+15550009999"
    await tab.close()


async def test_missed_call_from_customer_lands_on_owners_day(client: Any, rep: Api) -> None:
    store = client.server.app[STORE]
    await store.contacts.create(
        validate_contact(
            {"first_name": "John", "last_name": "Smith", "phones": ["+15559876543"], "owner": "jsmith"},
            region="US",
        )
    )
    svc = _service(client)
    await svc.handle(CallRinging("c3", "inbound", "+15559876543", "7000", "PJSIP/1001", "sales", T0))
    await svc.handle(_ended("c3", False, from_number="+15559876543"))
    day = await (await rep.get("/api/v1/me/day")).json()
    assert [m["contact_name"] for m in day["missed_calls"]] == ["John Smith"]


async def test_several_contacts_share_a_number(client: Any, rep: Api) -> None:
    store = client.server.app[STORE]
    for first in ("Ann", "Bob"):
        await store.contacts.create(
            validate_contact(
                {"first_name": first, "last_name": "Lee", "phones": ["+15550001111"]}, region="US"
            )
        )
    svc = _service(client)
    tab = await _ws(rep)
    await svc.handle(CallRinging("c4", "inbound", "+15550001111", "7000", "PJSIP/1001", None, T0))
    pop = await _next(tab)
    assert pop["contact"] is None
    assert sorted(c["name"] for c in pop["candidates"]) == ["Ann Lee", "Bob Lee"]
    await tab.close()


async def test_unmapped_interface_and_concurrent_calls(client: Any, rep: Api) -> None:
    svc = _service(client)
    tab = await _ws(rep)
    await svc.handle(CallRinging("c5", "inbound", "+15550002222", "7000", "PJSIP/9999", None, T0))
    events = [
        CallRinging(f"x{i}", "inbound", f"+1555000{i:04d}", "7000", "PJSIP/1001", None, T0) for i in range(20)
    ]
    await asyncio.gather(*(svc.handle(e) for e in events))
    got = {(await _next(tab))["call"]["id"] for _ in range(20)}
    assert got == {f"x{i}" for i in range(20)}
    await tab.close()


async def test_disposition_lands_on_the_call_and_sets_the_callback(client: Any, rep: Api) -> None:
    store = client.server.app[STORE]
    jane = await store.contacts.create(
        validate_contact(
            {"first_name": "Jane", "last_name": "Doe", "phones": ["+15551234567"], "owner": "jsmith"},
            region="US",
        )
    )
    svc = _service(client)
    await svc.handle(CallRinging("d1", "inbound", "+15551234567", "7000", "PJSIP/1001", "sales", T0))
    await svc.handle(CallAnswered("d1", "PJSIP/1001", T0 + timedelta(seconds=2)))
    resp = await rep.post(
        "/api/v1/calls/d1/disposition",
        json={
            "disposition": "call back",
            "note": "Wants a quote",
            "next_followup_at": "2099-11-24T15:00:00Z",
        },
    )
    assert resp.status == 200, await resp.text()
    await svc.handle(_ended("d1", True, answered_by="PJSIP/1001"))
    (touch,) = (await store.touches.history(jane.id)).items
    assert touch.summary == "Wants a quote" and touch.payload["disposition"] == "call back"
    assert touch.status == "answered"  # the end of the call kept the note
    (fu,) = await store.touches.open_followups(jane.id)
    assert fu.kind == "callback" and fu.due_at.isoformat() == "2099-11-24T15:00:00+00:00"
    bad = await rep.post("/api/v1/calls/d1/disposition", json={"disposition": "maybe"})
    assert bad.status == 400 and (await bad.json())["error"]["field"] == "disposition"
    assert (await rep.post("/api/v1/calls/nope/disposition", json={"note": "x"})).status == 404
