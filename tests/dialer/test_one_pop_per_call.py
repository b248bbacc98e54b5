"""A progressive call shows the agent one pop, updated from "dialing" to "ringing" to its end."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from cti.ami.server import AmiTestServer
from switchboard.keys import DIALER
from tests.dialer.conftest import FixedClock, Office, add_customers, settle


async def test_a_progressive_call_pops_once_and_is_updated(
    office: Office, dial_app: Any, pbx: AmiTestServer, clock: FixedClock
) -> None:
    store = office.store
    (cid,) = await add_customers(store, ["+13127365000"])
    ws = await office.client.ws_connect(f"/ws/agent?token={office.jsmith.token}")
    assert json.loads((await ws.receive(timeout=5)).data)["type"] == "hello"
    resp = await office.manager.post(
        "/api/v1/call-lists",
        {"name": "One", "mode": "progressive", "contact_ids": [cid], "agents": ["jsmith"], "start": True},
    )
    assert resp.status == 201, await resp.text()
    list_id = (await resp.json())["id"]
    assert (await office.jsmith.post("/api/v1/agent/ready", {"list_id": list_id})).status == 200
    clock.advance(hours=4)  # 10:30 in Chicago
    dial_app.app[DIALER].wake()
    pops: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    async with asyncio.timeout(15):
        while not any(u["state"] == "ended" for u in updates):
            msg = json.loads((await ws.receive()).data)
            if msg["type"] == "screen_pop":
                pops.append(msg["call"])
            elif msg["type"] == "call_update":
                updates.append(msg["call"])
    await settle(dial_app.app)
    (attempt,) = await store.call_lists.attempts_of(list_id=list_id)
    # every pop and update names the one call, by the id its touch has
    assert {p["id"] for p in pops} == {u["id"] for u in updates} == {attempt.call_id}
    assert [p["state"] for p in pops] == ["dialing", "ringing"]
    touch = await store.touches.get(attempt.touch_id)
    assert touch.source_key == f"asterisk:{attempt.call_id}" and touch.status == "answered"
    await ws.close()
