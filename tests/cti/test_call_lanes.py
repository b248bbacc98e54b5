"""A call whose touch write is held up by the store does not hold up another call's screen-pop."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from crm_link.contacts import validate_contact
from crm_link.touches import TouchInput
from cti.ami.server import AmiTestServer
from cti.lanes import CallLanes
from switchboard.keys import ASTERISK, STORE
from tests.conftest import make_api
from tests.cti.conftest import start_pbx_app

A, B = "Local/agent1@agents/n", "Local/agent2@agents/n"


async def _ended_touch(store: Any, key: str) -> Any:
    async with asyncio.timeout(10):
        while (touch := await store.touches.by_source_key(key)) is None or touch.ended_at is None:
            await asyncio.sleep(0.02)
    return touch


async def test_pop_is_not_held_up_by_another_calls_touch_write(
    aiohttp_server: Any, aiohttp_client: Any, settings: Any, pbx: AmiTestServer
) -> None:
    server = await start_pbx_app(aiohttp_server, settings, pbx, {A: "jsmith", B: "agarcia"})
    client = await aiohttp_client(server)
    await make_api(client, "jsmith", "rep", extension="1001")
    maria = await make_api(client, "agarcia", "rep", extension="1002")
    store, source = server.app[STORE], server.app[ASTERISK]
    for first, number in (("Jane", "+15551234567"), ("Bo", "+15559870000")):
        await store.contacts.create(
            validate_contact({"first_name": first, "last_name": "Doe", "phones": [number]}, region="US")
        )
    await source.directory.reload()

    # the store: call A's hang-up write (its final touch) waits until the test lets it go
    record = store.touches.record
    held, release = asyncio.Event(), asyncio.Event()

    async def held_record(item: TouchInput) -> Any:
        if item.ended_at is not None and not held.is_set():
            held.set()
            await release.wait()
        return await record(item)

    store.touches.record = held_record
    ws = await client.ws_connect(f"/ws/agent?token={maria.token}")
    await ws.receive(timeout=5)

    call_a = await pbx.inbound_call("+15551234567", agents=[A], answer=A, ring_seconds=1, talk_seconds=1)
    async with asyncio.timeout(10):
        await held.wait()  # A's hang-up is being written, and that write cannot finish
    call_b = asyncio.create_task(
        pbx.inbound_call("+15559870000", agents=[B], answer=B, ring_seconds=1, talk_seconds=1)
    )
    pop = json.loads((await ws.receive(timeout=10)).data)
    assert pop["type"] == "screen_pop" and pop["contact"]["name"] == "Bo Doe"
    assert pop["call"]["state"] == "ringing" and pop["call"]["from"] == "+15559870000"
    assert not release.is_set()
    a_touch = await store.touches.by_source_key(f"asterisk:{call_a}")
    assert a_touch is not None and a_touch.ended_at is None  # A's end is still not written

    release.set()
    b_id = await call_b
    a_touch = await _ended_touch(store, f"asterisk:{call_a}")
    b_touch = await _ended_touch(store, f"asterisk:{b_id}")
    assert (a_touch.status, a_touch.username, a_touch.number) == ("answered", "jsmith", "+15551234567")
    assert (b_touch.status, b_touch.username, b_touch.number) == ("answered", "agarcia", "+15559870000")
    await source.lanes.drain()
    rows = await store.db.fetchall("SELECT count(*) FROM touches WHERE kind = 'call'")
    assert rows[0][0] == 2  # each call exactly one touch
    await ws.close()


async def test_lanes_keep_one_calls_order_and_survive_an_error() -> None:
    lanes = CallLanes("test")
    gate = asyncio.Event()
    done: list[str] = []

    async def step(name: str, wait: asyncio.Event | None = None, fail: bool = False) -> None:
        if wait is not None:
            await wait.wait()
        if fail:
            raise RuntimeError(name)
        done.append(name)

    lanes.submit("a", lambda: step("a1", gate))
    lanes.submit("a", lambda: step("a2 fails", fail=True))
    lanes.submit("a", lambda: step("a3"))
    other = lanes.submit("b", lambda: step("b1"))
    await other  # b ran while a's first step was still waiting
    assert done == ["b1"] and len(lanes) == 3
    gate.set()
    await lanes.drain()
    assert done == ["b1", "a1", "a3"] and len(lanes) == 0


async def test_pop_is_not_held_up_by_its_own_calls_recording_row(
    aiohttp_server: Any, aiohttp_client: Any, settings: Any, pbx: AmiTestServer
) -> None:
    server = await start_pbx_app(aiohttp_server, settings, pbx, {A: "jsmith"})
    client = await aiohttp_client(server)
    jsmith = await make_api(client, "jsmith", "rep", extension="1001")
    store, source = server.app[STORE], server.app[ASTERISK]
    await store.contacts.create(
        validate_contact({"first_name": "Jane", "last_name": "Doe", "phones": ["+15551234567"]}, region="US")
    )
    await source.directory.reload()

    # the call's recording is announced before its agent rings; that write waits for the test
    recordings = source.service.recordings
    assert recordings is not None
    announce = recordings.announce
    held, release = asyncio.Event(), asyncio.Event()

    async def held_announce(call_id: str, pbx_path: str, *, source: str = "asterisk") -> None:
        held.set()
        await release.wait()
        await announce(call_id, pbx_path, source=source)

    recordings.announce = held_announce
    ws = await client.ws_connect(f"/ws/agent?token={jsmith.token}")
    await ws.receive(timeout=5)
    call = asyncio.create_task(
        pbx.inbound_call("+15551234567", agents=[A], answer=A, ring_seconds=1, talk_seconds=1)
    )
    async with asyncio.timeout(10):
        await held.wait()
    pop = json.loads((await ws.receive(timeout=10)).data)
    assert pop["type"] == "screen_pop" and pop["contact"]["name"] == "Jane Doe"
    assert not release.is_set()
    assert "CallRinging" in source.lanes.pending(pop["call"]["id"])  # its touch waits its turn

    release.set()
    call_id = await call
    touch = await _ended_touch(store, f"asterisk:{call_id}")
    assert (touch.status, touch.username) == ("answered", "jsmith")
    answered = json.loads((await ws.receive(timeout=10)).data)
    assert (answered["type"], answered["call"]["state"]) == ("call_update", "answered")
    await source.lanes.drain()
    rows = await store.db.fetchall(
        "SELECT count(*) FROM recordings WHERE call_key = ?", (f"asterisk:{call_id}",)
    )
    assert rows[0][0] == 1  # the held row was written after all
    assert source.lanes.pending(call_id) == set()
    await ws.close()


async def test_lanes_tell_what_kinds_of_work_a_call_has_pending() -> None:
    lanes = CallLanes("test")
    gate = asyncio.Event()

    async def wait() -> None:
        await gate.wait()

    lanes.submit("a", wait, kind="RecordingReady")
    lanes.submit("a", wait, kind="CallRinging")
    lanes.submit("b", wait, kind="CallAnswered")
    assert lanes.pending("a") == {"RecordingReady", "CallRinging"}
    assert lanes.pending("b") == {"CallAnswered"} and lanes.pending("c") == set()
    gate.set()
    await lanes.drain()
    assert lanes.pending("a") == lanes.pending("b") == set()
