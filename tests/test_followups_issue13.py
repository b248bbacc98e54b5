"""Issue 13's remaining lines, through the real interfaces: a recorded Asterisk call (the AMI test PBX
replaying a real transcript) answered with a disposition closes the follow-up it served; a sweep
stopped half-way and run again makes no duplicate and loses nothing; the follow-up API's filters,
reschedule and bad input."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from crm_link.clock import ManualClock
from crm_link.contacts import validate_contact
from cti.ami.server import AmiTestServer
from switchboard.app import create_app
from switchboard.keys import ASTERISK, FOLLOWUPS, STORE
from switchboard.settings import Settings
from tests.conftest import make_api
from tests.cti.conftest import AMI
from tests.test_followups import NOW, _import, _users, clock, fclient  # noqa: F401

# the recorded call: +15551234567 rings the sales queue and Local/agent1@agents/n answers
CALL_AT = datetime.fromtimestamp(1795346245.760865, UTC)
LINKEDID = "1795346245.0"


async def test_a_recorded_asterisk_call_answered_with_a_disposition_closes_the_followup_it_served(
    aiohttp_server: Any, aiohttp_client: Any, settings: Settings, pbx: AmiTestServer, tmp_path: Path
) -> None:
    settings.asterisk.enabled = True
    settings.asterisk.port = pbx.port
    settings.asterisk.secret.__init__("crm-secret")  # type: ignore[misc]
    settings.asterisk.username = "switchboard"
    settings.interfaces = {"Local/agent1@agents/n": "agent1"}
    clk = ManualClock(CALL_AT - timedelta(hours=2))
    server = await aiohttp_server(create_app(settings, clock=clk))
    await server.app[ASTERISK].client.wait_connected(5)
    client = await aiohttp_client(server)
    app = server.app
    agent = await make_api(client, "agent1", "rep", extension="1001")
    await app[ASTERISK].directory.reload()
    delivered = (CALL_AT.astimezone(app[FOLLOWUPS].zone).date() - timedelta(days=4)).isoformat()
    path = tmp_path / "sold.csv"
    path.write_text(
        f"first_name,last_name,phone,owner,delivery_date\nJane,Doe,+1 555 123 4567,agent1,{delivered}\n"
    )
    assert await _import(client, path) >= 1
    made = (await app[STORE].followups.search(state="all")).items
    assert [(f.cadence_name, f.step, f.status) for f in made] == [("After-sale", 0, "open")]
    (due,) = (await (await agent.get("/api/v1/me/day")).json())["followups"]
    assert (due["rule"], due["step"], due["contact_name"]) == ("After-sale", 0, "Jane Doe")

    clk.set(CALL_AT)
    await pbx.replay((AMI / "i-inbound-answered.ami").read_bytes())
    store = app[STORE]
    async with asyncio.timeout(10):
        while (t := await store.touches.by_source_key(f"asterisk:{LINKEDID}")) is None or t.ended_at is None:
            await asyncio.sleep(0.02)
    assert (t.status, t.username, t.contact_id) == ("answered", "agent1", due["contact_id"])
    resp = await agent.post(
        f"/api/v1/calls/{LINKEDID}/disposition", json={"disposition": "sold", "note": "Happy"}
    )
    assert resp.status == 200, await resp.text()
    f = await store.followups.get(due["id"])
    assert (f.status, f.result, f.closed_by_touch_id) == ("done", "sold", t.id)
    assert (await (await agent.get("/api/v1/me/day")).json())["followups"] == []
    # saving the disposition again closes nothing more and makes no follow-up
    resp = await agent.post(
        f"/api/v1/calls/{LINKEDID}/disposition", json={"disposition": "sold", "note": "Happy"}
    )
    assert resp.status == 200
    items = (await store.followups.search(contact_id=due["contact_id"], state="all")).items
    assert [(x.id, x.status) for x in items] == [(due["id"], "done")]


async def test_a_sweep_stopped_half_way_resumes_without_duplicates_or_losses(
    aiohttp_client: Any, settings: Settings
) -> None:
    client = await aiohttp_client(create_app(settings, clock=ManualClock(NOW)))
    store = client.server.app[STORE]
    loop = client.server.app[FOLLOWUPS]
    day = NOW.astimezone(loop.zone).date()
    n = 120
    for i in range(n):
        await store.contacts.create(
            validate_contact(
                {
                    "first_name": f"C{i}",
                    "phones": [f"+1312555{i:04d}"],
                    "attributes": {"delivery_date": (day - timedelta(days=4)).isoformat()},
                },
                region="US",
            )
        )
    # written straight to the store (as a CRM's own database would be): only the sweep sees them
    assert (await store.followups.search(state="all", limit=500)).items == []

    # stop the sweep once some ranges are written (one contact a range)
    task = asyncio.create_task(loop.sweep(chunk=1, restart=True))
    async with asyncio.timeout(20):
        while (
            not (cursor := await store.followups.get_state("sweep:cursor")) or int(cursor.split(":")[1]) < 10
        ):
            await asyncio.sleep(0)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    made = (await store.followups.search(state="all", limit=500)).items
    assert 0 < len(made) < n, "the sweep was not stopped half-way"
    again = await loop.sweep(chunk=1)
    assert again.resumed_from > 1
    made = (await store.followups.search(state="all", limit=500)).items
    assert len(made) == n and len({f.contact_id for f in made}) == n  # each contact's one, once
    assert (await loop.sweep(chunk=7, restart=True)).created == 0


async def test_followup_list_filters_reschedule_and_bad_input(fclient: Any) -> None:  # noqa: F811
    ann, bob, boss = await _users(fclient)
    c = await (
        await ann.post(
            "/api/v1/contacts", json={"first_name": "Pat", "phones": ["+13125550150"], "owner": "ann"}
        )
    ).json()
    body = {"contact_id": c["id"], "reason": "quote"}
    mine = await (await ann.post("/api/v1/followups", json=body | {"due_at": "2026-06-15T20:00:00Z"})).json()
    pooled = await (
        await ann.post("/api/v1/followups", json=body | {"due_at": "2026-06-17T20:00:00Z", "pool": "bdc"})
    ).json()
    assert (pooled["pool"], pooled["assignee"]) == ("bdc", None)

    async def ids(query: str) -> list[int]:
        resp = await boss.get("/api/v1/followups?" + query)
        assert resp.status == 200, await resp.text()
        return [f["id"] for f in (await resp.json())["items"]]

    assert await ids("assignee=ann") == [mine["id"]]
    assert await ids("pool=bdc") == [pooled["id"]]
    assert await ids(f"due_before=2026-06-16T00:00:00Z&contact_id={c['id']}") == [mine["id"]]
    assert await ids(f"due_after=2026-06-16T00:00:00Z&contact_id={c['id']}") == [pooled["id"]]
    # reschedule: a past time is refused naming due_at; a future one moves it
    resp = await ann.post(
        f"/api/v1/followups/{mine['id']}/reschedule", json={"due_at": "2026-06-01T10:00:00Z"}
    )
    assert resp.status == 400 and (await resp.json())["error"]["field"] == "due_at"
    resp = await ann.post(
        f"/api/v1/followups/{mine['id']}/reschedule",
        json={"due_at": "2026-06-18T15:00:00Z", "note": "after work"},
    )
    assert resp.status == 200 and (await resp.json())["due_at"] == "2026-06-18T15:00:00Z"
    assert await ids(f"due_after=2026-06-16T00:00:00Z&contact_id={c['id']}") == [pooled["id"], mine["id"]]
    # bad input: 4xx naming the field
    for method, path, payload, field in (
        ("get", "/api/v1/followups?due_before=tomorrow", None, "due_before"),
        ("get", "/api/v1/followups?assignee=ghost", None, "assignee"),
        ("get", "/api/v1/followups?pool=nowhere", None, "pool"),
        ("get", "/api/v1/followups?state=maybe", None, "state"),
        ("get", "/api/v1/followups?colour=red", None, "colour"),
        ("post", "/api/v1/followups", body | {"due_at": "2026-06-17T20:00:00Z", "pool": "nowhere"}, "pool"),
        ("post", "/api/v1/followups", body | {"due_at": "next week"}, "due_at"),
        ("post", f"/api/v1/followups/{mine['id']}/reschedule", {}, "due_at"),
        ("post", f"/api/v1/followups/{mine['id']}/handoff", {"to": "user:ghost"}, "to"),
    ):
        resp = await (boss.get(path) if method == "get" else boss.post(path, json=payload))
        assert 400 <= resp.status < 500, (path, payload)
        assert (await resp.json())["error"]["field"] == field, (path, payload)
    # a rep cannot list another rep's follow-ups
    resp = await bob.get("/api/v1/followups?assignee=ann")
    assert resp.status == 403
