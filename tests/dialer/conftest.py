"""A Switchboard with the dialer on the AMI test PBX, agents, customers across zones, a fixed clock."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from crm_link.clock import ManualClock
from crm_link.contacts import validate_contact
from cti.ami.server import AmiTestServer
from switchboard.app import create_app
from switchboard.keys import ASTERISK, DIALER, STORE

FixedClock = ManualClock


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(datetime(2026, 11, 23, 12, 30, tzinfo=UTC))  # 07:30 in New York: nobody is called


@pytest.fixture
async def dial_app(aiohttp_server: Any, settings: Any, pbx: AmiTestServer, clock: FixedClock) -> Any:
    settings.asterisk.enabled = True
    settings.asterisk.port = pbx.port
    settings.asterisk.secret.__init__("crm-secret")
    settings.dialer.tick_seconds = 0.05
    settings.dialer.calls_per_second = 1000
    settings.dialer.wrap_up_seconds = 0
    settings.dialer.lease_seconds = 60
    app = create_app(settings, clock=clock)
    server = await aiohttp_server(app)
    await server.app[ASTERISK].client.wait_connected(5)
    return server


async def add_customers(store: Any, numbers: list[str], owner: str | None = None) -> list[int]:
    ids = []
    for i, number in enumerate(numbers):
        fields = {"first_name": f"Customer{i}", "last_name": "Test", "phones": [number]}
        if owner:
            fields["owner"] = owner
        ids.append((await store.contacts.create(validate_contact(fields, region="US"))).id)
    return ids


async def until(cond: Callable[[], Any], timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        while not await cond():
            await asyncio.sleep(0.02)


async def settle(app: Any, quiet: float = 0.3) -> None:
    """Wait until the dialer has nothing in flight and stays so for `quiet` seconds."""
    dialer = app[DIALER]
    store = app[STORE]
    dialer.wake()
    async with asyncio.timeout(30):
        calm_since = None
        while True:
            busy = bool(dialer.in_flight) or bool(await store.call_lists.open_attempts())
            now = asyncio.get_running_loop().time()
            if busy:
                calm_since = None
            elif calm_since is None:
                calm_since = now
            elif now - calm_since >= quiet:
                return
            await asyncio.sleep(0.02)


@dataclass
class Office:
    """The dealership in these tests: a manager and two reps with desk phones 1001 and 1002."""

    app: Any
    client: Any
    store: Any
    manager: Any
    jsmith: Any
    agarcia: Any

    @property
    def dialer(self) -> Any:
        return self.app[DIALER]


@pytest.fixture
async def office(dial_app: Any, aiohttp_client: Any) -> Office:
    from tests.conftest import make_api

    client = await aiohttp_client(dial_app)
    manager = await make_api(client, "maria", "manager")
    jsmith = await make_api(client, "jsmith", "rep", extension="1001")
    agarcia = await make_api(client, "agarcia", "rep", extension="1002")
    await dial_app.app[ASTERISK].directory.reload()
    return Office(dial_app.app, client, dial_app.app[STORE], manager, jsmith, agarcia)


def another_dialer(app: Any, like: Any, clock: FixedClock) -> Any:
    """A second dialer task on the same store and phone system (a restart, or a second instance)."""
    from campaigns.dialer.service import Dialer
    from switchboard.keys import HUB

    return Dialer(
        app[STORE],
        app[HUB],
        like.backend,
        hours=like.hours,
        pop_builder=like.pop_builder,
        clock=clock,
        calls_per_second=1000,
        wrap_up=timedelta(0),
        lease=timedelta(seconds=60),
        tick_seconds=0.05,
    )
