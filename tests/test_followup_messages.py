"""Cadence SMS and email steps counted at the far end (Kannel stand-in, aiosmtpd), once across a
restart; customers' texts answering the follow-up a text served; unknown texters on the pool."""

from __future__ import annotations

import asyncio
import functools
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest
from aiosmtpd.controller import Controller

from campaigns.sms.kannel_standin import KannelStandIn
from crm_link.clock import ManualClock
from switchboard.app import create_app
from switchboard.keys import FOLLOWUP_STEPS, SMS, STORE
from switchboard.settings import Settings, SmsChannelSettings
from tests.conftest import Api, make_api
from tests.templates.conftest import Inbox

NOW = datetime(
    2026, 6, 15, 13, 0, tzinfo=UTC
)  # 09:00 in New York, where these customers are; steps are due at 10:00
T = TypeVar("T")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def until(check: Callable[[], Awaitable[T | None]], timeout: float = 15) -> T:
    """Poll `check` until it returns something truthy (with a deadline)."""
    async with asyncio.timeout(timeout):
        while True:
            value = await check()
            if value:
                return value
            await asyncio.sleep(0.02)


@pytest.fixture
async def inbox() -> AsyncIterator[Inbox]:
    handler = Inbox(asyncio.get_running_loop())
    port = _free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    handler.port = port
    yield handler
    controller.stop()


@pytest.fixture
async def kannel() -> AsyncIterator[KannelStandIn]:
    async with KannelStandIn(dlr_delay=3600) as k:
        yield k


@pytest.fixture
def msettings(settings: Settings, kannel: KannelStandIn, inbox: Inbox) -> Settings:
    port = _free_port()
    settings.server.public_url = f"http://127.0.0.1:{port}"
    settings.smtp.port = inbox.port
    settings.sms.channels["main"] = SmsChannelSettings(
        name="main",
        type="kannel",
        rate_per_second=100,
        options={
            "sendsms_url": kannel.sendsms_url,
            "username": "tester",
            "password": "secret",
            "secret": "chan-secret",
        },
    )
    settings.followups.pools = {"bdc": ["ann", "bob"]}
    settings.followups.unowned_pool = "bdc"
    kannel.inbound_url = f"{settings.server.public_url}/sms/kannel/incoming?channel=main&secret=chan-secret"
    return settings


async def _start(aiohttp_server: Any, aiohttp_client: Any, settings: Settings, clock: ManualClock) -> Any:
    port = int(settings.server.public_url.rsplit(":", 1)[1])
    server = await aiohttp_server(create_app(settings, clock=clock), port=port)
    return await aiohttp_client(server)


async def _cadence(boss: Api, store: Any) -> None:
    sms = await store.sms_templates.save(
        "Thanks", "Hi {{ contact.first_name }}, how is the new car?", user_id=None
    )
    resp = await boss.post(
        "/api/v1/email/templates",
        json={"name": "Thanks", "subject": "Thank you, {{ contact.first_name }}", "html": "<p>Enjoy it.</p>"},
    )
    assert resp.status == 201, await resp.text()
    email_id = (await resp.json())["id"]
    resp = await boss.post(
        "/api/v1/cadences",
        json={
            "name": "Delivery day",
            "date_field": "delivery_date",
            "steps": [
                {"offset": "+0d", "channel": "sms", "template_id": sms.id, "reason": "Thank-you text"},
                {"offset": "+0d", "channel": "email", "template_id": email_id, "reason": "Thank-you email"},
            ],
        },
    )
    assert resp.status == 201, await resp.text()


async def _customer(api: Api, first: str, phone: str, **extra: Any) -> int:
    body = {
        "first_name": first,
        "last_name": "Buyer",
        "phones": [phone],
        "owner": "ann",
        "attributes": {"delivery_date": NOW.date().isoformat()},
    } | extra
    resp = await api.post("/api/v1/contacts", json=body)
    assert resp.status == 201, await resp.text()
    return int((await resp.json())["id"])


async def test_sms_and_email_steps_go_out_once_close_their_followups_and_not_again_after_a_restart(
    aiohttp_server: Any, aiohttp_client: Any, msettings: Settings, kannel: KannelStandIn, inbox: Inbox
) -> None:
    clock = ManualClock(NOW)
    client = await _start(aiohttp_server, aiohttp_client, msettings, clock)
    app = client.server.app
    store = app[STORE]
    ann = await make_api(client, "ann", "rep")
    boss = await make_api(client, "maria", "manager")
    await _cadence(boss, store)
    sam = await _customer(ann, "Sam", "+12125550101", email="sam@example.com")
    olive = await _customer(ann, "Olive", "+12125550102")
    await store.contacts.set_flags(olive, sms_opt_out=True)  # and she has no email address

    steps = app[FOLLOWUP_STEPS]
    assert await steps.send_due() == []  # due at 10:00 Chicago: not yet
    clock.advance(hours=1, minutes=30)
    outcomes = await steps.send_due()
    assert sorted((o.channel, o.queued) for o in outcomes) == [
        ("email", False),
        ("email", True),
        ("sms", False),
        ("sms", True),
    ]
    await until(lambda: _async(len(kannel.received) >= 1 and len(inbox.messages) >= 1))

    async def sams_steps() -> list[Any] | None:
        items = [
            f
            for f in (await store.followups.search(contact_id=sam, state="all")).items
            if f.cadence_name == "Delivery day"
        ]
        return items if all(f.status == "done" for f in items) and items else None

    done = await until(sams_steps)
    assert sorted((f.channel, f.result) for f in done) == [("email", "emailed"), ("sms", "sms sent")]
    assert [q["to"] for q in kannel.received] == ["+12125550101"]
    assert kannel.received[0]["text"] == "Hi Sam, how is the new car?"
    assert [m["To"] for m in inbox.messages] == ["Sam Buyer <sam@example.com>"]
    history = (await store.touches.history(sam)).items
    assert sorted((t.kind, t.direction) for t in history) == [("email", "outbound"), ("sms", "outbound")]
    # Olive opted out and has no address: both steps stay on Ann's day as calls, saying why
    olives = [
        f for f in (await store.followups.search(contact_id=olive)).items if f.cadence_name == "Delivery day"
    ]
    assert [(f.channel, f.status) for f in olives] == [("call", "open"), ("call", "open")]
    assert any("opted out" in f.note for f in olives) and any("no email address" in f.note for f in olives)

    # a restart: the new process's step worker makes a full pass and sends nothing again
    await client.close()
    client = await _start(aiohttp_server, aiohttp_client, msettings, clock)
    steps = client.server.app[FOLLOWUP_STEPS]
    await until(lambda: _async(steps.passes >= 1))
    assert await steps.send_due() == []
    assert len(kannel.received) == 1 and len(inbox.messages) == 1
    await client.close()


async def _async(value: T) -> T:
    return value


async def test_a_reply_answers_the_followup_its_text_served_otherwise_lands_on_the_owners_day(
    aiohttp_server: Any, aiohttp_client: Any, msettings: Settings, kannel: KannelStandIn
) -> None:
    clock = ManualClock(NOW)
    client = await _start(aiohttp_server, aiohttp_client, msettings, clock)
    store = client.server.app[STORE]
    ann = await make_api(client, "ann", "rep")
    sam = await _customer(ann, "Sam", "+12125550101")
    due = NOW + timedelta(minutes=30)
    resp = await ann.post(
        "/api/v1/followups", json={"contact_id": sam, "due_at": due.isoformat(), "reason": "Trade-in?"}
    )
    assert resp.status == 201, await resp.text()
    fid = (await resp.json())["id"]
    # a text sent from the follow-up: it closes once sent
    resp = await ann.post(
        "/api/v1/sms/send",
        json={"contact_id": sam, "text": "Still thinking about the trade-in?", "followup_id": fid},
    )
    assert resp.status == 202, await resp.text()
    await until(lambda: _async(len(kannel.received) == 1))
    sent = await until(lambda: _done(store, fid))
    assert sent.result == "sms sent"
    # Sam answers: the follow-up records the reply, and the reply is on Ann's day to act on
    await kannel.inject_inbound(kannel.inbound_url or "", "+12125550101", "12345", "Yes, Friday works", "r1")
    answered = await until(lambda: _result(store, fid, "replied"))
    assert "Yes, Friday works" in answered.note
    replies = await until(lambda: _replies(ann))
    assert [(r["contact_id"], r["assignee"], r["note"], r["kind"]) for r in replies] == [
        (sam, "ann", "SMS reply: Yes, Friday works\nAnswers: Trade-in?", "sms_reply")
    ]
    # Kannel delivering the same message again adds nothing
    await kannel.inject_inbound(kannel.inbound_url or "", "+12125550101", "12345", "Yes, Friday works", "r1")
    # a second text is a Replies item of its own (the follow-up keeps its first reply)
    await kannel.inject_inbound(kannel.inbound_url or "", "+12125550101", "12345", "Or Saturday?", "r2")
    replies = await until(lambda: _replies(ann, 2))
    assert [(r["contact_id"], r["assignee"], r["note"]) for r in replies] == [
        (sam, "ann", "SMS reply: Yes, Friday works\nAnswers: Trade-in?"),
        (sam, "ann", "SMS reply: Or Saturday?\nAnswers: Trade-in?"),
    ]
    assert (await store.followups.get(fid)).note.count("SMS reply") == 1
    # Ann acts on the first (she called him) and dismisses the second: gone from her day
    for r, result in zip(replies, ("appointment set", "done"), strict=True):
        resp = await ann.post(f"/api/v1/followups/{r['id']}/done", json={"result": result})
        assert resp.status == 200, await resp.text()
    assert (await (await ann.get("/api/v1/me/day")).json())["replies"] == []
    # a text from a number nobody has: a prospect, on the day of everyone in the unowned pool
    bob = await make_api(client, "bob", "rep")
    await kannel.inject_inbound(
        kannel.inbound_url or "", "+12125550199", "12345", "Is the red one sold?", "r3"
    )
    (pooled,) = await until(lambda: _replies(bob))
    assert pooled["pool"] == "bdc" and pooled["assignee"] is None
    assert [r["id"] for r in await _replies(ann) or [] if r["pool"]] == [pooled["id"]]
    prospect = await store.contacts.get(pooled["contact_id"])
    assert prospect.owner_id is None and "prospect" in prospect.tags
    history = (await store.touches.history(prospect.id)).items
    assert [(t.kind, t.direction, t.summary) for t in history] == [("sms", "inbound", "Is the red one sold?")]
    await client.close()


async def _done(store: Any, fid: int) -> Any:
    f = await store.followups.get(fid)
    return f if f.status == "done" else None


async def _result(store: Any, fid: int, result: str) -> Any:
    f = await store.followups.get(fid)
    return f if f.result == result else None


async def _replies(api: Api, at_least: int = 1) -> list[dict[str, Any]] | None:
    day = await (await api.get("/api/v1/me/day")).json()
    return day["replies"] if len(day["replies"]) >= at_least else None


async def test_a_reply_to_a_cadence_text_is_on_the_current_owners_day_once(
    aiohttp_server: Any, aiohttp_client: Any, msettings: Settings, kannel: KannelStandIn
) -> None:
    clock = ManualClock(NOW)
    client = await _start(aiohttp_server, aiohttp_client, msettings, clock)
    app = client.server.app
    store = app[STORE]
    ann = await make_api(client, "ann", "rep")
    bob = await make_api(client, "bob", "rep")
    boss = await make_api(client, "maria", "manager")
    await _cadence(boss, store)
    sam = await _customer(ann, "Sam", "+12125550101")
    una = await _customer(boss, "Una", "+12125550103", owner=None)  # nobody's: the bdc pool's
    clock.advance(hours=1, minutes=30)
    await app[FOLLOWUP_STEPS].send_due()
    await until(lambda: _async(len(kannel.received) == 2))

    async def step(contact_id: int) -> Any:
        items = (await store.followups.search(contact_id=contact_id, state="all")).items
        (f,) = [f for f in items if f.cadence_name == "Delivery day" and f.result == "sms sent"] or [None]
        return f

    sams, unas = await until(lambda: step(sam)), await until(lambda: step(una))
    assert (sams.assignee_username, unas.pool) == ("ann", "bdc")
    # Sam is Bob's customer now; his answer to the thank-you text goes to Bob, not Ann
    resp = await boss.patch(f"/api/v1/contacts/{sam}", json={"owner": "bob"})
    assert resp.status == 200, await resp.text()
    await kannel.inject_inbound(kannel.inbound_url or "", "+12125550101", "12345", "Love it, thanks!", "c1")
    (reply,) = await until(lambda: _replies(bob))
    assert (reply["contact_id"], reply["assignee"], reply["note"]) == (
        sam,
        "bob",
        "SMS reply: Love it, thanks!\nAnswers: Delivery day · Thank-you text",
    )
    assert (await store.followups.get(sams.id)).result == "replied"
    assert [r for r in (await _replies(ann)) or [] if r["contact_id"] == sam] == []
    # Una, whom nobody owns, answers: on the day of everyone in the pool her text was sent for
    await kannel.inject_inbound(kannel.inbound_url or "", "+12125550103", "12345", "Who is this?", "c2")
    for api, expected in ((ann, 1), (bob, 2)):  # Bob also has Sam's
        got = await until(functools.partial(_replies, api, expected))
        assert [(r["contact_id"], r["pool"], r["assignee"]) for r in got if r["contact_id"] == una] == [
            (una, "bdc", None)
        ]
    assert (await store.followups.get(unas.id)).result == "replied"
    # one Replies item per text, however often the gateway delivers it
    await kannel.inject_inbound(kannel.inbound_url or "", "+12125550101", "12345", "Love it, thanks!", "c1")
    items = (await store.followups.search(contact_id=sam, state="all")).items
    assert len([f for f in items if f.kind == "sms_reply"]) == 1
    await client.close()


async def test_a_cadence_email_the_mail_server_refuses_comes_back_as_a_call_with_the_reason(
    aiohttp_server: Any, aiohttp_client: Any, msettings: Settings, inbox: Inbox
) -> None:
    inbox.refuse = {"gone@example.com"}
    clock = ManualClock(NOW)
    client = await _start(aiohttp_server, aiohttp_client, msettings, clock)
    app = client.server.app
    store = app[STORE]
    ann = await make_api(client, "ann", "rep")
    boss = await make_api(client, "maria", "manager")
    await _cadence(boss, store)
    sam = await _customer(ann, "Sam", "+12125550101", email="gone@example.com")
    pat = await _customer(ann, "Pat", "+12125550102", email="pat@example.com")
    clock.advance(hours=1, minutes=30)
    outcomes = await app[FOLLOWUP_STEPS].send_due()
    # both emails were accepted into the outbox: the refusal comes later, from the mail server
    assert sorted((o.channel, o.queued) for o in outcomes) == [("email", True)] * 2 + [("sms", True)] * 2

    async def email_step(contact_id: int) -> Any:
        items = (await store.followups.search(contact_id=contact_id, state="all")).items
        (f,) = [f for f in items if f.cadence_name == "Delivery day" and "email" in f.note.lower()]
        return f

    async def settled(contact_id: int) -> Any:
        f = await email_step(contact_id)
        return f if f.status == "done" or f.channel == "call" else None

    pats = await until(lambda: settled(pat))
    assert (pats.status, pats.result) == ("done", "emailed")
    assert [m["To"] for m in inbox.messages] == ["Pat Buyer <pat@example.com>"]
    sams = await until(lambda: settled(sam))
    assert (sams.status, sams.channel, sams.assignee_username) == ("open", "call", "ann")
    assert "Email not sent (" in sams.note and "User unknown" in sams.note and "call instead" in sams.note
    # it is on Ann's day as a call to make, saying why
    day = await (await ann.get("/api/v1/me/day")).json()
    (due,) = [f for f in day["followups"] if f["id"] == sams.id]
    assert due["channel"] == "call" and "User unknown" in due["note"]
    # the refused email is not tried again, by the step worker or after a restart
    assert await app[FOLLOWUP_STEPS].send_due() == []
    history = (await store.touches.history(sam)).items
    assert [t.kind for t in history if t.kind == "email"] == []
    await client.close()
    client = await _start(aiohttp_server, aiohttp_client, msettings, clock)
    steps = client.server.app[FOLLOWUP_STEPS]
    await until(lambda: _async(steps.passes >= 1))
    assert await steps.send_due() == []
    assert len(inbox.messages) == 1
    f = await client.server.app[STORE].followups.get(sams.id)
    assert (f.status, f.channel) == ("open", "call")
    await client.close()


async def test_a_refused_cadence_email_tells_the_assignees_open_my_day_live(
    aiohttp_server: Any, aiohttp_client: Any, msettings: Settings, inbox: Inbox
) -> None:
    inbox.refuse = {"gone@example.com"}
    clock = ManualClock(NOW)
    client = await _start(aiohttp_server, aiohttp_client, msettings, clock)
    # the mail server refuses the email: the page is told its day changed, and the day then has
    # the call to make with the reason
    await _a_failed_step_tells_my_day(
        client, clock, "followup.email_failed", "User unknown", email="gone@example.com"
    )


async def test_a_cadence_text_the_network_cannot_deliver_comes_back_as_a_call_with_the_reason(
    aiohttp_server: Any, aiohttp_client: Any, msettings: Settings, kannel: KannelStandIn
) -> None:
    kannel.dlr_delay = 0.01  # Kannel reports each message's fate at once
    kannel.dlr_type = {"+12125550101": 2}  # Sam's phone: "NACK/0x00000001/Undeliverable"
    kannel.duplicate_dlrs = True
    clock = ManualClock(NOW)
    client = await _start(aiohttp_server, aiohttp_client, msettings, clock)
    app = client.server.app
    store = app[STORE]
    ann = await make_api(client, "ann", "rep")
    boss = await make_api(client, "maria", "manager")
    await _cadence(boss, store)
    sam = await _customer(ann, "Sam", "+12125550101")
    pat = await _customer(ann, "Pat", "+12125550102")
    clock.advance(hours=1, minutes=30)
    await app[FOLLOWUP_STEPS].send_due()

    async def text_step(contact_id: int, settled: Callable[[Any], bool]) -> Any:
        items = (await store.followups.search(contact_id=contact_id, state="all")).items
        (f,) = [f for f in items if f.cadence_name == "Delivery day" and "text" in f.note.lower()]
        return f if settled(f) else None

    async def delivered(contact_id: int) -> bool:
        history = (await store.touches.history(contact_id)).items
        return any(t.kind == "sms" and t.status in ("delivered", "failed") for t in history)

    await until(lambda: delivered(pat))
    await until(lambda: delivered(sam))
    pats = await until(lambda: text_step(pat, lambda f: f.status == "done"))
    assert pats.result == "sms sent"
    sams = await until(lambda: text_step(sam, lambda f: f.channel == "call"))
    assert (sams.status, sams.result, sams.assignee_username) == ("open", None, "ann")
    assert "SMS not delivered (NACK/0x00000001/Undeliverable): call instead" in sams.note
    day = await (await ann.get("/api/v1/me/day")).json()
    assert [f["channel"] for f in day["followups"] if f["id"] == sams.id] == ["call"]
    # Kannel sent each final report twice: the second changed nothing
    await until(lambda: _async(not kannel._tasks))  # every report has been answered
    assert (await store.followups.get(sams.id)).note.count("not delivered") == 1
    await client.close()


async def test_cadence_steps_due_in_the_customers_quiet_hours_wait_until_morning(
    aiohttp_server: Any, aiohttp_client: Any, msettings: Settings, kannel: KannelStandIn, inbox: Inbox
) -> None:
    msettings.followups.call_at = "22:00"  # steps fall due at 22:00 in the customer's zone (New York)
    clock = ManualClock(NOW)
    client = await _start(aiohttp_server, aiohttp_client, msettings, clock)
    app = client.server.app
    store = app[STORE]
    ann = await make_api(client, "ann", "rep")
    boss = await make_api(client, "maria", "manager")
    await _cadence(boss, store)
    await _customer(ann, "Sam", "+12125550101", email="sam@example.com")
    clock.set(datetime(2026, 6, 16, 2, 30, tzinfo=UTC))  # 22:30 in New York: quiet hours (21:00-08:00)
    outcomes = await app[FOLLOWUP_STEPS].send_due()
    assert sorted((o.channel, o.queued) for o in outcomes) == [("email", True), ("sms", True)]
    morning = datetime(2026, 6, 16, 12, 0, tzinfo=UTC)  # 08:00 in New York
    # the SMS worker took the text and put it back until 08:00; the email waits for 08:00 too
    (text_step,) = [o.followup_id for o in outcomes if o.channel == "sms"]
    held = await until(lambda: _held(store, 1))
    assert (held.followup_id, held.not_before) == (text_step, morning)
    assert kannel.received == [] and inbox.messages == []
    clock.set(morning + timedelta(minutes=1))
    app[SMS].wake("main")
    await until(lambda: _async(len(kannel.received) == 1 and len(inbox.messages) == 1))
    assert kannel.received[0]["text"] == "Hi Sam, how is the new car?"
    await client.close()


async def _held(store: Any, message_id: int) -> Any:
    from campaigns.sms.quiet import QUIET_HOURS

    msg = await store.sms.message(message_id)
    return msg if msg.state == "queued" and msg.reason == QUIET_HOURS else None


async def test_a_cadence_sms_survey_step_asks_its_question_and_the_reply_answers_it(
    aiohttp_server: Any, aiohttp_client: Any, msettings: Settings, kannel: KannelStandIn
) -> None:
    """A cadence SMS step with a one-question survey and no saved text texts the question; the
    customer's "1" is stored as their answer and escalates; with consent required, a customer
    without consent is not texted and the step stays a call saying why."""
    from tests.test_survey_sms import ONE_QUESTION

    msettings.sms.require_consent = True
    clock = ManualClock(NOW)
    client = await _start(aiohttp_server, aiohttp_client, msettings, clock)
    app = client.server.app
    store = app[STORE]
    ann = await make_api(client, "ann", "rep")
    boss = await make_api(client, "maria", "manager")
    survey = await (await boss.post("/api/v1/surveys", json=ONE_QUESTION)).json()
    two_q = dict(ONE_QUESTION, name="Two questions")
    two_q["questions"] = [
        *ONE_QUESTION["questions"],
        {"key": "note", "text": "Anything else?", "type": "text", "required": True},
    ]
    bad = await (await boss.post("/api/v1/surveys", json=two_q)).json()
    step = {"offset": "+0d", "channel": "sms", "reason": "Service survey"}
    # a step whose survey cannot be asked in one text is refused, naming the step
    resp = await boss.post(
        "/api/v1/cadences",
        json={"name": "Survey", "date_field": "delivery_date", "steps": [step | {"survey_id": bad["id"]}]},
    )
    assert resp.status == 400
    assert (await resp.json())["error"]["field"] == "steps[0].survey_id"
    resp = await boss.post(
        "/api/v1/cadences",
        json={"name": "Survey", "date_field": "delivery_date", "steps": [step | {"survey_id": survey["id"]}]},
    )
    assert resp.status == 201, await resp.text()
    sam = await _customer(ann, "Sam", "+12125550101")
    olive = await _customer(ann, "Olive", "+12125550102")
    resp = await ann.patch(f"/api/v1/contacts/{sam}", json={"sms_consent": {"source": "in_person"}})
    assert resp.status == 200, await resp.text()

    clock.advance(hours=1, minutes=30)
    outcomes = await app[FOLLOWUP_STEPS].send_due()
    assert sorted(o.queued for o in outcomes) == [False, True]
    await until(lambda: _async(len(kannel.received) >= 1))
    assert [(q["to"], q["text"]) for q in kannel.received] == [
        ("+12125550101", "How was your service? Reply 1-5.")
    ]
    olives = [f for f in (await store.followups.search(contact_id=olive)).items if f.cadence_name == "Survey"]
    assert [(f.channel, f.status) for f in olives] == [("call", "open")]
    assert "no consent to texts" in olives[0].note

    async def sent() -> bool:
        rows = (await store.touches.history(sam)).items
        return any(t.kind == "sms" and t.direction == "outbound" for t in rows)

    await until(sent)
    assert kannel.inbound_url is not None
    await kannel.inject_inbound(kannel.inbound_url, "+12125550101", "12345", "1", msg_id="in-survey-1")

    async def answered() -> list[Any] | None:
        items = (await (await boss.get(f"/api/v1/contacts/{sam}/survey-responses")).json())["items"]
        return items or None

    (answer,) = await until(answered)
    assert (
        answer["channel"] == "sms" and answer["answers"] == {"overall": 1} and answer["dissatisfied"] is True
    )
    assert answer["followup_id"] is not None
    assert len(kannel.received) == 1  # Olive was never texted
    await client.close()


async def test_an_undelivered_cadence_text_tells_the_assignees_open_my_day_live(
    aiohttp_server: Any, aiohttp_client: Any, msettings: Settings, kannel: KannelStandIn
) -> None:
    kannel.dlr_delay = 0.01
    kannel.dlr_type = {"+12125550101": 2}  # "NACK/0x00000001/Undeliverable"
    clock = ManualClock(NOW)
    client = await _start(aiohttp_server, aiohttp_client, msettings, clock)
    await _a_failed_step_tells_my_day(client, clock, "followup.sms_failed", "not delivered")


async def _a_failed_step_tells_my_day(
    client: Any, clock: ManualClock, reason: str, note_has: str, **customer: Any
) -> None:
    """Ann's My Day is open (its WebSocket) when Sam's cadence steps go out and one fails: the page
    is told its day changed (`reason`), and the day then has a call to make saying why."""
    app = client.server.app
    ann = await make_api(client, "ann", "rep")
    boss = await make_api(client, "maria", "manager")
    await _cadence(boss, app[STORE])
    sam = await _customer(ann, "Sam", "+12125550101", **customer)
    ws = await client.ws_connect(f"/ws/agent?token={ann.token}")
    assert json.loads((await ws.receive(timeout=5)).data)["type"] == "hello"
    clock.advance(hours=1, minutes=30)
    await app[FOLLOWUP_STEPS].send_due()
    async with asyncio.timeout(15):
        while True:
            msg = json.loads((await ws.receive()).data)
            if msg.get("type") == "day_changed" and msg.get("reason") == reason:
                break
    day = await (await ann.get("/api/v1/me/day")).json()
    (due,) = [f for f in day["followups"] if f["contact_id"] == sam and note_has in f["note"]]
    assert due["channel"] == "call" and due["state"] == "open"
    await ws.close()
    await client.close()
