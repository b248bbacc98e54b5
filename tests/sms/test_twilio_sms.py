"""SMS through Twilio's Messages API (a loopback stand-in), with signed status and incoming webhooks."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from crm_link.contacts import validate_contact
from switchboard.app import create_app
from switchboard.keys import STORE
from switchboard.settings import SmsChannelSettings
from switchboard.sim.twilio_api import FakeTwilioApi
from tests.conftest import make_api


async def test_blast_reports_replies_and_forgeries(
    aiohttp_server: Any, aiohttp_client: Any, settings: Any
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sid, token = "AC" + "5" * 32, "sms-token"
    async with FakeTwilioApi(sid, token) as fake:
        settings.twilio.account_sid = sid
        settings.twilio.auth_token.__init__(token)  # type: ignore[misc]
        settings.twilio.api_base = fake.base_url
        settings.server.public_url = f"http://127.0.0.1:{port}"
        settings.sms.quiet_start = settings.sms.quiet_end = "00:00"
        settings.sms.channels["tw"] = SmsChannelSettings(
            name="tw", type="twilio", rate_per_second=50, options={"from": "+15557650000"}
        )
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
        async with asyncio.timeout(10):
            while True:
                body = await (await mkt.get(f"/api/v1/sms/blasts/{blast['id']}")).json()
                if body["counts"]["delivered"] + body["counts"]["failed"] == 2:
                    break
                await asyncio.sleep(0.05)
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
