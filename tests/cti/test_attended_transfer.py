"""An attended transfer (`vi-attended-transfer`: agent1 answers Jane Doe's queue call, consults 2002
= agent2, completes the transfer): noted on the touch, and agent2's pop is answered."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from cti.ami.protocol import Event
from cti.ami.server import AmiTestServer
from cti.events import CallAnswered, CallEnded, CallRinging
from cti.tracker import CallTracker
from switchboard.keys import ASTERISK, STORE
from tests.conftest import make_api
from tests.cti.conftest import AMI, is_agent, start_pbx_app

CALL = "1796229316.0"


def test_the_tracker_answers_the_target_and_notes_the_transfer() -> None:
    from cti.ami.protocol import AmiParser

    tracker = CallTracker(is_agent)
    out = [
        d
        for m in AmiParser().feed((AMI / "vi-attended-transfer.ami").read_bytes())
        if isinstance(m, Event)
        for d in tracker.feed(m)
    ]
    assert [(e.interface, type(e).__name__) for e in out if isinstance(e, CallRinging | CallAnswered)] == [
        ("Local/agent1@agents", "CallRinging"),
        ("Local/agent1@agents", "CallAnswered"),
        ("Local/agent2@agents", "CallRinging"),
        ("Local/agent2@agents", "CallAnswered"),
    ]
    assert [e.transfer for e in out if isinstance(e, CallAnswered)] == [False, True]
    (end,) = [e for e in out if isinstance(e, CallEnded)]
    assert (end.call_id, end.answered_by, end.transferred_to) == (CALL, "Local/agent1@agents", "2002")


async def test_transfer_target_pop_is_answered_and_the_touch_says_so(
    aiohttp_server: Any, aiohttp_client: Any, settings: Any, pbx: AmiTestServer
) -> None:
    app = await start_pbx_app(
        aiohttp_server,
        settings,
        pbx,
        {"Local/agent1@agents/n": "jsmith", "Local/agent2@agents/n": "agarcia"},
    )
    client = await aiohttp_client(app)
    await make_api(client, "jsmith", "rep", extension="1001", display_name="John Smith")
    agarcia = await make_api(client, "agarcia", "rep", extension="1002", display_name="Ana Garcia")
    await app.app[ASTERISK].directory.reload()
    ws = await client.ws_connect(f"/ws/agent?token={agarcia.token}")
    assert json.loads((await ws.receive(timeout=5)).data)["type"] == "hello"
    await pbx.replay((AMI / "vi-attended-transfer.ami").read_bytes())
    seen: list[tuple[str, str]] = []
    async with asyncio.timeout(10):
        while ("call_update", "ended") not in seen:
            msg = json.loads((await ws.receive()).data)
            seen.append((msg["type"], msg["call"]["state"]))
            if msg["call"]["state"] == "answered":
                assert msg["call"]["answered_by"] == "agarcia" and msg["call"]["transferred_from"] == "jsmith"
    assert seen == [("screen_pop", "ringing"), ("call_update", "answered"), ("call_update", "ended")]
    store = app.app[STORE]
    async with asyncio.timeout(10):
        while (t := await store.touches.by_source_key(f"asterisk:{CALL}")) is None or t.ended_at is None:
            await asyncio.sleep(0.02)
    assert t.username == "jsmith" and t.status == "answered"
    assert t.payload["transferred_to"] == "2002" and t.payload["transferred_to_user"] == "agarcia"
    assert "transferred to Ana Garcia (2002)" in t.summary
    await ws.close()
