"""SMS through Twilio's Messages API (a loopback stand-in), with signed status and incoming webhooks."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from crm_link.contacts import validate_contact
from crm_link.sms import OutboxRow
from switchboard.app import create_app, open_store
from switchboard.keys import STORE
from switchboard.settings import SmsChannelSettings
from switchboard.sim.twilio_api import FakeTwilioApi
from tests.conftest import free_port, make_api
from tests.sms.helpers import blast_when, reported


def twilio_channel(settings: Any, fake: FakeTwilioApi, port: int) -> None:
    """Settings for an SMS channel `tw` on the loopback stand-in of Twilio's API (no quiet hours)."""
    settings.twilio.account_sid = fake.account_sid
    settings.twilio.auth_token.__init__(fake.auth_token)
    settings.twilio.api_base = fake.base_url
    settings.server.public_url = f"http://127.0.0.1:{port}"
    settings.sms.quiet_start = settings.sms.quiet_end = "00:00"
    settings.sms.channels["tw"] = SmsChannelSettings(
        name="tw", type="twilio", rate_per_second=50, options={"from": "+15557650000"}
    )


async def test_blast_reports_replies_and_forgeries(
    aiohttp_server: Any, aiohttp_client: Any, settings: Any
) -> None:
    port = free_port()
    sid, token = "AC" + "5" * 32, "sms-token"
    async with FakeTwilioApi(sid, token) as fake:
        twilio_channel(settings, fake, port)
        server = await aiohttp_server(create_app(settings), port=port)
        client = await aiohttp_client(server)
        store = server.app[STORE]
        await make_api(client, "jsmith", "rep")
        mkt = await make_api(client, "kim", "marketing")
        ann = await store.contacts.create(
            validate_contact(
                {"first_name": "Ann", "phones": ["+12125550300"], "tags": ["t"], "owner": "jsmith"},
                region="US",
            )
        )
        await store.contacts.create(
            validate_contact({"first_name": "Bo", "phones": ["+12125550301"], "tags": ["t"]}, region="US")
        )
        fake.message_outcome["+12125550301"] = "undelivered"
        resp = await mkt.post(
            "/api/v1/sms/blasts",
            json={
                "name": "b",
                "text": "Hi {{ contact.first_name }}",
                "channel": "tw",
                "audience": {"tag": "t"},
            },
        )
        assert resp.status == 201, await resp.text()
        blast = await resp.json()
        body = await blast_when(mkt, blast["id"], lambda b: reported(b) == 2)
        assert body["counts"]["delivered"] == 1 and body["counts"]["failed"] == 1
        sent = sorted(m["Body"] for m in fake.messages.values())
        assert sent == ["Hi Ann", "Hi Bo"]
        assert all(
            m["From"] == "+15557650000" and "mid=" in m["StatusCallback"] for m in fake.messages.values()
        )
        # a reply lands on the owner's day; a forged webhook is refused
        incoming = f"{settings.server.public_url}/twilio/sms/incoming"
        assert await fake.send_inbound(incoming, "+12125550300", "+15557650000", "Saturday works") == 200
        assert [f.kind for f in await store.touches.open_followups(ann.id)] == ["sms_reply"]
        forged = await client.post(
            "/twilio/sms/incoming",
            data={"From": "+12125550300", "Body": "STOP", "MessageSid": "SMx"},
            headers={"X-Twilio-Signature": "forged"},
        )
        assert forged.status == 403
        assert not (await store.contacts.get(ann.id)).sms_opt_out
        assert await fake.send_inbound(incoming, "+12125550300", "+15557650000", "STOP") == 200
        assert (await store.contacts.get(ann.id)).sms_opt_out


async def test_messages_in_doubt_are_looked_up_at_twilio_not_resent(
    aiohttp_server: Any, aiohttp_client: Any, settings: Any
) -> None:
    """The process dies while Twilio creates a message (its answer never arrives): after the
    restart the row is `unknown`, found in Twilio's message list and marked sent, not sent again;
    a row that never reached Twilio is queued again and sent once."""
    port = free_port()
    sid, token = "AC" + "6" * 32, "sms-token"
    # the restart is the same instance: on PostgreSQL it takes back at once the rows it held
    settings.server.instance_id = "sb-1"
    async with FakeTwilioApi(sid, token) as fake:
        twilio_channel(settings, fake, port)
        first = await aiohttp_server(create_app(settings), port=port)
        client = await aiohttp_client(first)
        store = first.app[STORE]
        mkt = await make_api(client, "kim", "marketing")
        for name, phone in (("Ann", "+12125550300"), ("Bo", "+12125550301")):
            await store.contacts.create(
                validate_contact({"first_name": name, "phones": [phone], "tags": [name]}, region="US")
            )
        fake.drop_next_response = True
        resp = await mkt.post(
            "/api/v1/sms/blasts",
            json={
                "name": "a",
                "text": "Hi {{ contact.first_name }}",
                "channel": "tw",
                "audience": {"tag": "Ann"},
            },
        )
        assert resp.status == 201
        async with asyncio.timeout(10):
            while not fake.messages:
                await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)
        await first.close()  # the worker is cancelled mid-request
        (ann_sid,) = fake.messages
    async with open_store(settings) as s1:
        # the process died before Twilio's status callbacks could reach it: Ann's row is still `sending`
        await s1.db.execute_many(
            "UPDATE sms_outbox SET state = 'sending', provider_id = NULL, sent_at = NULL, final_at = NULL"
            " WHERE to_e164 = ?",
            [("+12125550300",)],
        )
    async with FakeTwilioApi(sid, token) as fake2:
        # the same account, as Twilio would keep it: Ann's message exists
        fake2.messages, fake2.message_status, fake2.message_created = (
            fake.messages,
            fake.message_status,
            fake.message_created,
        )
        settings.twilio.api_base = fake2.base_url
        async with open_store(settings) as s2:
            # Bo's message had been marked sending when the process died, before its request went out
            row_b = await s2.sms.enqueue(
                OutboxRow(to_e164="+12125550301", text="Hi Bo", channel="tw", not_before=datetime.now(UTC))
            )
            assert row_b is not None
            await s2.db.execute_many("UPDATE sms_outbox SET state = 'sending' WHERE id = ?", [(row_b.id,)])
        second = await aiohttp_server(create_app(settings), port=port)
        store = second.app[STORE]
        async with asyncio.timeout(10):
            while True:
                rows = await store.db.fetchall(
                    "SELECT to_e164, state, provider_id FROM sms_outbox ORDER BY id"
                )
                if [r["state"] for r in rows] in (
                    ["sent", "sent"],
                    ["sent", "delivered"],
                    ["delivered", "delivered"],
                ):
                    break
                await asyncio.sleep(0.05)
        assert rows[0]["provider_id"] == ann_sid
        sent_to = [m["To"] for m in fake2.messages.values()]
        assert sent_to.count("+12125550300") == 1 and sent_to.count("+12125550301") == 1
        await second.close()
