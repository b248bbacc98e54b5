"""Owner routing of call lists: a customer's own salesperson gets their entry first."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from campaigns.dialer.routing import others_due_by
from cti.ami.server import AmiTestServer
from tests.dialer.conftest import FixedClock, Office, add_customers, until


def test_others_due_by_is_the_owners_head_start() -> None:
    now = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)
    assert others_due_by(now, timedelta(0)) is None
    assert others_due_by(now, timedelta(minutes=30)) == now - timedelta(minutes=30)


async def test_next_customer_gives_each_rep_their_own_customers_first(
    office: Office, clock: FixedClock
) -> None:
    store, manager, jsmith, agarcia = office.store, office.manager, office.jsmith, office.agarcia
    clock.advance(hours=3)  # 10:30 New York
    # by id: agarcia's, unowned, jsmith's, agarcia's, jsmith's
    (g1,) = await add_customers(store, ["+12127365001"], owner="agarcia")
    (u,) = await add_customers(store, ["+12127365002"])
    (j1,) = await add_customers(store, ["+12127365003"], owner="jsmith")
    (g2,) = await add_customers(store, ["+12127365004"], owner="agarcia")
    (j2,) = await add_customers(store, ["+12127365005"], owner="jsmith")
    resp = await manager.post(
        "/api/v1/call-lists",
        {"name": "Mixed", "mode": "preview", "contact_ids": [g1, u, j1, g2, j2], "start": True},
    )
    assert resp.status == 201, await resp.text()

    async def next_of(rep: Any) -> int | None:
        body = await (await rep.post("/api/v1/agent/next-call", {})).json()
        if body["entry"] is None:
            return None
        # take it off the queue so the following "Next customer" shows what comes next
        resp = await rep.post(f"/api/v1/agent/entries/{body['entry']['id']}/skip", {"reason": "seen"})
        assert resp.status == 200, await resp.text()
        return int(body["entry"]["contact_id"])

    assert await next_of(jsmith) == j1
    assert await next_of(agarcia) == g1
    assert await next_of(jsmith) == j2
    assert await next_of(agarcia) == g2
    # own customers done: then the unowned one (preview holds nobody back)
    assert await next_of(jsmith) == u
    assert await next_of(agarcia) is None


def _originates(pbx: AmiTestServer) -> list[tuple[str | None, str | None]]:
    return [(a.get("Channel"), a.get("Exten")) for a in pbx.actions if a.name == "Originate"]


async def test_progressive_rings_the_owner_for_their_customer(
    office: Office, pbx: AmiTestServer, clock: FixedClock
) -> None:
    store, manager = office.store, office.manager
    clock.advance(hours=3)
    (g,) = await add_customers(store, ["+12127365001"], owner="agarcia")
    (j,) = await add_customers(store, ["+12127365002"], owner="jsmith")
    resp = await manager.post(
        "/api/v1/call-lists",
        {"name": "Owners", "mode": "progressive", "contact_ids": [g, j], "start": True},
    )
    assert resp.status == 201, await resp.text()
    list_id = (await resp.json())["id"]
    for rep in (office.jsmith, office.agarcia):
        resp = await rep.post("/api/v1/agent/ready", {"list_id": list_id})
        assert resp.status == 200, await resp.text()

    async def both_dialed() -> bool:
        return len(_originates(pbx)) >= 2

    await until(both_dialed)
    assert sorted(_originates(pbx)) == [("PJSIP/1001", "+12127365002"), ("PJSIP/1002", "+12127365001")]


async def test_progressive_gives_another_rep_an_owned_customer_only_after_the_wait(
    office: Office, pbx: AmiTestServer, clock: FixedClock
) -> None:
    store, manager = office.store, office.manager
    assert office.dialer.owner_wait == timedelta(minutes=30)  # [dialer] owner_wait_minutes default
    clock.advance(hours=3)
    (j,) = await add_customers(store, ["+12127365002"], owner="jsmith")
    resp = await manager.post(
        "/api/v1/call-lists",
        {"name": "Owners", "mode": "progressive", "contact_ids": [j], "start": True},
    )
    list_id = (await resp.json())["id"]
    resp = await office.agarcia.post("/api/v1/agent/ready", {"list_id": list_id})
    assert resp.status == 200, await resp.text()
    # jsmith is not ready; agarcia is free, but the customer waits for jsmith
    clock.advance(minutes=29)
    for _ in range(3):
        await asyncio.sleep(0)
        assert await office.dialer.tick() == 0
    assert _originates(pbx) == []
    (entry,) = await store.call_lists.entries(list_id)
    assert entry.state == "pending"

    clock.advance(minutes=2)  # 31 minutes due: now anyone may take it

    async def dialed() -> bool:
        return bool(_originates(pbx))

    await until(dialed)
    assert _originates(pbx) == [("PJSIP/1002", "+12127365002")]


async def test_a_free_rep_with_nothing_of_their_own_does_not_hold_up_the_owner(
    office: Office, pbx: AmiTestServer, clock: FixedClock
) -> None:
    """jsmith is ready first but every customer left belongs to agarcia (and is not yet due for
    others): agarcia, ready after him, is still rung for her customer in the same pass."""
    store, manager = office.store, office.manager
    clock.advance(hours=3)
    (g,) = await add_customers(store, ["+12127365001"], owner="agarcia")
    resp = await manager.post(
        "/api/v1/call-lists", {"name": "Hers", "mode": "progressive", "contact_ids": [g], "start": True}
    )
    assert resp.status == 201, await resp.text()
    list_id = (await resp.json())["id"]
    for rep in (office.jsmith, office.agarcia):  # jsmith first: the dialer tries him first
        resp = await rep.post("/api/v1/agent/ready", {"list_id": list_id})
        assert resp.status == 200, await resp.text()

    async def dialed() -> bool:
        return bool(_originates(pbx))

    await until(dialed)
    assert _originates(pbx) == [("PJSIP/1002", "+12127365001")]
