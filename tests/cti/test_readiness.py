"""`/readyz` tells a load balancer "down" from "degraded but serving"; `/healthz` stays 200."""

from __future__ import annotations

import asyncio
from typing import Any

from cti.ami.server import AmiTestServer
from switchboard.keys import ASTERISK
from tests.cti.conftest import start_pbx_app


async def test_readyz_is_503_while_the_pbx_is_down_and_healthz_says_degraded(
    aiohttp_server: Any, aiohttp_client: Any, settings: Any, pbx: AmiTestServer
) -> None:
    server = await start_pbx_app(aiohttp_server, settings, pbx, {})
    client = await aiohttp_client(server)
    ready = await client.get("/readyz")
    assert ready.status == 200 and (await ready.json())["status"] == "ready"
    health = await (await client.get("/healthz")).json()
    # one instance (SQLite), or the only one on this PostgreSQL database: it holds the AMI connection
    assert health["instance"]["role"] == "ami_holder" and health["instance"]["ami"]["taken"] == 1
    assert health["database"]["state"] == "up"
    await pbx.close()  # the PBX goes away and stays away
    ami = server.app[ASTERISK].client
    async with asyncio.timeout(10):
        while ami.state == "up":
            await asyncio.sleep(0.02)
    ready = await client.get("/readyz")
    body = await ready.json()
    assert ready.status == 503 and body["status"] == "not_ready" and body["down"] == ["asterisk"]
    health = await client.get("/healthz")
    assert health.status == 200 and (await health.json())["status"] == "degraded"
