"""End to end: the test PBX rings a rep over AMI → the pop on their WebSocket / in their browser → one touch."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from crm_link.contacts import validate_contact
from cti.ami.server import AmiTestServer
from switchboard.app import create_app
from switchboard.keys import ASTERISK, STORE
from tests.browser import login
from tests.conftest import PASSWORD, make_api


@pytest.fixture
async def pbx_app(aiohttp_server: Any, settings: Any, pbx: AmiTestServer) -> Any:
    settings.asterisk.enabled = True
    settings.asterisk.port = pbx.port
    settings.asterisk.secret.__init__("crm-secret")
    settings.asterisk.username = "switchboard"
    settings.interfaces = {"Local/agent1@agents/n": "jsmith"}
    server = await aiohttp_server(create_app(settings))
    await server.app[ASTERISK].client.wait_connected(5)
    return server


async def _wait_touch(store: Any, key: str) -> Any:
    async with asyncio.timeout(10):
        while True:
            touch = await store.touches.by_source_key(key)
            if touch is not None and touch.ended_at is not None:
                return touch
            await asyncio.sleep(0.02)


async def test_ami_call_pops_on_websocket_and_writes_one_touch(
    pbx_app: Any, pbx: AmiTestServer, aiohttp_client: Any
) -> None:
    client = await aiohttp_client(pbx_app)
    rep = await make_api(client, "jsmith", "rep", extension="1001")
    store = pbx_app.app[STORE]
    jane = await store.contacts.create(
        validate_contact(
            {"first_name": "Jane", "last_name": "Doe", "phones": ["+15551234567"], "owner": "jsmith"},
            region="US",
        )
    )
    await pbx_app.app[ASTERISK].directory.reload()
    ws = await client.ws_connect(f"/ws/agent?token={rep.token}")
    await ws.receive(timeout=5)
    call = asyncio.create_task(
        pbx.inbound_call(
            "+15551234567",
            agents=["Local/agent1@agents/n"],
            answer="Local/agent1@agents/n",
            ring_seconds=5,
            talk_seconds=10,
        )
    )
    pop = json.loads((await ws.receive(timeout=10)).data)
    assert pop["type"] == "screen_pop" and pop["contact"]["name"] == "Jane Doe"
    assert (
        pop["call"]["from"] == "+15551234567"
        and pop["call"]["state"] == "ringing"
        and pop["call"]["queue"] == "sales"
    )
    linkedid = await call
    states = []
    async with asyncio.timeout(10):
        while "ended" not in states:
            states.append(json.loads((await ws.receive()).data)["call"]["state"])
    assert states == ["answered", "ended"]
    touch = await _wait_touch(store, f"asterisk:{linkedid}")
    assert touch.contact_id == jane.id and touch.status == "answered" and touch.username == "jsmith"
    assert touch.payload["recording_files"] and touch.payload["queue"] == "sales"
    assert len((await store.touches.history(jane.id)).items) == 1
    await ws.close()


async def test_disconnect_mid_call_still_one_touch(pbx_app: Any, pbx: AmiTestServer) -> None:
    store = pbx_app.app[STORE]
    await store.users.add("jsmith", role="rep", password=PASSWORD, extension="1001")
    source = pbx_app.app[ASTERISK]
    await source.directory.reload()
    pbx.speed = 0.05
    call = asyncio.create_task(
        pbx.inbound_call(
            "+15559876543", agents=["PJSIP/1001"], answer="PJSIP/1001", ring_seconds=2, talk_seconds=30
        )
    )
    async with asyncio.timeout(10):
        while not source.tracker.calls or not any(c.answered_by for c in source.tracker.calls.values()):
            await asyncio.sleep(0.01)
    resyncs = source.resyncs
    await pbx.drop_connections()
    async with asyncio.timeout(10):
        while source.resyncs == resyncs:
            await asyncio.sleep(0.01)
    linkedid = await call
    touch = await _wait_touch(store, f"asterisk:{linkedid}")
    assert touch.status == "answered" and touch.number == "+15559876543"
    rows = await store.db.fetchall("SELECT count(*) FROM touches WHERE kind = 'call'")
    assert rows[0][0] == 1


async def test_click_to_call_originates_from_the_reps_phone(
    pbx_app: Any, pbx: AmiTestServer, aiohttp_client: Any
) -> None:
    client = await aiohttp_client(pbx_app)
    rep = await make_api(client, "jsmith", "rep", extension="1001")
    store = pbx_app.app[STORE]
    c = await store.contacts.create(
        validate_contact(
            {"first_name": "Pat", "last_name": "Taylor", "phones": ["+15557654321"], "owner": "jsmith"},
            region="US",
        )
    )
    resp = await rep.post("/api/v1/calls", json={"contact_id": c.id})
    assert resp.status == 202, await resp.text()
    body = await resp.json()
    assert body["interface"] == "PJSIP/1001" and body["number"] == "+15557654321"
    async with asyncio.timeout(10):
        while not (hist := (await store.touches.history(c.id)).items) or hist[0].ended_at is None:
            await asyncio.sleep(0.02)
    assert hist[0].direction == "outbound" and hist[0].status == "answered" and hist[0].username == "jsmith"
    originate = next(a for a in pbx.actions if a.name == "Originate")
    assert originate.get("Channel") == "PJSIP/1001" and originate.get("Exten") == "+15557654321"
    # do-not-call and bad input
    await store.contacts.set_flags(c.id, do_not_call=True)
    assert (await rep.post("/api/v1/calls", json={"contact_id": c.id})).status == 409
    resp = await rep.post("/api/v1/calls", json={"number": "12"})
    assert resp.status == 400 and (await resp.json())["error"]["field"] == "number"


@pytest.mark.browser
async def test_rep_sees_the_pop_in_the_browser(pbx_app: Any, pbx: AmiTestServer, browser: Any) -> None:
    store = pbx_app.app[STORE]
    await store.users.add(
        "jsmith", role="rep", password=PASSWORD, extension="1001", display_name="John Smith"
    )
    jane = await store.contacts.create(
        validate_contact(
            {"first_name": "Jane", "last_name": "Doe", "phones": ["+15551234567"], "owner": "jsmith"},
            region="US",
        )
    )
    await pbx_app.app[ASTERISK].directory.reload()
    base = str(pbx_app.make_url("")).rstrip("/")
    page = await browser.new_page()
    await login(page, base, "jsmith", PASSWORD)
    await page.wait_for_selector("#ws-state.ok")
    call = asyncio.create_task(
        pbx.inbound_call(
            "+15551234567",
            agents=["Local/agent1@agents/n"],
            answer="Local/agent1@agents/n",
            ring_seconds=20,
            talk_seconds=20,
        )
    )
    pop = page.locator(".pop", has_text="Jane Doe")
    await pop.wait_for(timeout=10_000)
    assert await pop.locator(".pop-name a").get_attribute("href") == f"/contacts/{jane.id}"
    await page.wait_for_selector(".pop .pop-state:text('wrap-up')", timeout=15_000)
    assert await page.is_visible(".pop .pop-dismiss")
    linkedid = await call
    await _wait_touch(store, f"asterisk:{linkedid}")
    await page.goto(f"{base}/contacts/{jane.id}")
    assert "Answered by John Smith" in await page.text_content("#history")
    # an unknown caller gets a "New prospect" button with the number filled in
    await page.goto(base + "/")
    await page.wait_for_selector("#ws-state.ok")
    call = asyncio.create_task(
        pbx.inbound_call("+12125550147", agents=["Local/agent1@agents/n"], answer=None, ring_seconds=20)
    )
    await page.click(".pop .new-prospect", timeout=10_000)
    assert await page.input_value("input[name=phone]") == "+12125550147"
    # the new prospect gets the call they rang with: it is on their history
    await page.fill("input[name=first_name]", "Quinn")
    await page.click("#new-prospect button[type=submit]")
    await page.wait_for_selector("#contact-card >> text=(212) 555-0147")
    linkedid = await call
    touch = await _wait_touch(store, f"asterisk:{linkedid}")
    (quinn,) = await store.contacts.find_by_phone("+12125550147")
    assert touch.contact_id == quinn.id and touch.status == "missed"
    await page.reload()
    assert "Missed call" in await page.text_content("#history")
