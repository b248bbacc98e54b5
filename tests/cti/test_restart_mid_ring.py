"""A restart while a phone rings: the call's end happened while nobody listened, so after the AMI
resync its touch is closed as missed with the reason; a call the PBX still has stays open."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from crm_link.contacts import validate_contact
from crm_link.touches import TouchInput
from cti.ami.server import AmiTestServer
from switchboard.app import create_app, open_store
from switchboard.keys import ASTERISK, STORE
from tests.conftest import PASSWORD


async def _touch_where(store: Any, key: str, ok: Any) -> Any:
    async with asyncio.timeout(15):
        while True:
            touch = await store.touches.by_source_key(key)
            if touch is not None and ok(touch):
                return touch
            await asyncio.sleep(0.02)


async def test_call_ringing_at_restart_is_closed_as_missed(
    aiohttp_server: Any, settings: Any, pbx: AmiTestServer
) -> None:
    settings.asterisk.enabled = True
    settings.asterisk.port = pbx.port
    settings.asterisk.secret.__init__("crm-secret")
    settings.asterisk.username = "switchboard"
    first = await aiohttp_server(create_app(settings))
    store = first.app[STORE]
    await store.users.add("jsmith", role="rep", password=PASSWORD, extension="1001")
    await store.users.add("agarcia", role="rep", password=PASSWORD, extension="1002")
    jane = await store.contacts.create(
        validate_contact({"first_name": "Jane", "phones": ["+15551234567"], "owner": "jsmith"}, region="US")
    )
    await first.app[ASTERISK].directory.reload()
    await first.app[ASTERISK].client.wait_connected(5)
    # Jane's call rings jsmith for 2 s (at the PBX's 1/100 speed); Bo's rings agarcia far longer
    janes = asyncio.create_task(pbx.inbound_call("+15551234567", agents=["PJSIP/1001"], ring_seconds=200))
    bos = asyncio.create_task(pbx.inbound_call("+15559870000", agents=["PJSIP/1002"], ring_seconds=100_000))
    async with asyncio.timeout(15):
        while True:
            rows = await store.db.fetchall("SELECT source_key, status FROM touches WHERE kind = 'call'")
            if [r["status"] for r in rows] == ["ringing", "ringing"]:
                break
            await asyncio.sleep(0.02)
    await first.close()  # Switchboard stops mid-ring
    jane_call = await janes  # … and Jane hangs up while it is down
    second = await aiohttp_server(create_app(settings))
    store = second.app[STORE]
    try:
        touch = await _touch_where(store, f"asterisk:{jane_call}", lambda t: t.ended_at is not None)
        assert touch.status == "missed" and touch.contact_id == jane.id
        assert (
            touch.payload["closed_reason"] == "the PBX no longer had this call when Switchboard reconnected"
        )
        assert "no longer had this call" in touch.summary
        # the missed call lands on the owner's day like any other missed call
        assert [f.kind for f in await store.touches.open_followups(jane.id)] == ["missed_call"]
        # Bo's call is still ringing at the PBX: it stays open
        source = second.app[ASTERISK]
        async with asyncio.timeout(10):
            while source.resyncs == 0:
                await asyncio.sleep(0.02)
        open_calls = await store.touches.open_calls("asterisk")
        assert [t.number for t in open_calls] == ["+15559870000"]
    finally:
        bos.cancel()
        await asyncio.gather(bos, return_exceptions=True)


async def test_twilio_call_open_past_twilios_time_limit_is_closed(
    aiohttp_server: Any, settings: Any, tmp_path: Any
) -> None:
    """Twilio never reports an end to a process that was down: a call still ringing in the store
    after Twilio's time limit is closed as missed with the reason; a recent one is left alone."""
    now = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)
    settings.twilio.enabled = True
    settings.twilio.account_sid = "AC" + "3" * 32
    settings.twilio.auth_token.__init__("voice-token")
    settings.server.public_url = "http://127.0.0.1:1"
    async with open_store(settings) as store:
        for sid, number, started in (
            ("CAold", "+15551234567", now - timedelta(hours=5)),
            ("CAnew", "+15559870000", now - timedelta(minutes=1)),
        ):
            await store.touches.record(
                TouchInput(
                    source_key=f"twilio:{sid}",
                    kind="call",
                    direction="inbound",
                    started_at=started,
                    channel="twilio",
                    status="ringing",
                    number=number,
                )
            )
    app = create_app(settings, clock=lambda: now)
    server = await aiohttp_server(app)
    store = server.app[STORE]
    touch = await _touch_where(store, "twilio:CAold", lambda t: t.ended_at is not None)
    assert touch.status == "missed" and touch.ended_at == now
    assert touch.payload["closed_reason"] == "Twilio reported no end within 4.25 hours"
    assert [t.source_key for t in await store.touches.open_calls("twilio")] == ["twilio:CAnew"]
