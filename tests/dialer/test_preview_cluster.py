"""Preview dialing from two instances sharing one store: one agent asking both for their next call
at the same moment is leased one entry, and both instances hand out that same entry.

On SQLite the two instances are two apps on one file; with SWITCHBOARD_TEST_STORE=postgres, two
apps on one PostgreSQL database (each with its own connections and write lock)."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

from crm_link.store import Store
from tests.conftest import Api
from tests.dialer.conftest import FixedClock, Office, add_customers


async def _agent_leases(store: Store, user_id: int) -> list[int]:
    rows = await store.db.fetchall(
        "SELECT id FROM call_list_entries WHERE state = 'in_progress' AND lease_owner = ? ORDER BY id",
        (f"agent:{user_id}",),
    )
    return [r[0] for r in rows]


async def test_one_agent_asking_two_instances_at_once_is_leased_one_entry(
    office: Office, settings: Any, clock: FixedClock, aiohttp_server: Any, aiohttp_client: Any
) -> None:
    from switchboard.app import create_app

    store, manager, rep = office.store, office.manager, office.jsmith
    clock.advance(hours=3)  # 10:30 in New York
    ids = await add_customers(store, [f"+1212736{5000 + i}" for i in range(12)])
    for name, part in (("first", ids[:6]), ("second", ids[6:])):
        resp = await manager.post("/api/v1/call-lists", {"name": name, "contact_ids": part, "start": True})
        assert resp.status == 201, await resp.text()
    other = copy.deepcopy(settings)
    other.asterisk.enabled = False
    other.server.instance_id = "second-instance"
    server_b = await aiohttp_server(create_app(other, clock=clock))
    rep_b = Api(await aiohttp_client(server_b), rep.token, rep.user)

    handed: list[int] = []
    for _ in range(8):
        got = await asyncio.gather(
            *(api.post("/api/v1/agent/next-call", {}) for api in (rep, rep_b, rep, rep_b))
        )
        bodies = [await r.json() for r in got]
        assert all(r.status == 200 for r in got), bodies
        entry_ids = {b["entry"]["id"] for b in bodies}
        assert len(entry_ids) == 1, entry_ids  # every request got the one entry the agent holds
        assert await _agent_leases(store, rep.user.id) == sorted(entry_ids)
        (entry_id,) = entry_ids
        handed.append(entry_id)
        resp = await rep_b.post(f"/api/v1/agent/entries/{entry_id}/skip", {"reason": "wrong number"})
        assert resp.status == 200, await resp.text()
    assert len(set(handed)) == 8
    counts = await store.db.fetchall("SELECT state, count(*) FROM call_list_entries GROUP BY state")
    assert dict((r[0], r[1]) for r in counts) == {"skipped": 8, "pending": 4}


async def test_moving_to_another_list_gives_back_the_entry_held_in_the_first(
    office: Office, clock: FixedClock
) -> None:
    store, manager, rep = office.store, office.manager, office.jsmith
    clock.advance(hours=3)
    first_ids = await add_customers(store, ["+12127365001", "+12127365002"])
    lists = []
    for name, part in (("first", first_ids[:1]), ("second", first_ids[1:])):
        resp = await manager.post("/api/v1/call-lists", {"name": name, "contact_ids": part, "start": True})
        lists.append((await resp.json())["id"])
    held = await (await rep.post("/api/v1/agent/next-call", {"list_id": lists[0]})).json()
    moved = await (await rep.post("/api/v1/agent/next-call", {"list_id": lists[1]})).json()
    assert moved["entry"]["list_id"] == lists[1]
    assert await _agent_leases(store, rep.user.id) == [moved["entry"]["id"]]
    back = await store.call_lists.entry(held["entry"]["id"])
    assert (back.state, back.lease_owner, back.next_at.isoformat()[:16]) == (
        "pending",
        None,
        held["entry"]["next_at"][:16],
    )
