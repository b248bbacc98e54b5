"""Delivery never holds up the rest of the service's writes: its transactions are background ones,
which start only when no request, call or touch write is waiting for the writer."""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

from crm_link.contacts import ContactFields, validate_contact
from crm_link.crm_events import Outcome
from crm_link.db import WriteLock
from crm_link.store import Store
from switchboard.app import create_app
from switchboard.keys import STORE
from switchboard.sim.crm_standin import CrmStandIn
from switchboard.webhooks.ctx import CRM_WORKER
from switchboard.webhooks.worker import LAG_HIGH_S, next_limit
from tests.conftest import make_api
from tests.webhooks.conftest import all_delivered, hook, until


async def test_foreground_writers_go_before_every_waiting_background_one() -> None:
    lock = WriteLock()
    order: list[str] = []
    await lock.acquire(background=True)  # a delivery transaction is running

    async def writer(name: str, background: bool) -> None:
        async with lock.hold(background=background):
            order.append(name)

    tasks = []
    for name, bg in [("bg1", True), ("bg2", True), ("fg1", False), ("bg3", True), ("fg2", False)]:
        tasks.append(asyncio.create_task(writer(name, bg)))
        await asyncio.sleep(0)  # queued in this order
    doomed = asyncio.create_task(writer("fg-cancelled", False))
    await asyncio.sleep(0)
    doomed.cancel()
    lock.release()
    await asyncio.gather(*tasks)
    assert order == ["fg1", "fg2", "bg1", "bg2", "bg3"]
    assert lock.max_background_ahead == 0 and not lock.locked()
    assert lock.waiting() == (0, 0)


async def test_a_waiter_cancelled_as_it_is_handed_the_lock_passes_it_on() -> None:
    lock = WriteLock()
    await lock.acquire()
    first = asyncio.create_task(lock.acquire())
    second = asyncio.create_task(lock.acquire(background=True))
    await asyncio.sleep(0)
    lock.release()  # handed to `first`…
    first.cancel()  # …which is cancelled before it runs
    await asyncio.gather(first, return_exceptions=True)
    await second  # the lock went on to the next waiter
    assert lock.locked()
    lock.release()
    assert not lock.locked()


def test_delivery_halves_its_requests_while_the_loop_lags_and_grows_back_one_at_a_time() -> None:
    assert next_limit(32, LAG_HIGH_S * 3, 32) == 16
    assert next_limit(1, LAG_HIGH_S * 3, 32) == 1
    assert next_limit(16, LAG_HIGH_S / 10, 32) == 17
    assert next_limit(32, 0.0, 32) == 32
    assert next_limit(12, LAG_HIGH_S * 0.75, 32) == 12


async def test_requests_writes_wait_behind_no_delivery_transaction_while_a_backlog_drains(
    aiohttp_client: Any, settings: Any, crm: CrmStandIn
) -> None:
    hook(settings, crm, connections=16)
    client = await aiohttp_client(create_app(settings))
    store = client.server.app[STORE]
    mgr = await make_api(client, "maria", "manager")
    created = await (await mgr.post("/api/v1/contacts", json={"first_name": "Jane"})).json()
    await store.contacts.bulk_insert([ContactFields(first_name=f"B{i}") for i in range(3000)])
    lock = store.db.write_lock
    grants_before = lock.background_grants
    # a rep's notes (each a write transaction through HTTP) while the worker drains the backlog
    for i in range(40):
        resp = await mgr.post(
            f"/api/v1/contacts/{created['id']}/touches", json={"kind": "note", "summary": f"n{i}"}
        )
        assert resp.status == 201
    assert crm.arrivals, "the notes were written while deliveries were going out"
    await until(lambda: all_delivered(store, crm), timeout=120)
    assert lock.background_grants - grants_before > 20  # the worker did write all along
    # …but no delivery transaction ever started while a request's write was waiting
    assert lock.max_background_ahead == 0
    health = await (await client.get("/healthz")).json()
    assert 1 <= health["crm"]["subscribers"]["dms"]["in_flight_limit"] <= 16
    assert client.server.app[CRM_WORKER].max_lag_s >= 0


async def test_a_pop_read_never_waits_behind_the_outbox_backlog_reads(tmp_path: Path) -> None:
    """The delivery worker's backlog counts and probes read on the store's background reader: while
    that reader's thread is held by a long read, a screen-pop's read (the main reader) still answers,
    and the counts answer once the long read ends."""
    entered, release = threading.Event(), threading.Event()

    def hold() -> int:
        entered.set()
        release.wait(10)
        return 0

    async with Store(str(tmp_path / "store.db")) as store:
        await store.contacts.create(
            validate_contact({"first_name": "Jane", "phones": ["+15551234567"]}, region="US")
        )
        bg = await store.db._background_reader()
        await bg.create_function("hold", 0, hold)
        slow = asyncio.create_task(store.db.fetchone("SELECT hold()", background=True))
        await asyncio.to_thread(entered.wait, 10)
        counts = asyncio.create_task(store.crm_events.waiting(cap=10))
        try:
            async with asyncio.timeout(5):
                assert [c.first_name for c in await store.contacts.find_by_phone("+15551234567")] == ["Jane"]
            assert not slow.done() and not counts.done()  # still behind the long read
        finally:
            release.set()
        await slow
        assert (await counts)["unfanned"] == 1  # the contact's event


async def test_the_health_figures_stop_counting_at_their_cap(store: Store) -> None:
    """/healthz's outbox figures walk at most `cap` rows each: a figure at the cap means that many
    or more, one below it is exact, and they agree with the exact counts while under it."""
    for i in range(5):
        await store.contacts.create(
            validate_contact({"first_name": f"C{i}", "phones": [f"+1555123456{i}"]}, region="US")
        )
    events = store.crm_events
    assert (await events.waiting(cap=3))["unfanned"] == 3
    assert (await events.waiting(cap=10))["unfanned"] == 5 == (await events.counts())["unfanned"]
    await events.fan_out([("dms", lambda _t: True)])
    (first, *_rest) = await events.claim("dms", 2, owner="A", lease=timedelta(seconds=30))
    await events.settle([Outcome(first.id, ok=False, status=400, error="refused")], owner="A")
    exact = await events.counts()
    assert (exact["unfanned"], exact["backlog"], exact["dead"]) == (0, 4, 1)
    assert await events.waiting(cap=3) == {
        "unfanned": 0,
        "backlog": 3,
        "dead": 1,
        "oldest_waiting_at": exact["oldest_waiting_at"],
    }
    assert (await events.waiting(cap=5))["backlog"] == 4
    assert exact["oldest_waiting_at"] is not None
