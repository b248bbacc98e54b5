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

from crm_link.contacts import validate_contact
from crm_link.store import Store
from cti.ami.server import AmiTestServer
from tests.conftest import PASSWORD
from tests.instances import Instances

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
        rep = await store.users.add("jsmith", role="rep", password=PASSWORD, extension="1001")
        token = await store.users.create_token(rep.id, "test")
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
            cluster.start("a")
            await cluster.wait_ready("a")
            assert await cluster.wait_holder(["a"]) == "a"  # the first one up takes the PBX
            cluster.start("b")
            cluster.start("c")
            for name in ("b", "c"):
                health = await cluster.wait_ready(name)
                assert health["instance"]["role"] == "standby", health
                assert health["connectors"]["asterisk"] == "standby" and health["database"]["state"] == "up"
            assert (await cluster.health("c"))["status"] == "ok"  # type: ignore[index]
            await _one_session(pbx)
            assert pbx.logins == 1

            c = cluster.running["c"]
            async with cluster.http.ws_connect(f"{c.url}/ws/agent?token={token}") as ws:
                assert (await _next(ws, "hello"))["user"] == "jsmith"
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
                touch = await _call_touch(store, linkedid)
                assert touch.contact_id == jane.id and touch.status == "answered"

                # the holder dies: another instance takes the PBX over within seconds, pops go on
                cluster.kill("a")
                holder = await cluster.wait_holder(["b", "c"], timeout=20)
                await _one_session(pbx)
                assert pbx.logins == 2
                other = ({"b", "c"} - {holder}).pop()
                assert await cluster.role(other) == "standby"

                call = asyncio.create_task(
                    pbx.inbound_call("+15551234567", agents=[AGENT], ring_seconds=2)  # nobody answers
                )
                pop = await _next(ws, "screen_pop")
                assert pop["contact"]["id"] == jane.id and pop["call"]["id"] != linkedid
                missed_id = await call
                ended = await _next(ws, "call_update")
                assert ended["call"]["id"] == missed_id and ended["call"]["state"] in ("missed", "ended")
                missed = await _call_touch(store, missed_id)
                assert missed.status == "missed"
            rows = await store.db.fetchall("SELECT count(*) FROM touches WHERE kind = 'call'")
            assert rows[0][0] == 2  # one touch per call, across the take-over
