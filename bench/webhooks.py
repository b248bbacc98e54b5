"""CRM webhooks: events delivered per second to a loopback receiver at 1, 8 and 32 connections, and
what a draining backlog adds to the store write a call makes (a touch).

    python bench/webhooks.py [--events 20000] [--connections 1,8,32] [--backlog 20000]

Each run: a fresh store with N contacts (N contact.created events, written by the triggers), the
delivery worker (signing every body) sending them to the CRM stand-in (which verifies each signature
and deduplicates by event id) until the outbox is empty. Then a touch is recorded 300 times at
~100/s with the outbox idle and again while a backlog of --backlog events drains at 32 connections:
the p50/p99 of `touches.record` in each case.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from _common import describe_us, pct, report

from crm_link.clock import system_clock
from crm_link.contacts import ContactFields
from crm_link.store import Store
from crm_link.touches import TouchInput
from switchboard.settings import CrmSettings, Secret, WebhookSettings
from switchboard.sim.crm_standin import CrmStandIn
from switchboard.webhooks.worker import DeliveryWorker

SECRET = "bench-secret-0123456789"


async def _store(path: Path, n: int) -> Store:
    store = await Store(str(path)).open()
    await store.contacts.bulk_insert(
        [ContactFields(first_name=f"C{i}", external_id=f"X{i}") for i in range(n)]
    )
    return store


async def _drained(store: Store) -> bool:
    c = await store.crm_events.counts()
    return c["backlog"] == 0 and c["unfanned"] == 0


async def deliver(n: int, connections: int, tmp: Path) -> float:
    crm = await CrmStandIn(secret=SECRET).start()
    store = await _store(tmp / f"d{connections}.db", n)
    hook = WebhookSettings(
        name="dms", url=crm.url + "/hooks/switchboard", secret=Secret(SECRET), connections=connections
    )
    worker = DeliveryWorker(store, CrmSettings(poll_seconds=0.05, webhooks=[hook]), clock=system_clock)
    began = time.perf_counter()
    task = asyncio.create_task(worker.run())
    while len(crm.events) < n:  # noqa: ASYNC110 (polling the receiver, as a user would)
        await asyncio.sleep(0.05)
    elapsed = time.perf_counter() - began
    worker.stop()
    await task
    assert len(crm.events) == n and crm.refused == []
    await store.close()
    await crm.stop()
    return n / elapsed


async def touch_latency(store: Store, tag: str, count: int = 300) -> list[float]:
    samples = []
    for i in range(count):
        t0 = time.perf_counter()
        await store.touches.record(
            TouchInput(source_key=f"{tag}:{i}", kind="call", direction="inbound", contact_id=1 + i,
                       started_at=datetime.now(UTC), status="answered", ended_at=datetime.now(UTC))
        )  # fmt: skip
        samples.append(time.perf_counter() - t0)
        await asyncio.sleep(0.01)
    return samples


async def pop_cost(backlog: int, tmp: Path) -> list[str]:
    crm = await CrmStandIn(secret=SECRET).start()
    store = await _store(tmp / "p.db", 1000)
    await store.touches.start_batching()
    hook = WebhookSettings(
        name="dms", url=crm.url + "/hooks/switchboard", secret=Secret(SECRET), connections=32
    )
    worker = DeliveryWorker(store, CrmSettings(poll_seconds=0.05, webhooks=[hook]), clock=system_clock)
    task = asyncio.create_task(worker.run())
    while not await _drained(store):  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    idle = await touch_latency(store, "idle")
    await store.contacts.bulk_insert([ContactFields(first_name=f"B{i}") for i in range(backlog)])
    busy = await touch_latency(store, "busy")
    left = (await store.crm_events.counts())["backlog"]
    worker.stop()
    await task
    await store.close()
    await crm.stop()
    return [
        describe_us("touch write, outbox idle", idle),
        describe_us(f"touch write, {backlog} events draining", busy, still_queued_after=left),
        f"added p99: {(pct(busy, 99) - pct(idle, 99)) * 1e3:.1f} ms",
    ]


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--events", type=int, default=20_000)
    p.add_argument("--connections", default="1,8,32")
    p.add_argument("--backlog", type=int, default=20_000)
    args = p.parse_args()
    lines = []
    with tempfile.TemporaryDirectory() as d:
        for c in (int(x) for x in args.connections.split(",")):
            rate = await deliver(args.events, c, Path(d))
            lines.append(f"webhooks events={args.events} connections={c} delivered_per_s={rate:.0f}")
            print(lines[-1], flush=True)
        lines += await pop_cost(args.backlog, Path(d))
    report(lines)


if __name__ == "__main__":
    asyncio.run(main())
