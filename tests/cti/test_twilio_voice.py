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
    settings.twilio.auth_token.__init__(TOKEN)  # type: ignore[misc]
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
