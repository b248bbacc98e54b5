"""A PBX crash mid-call: the call is gone when Switchboard reconnects; its end is the last moment
Asterisk told us about it (the events' Timestamp), not the reconnect time."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from crm_link.clock import ManualClock
from cti.ami.server import AmiTestServer
from switchboard.app import create_app
from switchboard.keys import ASTERISK, STORE
from tests.conftest import PASSWORD
from tests.cti.conftest import AMI

CALL = "1795346245.0"


def _until_hangup() -> tuple[bytes, datetime]:
    """The recorded answered call up to (not including) its first hangup, and the last Timestamp of
    an event of that call in that part."""
    data = (AMI / "i-inbound-answered.ami").read_bytes()
    messages = data.split(b"\r\n\r\n")
    kept: list[bytes] = []
    last = 0.0
    for msg in messages:
        if b"Event: SoftHangupRequest\r\n" in msg or b"Event: HangupRequest\r\n" in msg:
            break
        if b"\r\nEvent: Hangup\r\n" in b"\r\n" + msg + b"\r\n":
            break
        kept.append(msg)
        headers = dict(line.split(": ", 1) for line in msg.decode().split("\r\n") if ": " in line)
        if headers.get("Linkedid") == CALL and "Timestamp" in headers:
            last = max(last, float(headers["Timestamp"]))
    return b"\r\n\r\n".join(kept) + b"\r\n\r\n", datetime.fromtimestamp(last, UTC)


async def test_call_lost_in_a_pbx_crash_ends_at_its_last_event(
    aiohttp_server: Any, settings: Any, pbx: AmiTestServer
) -> None:
    part, last_event = _until_hangup()
    clock = ManualClock(last_event + timedelta(seconds=1))
    settings.asterisk.enabled = True
    settings.asterisk.port = pbx.port
    settings.asterisk.secret.__init__("crm-secret")
    settings.asterisk.username = "switchboard"
    settings.interfaces = {"Local/agent1@agents/n": "agent1"}
    server = await aiohttp_server(create_app(settings, clock=clock))
    source = server.app[ASTERISK]
    store = server.app[STORE]
    await source.client.wait_connected(5)
    await store.users.add("agent1", role="rep", password=PASSWORD)
    await source.directory.reload()
    await pbx.replay(part)
    async with asyncio.timeout(10):  # every event of the call so far is folded in
        while (call := source.tracker.calls.get(CALL)) is None or call.last_seen != last_event:
            await asyncio.sleep(0.02)
        while (live := source.service.calls.get(CALL)) is None or live.answered_by is None:
            await asyncio.sleep(0.02)
    touch = await store.touches.by_source_key(f"asterisk:{CALL}")
    assert touch is not None and touch.ended_at is None
    # the PBX dies; Switchboard reconnects an hour later (by its clock) to a PBX with no calls
    clock.advance(hours=1)
    resyncs = source.resyncs
    await pbx.drop_connections()
    async with asyncio.timeout(15):
        while source.resyncs == resyncs:
            await asyncio.sleep(0.02)
        while (t := await store.touches.by_source_key(f"asterisk:{CALL}")) is None or t.ended_at is None:
            await asyncio.sleep(0.02)
    assert t.ended_at == last_event
    assert t.ended_at != clock()
    assert t.status == "answered" and t.username == "agent1"
