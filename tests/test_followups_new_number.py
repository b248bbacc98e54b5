"""A text from a number nobody has: its touch and its prospect (with the prospect's follow-up on the
unowned pool) are one transaction, through Kannel and Twilio webhooks and their retries, and in the
store; keywords from such a number make no prospect."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest

from campaigns.sms.kannel_standin import KannelStandIn
from crm_link.clock import ManualClock
from crm_link.contacts import validate_contact
from crm_link.touches import TouchInput
from followups.service import UNKNOWN_NUMBER_TAG
from switchboard.app import create_app
from switchboard.keys import STORE
from switchboard.settings import Settings
from switchboard.sim.crm_standin import CrmStandIn
from switchboard.sim.twilio_api import FakeTwilioApi
from tests.conftest import free_port
from tests.sms.test_twilio_sms import twilio_channel
from tests.test_followup_messages import NOW, _start, inbox, kannel, msettings  # noqa: F401
from tests.webhooks.conftest import SECRET, all_delivered, assert_in_order_per_contact, hook, until

NEW = "+12125550199"


async def _first_read(store: Any, key: str) -> Any:
    """The touch as the first read that finds it sees it (read over and over from before the
    webhook is sent, so no moment between two commits goes unread)."""
    async with asyncio.timeout(20):
        while (touch := await store.touches.by_source_key(key)) is None:
            await asyncio.sleep(0)
    return touch


async def _outbox_of(store: Any, contact_id: int) -> list[tuple[str, str]]:
    events = await store.crm_events.events_since(0, limit=10_000)
    return [(e.type, e.order_key) for e in events if e.contact_id == contact_id]


async def test_a_new_numbers_text_and_its_prospect_commit_together_and_reach_the_crm_in_order(
    aiohttp_server: Any,
    aiohttp_client: Any,
    msettings: Settings,  # noqa: F811
    kannel: KannelStandIn,  # noqa: F811
) -> None:
    crm = await CrmStandIn(secret=SECRET).start()
    try:
        hook(msettings, crm)  # the receiver checks signatures' times: the app runs on the system clock
        port = int(msettings.server.public_url.rsplit(":", 1)[1])
        client = await aiohttp_client(await aiohttp_server(create_app(msettings), port=port))
        store = client.server.app[STORE]
        url = kannel.inbound_url or ""
        reader = asyncio.create_task(_first_read(store, "sms-in:main:n1"))
        await kannel.inject_inbound(url, NEW, "12345", "Is the red one sold?", "n1")
        touch = await reader
        assert touch.contact_id is not None  # never seen without its contact
        prospect = await store.contacts.get(touch.contact_id)
        assert prospect.owner_id is None and {"prospect", UNKNOWN_NUMBER_TAG} <= set(prospect.tags)
        assert [p.e164 for p in prospect.phones] == [NEW]
        (f,) = await store.touches.open_followups(prospect.id)
        assert (f.kind, f.pool, f.assignee_id, f.created_by_touch_id) == ("sms_reply", "bdc", None, touch.id)
        assert f.note == "SMS from a new number: Is the red one sold?"
        # the outbox: the contact, then the text, then its follow-up, all in the contact's order;
        # nothing about the text keyed by its touch alone
        events = await store.crm_events.events_since(0, limit=10_000)
        assert [e.type for e in events if e.contact_id is None] == []
        order = f"c:{prospect.id}"
        assert await _outbox_of(store, prospect.id) == [
            ("contact.created", order),
            ("sms.received", order),
            ("followup.created", order),
        ]
        # Kannel delivering the same message again: no second prospect, follow-up or event
        await kannel.inject_inbound(url, NEW, "12345", "Is the red one sold?", "n1")
        assert [c.id for c in await store.contacts.find_by_phone(NEW)] == [prospect.id]
        assert [x.id for x in await store.touches.open_followups(prospect.id)] == [f.id]
        assert len(await _outbox_of(store, prospect.id)) == 3
        # and the CRM receives the text with its contact, after the contact
        await until(lambda: all_delivered(store, crm))
        got = [e["type"] for e in crm.of_type("") if e.get("contact_id") == prospect.id]
        assert got == ["contact.created", "sms.received", "followup.created"]
        assert_in_order_per_contact(crm)
        await client.close()
    finally:
        await crm.stop()


async def test_keywords_from_a_new_number_make_no_prospect_a_score_does(
    aiohttp_server: Any,
    aiohttp_client: Any,
    msettings: Settings,  # noqa: F811
    kannel: KannelStandIn,  # noqa: F811
) -> None:
    client = await _start(aiohttp_server, aiohttp_client, msettings, ManualClock(NOW))
    store = client.server.app[STORE]
    url = kannel.inbound_url or ""
    # STOP from a number nobody has: the text is on record without a contact and is answered once
    await kannel.inject_inbound(url, "+12125550198", "12345", "STOP", "k1")
    await kannel.inject_inbound(url, "+12125550198", "12345", "STOP", "k1")
    stop = await _first_read(store, "sms-in:main:k1")
    assert stop.contact_id is None and stop.payload["keyword"] == "stop"
    assert await store.contacts.find_by_phone("+12125550198") == []
    sent = await until(lambda: _sent_to(kannel, "+12125550198"))
    assert len(sent) == 1 and "unsubscribed" in sent[0]["text"]
    # HELP likewise
    await kannel.inject_inbound(url, "+12125550197", "12345", "help", "k2")
    assert (await _first_read(store, "sms-in:main:k2")).contact_id is None
    assert await store.contacts.find_by_phone("+12125550197") == []
    # a score from a number nobody has answers no survey (none was texted to it): a prospect's text
    await kannel.inject_inbound(url, "+12125550196", "12345", "5", "k3")
    score = await _first_read(store, "sms-in:main:k3")
    (prospect,) = await store.contacts.find_by_phone("+12125550196")
    assert score.contact_id == prospect.id
    assert [f.note for f in await store.touches.open_followups(prospect.id)] == ["SMS from a new number: 5"]
    await client.close()


async def _sent_to(gateway: KannelStandIn, number: str) -> list[dict[str, str]]:
    return [q for q in gateway.received if q.get("to") == number]


async def test_a_twilio_webhook_retry_makes_no_second_prospect(
    aiohttp_server: Any, aiohttp_client: Any, settings: Any
) -> None:
    port = free_port()
    async with FakeTwilioApi("AC" + "6" * 32, "sms-token") as fake:
        twilio_channel(settings, fake, port)
        server = await aiohttp_server(create_app(settings), port=port)
        client = await aiohttp_client(server)
        store = server.app[STORE]
        incoming = f"{settings.server.public_url}/twilio/sms/incoming"
        sid = "SM" + "a" * 32
        for _ in range(2):  # Twilio retrying a webhook it did not see answered
            assert await fake.send_inbound(incoming, NEW, "+15557650000", "Trade-in?", message_sid=sid) == 200
        touch = await store.touches.by_source_key(f"sms-in:tw:{sid}")
        (prospect,) = await store.contacts.find_by_phone(NEW)
        assert touch.contact_id == prospect.id
        (f,) = await store.touches.open_followups(prospect.id)
        assert (f.kind, f.created_by_touch_id) == ("sms_reply", touch.id)
        assert [t for t, _ in await _outbox_of(store, prospect.id)] == [
            "contact.created",
            "sms.received",
            "followup.created",
        ]
        await client.close()


async def test_a_new_numbers_text_and_its_prospect_commit_together_or_not_at_all(
    store: Any, monkeypatch: Any
) -> None:
    """A failure after the prospect's and the text's rows are written (the follow-up step here; a
    crash is the same to the database) leaves neither: the store never holds the text without its
    contact, nor a prospect without its text."""
    at = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
    item = TouchInput(
        "sms-in:main:x1",
        "sms",
        "inbound",
        at,
        channel="main",
        status="received",
        number=NEW,
        summary="Still available?",
    )
    fields = validate_contact(
        {"first_name": "Unknown", "last_name": NEW, "phones": [NEW], "tags": [UNKNOWN_NUMBER_TAG]},
        region="US",
    )
    before = await store.crm_events.events_since(0)

    async def broken(*args: Any, **kw: Any) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(store.touches, "add_followup_in", broken)
    with pytest.raises(OSError, match="disk gone"):  # the broken step fails the whole transaction
        await store.record_touch_with_prospect(item, fields, followup_kind="sms_reply", followup_note="n")
    assert await store.touches.by_source_key("sms-in:main:x1") is None
    assert await store.contacts.find_by_phone(NEW) == []
    assert await store.crm_events.events_since(0) == before
    monkeypatch.undo()
    touch, made = await store.record_touch_with_prospect(
        item, fields, followup_kind="sms_reply", followup_note="n"
    )
    (prospect,) = await store.contacts.find_by_phone(NEW)
    assert touch.created and touch.contact_id == prospect.id
    assert made is not None and (made.contact_id, made.kind, made.created_by_touch_id) == (
        prospect.id,
        "sms_reply",
        touch.id,
    )
    after = await store.crm_events.events_since(before[-1].id if before else 0)
    assert [(e.type, e.order_key) for e in after] == [
        ("contact.created", f"c:{prospect.id}"),
        ("sms.received", f"c:{prospect.id}"),
        ("followup.created", f"c:{prospect.id}"),
    ]
    # the same text recorded again (a redelivery): the same touch, theirs, and nothing made
    again, none = await store.record_touch_with_prospect(
        item, fields, followup_kind="sms_reply", followup_note="n"
    )
    assert (again.id, again.contact_id, again.created, none) == (touch.id, prospect.id, False, None)
    assert len(await store.contacts.find_by_phone(NEW)) == 1
    assert len(await store.crm_events.events_since(0)) == len(before) + 3


async def test_texts_from_a_new_number_at_two_instances_at_once_make_one_prospect(
    store: Any, settings: Any
) -> None:
    """A gateway's retry reaching a second instance while the first still writes, and a second text
    from the same number at the same moment: one prospect, each text theirs once, one follow-up each."""
    from switchboard.app import open_store

    at = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
    fields = validate_contact(
        {"first_name": "Unknown", "last_name": NEW, "phones": [NEW], "tags": [UNKNOWN_NUMBER_TAG]},
        region="US",
    )

    def text(key: str) -> TouchInput:
        return TouchInput(
            key, "sms", "inbound", at, channel="main", status="received", number=NEW, summary=key
        )

    async with open_store(settings) as other:
        for n in range(5):
            a, b, c = f"a{n}", f"b{n}", f"c{n}"
            made = await asyncio.gather(
                *(
                    s.record_touch_with_prospect(text(k), fields, followup_kind="sms_reply", followup_note=k)
                    for s, k in [(store, a), (other, a), (other, b), (store, b), (store, c)]
                )
            )
            assert sorted(t.source_key for t, _ in made) == [a, a, b, b, c]
            # each text made its follow-up once (the other of a pair found the touch theirs)
            assert sorted(f.note for _, f in made if f is not None) == [a, b, c]
    (prospect,) = await store.contacts.find_by_phone(NEW)
    followups = await store.touches.open_followups(prospect.id)
    touches = (await store.touches.history(prospect.id, limit=100)).items
    assert len(touches) == 15 and {t.contact_id for t in touches} == {prospect.id}
    assert sorted(f.created_by_touch_id for f in followups) == sorted(t.id for t in touches)
    events = await store.crm_events.events_since(0, limit=10_000)
    assert [e.type for e in events].count("contact.created") == 1
    assert [e.type for e in events if e.contact_id is None] == []
