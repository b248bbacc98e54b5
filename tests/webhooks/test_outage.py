"""The CRM answers 500 for a minute, then recovers: everything arrives once, in order per contact.

The minute passes on the app's injected ManualClock: each time the worker has nothing due (no
request in flight, every contact's next retry in the future) the clock jumps to the earliest retry.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from crm_link.clock import ManualClock
from crm_link.contacts import validate_contact
from crm_link.store import Store
from switchboard.app import create_app
from switchboard.keys import STORE
from switchboard.sim.crm_standin import CrmStandIn
from tests.conftest import make_api
from tests.webhooks.conftest import SECRET, all_delivered, assert_in_order_per_contact, hook, until
from tests.webhooks.test_delivery import _notes
from tests.webhooks.test_leases import assert_arrivals_in_order

START = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
async def crm_on_clock(clock: ManualClock) -> AsyncIterator[CrmStandIn]:
    """The stand-in checks the signatures' replay window against the same manual clock."""
    standin = await CrmStandIn(secret=SECRET, now=lambda: clock().timestamp()).start()
    yield standin
    await standin.stop()


async def _nothing_due(store: Store, clock: ManualClock) -> datetime | None:
    """The earliest retry time once the worker is idle: nothing in flight, nothing due now."""
    counts = await store.crm_events.counts()
    if counts["unfanned"] or counts["subscribers"].get("dms", {}).get("sending", 0):
        return None
    due = await store.crm_events.next_retry_at("dms")
    return due if due is not None and due > clock() else None


async def test_a_crm_answering_500_for_a_minute_gets_everything_once_in_order(
    aiohttp_client: Any, settings: Any, crm_on_clock: CrmStandIn, clock: ManualClock
) -> None:
    crm = crm_on_clock
    hook(settings, crm)
    settings.crm.retry_first_seconds = 2
    settings.crm.retry_max_seconds = 30  # attempts at +0, 2, 6, 14, 30, 60 s: six in the minute
    client = await aiohttp_client(create_app(settings, clock=clock))
    store = client.server.app[STORE]
    mgr = await make_api(client, "maria", "manager")
    crm.fail_status = 500
    # the five contacts in one transaction: every head is fanned out and tried together at +0 (one
    # created after the first 500 came back would wait for the failing CRM's next retry time)
    await store.contacts.bulk_insert(
        [validate_contact({"first_name": f"C{i}", "external_id": f"X{i}"}, region="US") for i in range(5)]
    )
    ids = [r[0] for r in await store.db.fetchall("SELECT id FROM contacts ORDER BY id")]
    await _notes(mgr, ids, 3)
    uids = {e.uid for e in await store.crm_events.events_since(0, limit=1000)}
    assert len(uids) == 5 * 4

    jumps = 0
    while (due := await until(lambda: _nothing_due(store, clock))) <= START + timedelta(minutes=1):
        clock.set(due)
        jumps += 1
    # a minute of 500s: only each contact's first event was tried (its later ones wait behind it),
    # again and again with back-off; nothing is dead
    assert crm.events == {} and jumps >= 5
    queued = (await store.crm_events.deliveries(state="queued", limit=100)).items
    assert len(queued) == len(uids)
    heads = [d for d in queued if d.attempts > 0]
    assert sorted(d.event.contact_id for d in heads) == sorted(ids)
    assert all(d.event.type == "contact.created" and d.attempts == 6 for d in heads), [
        (d.attempts, d.next_attempt_at, d.event.type) for d in heads
    ]
    assert crm.requests == sum(d.attempts for d in heads)
    health = await (await client.get("/healthz")).json()
    assert health["status"] == "ok" and health["crm"]["subscribers"]["dms"]["state"] == "failing"

    crm.fail_status = None  # the CRM is back: the next retry gets through
    clock.set(due)
    await until(lambda: all_delivered(store, crm))
    assert set(crm.events) == uids
    assert crm.duplicates == 0 and len(crm.arrivals) == len(uids) and crm.refused == []
    assert_in_order_per_contact(crm)
    assert_arrivals_in_order(crm)
    for cid in ids:
        got = [crm.events[u] for u in crm.order if crm.events[u]["contact_id"] == cid]
        assert [e["type"] for e in got] == ["contact.created"] + ["note.logged"] * 3
        assert [e["data"]["summary"] for e in got[1:]] == ["n0", "n1", "n2"]
    assert (await store.crm_events.counts())["dead"] == 0
