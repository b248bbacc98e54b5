"""A call's times are Asterisk's own (the events' Timestamp), replayed from a real transcript."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest

from cti.ami.server import AmiTestServer
from switchboard.keys import ASTERISK, STORE
from tests.conftest import PASSWORD
from tests.cti.conftest import AMI, start_pbx_app


@pytest.fixture
async def pbx_app(aiohttp_server: Any, settings: Any, pbx: AmiTestServer) -> Any:
    return await start_pbx_app(aiohttp_server, settings, pbx, {"Local/agent1@agents/n": "agent1"})


async def test_touch_starts_when_the_call_arrived_and_ends_at_the_last_hangup(
    pbx_app: Any, pbx: AmiTestServer
) -> None:
    store = pbx_app.app[STORE]
    await store.users.add("agent1", role="rep", password=PASSWORD)
    await pbx_app.app[ASTERISK].directory.reload()
    await pbx.replay((AMI / "i-inbound-answered.ami").read_bytes())
    async with asyncio.timeout(10):
        while (t := await store.touches.by_source_key("asterisk:1795346245.0")) is None or t.ended_at is None:
            await asyncio.sleep(0.02)
    # Newchannel of the caller's channel (before the 2 s in the queue), and its last Hangup
    assert t.started_at == datetime.fromtimestamp(1795346245.760865, UTC)
    assert t.ended_at == datetime.fromtimestamp(1795346254.790269, UTC)
    assert t.status == "answered" and t.username == "agent1"
