"""The AMI client and tracker against the test PBX over real TCP: login, replay, reconnects, bad bytes."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest

from cti.ami.client import AmiClient
from cti.ami.protocol import Event
from cti.ami.server import AmiTestServer
from cti.events import CallEnded, CallRinging, RecordingReady
from cti.tracker import CallTracker
from tests.cti.conftest import AMI, is_agent

# what happened in each recording (the fixtures' README), as the tracker must conclude it
EXPECTED = {
    "i-inbound-answered": (
        "1795346245.0",
        "inbound",
        "+15551234567",
        True,
        "Local/agent1@agents",
        "sales",
        None,
        "/tmp/ast-rec/1795346245.1.wav",
    ),
    "ii-inbound-abandoned": (
        "1795346804.60",
        "inbound",
        "+15559876543",
        False,
        None,
        "sales",
        None,
        "/tmp/ast-rec/1795346804.61.wav",
    ),
    "iii-outbound-click2call": (
        "1795346270.8",
        "outbound",
        "+15557654321",
        True,
        "Local/click1001@agents",
        None,
        None,
        "/tmp/ast-rec/1795346270.8.wav",
    ),
    "iv-a-redirect": (
        "1795346283.12",
        "inbound",
        "+15550001111",
        True,
        "Local/agent1@agents",
        "sales",
        "7100",
        "/tmp/ast-rec/1795346283.13.wav",
    ),
    "sip-2-internal-1001-to-1002": (
        "1795346754.56",
        "internal",
        "1002",
        True,
        "PJSIP/1002",
        None,
        None,
        None,
    ),
    "sip-3-click2call-via-trunk": (
        "1795346762.58",
        "outbound",
        "+15557654321",
        True,
        "PJSIP/1001",
        None,
        None,
        "/tmp/ast-rec/1795346762.58.wav",
    ),
    "vi-attended-transfer": (
        "1796229316.0",
        "inbound",
        "+15551234567",
        True,
        "Local/agent1@agents",
        "sales",
        "2002",
        "/tmp/ast-rec/1796229316.1.wav",
    ),
    "sip-0-register": None,
    "status-idle": None,
}


async def _client(pbx: AmiTestServer, **kw: Any) -> AmiClient:
    client = AmiClient(
        "127.0.0.1", pbx.port, "switchboard", "crm-secret", backoff_min=0.01, backoff_max=0.05, **kw
    )
    await client.start()
    await client.wait_connected(5)
    return client


async def _drain(client: AmiClient, until: str, timeout: float = 10) -> list[Event]:
    out: list[Event] = []
    async with asyncio.timeout(timeout):
        while True:
            ev = await client.events.get()
            out.append(ev)
            if ev.name == until:
                return out


@pytest.mark.parametrize("auth", ["md5", "plain"])
async def test_login(pbx: AmiTestServer, auth: str) -> None:
    client = await _client(pbx, auth=auth)
    assert client.state == "up"
    assert (await client.events.get()).name == "FullyBooted"
    sent = [a.name for a in pbx.actions]
    assert sent[-1] == "Login" and ("Challenge" in sent) == (auth == "md5")
    if auth == "md5":
        assert pbx.actions[-1].get("Secret") is None  # the secret never crossed the wire
    resp = await client.send_action("Ping")
    assert resp.get("Ping") == "Pong"
    await client.close()
    assert pbx.actions[-1].name == "Logoff"


async def test_bad_secret_is_reported_not_crashed(pbx: AmiTestServer) -> None:
    client = AmiClient("127.0.0.1", pbx.port, "switchboard", "wrong", backoff_min=0.01, backoff_max=0.02)
    await client.start()
    with pytest.raises(TimeoutError):
        await client.wait_connected(0.5)
    assert client.state != "up" and "Authentication failed" in (client.last_error or "")
    await client.close()


REPLAYS = [(n, c) for n in sorted(EXPECTED) for c in ("whole", "random")] + [
    ("i-inbound-answered", "bytes"),
    ("sip-3-click2call-via-trunk", "bytes"),
]


@pytest.mark.parametrize(("name", "chunking"), REPLAYS)
async def test_replayed_transcripts_give_the_right_calls(
    pbx: AmiTestServer, name: str, chunking: str
) -> None:
    client = await _client(pbx)
    await pbx.replay((AMI / f"{name}.ami").read_bytes(), chunking=chunking, seed=7)
    await pbx.broadcast(b"Event: ReplayDone\r\n\r\n")
    events = await _drain(client, "ReplayDone")
    tracker = CallTracker(is_agent)
    out = [d for ev in events for d in tracker.feed(ev)]
    ended = [e for e in out if isinstance(e, CallEnded)]
    expected = EXPECTED[name]
    if expected is None:
        assert ended == [] and [e for e in out if isinstance(e, CallRinging)] == []
    else:
        call_id, direction, number, answered, by, queue, moved, recording = expected
        (end,) = ended
        customer = end.from_number if direction == "inbound" else end.to_number
        assert (
            end.call_id,
            end.direction,
            customer,
            end.answered,
            end.answered_by,
            end.queue,
            end.transferred_to,
        ) == (call_id, direction, number, answered, by, queue, moved)
        assert end.hangup_cause == 16
        assert end.recording_files == ((recording,) if recording else ())
        assert [r.path for r in out if isinstance(r, RecordingReady)] == ([recording] if recording else [])
        rung = [e for e in out if isinstance(e, CallRinging)]
        assert rung and all(r.call_id == call_id for r in rung)
        if name == "ii-inbound-abandoned":
            assert [r.interface for r in rung] == ["Local/agent1@agents", "Local/agent2@agents"]
    assert tracker.calls == {} and tracker.skipped == 0
    await client.close()


async def test_garbage_unknown_and_broken_events_never_crash(pbx: AmiTestServer) -> None:
    client = await _client(pbx)
    await pbx.broadcast(
        b"\x00\xff\xfe garbage\r\n\r\nEvent: Weird\r\nfoo\r\n\r\nEvent: Hangup\r\n\r\n"
        b"Event: DialBegin\r\nDestLinkedid: nope\r\n\r\nEvent: Newchannel\r\nChannel: X\r\n\r\n"
    )
    await pbx.replay((AMI / "i-inbound-answered.ami").read_bytes())
    await pbx.broadcast(b"Event: ReplayDone\r\n\r\n")
    events = await _drain(client, "ReplayDone")
    tracker = CallTracker(is_agent)
    out = [d for ev in events for d in tracker.feed(ev)]
    assert len([e for e in out if isinstance(e, CallEnded)]) == 1
    assert tracker.skipped >= 2  # the Hangup and Newchannel without their keys
    assert client.state == "up"
    await client.close()


async def test_half_open_socket_is_noticed_by_ping(pbx: AmiTestServer) -> None:
    client = await _client(pbx, ping_interval=0.05, ping_timeout=0.1)
    pbx.silent = True
    async with asyncio.timeout(5):
        while pbx.logins < 2:
            await asyncio.sleep(0.02)
    assert client.connects >= 1  # it reconnected and logged in again
    pbx.silent = False
    await client.close()


async def test_reconnect_mid_call_resyncs_and_ends_the_call_once(pbx: AmiTestServer) -> None:
    client = await _client(pbx)
    tracker = CallTracker(is_agent)
    ended: list[CallEnded] = []
    pbx.speed = 0.05
    call = asyncio.create_task(
        pbx.inbound_call(
            "+15551234567", agents=["PJSIP/1001"], answer="PJSIP/1001", ring_seconds=1, talk_seconds=20
        )
    )
    ringing = False
    async with asyncio.timeout(10):
        while not ringing:
            ev = await client.events.get()
            for d in tracker.feed(ev):
                ringing = ringing or isinstance(d, CallRinging)
    await pbx.drop_connections()  # the network fails while the call is up
    await client.wait_connected(5)
    async with asyncio.timeout(10):
        while True:
            ev = await client.events.get()
            if ev.name == "FullyBooted":
                tracker.reset_channels()
                _, channels = await client.send_list_action("CoreShowChannels")
                assert {c.get("Linkedid") for c in channels} == set(tracker.calls)
                ended += [d for d in tracker.resync(channels) if isinstance(d, CallEnded)]
                break
    await call
    await pbx.broadcast(b"Event: Done\r\n\r\n")
    for ev in await _drain(client, "Done"):
        ended += [d for d in tracker.feed(ev) if isinstance(d, CallEnded)]
    (end,) = ended
    assert end.from_number == "+15551234567" and end.answered and end.answered_by == "PJSIP/1001"
    assert end.ended_at <= datetime.now(UTC)
    await client.close()


async def test_originate_is_correlated(pbx: AmiTestServer) -> None:
    client = await _client(pbx)
    resp = await client.originate(
        "Local/click1001@agents",
        context="from-internal",
        exten="+15557654321",
        caller_id='"Jane" <+15557654321>',
        variables={"SWITCHBOARD_USER": "jsmith"},
    )
    assert (
        resp.name == "OriginateResponse" and resp.get("Reason") == "4" and resp.get("Response") == "Success"
    )
    sent = next(a for a in pbx.actions if a.name == "Originate")
    assert sent.get("Async") == "true" and sent.variables == ("SWITCHBOARD_USER=jsmith",)
    await client.close()
