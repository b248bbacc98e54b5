"""Consent to texts: recorded per customer, required by `[sms] require_consent`, ended by STOP and
given again by START, through the real Kannel HTTP interface (the stand-in on loopback)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from campaigns.sms.kannel_standin import KannelStandIn
from crm_link.contacts import validate_contact
from switchboard.app import create_app
from switchboard.keys import STORE
from switchboard.settings import SmsChannelSettings
from tests.conftest import free_port, make_api
from tests.sms.helpers import blast_when


@pytest.fixture
async def kannel() -> AsyncIterator[KannelStandIn]:
    async with KannelStandIn() as k:
        yield k


def _app(settings: Any, kannel: KannelStandIn, require_consent: bool) -> Any:
    port = free_port()
    settings.server.public_url = f"http://127.0.0.1:{port}"
    settings.sms.quiet_start = settings.sms.quiet_end = "00:00"  # no quiet hours in these tests
    settings.sms.require_consent = require_consent
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
    kannel.inbound_url = f"{settings.server.public_url}/sms/kannel/incoming?channel=main&secret=chan-secret"
    return create_app(settings), port


@pytest.fixture
async def consent_app(aiohttp_server: Any, aiohttp_client: Any, settings: Any, kannel: KannelStandIn) -> Any:
    app, port = _app(settings, kannel, require_consent=True)
    return await aiohttp_client(await aiohttp_server(app, port=port))


async def _until(check: Any, timeout: float = 10) -> Any:
    async with asyncio.timeout(timeout):
        while not (result := await check()):
            await asyncio.sleep(0.02)
    return result


async def _customer(store: Any, name: str, phone: str, **extra: Any) -> int:
    data = {"first_name": name, "phones": [phone], "tags": ["service"], "time_zone": "UTC"} | extra
    return (await store.contacts.create(validate_contact(data, region="US"))).id


async def test_blast_with_require_consent_reaches_only_consenting_customers(
    consent_app: Any, kannel: KannelStandIn
) -> None:
    store = consent_app.server.app[STORE]
    manager = await make_api(consent_app, "maria", "manager")
    mkt = await make_api(consent_app, "kim", "marketing")
    ann = await _customer(store, "Ann", "+12125550200")
    await _customer(store, "Bob", "+12125550201")  # never agreed
    cy = await _customer(store, "Cy", "+12125550202", sms_consent={"source": "web_form"})
    resp = await manager.patch(f"/api/v1/contacts/{ann}", json={"sms_consent": {"source": "in_person"}})
    assert resp.status == 200, await resp.text()
    consent = (await resp.json())["sms_consent"]
    assert consent["source"] == "in_person" and consent["by"] == "maria" and consent["at"]
    # the count before scheduling names the reason
    dry = await (await mkt.post("/api/v1/sms/blasts/dry-run", json={"audience": {"tag": "service"}})).json()
    assert dry["recipients"] == 2 and {"reason": "no consent to texts", "count": 1} in dry["skipped"]

    resp = await mkt.post(
        "/api/v1/sms/blasts",
        json={
            "name": "Tyres",
            "text": "Hi {{ contact.first_name }}",
            "channel": "main",
            "audience": {"tag": "service"},
        },
    )
    assert resp.status == 201, await resp.text()
    blast_id = (await resp.json())["id"]
    body = await blast_when(mkt, blast_id, lambda b: b["counts"]["delivered"] == 2)
    assert body["counts"]["skipped"] == 1
    assert {"state": "skipped", "reason": "no consent to texts", "count": 1} in body["errors"]
    assert sorted(q["to"] for q in kannel.received) == ["+12125550200", "+12125550202"]
    assert cy  # Cy was created consenting through the API's own field


async def test_rep_text_needs_consent_and_names_the_reason(consent_app: Any, kannel: KannelStandIn) -> None:
    store = consent_app.server.app[STORE]
    rep = await make_api(consent_app, "jsmith", "rep")
    bob = await _customer(store, "Bob", "+12125550201", owner="jsmith")
    resp = await rep.post("/api/v1/sms/send", json={"contact_id": bob, "text": "Your car is ready"})
    assert resp.status == 409
    err = (await resp.json())["error"]
    assert err["code"] == "no_consent" and err["field"] == "contact_id" and "agreed" in err["message"]
    assert kannel.received == []
    # the rep records the customer's consent given at the counter, and the text goes
    resp = await rep.patch(f"/api/v1/contacts/{bob}", json={"sms_consent": {"source": "in_person"}})
    assert resp.status == 200
    resp = await rep.post("/api/v1/sms/send", json={"contact_id": bob, "text": "Your car is ready"})
    assert resp.status == 202, await resp.text()
    await _until(lambda: _sent_to(kannel, "+12125550201", 1))


async def _sent_to(kannel: KannelStandIn, to: str, n: int) -> bool:
    return len([q for q in kannel.received if q["to"] == to]) >= n


async def test_stop_removes_consent_and_start_restores_both(consent_app: Any, kannel: KannelStandIn) -> None:
    store = consent_app.server.app[STORE]
    manager = await make_api(consent_app, "maria", "manager")
    ann = await _customer(store, "Ann", "+12125550200", sms_consent={"source": "web_form"})
    assert kannel.inbound_url is not None

    async def contact() -> dict[str, Any]:
        return dict(await (await manager.get(f"/api/v1/contacts/{ann}")).json())

    await kannel.inject_inbound(kannel.inbound_url, "+12125550200", "12345", "Stop", msg_id="in-1")
    await _until(lambda: _check(contact, lambda c: c["sms_opt_out"] and c["sms_consent"] is None))
    await _until(lambda: _sent_to(kannel, "+12125550200", 1))  # the one confirmation
    resp = await manager.post("/api/v1/sms/send", json={"contact_id": ann, "text": "hello"})
    assert resp.status == 409 and (await resp.json())["error"]["code"] == "opted_out"

    await kannel.inject_inbound(kannel.inbound_url, "+12125550200", "12345", "START", msg_id="in-2")
    c = await _until(lambda: _check(contact, lambda c: not c["sms_opt_out"] and c["sms_consent"]))
    assert c["sms_consent"]["source"] == "reply_start" and c["sms_consent"]["by"] is None
    await _until(lambda: _sent_to(kannel, "+12125550200", 2))
    assert [q["text"] for q in kannel.received][1].startswith("You are subscribed again")
    resp = await manager.post("/api/v1/sms/send", json={"contact_id": ann, "text": "welcome back"})
    assert resp.status == 202, await resp.text()
    await _until(lambda: _sent_to(kannel, "+12125550200", 3))


async def _check(get: Any, ok: Any) -> Any:
    value = await get()
    return value if ok(value) else None


async def test_without_require_consent_texts_go_as_before(
    aiohttp_server: Any, aiohttp_client: Any, settings: Any, kannel: KannelStandIn
) -> None:
    app, port = _app(settings, kannel, require_consent=False)
    client = await aiohttp_client(await aiohttp_server(app, port=port))
    rep = await make_api(client, "jsmith", "rep")
    bob = await _customer(client.server.app[STORE], "Bob", "+12125550201", owner="jsmith")
    resp = await rep.post("/api/v1/sms/send", json={"contact_id": bob, "text": "Your car is ready"})
    assert resp.status == 202, await resp.text()
    await _until(lambda: _sent_to(kannel, "+12125550201", 1))


async def test_consent_edits_are_checked_and_role_bound(consent_app: Any) -> None:
    store = consent_app.server.app[STORE]
    rep = await make_api(consent_app, "jsmith", "rep")
    await make_api(consent_app, "other", "rep")
    mkt = await make_api(consent_app, "kim", "marketing")
    mine = await _customer(store, "Ann", "+12125550200", owner="jsmith")
    theirs = await _customer(store, "Bob", "+12125550201", owner="other")
    cases = [
        ({"sms_consent": {"source": "fax"}}, "sms_consent.source"),
        ({"sms_consent": True}, "sms_consent"),
        ({"sms_consent": {"source": "in_person", "at": "yesterday"}}, "sms_consent.at"),
        ({"sms_consent": {"source": "in_person", "at": "2099-01-01T00:00:00Z"}}, "sms_consent.at"),
        ({"sms_consent": {"source": "in_person", "when": "now"}}, "sms_consent.when"),
        ({"sms_consent": {"source": "in_person"}, "sms_opt_out": True}, "sms_consent"),
    ]
    for body, field in cases:
        resp = await rep.patch(f"/api/v1/contacts/{mine}", json=body)
        assert resp.status == 400 and (await resp.json())["error"]["field"] == field, (
            body,
            await resp.text(),
        )
    resp = await rep.patch(f"/api/v1/contacts/{theirs}", json={"sms_consent": {"source": "in_person"}})
    assert resp.status == 403
    resp = await mkt.patch(f"/api/v1/contacts/{mine}", json={"sms_consent": {"source": "web_form"}})
    assert resp.status == 403 and (await resp.json())["error"]["field"] == "sms_consent"
    # a paper form signed last week keeps its date; withdrawing clears it
    resp = await rep.patch(
        f"/api/v1/contacts/{mine}",
        json={"sms_consent": {"source": "web_form", "at": "2026-01-05T10:00:00-06:00"}},
    )
    assert (await resp.json())["sms_consent"]["at"] == "2026-01-05T16:00:00Z"
    resp = await rep.patch(f"/api/v1/contacts/{mine}", json={"sms_consent": None})
    assert (await resp.json())["sms_consent"] is None
    # an opt-out recorded by a person withdraws consent too; recorded consent ends the opt-out
    await rep.patch(f"/api/v1/contacts/{mine}", json={"sms_consent": {"source": "in_person"}})
    body = await (await rep.patch(f"/api/v1/contacts/{mine}", json={"sms_opt_out": True})).json()
    assert body["sms_opt_out"] and body["sms_consent"] is None
    body = await (
        await rep.patch(f"/api/v1/contacts/{mine}", json={"sms_consent": {"source": "in_person"}})
    ).json()
    assert not body["sms_opt_out"] and body["sms_consent"]["source"] == "in_person"
