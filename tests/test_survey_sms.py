"""Surveys by SMS end to end: a blast carries a one-question survey through the Kannel stand-in,
the customers' replies come back through Kannel's inbound webhook; a score is stored as the
customer's answer (with the SMS touch) and a low one escalates onto the managers' day, while a
reply that is not a score lands on the owner's day as a normal reply."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest

from campaigns.sms.kannel_standin import KannelStandIn
from crm_link.clock import ManualClock
from crm_link.contacts import validate_contact
from switchboard.app import create_app
from switchboard.keys import STORE
from switchboard.settings import SmsChannelSettings
from tests.conftest import free_port, make_api

NOW = datetime(2026, 6, 15, 15, 0, tzinfo=UTC)
ONE_QUESTION: dict[str, Any] = {
    "name": "After service (SMS)",
    "questions": [
        {
            "key": "overall",
            "text": "How was your service?",
            "type": "scale",
            "min": 1,
            "max": 5,
            "required": True,
        },
        {
            "key": "reasons",
            "text": "What went wrong?",
            "type": "multi",
            "options": ["waiting time", "price"],
            "show_if": {"key": "overall", "op": "lte", "value": 2},
        },
    ],
    "dissatisfied_if": {"key": "overall", "op": "lte", "value": 2},
    "escalate_to": "role:manager",
}


@pytest.fixture
async def kannel() -> Any:
    async with KannelStandIn() as k:
        yield k


@pytest.fixture
async def app(aiohttp_server: Any, aiohttp_client: Any, settings: Any, kannel: KannelStandIn) -> Any:
    port = free_port()
    settings.server.public_url = f"http://127.0.0.1:{port}"
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
    server = await aiohttp_server(create_app(settings, clock=ManualClock(NOW)), port=port)
    kannel.inbound_url = f"{settings.server.public_url}/sms/kannel/incoming?channel=main&secret=chan-secret"
    return await aiohttp_client(server)


async def _until(check: Any, timeout: float = 10) -> Any:
    async with asyncio.timeout(timeout):
        while not (result := await check()):
            await asyncio.sleep(0.02)
    return result


async def test_an_sms_reply_2_is_an_answer_that_escalates_and_thanks_is_a_normal_reply(
    app: Any, kannel: KannelStandIn
) -> None:
    store = app.server.app[STORE]
    ann = await make_api(app, "ann", "rep")
    boss = await make_api(app, "maria", "manager")
    ids = {}
    for name, phone in (("Jane", "+12127365001"), ("Bob", "+12127365002")):
        c = await store.contacts.create(
            validate_contact(
                {
                    "first_name": name,
                    "phones": [phone],
                    "owner": "ann",
                    "tags": ["serviced"],
                    "time_zone": "UTC",
                },
                region="US",
            )
        )
        ids[name] = c.id
    survey = await (await boss.post("/api/v1/surveys", ONE_QUESTION)).json()
    # a blast with the survey and no text asks its question
    r = await boss.post(
        "/api/v1/sms/blasts",
        {
            "name": "June service",
            "channel": "main",
            "audience": {"tag": "serviced"},
            "survey_id": survey["id"],
        },
    )
    blast = await r.json()
    assert r.status == 201, blast
    assert blast["survey_id"] == survey["id"] and blast["text"] == "How was your service? Reply 1-5."

    async def sent() -> bool:
        return len(kannel.received) == 2

    await _until(sent)
    assert {q["text"] for q in kannel.received} == {"How was your service? Reply 1-5."}

    async def outbox_sent() -> bool:
        b = await (await boss.get(f"/api/v1/sms/blasts/{blast['id']}")).json()
        return bool(b["counts"]["delivered"] == 2)

    await _until(outbox_sent)
    assert kannel.inbound_url is not None
    await kannel.inject_inbound(kannel.inbound_url, "+12127365001", "12345", "2", msg_id="in-1")
    await kannel.inject_inbound(kannel.inbound_url, "+12127365002", "12345", "thanks!", msg_id="in-2")

    # Jane's "2" is her answer, with her SMS touch, and it put a follow-up on the managers' day
    (resp,) = (await (await boss.get(f"/api/v1/contacts/{ids['Jane']}/survey-responses")).json())["items"]
    assert resp["channel"] == "sms" and resp["answers"] == {"overall": 2} and resp["dissatisfied"] is True
    sms_in = await store.touches.by_source_key("sms-in:main:in-1")
    assert sms_in is not None and resp["touch_id"] == sms_in.id and sms_in.contact_id == ids["Jane"]
    managers = (await (await boss.get("/api/v1/followups?pool=managers")).json())["items"]
    (esc,) = [f for f in managers if f["contact_id"] == ids["Jane"]]
    assert esc["kind"] == "survey" and "How was your service? 2" in esc["reason"]
    assert resp["followup_id"] == esc["id"]
    # Bob's "thanks!" is no answer: no response, a reply follow-up on his owner's day
    assert (await (await boss.get(f"/api/v1/contacts/{ids['Bob']}/survey-responses")).json())["items"] == []
    day = (await (await ann.get("/api/v1/followups")).json())["items"]
    assert [(f["contact_id"], f["kind"], f["reason"]) for f in day] == [
        (ids["Bob"], "sms_reply", "SMS reply: thanks!")
    ]
    # the survey is answered: Jane's next text, even a digit, is a normal reply
    await kannel.inject_inbound(kannel.inbound_url, "+12127365001", "12345", "5", msg_id="in-3")
    day = (await (await ann.get("/api/v1/followups")).json())["items"]
    assert sorted((f["contact_id"], f["reason"]) for f in day) == sorted(
        [(ids["Bob"], "SMS reply: thanks!"), (ids["Jane"], "SMS reply: 5")]
    )
    assert (
        len((await (await boss.get(f"/api/v1/contacts/{ids['Jane']}/survey-responses")).json())["items"]) == 1
    )


async def test_a_survey_that_needs_more_than_one_answer_cannot_go_by_sms(app: Any) -> None:
    store = app.server.app[STORE]
    boss = await make_api(app, "maria", "manager")
    await store.contacts.create(
        validate_contact({"first_name": "Jane", "phones": ["+12127365001"], "tags": ["x"]}, region="US")
    )
    two = ONE_QUESTION | {
        "name": "Two",
        "questions": [
            ONE_QUESTION["questions"][0],
            {"key": "on_time", "text": "On time?", "type": "yes_no", "required": True},
        ],
    }
    sid = (await (await boss.post("/api/v1/surveys", two)).json())["id"]
    body = {"name": "b", "channel": "main", "audience": {"tag": "x"}}
    for survey_id, status in ((sid, 400), (99999, 400), ("1", 400)):
        r = await boss.post("/api/v1/sms/blasts", body | {"survey_id": survey_id})
        err = (await r.json())["error"]
        assert r.status == status and err["field"] == "survey_id", err
