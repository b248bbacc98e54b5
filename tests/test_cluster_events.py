"""Three instances on one PostgreSQL store, as real `switchboard serve` processes: a pop raised by the
instance that holds the AMI connection reaches an agent whose browser is on another; exactly one
instance holds the AMI connection, and another takes it over when the holder is SIGKILLed."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from campaigns.sms.kannel_standin import KannelStandIn
from crm_link.contacts import validate_contact
from crm_link.store import Store
from cti.ami.server import AmiTestServer
from tests.instances import Instances, rep_and_manager

pytestmark = pytest.mark.skipif(
    os.environ.get("SWITCHBOARD_TEST_STORE") != "postgres",
    reason="several instances share a PostgreSQL store (SWITCHBOARD_TEST_STORE=postgres)",
)

AGENT = "Local/agent1@agents/n"


async def _next(ws: aiohttp.ClientWebSocketResponse, kind: str, timeout: float = 15) -> dict[str, Any]:
    """The next message of this type on the socket (others, e.g. call updates of a former call, skipped)."""
    async with asyncio.timeout(timeout):
        while True:
            msg = await ws.receive()
            assert msg.type == aiohttp.WSMsgType.TEXT, msg
            data: dict[str, Any] = json.loads(msg.data)
            if data["type"] == kind:
                return data


async def _agent_state(
    board: aiohttp.ClientWebSocketResponse, user: str, wanted: set[str] | None = None
) -> str:
    """The user's state on a manager's board socket: from the snapshot or the next agent update
    (the first one in `wanted`, when given)."""
    async with asyncio.timeout(15):
        while True:
            data = json.loads((await board.receive()).data)
            rows = (
                data["items"]
                if data["type"] == "board"
                else [data["agent"]]
                if data["type"] == "agent"
                else []
            )
            for row in rows:
                if row["user"] == user and (wanted is None or row["state"] in wanted):
                    return str(row["state"])


async def _update(ws: aiohttp.ClientWebSocketResponse, call_id: str, state: str) -> None:
    """Until this call's update to this state arrives (earlier messages skipped)."""
    async with asyncio.timeout(15):
        while True:
            update = await _next(ws, "call_update")
            if update["call"]["id"] == call_id and update["call"]["state"] == state:
                return


async def _one_session(pbx: AmiTestServer) -> None:
    async with asyncio.timeout(15):
        while len([s for s in pbx.sessions if s.logged_in]) != 1:
            await asyncio.sleep(0.02)


async def _call_touch(store: Store, linkedid: str) -> Any:
    async with asyncio.timeout(15):
        while True:
            touch = await store.touches.by_source_key(f"asterisk:{linkedid}")
            if touch is not None and touch.ended_at is not None:
                return touch
            await asyncio.sleep(0.05)


async def test_a_pop_on_the_ami_holder_reaches_an_agent_on_another_instance_and_the_ami_moves_on_kill(
    tmp_path: Path, store_url: str
) -> None:
    async with Store(store_url) as store:
        token, maria_token = await rep_and_manager(store)
        jane = await store.contacts.create(
            validate_contact(
                {"first_name": "Jane", "last_name": "Doe", "phones": ["+15551234567"], "owner": "jsmith"},
                region="US",
            )
        )
        async with (
            AmiTestServer(secret="crm-secret", speed=0.01) as pbx,
            Instances(tmp_path, store_url, pbx_port=pbx.port, interfaces={AGENT: "jsmith"}) as cluster,
        ):
            await cluster.start("a")
            await cluster.wait_ready("a")
            assert await cluster.wait_holder(["a"]) == "a"  # the first one up takes the PBX
            await cluster.start("b")
            await cluster.start("c")
            for name in ("b", "c"):
                health = await cluster.wait_ready(name)
                assert health["instance"]["role"] == "standby", health
                assert health["connectors"]["asterisk"] == "standby" and health["database"]["state"] == "up"
            assert (await cluster.health("c"))["status"] == "ok"  # type: ignore[index]
            await _one_session(pbx)
            assert pbx.logins == 1

            b, c = cluster.running["b"], cluster.running["c"]
            async with (
                cluster.http.ws_connect(f"{c.url}/ws/agent?token={token}") as ws,
                cluster.http.ws_connect(f"{b.url}/ws/agent?board=1&token={maria_token}") as board,
            ):
                assert (await _next(ws, "hello"))["user"] == "jsmith"
                # the manager on b sees the rep whose tab is on c, and follows the call raised on a
                assert await _agent_state(board, "jsmith", {"ready"}) == "ready"
                call = asyncio.create_task(
                    pbx.inbound_call(
                        "+15551234567", agents=[AGENT], answer=AGENT, ring_seconds=2, talk_seconds=3
                    )
                )
                pop = await _next(ws, "screen_pop")
                assert pop["contact"]["id"] == jane.id and pop["contact"]["name"] == "Jane Doe"
                assert pop["call"]["from"] == "+15551234567" and pop["call"]["state"] == "ringing"
                answered = await _next(ws, "call_update")
                assert answered["call"]["state"] == "answered"
                linkedid = await call
                assert (await _next(ws, "call_update"))["call"]["state"] == "ended"
                assert await _agent_state(board, "jsmith", {"ringing", "talking"}) == "ringing"
                assert await _agent_state(board, "jsmith", {"talking"}) == "talking"
                assert await _agent_state(board, "jsmith", {"wrap_up"}) == "wrap_up"
                touch = await _call_touch(store, linkedid)
                assert touch.contact_id == jane.id and touch.status == "answered"

                # click-to-call on c (standby): the holder places it, under the id c answered with
                async with cluster.http.post(
                    f"{c.url}/api/v1/calls",
                    json={"contact_id": jane.id},
                    headers={"Authorization": f"Bearer {token}"},
                ) as r:
                    assert r.status == 202, await r.text()
                    placed = await r.json()
                originate = next(x for x in pbx.actions if x.name == "Originate")
                assert originate.get("ChannelId") == placed["id"] and originate.get("Channel") == "PJSIP/1001"
                outbound = await _call_touch(store, placed["id"])
                assert outbound.direction == "outbound" and outbound.contact_id == jane.id
                await _update(ws, placed["id"], "ended")  # its pop and updates reached the rep on c too

                # the holder dies: another instance takes the PBX over within seconds, pops go on
                await cluster.kill("a")
                holder = await cluster.wait_holder(["b", "c"], timeout=20)
                await _one_session(pbx)
                assert pbx.logins == 2
                other = ({"b", "c"} - {holder}).pop()
                assert await cluster.role(other) == "standby"

                call = asyncio.create_task(
                    pbx.inbound_call("+15551234567", agents=[AGENT], ring_seconds=2)  # nobody answers
                )
                pop = await _next(ws, "screen_pop")
                assert pop["contact"]["id"] == jane.id and pop["call"]["id"] not in (linkedid, placed["id"])
                missed_id = await call
                ended = await _next(ws, "call_update")
                assert ended["call"]["id"] == missed_id and ended["call"]["state"] in ("missed", "ended")
                missed = await _call_touch(store, missed_id)
                assert missed.status == "missed"
            rows = await store.db.fetchall("SELECT count(*) FROM touches WHERE kind = 'call'")
            assert rows[0][0] == 3  # one touch per call, across the take-over


async def test_a_gateway_webhook_lands_on_any_instance_and_a_message_made_on_one_reaches_a_rep_on_another(
    tmp_path: Path, store_url: str
) -> None:
    async with KannelStandIn() as kannel, Store(store_url) as store:  # kannel: the channel's sendsms
        rep_token, maria_token = await rep_and_manager(store)
        jane = await store.contacts.create(
            validate_contact(
                {"first_name": "Jane", "last_name": "Doe", "phones": ["+15551234567"], "owner": "jsmith"},
                region="US",
            )
        )
        channel = (
            "[sms.channels.main]\n"
            'type = "kannel"\n'
            f'sendsms_url = "{kannel.sendsms_url}"\n'
            'username = "tester"\npassword = "secret"\nsecret = "chan-secret"\nfrom = "12345"\n'
        )
        async with Instances(tmp_path, store_url, extra=channel) as cluster:
            a, b = await cluster.start("a"), await cluster.start("b")
            for name in ("a", "b"):
                health = await cluster.wait_ready(name)
                assert health["instance"]["role"] == "no_ami" and health["database"]["dialect"] == "postgres"
            rep_h = {"Authorization": f"Bearer {rep_token}"}
            async with cluster.http.ws_connect(f"{a.url}/ws/agent?token={rep_token}") as ws:
                await _next(ws, "hello")
                # Kannel's get-url goes to b; its retry of the same message lands on a: one touch
                query = {
                    "channel": "main",
                    "secret": "chan-secret",
                    "from": "+15551234567",
                    "to": "12345",
                    "text": "Is it ready?",
                    "id": "in-1",
                }
                for inst in (b, a):
                    async with cluster.http.get(f"{inst.url}/sms/kannel/incoming", params=query) as r:
                        assert r.status == 200, await r.text()
                    async with cluster.http.get(
                        f"{a.url}/api/v1/contacts/{jane.id}/touches", headers=rep_h
                    ) as r:
                        assert r.status == 200
                        items = (await r.json())["items"]
                    assert [(t["kind"], t["direction"], t["summary"]) for t in items] == [
                        ("sms", "inbound", "Is it ready?")
                    ]
                # a manager on b gives the rep a follow-up: the rep's tab on a is told at once
                async with cluster.http.post(
                    f"{b.url}/api/v1/followups",
                    headers={"Authorization": f"Bearer {maria_token}"},
                    json={
                        "contact_id": jane.id,
                        "due_at": "2099-01-05T15:00:00Z",
                        "reason": "Call Jane back about the car",
                        "assignee": "jsmith",
                    },
                ) as r:
                    assert r.status == 201, await r.text()
                    made = await r.json()
                told = await _next(ws, "followup.assigned")
                assert told["followup"]["id"] == made["id"] and told["by"] == "maria"
                assert (await _next(ws, "day_changed"))["reason"] == "followup.assigned"
