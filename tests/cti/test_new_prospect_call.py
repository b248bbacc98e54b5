"""A prospect created from an unknown caller's pop gets that call: its touch and its recording.

Replays the recorded `i-inbound-answered` (caller +15551234567, answered by agent1 = jsmith) with
nobody in the store for that number; once after the call ended, once split mid-call (the prospect
is created while the rep is talking, the rest of the real transcript follows).
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from cti.ami.server import AmiTestServer
from switchboard.app import create_app
from switchboard.keys import ASTERISK, STORE
from tests.conftest import make_api
from tests.cti.conftest import AMI

CALL = "1795346245.0"
WAV = "1795346245.1.wav"


@pytest.fixture
async def app(aiohttp_server: Any, aiohttp_client: Any, settings: Any, pbx: AmiTestServer) -> Any:
    settings.asterisk.enabled = True
    settings.asterisk.port = pbx.port
    settings.asterisk.secret.__init__("crm-secret")
    settings.interfaces = {"Local/agent1@agents/n": "jsmith", "Local/agent2@agents/n": "agarcia"}
    settings.recordings.poll_seconds = 0.05
    Path(settings.asterisk.recordings_dir).mkdir(parents=True)
    shutil.copy(AMI / "recordings" / WAV, Path(settings.asterisk.recordings_dir) / WAV)
    server = await aiohttp_server(create_app(settings))
    client = await aiohttp_client(server)
    await server.app[ASTERISK].client.wait_connected(5)
    return client


async def _until(check: Any, timeout: float = 10) -> Any:
    async with asyncio.timeout(timeout):
        while not (out := await check()):
            await asyncio.sleep(0.03)
    return out


async def _recording(store: Any) -> Any:
    async def linked() -> Any:
        rec = await store.recordings.by_name("asterisk", WAV)
        return rec if rec and rec["storage_path"] and rec["touch_id"] else None

    return await _until(linked)


async def _ended(store: Any) -> Any:
    async def ended() -> Any:
        t = await store.touches.by_source_key(f"asterisk:{CALL}")
        return t if t and t.ended_at else None

    return await _until(ended)


async def test_prospect_from_a_finished_unknown_call_gets_the_call(app: Any, pbx: AmiTestServer) -> None:
    store = app.server.app[STORE]
    jsmith = await make_api(app, "jsmith", "rep", extension="1001")
    agarcia = await make_api(app, "agarcia", "rep", extension="1002")
    await app.server.app[ASTERISK].directory.reload()
    await pbx.replay((AMI / "i-inbound-answered.ami").read_bytes())
    touch = await _ended(store)
    assert touch.contact_id is None and touch.username == "jsmith"
    rec = await _recording(store)
    assert rec["contact_id"] is None
    body = {"first_name": "Jane", "last_name": "Doe", "phones": ["+15551234567"], "call_id": CALL}
    # not hers: agarcia may not take jsmith's caller; a call id that is no call is named
    resp = await agarcia.post("/api/v1/contacts", json=body)
    assert resp.status == 403 and (await resp.json())["error"]["field"] == "call_id"
    resp = await jsmith.post("/api/v1/contacts", json=body | {"call_id": "1795346245.999"})
    assert resp.status == 404 and (await resp.json())["error"]["field"] == "call_id"
    assert (await (await jsmith.get("/api/v1/contacts")).json())["items"] == []  # nothing half-written
    resp = await jsmith.post("/api/v1/contacts", json=body)
    assert resp.status == 201, await resp.text()
    jane = await resp.json()
    history = (await (await jsmith.get(f"/api/v1/contacts/{jane['id']}/touches")).json())["items"]
    assert [(t["kind"], t["source_key"]) for t in history] == [("call", f"asterisk:{CALL}")]
    found = await (await jsmith.get("/api/v1/recordings", params={"contact_id": str(jane["id"])})).json()
    assert [r["call_id"] for r in found["items"]] == [CALL]
    # the call is Jane's now: a second prospect cannot take it, and is not created
    resp = await jsmith.post("/api/v1/contacts", json=body | {"first_name": "Again"})
    assert resp.status == 409 and (await resp.json())["error"]["field"] == "call_id"
    assert len((await (await jsmith.get("/api/v1/contacts")).json())["items"]) == 1


async def test_prospect_created_while_talking_keeps_the_call_after_it_ends(
    app: Any, pbx: AmiTestServer
) -> None:
    store = app.server.app[STORE]
    jsmith = await make_api(app, "jsmith", "rep", extension="1001")
    await app.server.app[ASTERISK].directory.reload()
    ws = await app.ws_connect(f"/ws/agent?token={jsmith.token}")
    assert json.loads((await ws.receive(timeout=5)).data)["type"] == "hello"
    transcript = (AMI / "i-inbound-answered.ami").read_bytes()
    cut = transcript.index(b"Event: Cdr")  # the rep is talking; the hangup has not come
    await pbx.replay(transcript[:cut])
    pop = json.loads((await ws.receive(timeout=10)).data)
    assert pop["type"] == "screen_pop" and pop["contact"] is None and pop["call"]["id"] == CALL
    async with asyncio.timeout(10):
        while (await ws.receive_json())["call"]["state"] != "answered":
            pass
    resp = await jsmith.post(
        "/api/v1/contacts",
        json={"first_name": "Jane", "phones": ["+15551234567"], "call_id": pop["call"]["id"]},
    )
    assert resp.status == 201, await resp.text()
    jane = (await resp.json())["id"]
    await pbx.replay(transcript[cut:])
    touch = await _ended(store)
    assert touch.contact_id == jane and touch.status == "answered"
    rec = await _recording(store)
    assert rec["contact_id"] == jane
    await ws.close()
