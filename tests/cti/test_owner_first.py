"""Owner-first ringing of inbound calls (Asterisk through the dialplan's lookup and the AMI test PBX;
Twilio through its TwiML), and a missed call from a number nobody has landing on a pool."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp import web

from crm_link.contacts import validate_contact
from cti.ami.server import AmiTestServer
from cti.owner_first import owner_dial
from switchboard.keys import ASTERISK, STORE
from switchboard.sim.crm_standin import CrmStandIn
from tests.conftest import make_api
from tests.cti.conftest import start_pbx_app
from tests.cti.test_twilio_voice import incoming, post_signed
from tests.webhooks.conftest import SECRET, all_delivered, assert_in_order_per_contact, hook, until

OWNER, OTHER = "Local/agent2@agents/n", "Local/agent1@agents/n"


async def _pops(ws: Any, who: str, log: list[tuple[str, str]], until_state: str) -> None:
    """Record (who, message) for each pop/update this user's browser gets, until `until_state`."""
    while True:
        msg = json.loads((await ws.receive(timeout=10)).data)
        if msg["type"] in ("screen_pop", "call_update"):
            log.append((who, msg["type"] if msg["type"] == "screen_pop" else msg["call"]["state"]))
            if msg["type"] == "call_update" and msg["call"]["state"] == until_state:
                return


async def _touch(store: Any, key: str) -> Any:
    async with asyncio.timeout(10):
        while (t := await store.touches.by_source_key(key)) is None or t.ended_at is None:
            await asyncio.sleep(0.02)
    return t


def test_owner_dial_rings_only_a_free_owner_of_one_known_customer() -> None:
    from crm_link.models import User

    owner = User(1, "agarcia", "", None, "rep", "1002", True, None)
    jane = object()
    assert owner_dial([jane], owner, "PJSIP/1002", busy=False, seconds=20) == "PJSIP/1002,20"  # type: ignore[list-item]
    assert owner_dial([jane], owner, "PJSIP/1002", busy=True, seconds=20) == ""  # type: ignore[list-item]
    assert owner_dial([jane, jane], owner, "PJSIP/1002", busy=False, seconds=20) == ""  # type: ignore[list-item]
    assert owner_dial([jane], None, None, busy=False, seconds=20) == ""  # type: ignore[list-item]
    assert owner_dial([jane], owner, "PJSIP/1002", busy=False, seconds=0) == ""  # type: ignore[list-item]
    assert owner_dial([jane], owner, "PJSIP/1002&PJSIP/1", busy=False, seconds=20) == ""  # type: ignore[list-item]


async def test_asterisk_rings_and_pops_the_owner_first_then_the_queue(
    aiohttp_server: Any, aiohttp_client: Any, settings: Any, pbx: AmiTestServer
) -> None:
    settings.asterisk.route_secret.__init__("route-secret")
    settings.dial_interfaces = {"agarcia": OWNER, "jsmith": OTHER}
    server = await start_pbx_app(aiohttp_server, settings, pbx, {OTHER: "jsmith", OWNER: "agarcia"})
    client = await aiohttp_client(server)
    store = server.app[STORE]
    jsmith = await make_api(client, "jsmith", "rep", extension="1001")
    agarcia = await make_api(client, "agarcia", "rep", extension="1002")
    jane = await store.contacts.create(
        validate_contact(
            {"first_name": "Jane", "last_name": "Doe", "phones": ["+15551234567"], "owner": "agarcia"},
            region="US",
        )
    )
    await server.app[ASTERISK].directory.reload()

    # the dialplan's lookup: Set(OWNER=${CURL(.../asterisk/owner?secret=...&number=${CALLERID(num)})})
    async def lookup(query: str) -> tuple[int, str]:
        resp = await client.get("/asterisk/owner?" + query)
        return resp.status, await resp.text()

    assert await lookup("secret=route-secret&number=%2B15551234567") == (200, f"{OWNER},20")
    assert await lookup("secret=route-secret&number=%2B15550000000") == (200, "")  # nobody's customer
    assert await lookup("secret=route-secret&number=") == (200, "")  # a withheld caller ID: queue
    assert (await lookup("secret=wrong&number=%2B15551234567"))[0] == 403
    status, body = await lookup("secret=route-secret")
    assert status == 400 and json.loads(body)["error"]["field"] == "number"

    log: list[tuple[str, str]] = []
    sockets = []
    for api in (agarcia, jsmith):
        ws = await client.ws_connect(f"/ws/agent?token={api.token}")
        await ws.receive(timeout=5)
        sockets.append(ws)
    watchers = [
        asyncio.create_task(_pops(sockets[0], "agarcia", log, "ended")),
        asyncio.create_task(_pops(sockets[1], "jsmith", log, "ended")),
    ]
    # the owner rings alone (Dial before Queue), does not answer; the queue rings jsmith, who answers
    linkedid = await pbx.inbound_call(
        "+15551234567", agents=[OTHER], answer=OTHER, first=OWNER, ring_seconds=2
    )
    await asyncio.gather(*watchers)
    pops = [who for who, kind in log if kind == "screen_pop"]
    assert pops == ["agarcia", "jsmith"]  # the owner's pop came first
    assert log.index(("agarcia", "screen_pop")) < log.index(("jsmith", "screen_pop"))
    touch = await _touch(store, f"asterisk:{linkedid}")
    assert (touch.contact_id, touch.status, touch.username) == (jane.id, "answered", "jsmith")
    assert len((await store.touches.history(jane.id)).items) == 1
    for ws in sockets:
        await ws.close()


async def test_asterisk_missed_call_from_an_unknown_number_is_on_the_managers_pool(
    aiohttp_server: Any, aiohttp_client: Any, settings: Any, pbx: AmiTestServer
) -> None:
    crm = await CrmStandIn(secret=SECRET).start()
    try:
        await _missed_unknown_caller(aiohttp_server, aiohttp_client, settings, pbx, crm)
    finally:
        await crm.stop()


async def _missed_unknown_caller(
    aiohttp_server: Any, aiohttp_client: Any, settings: Any, pbx: AmiTestServer, crm: CrmStandIn
) -> None:
    hook(settings, crm)  # every event to a CRM receiver on loopback
    server = await start_pbx_app(aiohttp_server, settings, pbx, {OTHER: "jsmith"})
    client = await aiohttp_client(server)
    store = server.app[STORE]
    rep = await make_api(client, "jsmith", "rep", extension="1001")
    boss = await make_api(client, "maria", "manager")
    await server.app[ASTERISK].directory.reload()
    linkedid = await pbx.inbound_call("+13125550177", agents=[OTHER], answer=None, ring_seconds=1)
    # the first read that sees the call ended sees its prospect too (one transaction made both)
    touch = await _touch(store, f"asterisk:{linkedid}")
    assert touch.status == "missed" and touch.contact_id is not None
    async with asyncio.timeout(10):
        while not (missed := (await (await boss.get("/api/v1/me/day")).json())["missed_calls"]):
            await asyncio.sleep(0.02)
    (f,) = missed
    assert (f["assignee"], f["pool"], f["contact_id"]) == (None, "managers", touch.contact_id)
    prospect = await store.contacts.get(f["contact_id"])
    assert prospect.owner_id is None and [p.e164 for p in prospect.phones] == ["+13125550177"]
    assert (await (await rep.get("/api/v1/me/day")).json())["missed_calls"] == []
    # the outbox never held the call without its contact: one contact event (with the number), then
    # one call event, then the follow-up, all in the prospect's order; nothing keyed by the touch
    events = await store.crm_events.events_since(0, limit=1000)
    assert [(e.type, e.order_key) for e in events if e.contact_id is None] == []
    mine = [e for e in events if e.contact_id == prospect.id]
    assert [e.type for e in mine] == ["contact.created", "call.missed", "followup.created"]
    assert [p["number"] for p in mine[0].data["phones"]] == ["+13125550177"]
    assert mine[1].data["touch_id"] == touch.id and mine[1].data["contact_id"] == prospect.id
    # and so the CRM receives the missed call with its contact, after the contact
    await until(lambda: all_delivered(store, crm))
    got = [e for e in crm.of_type("") if e.get("contact_id") == prospect.id]
    assert [e["type"] for e in got] == ["contact.created", "call.missed", "followup.created"]
    assert [e["id"] for e in got] == [e.uid for e in mine]
    assert_in_order_per_contact(crm)
    # the number is known now: calling again makes no second prospect
    again = await pbx.inbound_call("+13125550177", agents=[OTHER], answer=None, ring_seconds=1)
    second = await _touch(store, f"asterisk:{again}")
    assert second.contact_id == prospect.id
    assert len(await store.contacts.find_by_phone("+13125550177")) == 1


async def test_a_missed_call_and_its_prospect_commit_together_or_not_at_all(
    store: Any, monkeypatch: Any
) -> None:
    """A failure after the prospect's row is written (the recordings step here; a crash is the same
    to the database) leaves neither the prospect nor the call's end: the store never holds the ended
    call without its contact, nor a prospect without its call."""
    from datetime import UTC, datetime

    from crm_link.touches import TouchInput
    from followups.service import UNKNOWN_NUMBER_TAG

    started = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
    ringing = TouchInput(
        "asterisk:9.1", "call", "inbound", started, channel="asterisk", number="+13125550188"
    )
    await store.touches.record(ringing)
    fields = validate_contact(
        {"first_name": "Unknown", "last_name": "x", "phones": ["+13125550188"], "tags": [UNKNOWN_NUMBER_TAG]},
        region="US",
    )
    ended = TouchInput(
        "asterisk:9.1",
        "call",
        "inbound",
        started,
        channel="asterisk",
        status="missed",
        number="+13125550188",
        ended_at=started.replace(minute=1),
    )
    before = await store.crm_events.events_since(0)

    async def broken(*args: Any) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(store.recordings, "attach_contact_in", broken)
    with pytest.raises(OSError, match="disk gone"):  # the broken step fails the whole transaction
        await store.record_touch_with_prospect(ended, fields, followup_kind="missed_call", followup_note="n")
    touch = await store.touches.by_source_key("asterisk:9.1")
    assert (touch.contact_id, touch.ended_at) == (None, None)  # still ringing, nobody's
    assert await store.contacts.find_by_phone("+13125550188") == []
    assert await store.crm_events.events_since(0) == before
    monkeypatch.undo()
    touch, made = await store.record_touch_with_prospect(
        ended, fields, followup_kind="missed_call", followup_note="n"
    )
    (prospect,) = await store.contacts.find_by_phone("+13125550188")
    assert touch.contact_id == prospect.id and touch.ended_at is not None
    assert made is not None and (made.contact_id, made.created_by_touch_id) == (prospect.id, touch.id)
    after = await store.crm_events.events_since(before[-1].id if before else 0)
    assert [(e.type, e.order_key) for e in after] == [
        ("contact.created", f"c:{prospect.id}"),
        ("call.missed", f"c:{prospect.id}"),
        ("followup.created", f"c:{prospect.id}"),
    ]
    # recorded again (a replayed end): the same touch, no second prospect, no second follow-up
    again, none = await store.record_touch_with_prospect(
        ended, fields, followup_kind="missed_call", followup_note="n"
    )
    assert (again.id, again.contact_id, none) == (touch.id, prospect.id, None)
    assert len(await store.contacts.find_by_phone("+13125550188")) == 1


async def test_twilio_dials_the_owner_alone_then_everyone_else_online(
    aiohttp_client: Any, settings: Any
) -> None:
    from tests.cti.test_twilio_voice import PUBLIC, TOKEN

    settings.twilio.enabled = True
    settings.twilio.account_sid = "AC" + "1" * 32
    settings.twilio.auth_token.__init__(TOKEN)
    settings.server.public_url = PUBLIC
    settings.followups.owner_first_seconds = 15
    from switchboard.app import create_app

    client = await aiohttp_client(create_app(settings))
    store = client.server.app[STORE]
    owner = await make_api(client, "agarcia", "rep")
    other = await make_api(client, "jsmith", "rep")
    jane = await store.contacts.create(
        validate_contact(
            {"first_name": "Jane", "last_name": "Doe", "phones": ["+15551234567"], "owner": "agarcia"},
            region="US",
        )
    )
    ws_owner = await client.ws_connect(f"/ws/agent?token={owner.token}")
    ws_other = await client.ws_connect(f"/ws/agent?token={other.token}")
    for ws in (ws_owner, ws_other):
        await ws.receive(timeout=5)
    sid = "CA" + "d" * 32
    resp = await post_signed(client, "/twilio/voice/incoming", incoming(sid, "+15551234567"))
    xml = await resp.text()
    assert ">agarcia</Client>" in xml and "jsmith" not in xml
    assert 'timeout="15"' in xml and "dial-result?then=others" in xml
    pop = json.loads((await ws_owner.receive(timeout=5)).data)
    assert pop["type"] == "screen_pop" and pop["contact"]["id"] == jane.id
    # the owner let it ring: Twilio asks what next; everyone else online rings, and is popped now
    nobody = incoming(sid, "+15551234567") | {"DialCallStatus": "no-answer"}
    resp = await post_signed(client, "/twilio/voice/dial-result?then=others", nobody)
    xml = await resp.text()
    assert ">jsmith</Client>" in xml and "agarcia" not in xml and "then=others" not in xml
    pop = json.loads((await ws_other.receive(timeout=5)).data)
    assert pop["type"] == "screen_pop" and pop["contact"]["id"] == jane.id
    leg = {
        "CallSid": "CA" + "e" * 32,
        "ParentCallSid": sid,
        "CallStatus": "in-progress",
        "To": "client:jsmith",
        "From": "+15551234567",
        "Direction": "outbound-dial",
    }
    assert (await post_signed(client, "/twilio/voice/leg-status", leg)).status == 204
    done = incoming(sid, "+15551234567") | {"CallStatus": "completed", "CallDuration": "30"}
    assert (await post_signed(client, "/twilio/voice/status", done)).status == 204
    touch = await store.touches.by_source_key(f"twilio:{sid}")
    assert (touch.status, touch.username, touch.contact_id) == ("answered", "jsmith", jane.id)
    # nobody else online: after the owner the caller waits in the queue
    await ws_other.close()
    async with asyncio.timeout(5):
        while "jsmith" in [u.username for u in await _online(client)]:
            await asyncio.sleep(0.02)
    sid2 = "CA" + "f" * 32
    await post_signed(client, "/twilio/voice/incoming", incoming(sid2, "+15551234567"))
    resp = await post_signed(
        client,
        "/twilio/voice/dial-result?then=others",
        incoming(sid2, "+15551234567") | {"DialCallStatus": "busy"},
    )
    assert "<Enqueue>sales</Enqueue>" in await resp.text()
    await ws_owner.close()


async def _online(client: Any) -> list[Any]:
    from switchboard.keys import HUB

    app: web.Application = client.server.app
    ids = set(app[HUB].online_user_ids())
    return [u for u in await app[STORE].users.list() if u.id in ids]
