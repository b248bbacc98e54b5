"""Several instances deliver from one store: each delivery is leased to the instance sending it, a
contact's later events wait for it, and a dead instance's leases expire so another takes over.

Two delivery workers on two store connections race (no duplicates, per-contact order), and two
`switchboard serve` processes on one store file race while one is killed with SIGKILL: the receiver
gets every event, in order per contact; only the killed instance's in-flight events may come twice.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp

from crm_link.clock import ManualClock, system_clock
from crm_link.contacts import validate_contact
from crm_link.crm_events import Outcome
from crm_link.store import Store
from switchboard.settings import CrmSettings, Secret, WebhookSettings
from switchboard.sim.crm_standin import CrmStandIn
from switchboard.webhooks.worker import DeliveryWorker
from tests.conftest import REPO, free_port
from tests.webhooks.conftest import SECRET, until


async def _fill(store: Store, contacts: int, updates: int) -> set[str]:
    """`contacts` contacts, each changed `updates` times: (1 + updates) events per contact."""
    await store.contacts.bulk_insert(
        [
            validate_contact({"first_name": f"C{i}", "external_id": f"X{i}"}, region="US")
            for i in range(contacts)
        ]
    )
    ids = [e.contact_id for e in await store.crm_events.events_since(0, limit=100_000) if e.contact_id]
    assert len(ids) == contacts
    for round_ in range(updates):
        for cid in ids:
            await store.contacts.update(
                cid, validate_contact({"last_name": f"v{round_}"}, region="US", partial=True)
            )
    uids = {e.uid for e in await store.crm_events.events_since(0, limit=100_000)}
    assert len(uids) == contacts * (1 + updates)
    return uids


def assert_arrivals_in_order(crm: CrmStandIn) -> None:
    """Every arrival, repeats included, in per-contact order: a repeat may follow its own first copy
    but never comes after a later event of the same contact."""
    last: dict[Any, int] = {}
    for uid in crm.arrivals:
        e = crm.events[uid]
        key = e["contact_id"]
        assert e["sequence"] >= last.get(key, 0), (
            f"event {e['sequence']} of contact {key} arrived after {last[key]}"
        )
        last[key] = e["sequence"]


def _settings(crm: CrmStandIn, lease_s: float = 30) -> CrmSettings:
    hook = WebhookSettings(
        name="dms", url=crm.url + "/hooks/switchboard", secret=Secret(SECRET), connections=8
    )
    return CrmSettings(poll_seconds=0.02, lease_seconds=lease_s, webhooks=[hook])


async def test_two_workers_on_two_connections_deliver_each_event_once_in_order(
    tmp_path: Path, crm: CrmStandIn
) -> None:
    db = tmp_path / "shared.db"
    async with Store(str(db)) as store:
        uids = await _fill(store, contacts=40, updates=4)
    crm.delay_s = 0.005  # requests overlap, so the two workers interleave on every contact
    a, b = Store(str(db)), Store(str(db))
    await a.open()
    await b.open()
    workers = [
        DeliveryWorker(s, _settings(crm), clock=system_clock, instance=n) for s, n in ((a, "A"), (b, "B"))
    ]
    tasks = [asyncio.create_task(w.run()) for w in workers]
    try:
        await until(lambda: _at_least(crm, len(uids)), timeout=60)
        await until(lambda: _drained(a), timeout=30)
    finally:
        for w in workers:
            w.stop()
        await asyncio.gather(*tasks)
    delivered = (await a.crm_events.deliveries(state="delivered", limit=500)).items
    await a.close()
    await b.close()
    assert set(crm.events) == uids
    assert crm.duplicates == 0 and len(crm.arrivals) == len(uids) and crm.refused == []
    assert_arrivals_in_order(crm)
    by = Counter(d.lease_owner for d in delivered)
    assert set(by) == {"A", "B"}, by  # both instances delivered
    assert sum(by.values()) == len(uids)


async def test_a_lease_held_blocks_the_contact_until_it_expires(tmp_path: Path, crm: CrmStandIn) -> None:
    """Store level, on a manual clock: B takes neither A's delivery nor that contact's next one
    while A's lease holds; once it expires B sends it again and A's late answer is not recorded."""
    clock = ManualClock(system_clock())
    db = tmp_path / "lease.db"
    async with Store(str(db), clock=clock) as store:
        await _fill(store, contacts=2, updates=1)  # contact 1: events 1, 3; contact 2: events 2, 4
        await store.crm_events.fan_out([("dms", lambda _t: True)])
        lease = timedelta(seconds=30)
        events = store.crm_events
        got_a = await events.claim("dms", 1, owner="A", lease=lease)
        assert [d.event.contact_id for d in got_a] == [1]
        got_b = await events.claim("dms", 10, owner="B", lease=lease)
        assert [d.event.contact_id for d in got_b] == [2]  # not contact 1's second event
        await events.settle([Outcome(got_b[0].id, ok=True, status=204, error=None)], owner="B")
        (next_b,) = await events.claim("dms", 10, owner="B", lease=lease)
        assert next_b.event.contact_id == 2  # contact 2 moves on; contact 1 still waits for A
        await events.settle([Outcome(next_b.id, ok=True, status=204, error=None)], owner="B")
        assert await events.claim("dms", 10, owner="B", lease=lease) == []
        clock.advance(seconds=20)
        assert await events.renew_leases("A", lease) == 1
        clock.advance(seconds=20)  # 40 s after the claim, 20 s after the renewal: still A's
        assert await events.expire_leases() == 0
        clock.advance(seconds=11)  # A has died and stopped renewing
        assert await events.expire_leases() == 1
        again = await events.claim("dms", 10, owner="B", lease=lease)
        assert [(d.id, d.lease_owner, d.attempts) for d in again] == [(got_a[0].id, "B", 2)]
        # A comes back from its stall with an answer: too late, the delivery is B's now
        assert await events.settle([Outcome(got_a[0].id, ok=True, status=204, error=None)], owner="A") == 0
        assert (await events.delivery(got_a[0].id)).state == "sending"
        assert await events.settle([Outcome(got_a[0].id, ok=True, status=204, error=None)], owner="B") == 1
        after = await events.delivery(got_a[0].id)
        assert after.state == "delivered" and after.lease_owner == "B"


async def _drained(store: Store) -> bool:
    counts = await store.crm_events.counts()
    return counts["backlog"] == 0 and counts["unfanned"] == 0


# two processes ------------------------------------------------------------------------------------


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")} | {
        "PYTHONPATH": str(REPO)
    }


async def _serve(config: Path, cwd: Path, port: int) -> Any:
    env = _env() | {"SWITCHBOARD_SERVER_PORT": str(port)}
    with (cwd / f"serve-{port}.log").open("wb") as log:  # the child keeps its own copy of the fd
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "switchboard", "serve", "--config", str(config),
            cwd=cwd, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=log,
        )  # fmt: skip


async def _instance(port: int) -> str | None:
    try:
        async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/healthz") as r:
            return str((await r.json())["crm"]["instance"])
    except (aiohttp.ClientError, OSError, KeyError):
        return None


async def test_two_serve_processes_one_killed_deliver_everything_in_order(
    tmp_path: Path, crm: CrmStandIn
) -> None:
    db = tmp_path / "svc.db"
    config = tmp_path / "switchboard.toml"
    config.write_text(
        f'[store]\nurl = "sqlite:///{db}"\n'
        "[crm]\nretry_first_seconds = 0.05\nretry_max_seconds = 0.5\npoll_seconds = 0.05\nlease_seconds = 5\n"
        f'[[crm.webhooks]]\nname = "dms"\nurl = "{crm.url}/hooks/switchboard"\nsecret = "{SECRET}"\n'
        'events = ["contact.*"]\nconnections = 4\n'
    )
    async with Store(str(db)) as store:
        uids = await _fill(store, contacts=100, updates=3)
    crm.delay_s = 0.02  # a slow CRM: the kill lands while requests are in flight
    port_a, port_b = free_port(), free_port()
    # B starts once A is up: two first starts at the same instant race on seeding the shipped
    # cadences ("a cadence named 'After-sale' exists"), which is not what this test is about
    a = await _serve(config, tmp_path, port_a)
    b = None
    try:
        id_a = await until(lambda: _instance(port_a), timeout=60)
        b = await _serve(config, tmp_path, port_b)
        id_b = await until(lambda: _instance(port_b), timeout=60)
        await until(lambda: _at_least(crm, 60), timeout=60)
        a.send_signal(signal.SIGKILL)
        await a.wait()
        async with Store(str(db)) as store:
            held = [d for d in (await store.crm_events.deliveries(state="sending", limit=500)).items]
        in_flight_at_kill = {d.event.uid for d in held if d.lease_owner == id_a}
        assert len(crm.events) < len(uids), "the kill came too late to test anything"
        await until(lambda: _at_least(crm, len(uids)), timeout=90)
        async with Store(str(db)) as store:
            await until(lambda: _drained(store), timeout=30)
            delivered = (await store.crm_events.deliveries(state="delivered", limit=500)).items
            counts = await store.crm_events.counts()
    finally:
        for p in (a, b):
            if p is not None and p.returncode is None:
                p.send_signal(signal.SIGTERM)
                await p.wait()
        for log in sorted(tmp_path.glob("serve-*.log")):  # shown when the test fails
            print(log.name, log.read_text(errors="replace")[-4000:])
    assert set(crm.events) == uids and counts["dead"] == 0 and crm.refused == []
    # at least once only for what the killed instance had in flight; everything else exactly once
    assert set(crm.duplicate_ids) <= in_flight_at_kill, (crm.duplicate_ids, in_flight_at_kill)
    assert len(crm.arrivals) == len(uids) + len(crm.duplicate_ids)
    assert_arrivals_in_order(crm)
    by = Counter(d.lease_owner for d in delivered)
    assert by[id_a] > 0 and by[id_b] > 0 and sum(by.values()) == len(uids)


async def _at_least(crm: CrmStandIn, n: int) -> bool:
    return len(crm.events) >= n
