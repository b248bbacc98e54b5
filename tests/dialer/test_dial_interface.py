"""Progressive dialing rings the interface the one rule gives (`[dial_interfaces]`, `agent_dial`)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from cti.ami.server import AmiTestServer
from switchboard.keys import DIALER
from tests.dialer.conftest import FixedClock, Office, add_customers, settle


@pytest.fixture
def settings(settings: Any) -> Any:
    # jsmith answers on the Local click channel (as in the recorded iii-outbound-click2call);
    # agarcia on the template's desk phone
    settings.dial_interfaces = {"jsmith": "Local/click1001@agents"}
    return settings


async def test_a_progressive_call_rings_the_users_dial_interface(
    office: Office, dial_app: Any, pbx: AmiTestServer, clock: FixedClock
) -> None:
    store = office.store
    (cid,) = await add_customers(store, ["+13127365000"])
    resp = await office.manager.post(
        "/api/v1/call-lists",
        {"name": "One", "mode": "progressive", "contact_ids": [cid], "agents": ["jsmith"], "start": True},
    )
    assert resp.status == 201, await resp.text()
    list_id = (await resp.json())["id"]
    assert (await office.jsmith.post("/api/v1/agent/ready", {"list_id": list_id})).status == 200
    clock.advance(hours=4)  # 10:30 in Chicago
    dial_app.app[DIALER].wake()
    async with asyncio.timeout(15):
        while not any(a.name == "Originate" for a in pbx.actions):
            await asyncio.sleep(0.02)
    await settle(dial_app.app)
    (originate,) = [a for a in pbx.actions if a.name == "Originate"]
    assert originate.get("Channel") == "Local/click1001@agents"
    (attempt,) = await store.call_lists.attempts_of(list_id=list_id)
    touch = await store.touches.get(attempt.touch_id)
    assert touch.username == "jsmith" and touch.status == "answered"
