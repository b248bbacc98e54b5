"""Twilio voice webhooks with real RequestValidator signatures: routing TwiML, events, one touch per CallSid."""

from __future__ import annotations

import json
from typing import Any

import pytest
from twilio.request_validator import RequestValidator

from crm_link.contacts import validate_contact
from switchboard.app import create_app
from switchboard.keys import STORE
from tests.conftest import make_api

TOKEN = "twilio-auth-token-123"
PUBLIC = "https://crm.example.com"


@pytest.fixture
async def tclient(aiohttp_client: Any, settings: Any) -> Any:
    settings.twilio.enabled = True
    settings.twilio.account_sid = "AC" + "1" * 32
    settings.twilio.auth_token.__init__(TOKEN)
    settings.server.public_url = PUBLIC
    return await aiohttp_client(create_app(settings))


async def post_signed(client: Any, path: str, params: dict[str, str], token: str = TOKEN) -> Any:
    sig = RequestValidator(token).compute_signature(PUBLIC + path, params)
    return await client.post(path, data=params, headers={"X-Twilio-Signature": sig})


def incoming(sid: str, caller: str) -> dict[str, str]:
    return {
        "CallSid": sid,
        "AccountSid": "AC" + "1" * 32,
        "From": caller,
        "To": "+15557654321",
        "CallStatus": "ringing",
        "Direction": "inbound",
        "ApiVersion": "2010-04-01",
    }


async def test_forged_or_missing_signature_is_403_and_writes_nothing(tclient: Any) -> None:
    params = incoming("CA" + "f" * 32, "+15551234567")
    resp = await tclient.post("/twilio/voice/incoming", data=params)
    assert resp.status == 403 and (await resp.json())["error"]["field"] == "X-Twilio-Signature"
    resp = await post_signed(tclient, "/twilio/voice/incoming", params, token="not-the-token")
    assert resp.status == 403
    resp = await post_signed(
        tclient, "/twilio/voice/status", {**params, "CallStatus": "completed"}, token="wrong"
    )
    assert resp.status == 403
    assert await tclient.server.app[STORE].touches.count() == 0


async def test_inbound_call_routes_to_online_owner_pops_and_writes_one_touch(tclient: Any) -> None:
    store = tclient.server.app[STORE]
    rep = await make_api(tclient, "jsmith", "rep", extension="1001")
    await make_api(tclient, "agarcia", "rep", extension="1002")
    jane = await store.contacts.create(
        validate_contact(
            {"first_name": "Jane", "last_name": "Doe", "phones": ["+15551234567"], "owner": "jsmith"},
            region="US",
        )
    )
    ws = await tclient.ws_connect(f"/ws/agent?token={rep.token}")
    await ws.receive(timeout=5)
    sid = "CA" + "a" * 32
    resp = await post_signed(tclient, "/twilio/voice/incoming", incoming(sid, "+15551234567"))
    assert resp.status == 200 and resp.content_type == "application/xml"
    xml = await resp.text()
    assert "<Client" in xml and ">jsmith</Client>" in xml and "agarcia" not in xml
    assert 'record="record-from-answer-dual"' in xml
    pop = json.loads((await ws.receive(timeout=5)).data)
    assert pop["type"] == "screen_pop" and pop["contact"]["id"] == jane.id and pop["call"]["id"] == sid
    leg = {
        "CallSid": "CA" + "b" * 32,
        "ParentCallSid": sid,
        "CallStatus": "in-progress",
        "To": "client:jsmith",
        "From": "+15551234567",
        "Direction": "outbound-dial",
    }
    assert (await post_signed(tclient, "/twilio/voice/leg-status", leg)).status == 204
    update = json.loads((await ws.receive(timeout=5)).data)
    assert update["call"]["state"] == "answered" and update["call"]["answered_by"] == "jsmith"
    done = incoming(sid, "+15551234567") | {"CallStatus": "completed", "CallDuration": "42"}
    for _ in range(3):  # Twilio retries status callbacks
        assert (await post_signed(tclient, "/twilio/voice/status", done)).status == 204
    end = json.loads((await ws.receive(timeout=5)).data)
    assert end["call"]["state"] == "ended" and end["call"]["duration_s"] == 42
    history = (await store.touches.history(jane.id)).items
    assert len(history) == 1
    assert (history[0].source_key, history[0].status, history[0].username, history[0].duration_s) == (
        f"twilio:{sid}",
        "answered",
        "jsmith",
        42.0,
    )
    await ws.close()


async def test_nobody_online_enqueues_and_unanswered_is_missed(tclient: Any) -> None:
    store = tclient.server.app[STORE]
    await make_api(tclient, "jsmith", "rep")
    sid = "CA" + "c" * 32
    resp = await post_signed(tclient, "/twilio/voice/incoming", incoming(sid, "+15550009999"))
    assert "<Enqueue>sales</Enqueue>" in await resp.text()
    done = incoming(sid, "+15550009999") | {"CallStatus": "completed", "CallDuration": "14"}
    await post_signed(tclient, "/twilio/voice/status", done)
    touch = await store.touches.by_source_key(f"twilio:{sid}")
    assert touch.status == "missed" and touch.number == "+15550009999"


async def test_malformed_webhook_is_400_naming_the_field(tclient: Any) -> None:
    resp = await post_signed(tclient, "/twilio/voice/status", {"CallStatus": "completed"})
    assert resp.status == 400 and (await resp.json())["error"]["field"] == "CallSid"


async def test_click_to_call_through_the_rest_api(
    aiohttp_server: Any, aiohttp_client: Any, settings: Any
) -> None:
    import socket

    from switchboard.sim.twilio_api import FakeTwilioApi

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sid, token = "AC" + "2" * 32, "rest-token"
    async with FakeTwilioApi(sid, token, talk_seconds=0.1) as fake:
        settings.twilio.enabled = True
        settings.twilio.account_sid = sid
        settings.twilio.auth_token.__init__(token)
        settings.twilio.api_base = fake.base_url
        settings.twilio.caller_id = "+15557650000"
        settings.server.public_url = f"http://127.0.0.1:{port}"
        server = await aiohttp_server(create_app(settings), port=port)
        client = await aiohttp_client(server)
        rep = await make_api(client, "jsmith", "rep")
        store = server.app[STORE]
        c = await store.contacts.create(
            validate_contact(
                {"first_name": "Pat", "phones": ["+15557654321"], "owner": "jsmith"}, region="US"
            )
        )
        ws = await client.ws_connect(f"/ws/agent?token={rep.token}")
        await ws.receive(timeout=5)
        resp = await rep.post("/api/v1/calls", json={"contact_id": c.id})
        assert resp.status == 202, await resp.text()
        call_sid = (await resp.json())["id"]
        pop = json.loads((await ws.receive(timeout=5)).data)
        assert pop["contact"]["id"] == c.id and pop["call"]["direction"] == "outbound"
        states = []
        while "ended" not in states:
            states.append(json.loads((await ws.receive(timeout=5)).data)["call"]["state"])
        assert states == ["answered", "ended"]
        (created,) = [r for r in fake.requests if r[1].endswith("/Calls.json")]
        assert created[2]["To"] == "client:jsmith" and created[2]["From"] == "+15557650000"
        assert "<Number>+15557654321</Number>" in fake.calls[call_sid].twiml  # our TwiML dialled the customer
        touch = await store.touches.by_source_key(f"twilio:{call_sid}")
        assert touch.contact_id == c.id and touch.status == "answered" and touch.direction == "outbound"
        # a refusal from Twilio is a clear error, and nothing is retried
        fake.fail_next = 500
        resp = await rep.post("/api/v1/calls", json={"contact_id": c.id})
        assert resp.status == 502 and "Twilio refused" in (await resp.json())["error"]["message"]
        assert len([r for r in fake.requests if r[1].endswith("/Calls.json")]) == 2
        await ws.close()


@pytest.mark.browser
async def test_twilio_call_pops_in_the_browser(tclient: Any, browser: Any) -> None:
    from tests.browser import login
    from tests.conftest import PASSWORD

    store = tclient.server.app[STORE]
    await store.users.add("jsmith", role="rep", password=PASSWORD, display_name="John Smith")
    jane = await store.contacts.create(
        validate_contact(
            {"first_name": "Jane", "last_name": "Doe", "phones": ["+15551234567"], "owner": "jsmith"},
            region="US",
        )
    )
    base = str(tclient.make_url("")).rstrip("/")
    page = await browser.new_page()
    await login(page, base, "jsmith", PASSWORD)
    await page.wait_for_selector("#ws-state.ok")
    sid = "CA" + "d" * 32
    resp = await post_signed(tclient, "/twilio/voice/incoming", incoming(sid, "+15551234567"))
    assert resp.status == 200
    pop = page.locator(".pop", has_text="Jane Doe")
    await pop.wait_for(timeout=10_000)
    assert await pop.locator(".pop-name a").get_attribute("href") == f"/contacts/{jane.id}"
    # a forged webhook pops nothing
    forged = await tclient.post(
        "/twilio/voice/incoming",
        data=incoming("CA" + "e" * 32, "+15550001111"),
        headers={"X-Twilio-Signature": "forged"},
    )
    assert forged.status == 403
    await post_signed(
        tclient,
        "/twilio/voice/status",
        incoming(sid, "+15551234567") | {"CallStatus": "completed", "CallDuration": "3"},
    )
    await page.wait_for_selector(".pop .pop-state:text('missed')", timeout=10_000)
    assert await page.locator(".pop").count() == 1


async def test_twilio_recording_callback_downloads_and_links(
    aiohttp_client: Any, settings: Any, tmp_path: Any
) -> None:
    import asyncio

    from switchboard.sim.twilio_api import FakeTwilioApi
    from tests.recordings.test_recordings import make_wav

    sid, token = "AC" + "3" * 32, TOKEN
    async with FakeTwilioApi(sid, token) as fake:
        settings.twilio.enabled = True
        settings.twilio.account_sid = sid
        settings.twilio.auth_token.__init__(token)
        settings.twilio.api_base = fake.base_url
        settings.server.public_url = PUBLIC
        client = await aiohttp_client(create_app(settings))
        store = client.server.app[STORE]
        manager = await make_api(client, "maria", "manager")
        call_sid, rec_sid = "CA" + "7" * 32, "RE" + "8" * 32
        audio = make_wav(tmp_path / "r.wav", 1.5)
        fake.recordings[rec_sid] = audio
        await post_signed(client, "/twilio/voice/incoming", incoming(call_sid, "+15551234567"))
        await post_signed(
            client,
            "/twilio/voice/status",
            incoming(call_sid, "+15551234567") | {"CallStatus": "completed", "CallDuration": "2"},
        )
        params = {
            "AccountSid": sid,
            "CallSid": call_sid,
            "RecordingSid": rec_sid,
            "RecordingUrl": fake.recording_url(rec_sid),
            "RecordingStatus": "completed",
            "RecordingDuration": "2",
            "RecordingChannels": "2",
            "RecordingSource": "DialVerb",
        }
        assert (await client.post("/twilio/voice/recording", data=params)).status == 403  # unsigned
        assert (await post_signed(client, "/twilio/voice/recording", params)).status == 204
        async with asyncio.timeout(10):
            while True:
                items = (await (await manager.get("/api/v1/recordings")).json())["items"]
                if items and items[0]["audio_url"]:
                    break
                await asyncio.sleep(0.05)
        (rec,) = items
        touch = await store.touches.by_source_key(f"twilio:{call_sid}")
        assert rec["source"] == "twilio" and rec["touch_id"] == touch.id and rec["size"] == len(audio)
        assert await (await manager.get(rec["audio_url"])).read() == audio


async def test_recording_urls_off_twilio_never_get_the_credentials(
    aiohttp_client: Any, settings: Any, tmp_path: Any, caplog: Any
) -> None:
    """A RecordingUrl on another host is refused and marked, and that host sees no request at all."""
    import asyncio

    from aiohttp import web

    from switchboard.sim.twilio_api import FakeTwilioApi
    from tests.conftest import free_port
    from tests.recordings.test_recordings import make_wav

    seen: list[str | None] = []  # the Authorization header of each request the other host got

    async def other(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        return web.Response(body=make_wav(tmp_path / "other.wav", 0.5), content_type="audio/x-wav")

    other_app = web.Application()
    other_app.router.add_get("/{tail:.*}", other)
    runner = web.AppRunner(other_app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    sid = "AC" + "4" * 32
    try:
        async with FakeTwilioApi(sid, TOKEN) as fake:
            settings.twilio.enabled = True
            settings.twilio.account_sid = sid
            settings.twilio.auth_token.__init__(TOKEN)
            settings.twilio.api_base = fake.base_url
            settings.server.public_url = PUBLIC
            client = await aiohttp_client(create_app(settings))
            store = client.server.app[STORE]
            bad_sid, good_sid = "RE" + "5" * 32, "RE" + "6" * 32
            fake.recordings[good_sid] = make_wav(tmp_path / "good.wav", 1.0)
            for rec_sid, url in (
                (bad_sid, f"http://127.0.0.1:{port}/2010-04-01/Accounts/{sid}/Recordings/{bad_sid}"),
                (good_sid, fake.recording_url(good_sid)),
            ):
                params = {
                    "AccountSid": sid,
                    "CallSid": "CA" + rec_sid[2:],
                    "RecordingSid": rec_sid,
                    "RecordingUrl": url,
                    "RecordingStatus": "completed",
                }
                assert (await post_signed(client, "/twilio/voice/recording", params)).status == 204
            async with asyncio.timeout(10):
                while True:
                    bad = await store.recordings.by_name("twilio", f"{bad_sid}.wav")
                    good = await store.recordings.by_name("twilio", f"{good_sid}.wav")
                    if good["storage_path"] and (bad.get("error") or seen):
                        break
                    await asyncio.sleep(0.05)
    finally:
        await runner.cleanup()
    assert seen == []  # not even a request without credentials
    assert bad["storage_path"] is None
    assert bad["error"] == "RecordingUrl host '127.0.0.1' is not a Twilio API host"
    assert any("event=recording_download_refused" in r.getMessage() for r in caplog.records)
    manager = await make_api(client, "maria", "manager")
    one = await (await manager.get(f"/api/v1/recordings/{bad['id']}")).json()
    assert one["error"] == bad["error"] and one["audio_url"] is None
