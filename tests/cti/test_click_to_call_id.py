"""One id per click-to-call: the POST's answer names the call its pop, touch and disposition use."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from crm_link.contacts import validate_contact
from cti.ami.server import AmiTestServer
from switchboard.keys import STORE
from tests.conftest import make_api
from tests.cti.conftest import start_pbx_app


@pytest.fixture
async def pbx_app(aiohttp_server: Any, settings: Any, pbx: AmiTestServer) -> Any:
    return await start_pbx_app(aiohttp_server, settings, pbx, {})


async def test_click_to_call_id_is_the_calls_id_everywhere(
    pbx_app: Any, pbx: AmiTestServer, aiohttp_client: Any
) -> None:
    client = await aiohttp_client(pbx_app)
    rep = await make_api(client, "jsmith", "rep", extension="1001")
    store = pbx_app.app[STORE]
    pat = await store.contacts.create(
        validate_contact(
            {"first_name": "Pat", "last_name": "Taylor", "phones": ["+15557654321"]}, region="US"
        )
    )
    ws = await client.ws_connect(f"/ws/agent?token={rep.token}")
    assert json.loads((await ws.receive(timeout=5)).data)["type"] == "hello"
    resp = await rep.post("/api/v1/calls", json={"contact_id": pat.id})
    assert resp.status == 202, await resp.text()
    call_id = (await resp.json())["id"]
    pop = json.loads((await ws.receive(timeout=10)).data)
    assert pop["type"] == "screen_pop" and pop["call"]["id"] == call_id
    async with asyncio.timeout(10):  # the call's touch is written just after its pop
        while await store.touches.by_source_key(f"asterisk:{call_id}") is None:
            await asyncio.sleep(0.02)
    # the rep notes the call while talking, by the id the POST gave
    note = await rep.post(
        f"/api/v1/calls/{call_id}/disposition",
        json={
            "disposition": "call back",
            "note": "Wants a quote",
            "next_followup_at": "2099-11-24T15:00:00Z",
        },
    )
    assert note.status == 200, await note.text()
    async with asyncio.timeout(10):
        while (t := await store.touches.by_source_key(f"asterisk:{call_id}")) is None or t.ended_at is None:
            await asyncio.sleep(0.02)
    assert t.contact_id == pat.id and t.summary == "Wants a quote" and t.payload["disposition"] == "call back"
    originate = next(a for a in pbx.actions if a.name == "Originate")
    assert originate.get("ChannelId") == call_id
    await ws.close()


async def test_outbound_call_is_from_the_rep_to_the_customer(
    pbx_app: Any, pbx: AmiTestServer, aiohttp_client: Any
) -> None:
    # click-to-call shows the rep's phone the customer's caller ID; the call is still from the rep
    client = await aiohttp_client(pbx_app)
    rep = await make_api(client, "jsmith", "rep", extension="1001")
    store = pbx_app.app[STORE]
    pat = await store.contacts.create(
        validate_contact(
            {"first_name": "Pat", "last_name": "Taylor", "phones": ["+15557654321"]}, region="US"
        )
    )
    ws = await client.ws_connect(f"/ws/agent?token={rep.token}")
    await ws.receive(timeout=5)
    call_id = (await (await rep.post("/api/v1/calls", json={"contact_id": pat.id})).json())["id"]
    pop = json.loads((await ws.receive(timeout=10)).data)
    assert (pop["call"]["from"], pop["call"]["to"]) == ("1001", "+15557654321")
    async with asyncio.timeout(10):
        while (t := await store.touches.by_source_key(f"asterisk:{call_id}")) is None or t.ended_at is None:
            await asyncio.sleep(0.02)
    async with asyncio.timeout(10):  # the recording is labelled once its call's end reaches it
        while (rec := await store.recordings.by_name("asterisk", f"{call_id}.wav")) is None or rec[
            "direction"
        ] is None:
            await asyncio.sleep(0.01)
    assert (rec["direction"], rec["from_number"], rec["to_number"]) == ("outbound", "1001", "+15557654321")
    assert t.number == "+15557654321" and t.username == "jsmith"
    await ws.close()
