"""End to end: a replayed AMI call, an SMS blast and an email send reach the CRM's receiver on
loopback as signed events, every one once, in order per contact."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from campaigns.sms.kannel_standin import KannelStandIn
from crm_link.contacts import validate_contact
from cti.ami.server import AmiTestServer
from switchboard.app import create_app
from switchboard.keys import ASTERISK, EMAIL, STORE
from switchboard.settings import SmsChannelSettings
from switchboard.sim.crm_standin import CrmStandIn
from tests.conftest import PASSWORD, free_port, make_api
from tests.cti.conftest import AMI
from tests.webhooks.conftest import all_delivered, assert_in_order_per_contact, hook, until


@pytest.fixture
async def kannel() -> Any:
    async with KannelStandIn() as k:
        yield k


@pytest.fixture
async def full_app(
    aiohttp_server: Any,
    aiohttp_client: Any,
    settings: Any,
    pbx: AmiTestServer,
    kannel: Any,
    inbox: Any,
    crm: Any,
) -> Any:
    port = free_port()
    settings.server.public_url = f"http://127.0.0.1:{port}"
    hook(settings, crm)
    settings.asterisk.enabled = True
    settings.asterisk.port = pbx.port
    settings.asterisk.secret.__init__("crm-secret")
    settings.interfaces = {"Local/agent1@agents/n": "agent1", "Local/agent2@agents/n": "agent2"}
    settings.smtp.port = inbox.port
    settings.sms.quiet_start = settings.sms.quiet_end = "00:00"
    settings.sms.channels["main"] = SmsChannelSettings(
        name="main",
        type="kannel",
        rate_per_second=100,
        options={
            "sendsms_url": kannel.sendsms_url,
            "username": "tester",
            "password": "secret",
            "secret": "chan-secret",
            "from": "12345",
        },
    )
    server = await aiohttp_server(create_app(settings), port=port)
    await server.app[ASTERISK].client.wait_connected(5)
    server.app[EMAIL].retry_after = timedelta(0)
    return await aiohttp_client(server)


async def test_call_blast_and_email_reach_the_crm_signed_once_in_order(
    full_app: Any, pbx: AmiTestServer, crm: CrmStandIn, inbox: Any
) -> None:
    app = full_app.server.app
    store = app[STORE]
    await store.users.add("agent1", role="rep", password=PASSWORD)
    await store.users.add("agent2", role="rep", password=PASSWORD)
    mkt = await make_api(full_app, "kim", "marketing")
    jane = await store.contacts.create(
        validate_contact(
            {
                "external_id": "DMS-1",
                "first_name": "Jane",
                "last_name": "Doe",
                "phones": ["+15551234567", "+12125550200"],
                "email": "jane@example.com",
                "owner": "agent1",
                "tags": ["service"],
                "time_zone": "UTC",
            },
            region="US",
        )
    )
    bob = await store.contacts.create(
        validate_contact(
            {"external_id": "DMS-2", "first_name": "Bob", "phones": ["+15559876543", "+12125550201"], "owner": "agent1",
             "tags": ["service"], "time_zone": "UTC"},
            region="US",
        )
    )  # fmt: skip
    await app[ASTERISK].directory.reload()

    # a real Asterisk's answered call (Jane) and abandoned call (Bob), replayed over AMI
    await pbx.replay((AMI / "i-inbound-answered.ami").read_bytes())
    await pbx.replay((AMI / "ii-inbound-abandoned.ami").read_bytes())
    # an SMS blast to both
    resp = await mkt.post(
        "/api/v1/sms/blasts",
        json={"name": "Service", "text": "Hi {{ contact.first_name }}", "channel": "main", "audience": {"tag": "service"}},
    )  # fmt: skip
    assert resp.status == 201, await resp.text()
    blast_id = (await resp.json())["id"]
    # an email to Jane
    tpl = await (
        await mkt.post("/api/v1/email/templates", json={"name": "T", "subject": "Hello {{ contact.first_name }}",
                                                         "html": "<p>Hi</p>"})
    ).json()  # fmt: skip
    resp = await mkt.post("/api/v1/email/send", json={"template_id": tpl["id"], "contact_ids": [jane.id]})
    assert resp.status == 202, await resp.text()

    def types_of(contact_id: int) -> list[str]:
        return [crm.events[u]["type"] for u in crm.order if crm.events[u]["contact_id"] == contact_id]

    async def arrived() -> bool:
        jt, bt = types_of(jane.id), types_of(bob.id)
        return (
            {"call.answered", "sms.delivered", "email.sent"} <= set(jt)
            and {"call.missed", "followup.created", "sms.delivered"} <= set(bt)
            and await all_delivered(store, crm)
        )

    try:
        await until(arrived, timeout=30)
    except TimeoutError:
        got = {c: types_of(c) for c in (jane.id, bob.id)}
        got["blast"] = await (await mkt.get(f"/api/v1/sms/blasts/{blast_id}")).json()
        raise AssertionError(f"arrived: {got}; outbox: {await store.crm_events.counts()}") from None
    assert crm.refused == [] and crm.duplicates == 0
    assert_in_order_per_contact(crm)
    jt = types_of(jane.id)
    assert jt[0] == "contact.created" and jt.index("sms.sent") < jt.index("sms.delivered")
    created = crm.of_type("contact.created")[0]
    assert [p["number"] for p in created["data"]["phones"]] == ["+15551234567", "+12125550200"]
    assert created["data"]["tags"] == ["service"] and created["data"]["phones"][1]["valid"] is True
    answered = next(e for e in crm.of_type("call.answered"))
    assert answered["data"]["contact_external_id"] == "DMS-1" and answered["data"]["agent"] == "agent1"
    assert answered["data"]["direction"] == "inbound" and answered["data"]["duration_s"] > 0
    missed = crm.of_type("call.missed")[0]
    assert missed["contact_id"] == bob.id and missed["data"]["status"] == "missed"
    followup = next(e for e in crm.of_type("followup.created") if e["contact_id"] == bob.id)
    assert followup["data"]["kind"] == "missed_call" and followup["data"]["assignee"] == "agent1"
    email = crm.of_type("email.sent")[0]
    assert email["data"]["summary"] == "Hello Jane" and email["data"]["details"]["to"] == "jane@example.com"
    assert len(inbox.messages) == 1
    # every event arrived once; each carries the id the receiver deduplicates by
    events = await store.crm_events.events_since(0, limit=10_000)
    assert sorted(crm.events) == sorted(e.uid for e in events)

    # a rep's disposition on the answered call is an event too, after the call's
    touch = await store.touches.by_source_key("asterisk:1795346245.0")
    await store.touches.set_note(touch.id, "Wants a test drive", disposition="appointment set")
    await until(lambda: _has(crm, "call.disposition"))
    dispo = crm.of_type("call.disposition")[0]
    assert dispo["data"]["disposition"] == "appointment set" and dispo["sequence"] > answered["sequence"]

    # /healthz shows the backlog (refreshed every second), empty now
    async def drained() -> Any:
        health = await (await full_app.get("/healthz")).json()
        return health if health["crm"]["backlog"] == 0 and health["crm"]["unfanned"] == 0 else None

    health = await until(drained)
    assert health["crm"]["subscribers"]["dms"]["state"] == "ok" and health["crm"]["dead"] == 0


async def _has(crm: CrmStandIn, type_: str) -> bool:
    await asyncio.sleep(0)
    return bool(crm.of_type(type_))
