"""The SMS API over real HTTP: create a blast, watch progress, control it, preview, a rep's text."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from crm_link.contacts import validate_contact
from switchboard.app import create_app
from switchboard.keys import SMS, STORE
from switchboard.messaging import _segment_ids
from switchboard.web.sms import SmsRuntime
from tests.conftest import make_api
from tests.sms.helpers import RecordingChannel, VirtualClock, blast_service, blast_when, channel_worker


@pytest.fixture
async def sms_client(aiohttp_client: Any, settings: Any) -> Any:
    from datetime import UTC, datetime

    clock = VirtualClock(datetime(2026, 11, 23, 16, 0, tzinfo=UTC))
    channel = RecordingChannel("main", clock)

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        store = app[STORE]
        worker = channel_worker(store, channel, clock, rate_per_second=100, idle_poll=0.05)
        blasts = blast_service(store, clock, segment_ids=_segment_ids(store))
        app[SMS] = SmsRuntime(blasts, {"main": worker})
        task = asyncio.create_task(worker.run())
        yield
        worker.stop()
        await task

    client = await aiohttp_client(create_app(settings, contexts=[ctx], clock=clock.now))
    client.channel = channel
    return client


async def test_blast_runs_to_done_through_the_api(sms_client: Any) -> None:
    mkt = await make_api(sms_client, "kim", "marketing")
    store = sms_client.server.app[STORE]
    for i in range(5):
        await store.contacts.create(
            validate_contact(
                {
                    "first_name": f"C{i}",
                    "phones": [f"+1212555010{i}"],
                    "tags": ["service"],
                    "time_zone": "America/Chicago",
                    "sms_opt_out": i == 4,
                },
                region="US",
            )
        )
    resp = await mkt.post(
        "/api/v1/sms/blasts",
        json={
            "name": "Sat",
            "text": "Hi {{ contact.first_name }}",
            "channel": "main",
            "audience": {"tag": "service"},
        },
    )
    assert resp.status == 201, await resp.text()
    blast = await resp.json()
    body = await blast_when(mkt, blast["id"], lambda b: b["state"] == "done")
    assert body["state"] == "done"
    assert body["counts"] | {} == {
        "queued": 0,
        "sending": 0,
        "sent": 4,
        "delivered": 0,
        "failed": 0,
        "skipped": 1,
        "unknown": 0,
    }
    assert body["segments"] == 4 and body["total"] == 5
    assert sorted(m.text for _, m in sms_client.channel.sent) == [f"Hi C{i}" for i in range(4)]
    # a message left in doubt by a crash: an operator decides it was not sent and queues it again
    (first,) = await store.db.fetchall("SELECT min(id) FROM sms_outbox WHERE state = 'sent'")
    await store.db.execute_many("UPDATE sms_outbox SET state = 'unknown' WHERE id = ?", [(first[0],)])
    assert (await mkt.post(f"/api/v1/sms/blasts/{blast['id']}/resend-unknown")).status == 403
    manager = await make_api(sms_client, "maria", "manager")
    resp = await manager.post(f"/api/v1/sms/blasts/{blast['id']}/resend-unknown")
    assert resp.status == 200 and (await resp.json())["requeued"] == 1
    body = await blast_when(mkt, blast["id"], lambda b: b["counts"]["sent"] == 4)
    assert body["counts"]["sent"] == 4 and body["counts"]["unknown"] == 0
    assert len(sms_client.channel.sent) == 5  # that one message went out again, nothing else


async def test_roles_and_bad_input(sms_client: Any) -> None:
    rep = await make_api(sms_client, "jsmith", "rep")
    mkt = await make_api(sms_client, "kim", "marketing")
    assert (await rep.post("/api/v1/sms/blasts", json={})).status == 403
    cases = [
        ({"text": "x", "channel": "main", "audience": {"tag": "t"}}, "name"),
        ({"name": "n", "text": "", "channel": "main", "audience": {"tag": "t"}}, "text"),
        ({"name": "n", "text": "x", "channel": "nope", "audience": {"tag": "t"}}, "channel"),
        (
            {
                "name": "n",
                "text": "x",
                "channel": "main",
                "audience": {"tag": "t"},
                "send_at": "2020-01-01T00:00",
            },
            "send_at",
        ),
        ({"name": "n", "text": "x", "channel": "main", "audience": {"tag": "nobody"}}, "audience"),
        ({"name": "n", "text": "x", "channel": "main", "audience": {"tag": "t"}, "extra": 1}, "extra"),
        (
            {"name": "n", "text": "x", "channel": "main", "audience": {"tag": "t"}, "send_at": "soon"},
            "send_at",
        ),
    ]
    for body, field in cases:
        resp = await mkt.post("/api/v1/sms/blasts", json=body)
        assert resp.status == 400, (body, await resp.text())
        assert (await resp.json())["error"]["field"] == field
    assert (await (await mkt.get("/api/v1/sms/blasts")).json())["items"] == []


async def test_schedule_pause_resume_cancel(sms_client: Any) -> None:
    mkt = await make_api(sms_client, "kim", "marketing")
    store = sms_client.server.app[STORE]
    await store.contacts.create(
        validate_contact({"first_name": "A", "phones": ["+12125550100"], "tags": ["t"]}, region="US")
    )
    resp = await mkt.post(
        "/api/v1/sms/blasts",
        json={
            "name": "later",
            "text": "x",
            "channel": "main",
            "audience": {"tag": "t"},
            "send_at": "2026-12-01T09:00",
        },
    )
    blast = await resp.json()
    assert blast["state"] == "scheduled" and blast["send_at"].startswith("2026-12-01T15:00")  # Chicago 09:00
    assert (await (await mkt.post(f"/api/v1/sms/blasts/{blast['id']}/pause")).json())["state"] == "paused"
    assert (await mkt.post(f"/api/v1/sms/blasts/{blast['id']}/pause")).status == 409
    assert (await (await mkt.post(f"/api/v1/sms/blasts/{blast['id']}/resume")).json())["state"] == "scheduled"
    assert (await (await mkt.post(f"/api/v1/sms/blasts/{blast['id']}/cancel")).json())["state"] == "cancelled"
    assert sms_client.channel.sent == []


async def test_preview_and_rep_text(sms_client: Any) -> None:
    rep = await make_api(sms_client, "jsmith", "rep")
    store = sms_client.server.app[STORE]
    c = await store.contacts.create(
        validate_contact({"first_name": "Jane", "phones": ["+12125550100"], "owner": "jsmith"}, region="US")
    )
    resp = await rep.post(
        "/api/v1/sms/preview", json={"text": "Hi {{ contact.first_name }}", "contact_id": c.id}
    )
    body = await resp.json()
    assert body["text"] == "Hi Jane" and body["segments"] == 1 and body["encoding"] == "gsm7"
    resp = await rep.post("/api/v1/sms/send", json={"contact_id": c.id, "text": "See you Saturday"})
    assert resp.status == 202
    for _ in range(100):
        if sms_client.channel.sent:
            break
        await asyncio.sleep(0.02)
    assert [m.text for _, m in sms_client.channel.sent] == ["See you Saturday"]
    for _ in range(100):
        touch = (await store.touches.history(c.id)).items
        if touch:
            break
        await asyncio.sleep(0.02)
    assert touch[0].kind == "sms" and touch[0].username == "jsmith"


async def test_blast_to_a_saved_segment(sms_client: Any) -> None:
    mkt = await make_api(sms_client, "kim", "marketing")
    store = sms_client.server.app[STORE]
    for i, visits in enumerate((1, 3, 5)):
        await store.contacts.create(
            validate_contact(
                {
                    "first_name": f"S{i}",
                    "phones": [f"+1212555030{i}"],
                    "time_zone": "America/Chicago",
                    "attributes": {"service_visits": visits},
                },
                region="US",
            )
        )
    f = {"field": "attributes.service_visits", "op": "gte", "value": 3}
    resp = await mkt.post("/api/v1/segments", json={"name": "Regulars", "filter": f})
    assert resp.status == 201 and (await resp.json())["count"] == 2
    resp = await mkt.post(
        "/api/v1/sms/blasts",
        json={
            "name": "seg",
            "text": "Hi {{ contact.first_name }}",
            "channel": "main",
            "audience": {"segment": "Regulars"},
        },
    )
    assert resp.status == 201, await resp.text()
    blast = await resp.json()
    body = await blast_when(mkt, blast["id"], lambda b: b["state"] == "done")
    assert body["total"] == 2 and body["counts"]["sent"] == 2
    assert sorted(m.text for _, m in sms_client.channel.sent) == ["Hi S1", "Hi S2"]
    resp = await mkt.post(
        "/api/v1/sms/blasts",
        json={"name": "x", "text": "Hi", "channel": "main", "audience": {"segment": "No such segment"}},
    )
    assert resp.status == 404
