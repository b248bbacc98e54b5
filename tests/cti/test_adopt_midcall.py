"""A call live while Switchboard was stopped is adopted from the PBX's channel listing, in any order.

Recorded on a real Asterisk (`v-adopt-midcall.json`): a queue call from +15550004445 answered by
agent2 before Switchboard started; `CoreShowChannels` listed the agent's channel before the caller's.
The listing is given over a real AMI socket in every order it could come in.
"""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime
from typing import Any

import pytest

from crm_link.contacts import validate_contact
from cti.ami.client import AmiClient
from cti.ami.protocol import Event
from cti.ami.server import AmiTestServer
from cti.events import CallAnswered, CallEnded, CallRinging
from cti.tracker import CallTracker
from switchboard.keys import ASTERISK, STORE
from tests.conftest import PASSWORD
from tests.cti.conftest import is_agent, midcall, start_pbx_app

CALL = "1796209585.349"
LISTING = midcall()["coreshowchannels"]
ORDERS = list(itertools.permutations(range(len(LISTING))))


async def _drain(client: AmiClient, until: str) -> list[Event]:
    out: list[Event] = []
    async with asyncio.timeout(10):
        while (ev := await client.events.get()).name != until:
            out.append(ev)
    return out


async def test_adopted_midcall_is_one_inbound_answered_call_in_every_listing_order(
    pbx: AmiTestServer,
) -> None:
    assert len(ORDERS) == 24
    client = AmiClient("127.0.0.1", pbx.port, "switchboard", "crm-secret", backoff_min=0.01)
    await client.start()
    await client.wait_connected(5)
    data = midcall()
    last_hangup = max(float(e["Timestamp"]) for e in data["events_after"] if e["Event"] == "Hangup")
    for order in ORDERS:
        pbx.listing = [LISTING[i] for i in order]
        _, channels = await client.send_list_action("CoreShowChannels")
        assert [c.get("Uniqueid") for c in channels] == [LISTING[i]["Uniqueid"] for i in order]
        tracker = CallTracker(is_agent, clock=lambda: datetime.fromtimestamp(1796209588.2, UTC))
        adopted = tracker.resync(channels)
        await pbx.play_events(data["events_after"])
        await pbx.broadcast(b"Event: ReplayDone\r\n\r\n")
        out = adopted + [d for ev in await _drain(client, "ReplayDone") for d in tracker.feed(ev)]
        (ring,) = [e for e in out if isinstance(e, CallRinging)]
        assert (ring.call_id, ring.direction, ring.from_number, ring.interface, ring.queue) == (
            CALL,
            "inbound",
            "+15550004445",
            "Local/agent2@agents",
            "sales",
        ), order
        assert [e.interface for e in out if isinstance(e, CallAnswered)] == ["Local/agent2@agents"], order
        (end,) = [e for e in out if isinstance(e, CallEnded)]
        assert (
            end.call_id,
            end.direction,
            end.from_number,
            end.to_number,
            end.answered,
            end.answered_by,
            end.queue,
            end.hangup_cause,
            end.transferred_to,
        ) == (
            CALL,
            "inbound",
            "+15550004445",
            "7000",
            True,
            "Local/agent2@agents",
            "sales",
            16,
            None,
        ), order
        # the listing's Duration (2 s) dates the call; its end is the PBX's own Hangup timestamp
        assert end.started_at == datetime.fromtimestamp(1796209586.2, UTC)
        assert end.ended_at == datetime.fromtimestamp(last_hangup, UTC)
        assert tracker.calls == {} and tracker.skipped == 0
    await client.close()


@pytest.fixture
async def pbx_app(aiohttp_server: Any, settings: Any, pbx: AmiTestServer) -> Any:
    return await start_pbx_app(aiohttp_server, settings, pbx, {"Local/agent2@agents/n": "agent2"})


@pytest.mark.parametrize("order", [(0, 1, 2, 3), (3, 2, 1, 0)], ids=["agent-first", "caller-first"])
async def test_restart_mid_call_puts_the_call_on_the_customers_history(
    pbx_app: Any, pbx: AmiTestServer, order: tuple[int, ...]
) -> None:
    store = pbx_app.app[STORE]
    await store.users.add("agent2", role="rep", password=PASSWORD, display_name="Agent Two")
    gina = await store.contacts.create(
        validate_contact(
            {"first_name": "Gina", "last_name": "Restart", "phones": ["+15550004445"]}, region="US"
        )
    )
    source = pbx_app.app[ASTERISK]
    # the PBX as Switchboard finds it when it (re)connects mid-call
    pbx.listing = [LISTING[i] for i in order]
    pbx.variables[("Local/7000@from-trunk-000000a9;2", "MIXMONITOR_FILENAME")] = (
        "/tmp/ast-rec/1796209585.350.wav"
    )
    resyncs = source.resyncs
    await pbx.drop_connections()
    async with asyncio.timeout(10):
        while (
            source.resyncs == resyncs
            or await store.recordings.by_name("asterisk", "1796209585.350.wav") is None
        ):
            await asyncio.sleep(0.01)
    await pbx.play_events(midcall()["events_after"])
    async with asyncio.timeout(10):
        while (
            touch := await store.touches.by_source_key(f"asterisk:{CALL}")
        ) is None or touch.ended_at is None:
            await asyncio.sleep(0.01)
    (t,) = (await store.touches.history(gina.id)).items
    assert (t.id, t.direction, t.status, t.username, t.number) == (
        touch.id,
        "inbound",
        "answered",
        "agent2",
        "+15550004445",
    )
    assert t.payload["queue"] == "sales"
    async with asyncio.timeout(10):  # the recording is labelled when its call's end reaches it
        while (rec := await store.recordings.by_name("asterisk", "1796209585.350.wav"))["touch_id"] is None:
            await asyncio.sleep(0.01)
    assert (rec["direction"], rec["from_number"], rec["to_number"], rec["touch_id"], rec["contact_id"]) == (
        "inbound",
        "+15550004445",
        "7000",
        touch.id,
        gina.id,
    )
