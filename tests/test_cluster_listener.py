"""The cluster's LISTEN connection: it reconnects when PostgreSQL comes back, and what other instances
sent while it was away is still delivered (read back by id); the AMI role lock moves when its
holder's session ends."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from crm_link.clock import ManualClock
from crm_link.cluster import ClusterEvents, Listener, Notice, RoleLock
from crm_link.errors import StoreUnavailable
from crm_link.store import Store
from cti.ami.server import AmiTestServer
from switchboard.cluster import ClusterRelay
from switchboard.hub import Hub
from tests import pg_cluster
from tests.instances import Instances

needs_pg = pytest.mark.skipif(
    os.environ.get("SWITCHBOARD_TEST_STORE") != "postgres",
    reason="LISTEN/NOTIFY and advisory locks are PostgreSQL's (SWITCHBOARD_TEST_STORE=postgres)",
)


async def _until(ok: Any, seconds: float = 20.0) -> None:
    async with asyncio.timeout(seconds):
        while not ok():
            await asyncio.sleep(0.02)


async def _append(events: ClusterEvents, origin: str, bodies: list[str], seconds: float = 20.0) -> Notice:
    """Append, retrying while the store's pool finds its way back to the server."""
    async with asyncio.timeout(seconds):
        while True:
            try:
                return await events.append(origin, bodies)
            except StoreUnavailable:
                await asyncio.sleep(0.1)


def test_a_notice_names_its_origin_and_id_range_and_refuses_other_payloads() -> None:
    n = Notice("a1b2c3", 7, 9)
    assert Notice.parse(n.encode()) == n
    assert Notice.parse("host:42:1:3") == Notice("host:42", 1, 3)  # an origin may hold colons
    for bad in ("", "x", "a:1", "a:b:c", ":1:2", "a:3:2"):
        assert Notice.parse(bad) is None, bad


async def test_the_listener_reconnects_when_postgresql_comes_back(own_pg_cluster: tuple[Path, str]) -> None:
    base, url = own_pg_cluster
    async with Store(url, pool_size=2) as store:  # migrates: the cluster_events table
        events = ClusterEvents(store.db)
        got: asyncio.Queue[str] = asyncio.Queue()
        listener = Listener(url, got.put, check_every=0.5, backoff_min=0.1, backoff_max=0.5)
        task = asyncio.create_task(listener.run())
        try:
            await listener.wait_up(10)
            first = await events.append("other", ['{"k":"none"}'])
            assert Notice.parse(await asyncio.wait_for(got.get(), 10)) == first

            pg_cluster.stop(base, mode="fast")
            await _until(lambda: listener.state == "down")
            assert listener.error
            await asyncio.to_thread(pg_cluster.restart, base)
            await listener.wait_up(20)
            assert listener.state == "up" and listener.connects == 2

            second = await _append(events, "other", ['{"k":"none"}', '{"k":"none"}'])
            assert second.last == second.first + 1 and second.first > first.last
            assert Notice.parse(await asyncio.wait_for(got.get(), 10)) == second
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


@needs_pg
async def test_a_relay_catches_up_what_was_sent_while_its_listener_was_away(store_url: str) -> None:
    clock = ManualClock(datetime(2026, 11, 23, 15, 0, tzinfo=UTC))
    async with Store(store_url, clock=clock) as store:
        events = ClusterEvents(store.db)
        hub = Hub()
        relay = ClusterRelay(hub, events, "here", clock)
        listener = relay.listener = Listener(
            store_url, relay.on_notify, on_connect=relay.on_connect, backoff_min=0.1
        )
        task = asyncio.create_task(listener.run())
        try:
            await listener.wait_up(10)
            pop = {"type": "screen_pop", "call": {"id": "c1", "state": "ringing"}}
            await events.append("there", [_json({"k": "live", "u": 7, "c": "c1", "m": pop})])
            await _until(lambda: relay.applied == 1)
            assert hub.subscribe(7, web.WebSocketResponse()) == [pop]
            await events.append("here", ['{"k":"live_clear","c":"c1"}'])  # its own: not applied again

            # the listener's session is cut; what is sent meanwhile arrives once it is back
            pid = listener.backend_pid
            async with store.db.pg.connection() as c:  # type: ignore[union-attr]
                await c.raw.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))
            await events.append("there", ['{"k":"live_update","c":"c1","f":{"state":"answered"}}'])
            await _until(lambda: listener.connects == 2 and listener.state == "up")
            await _until(lambda: relay.applied == 2)
            assert listener.backend_pid != pid
            assert hub.subscribe(7, web.WebSocketResponse())[0]["call"]["state"] == "answered"
            await events.append("there", ['{"k":"live_clear","c":"c1"}'])
            await _until(lambda: relay.applied == 3)
            assert hub.subscribe(7, web.WebSocketResponse()) == []
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


@needs_pg
async def test_one_holder_of_a_role_and_the_other_takes_over_when_its_session_ends(store_url: str) -> None:
    a = RoleLock(store_url, "ami:test", retry=0.1, check_every=0.1)
    b = RoleLock(store_url, "ami:test", retry=0.1, check_every=0.1)
    holding: list[str] = []

    def work(name: str) -> Any:
        async def held() -> None:
            holding.append(name)
            try:
                await asyncio.Event().wait()
            finally:
                holding.remove(name)

        return held

    ta = asyncio.create_task(a.run(work("a")))
    await a.wait_held(10)
    tb = asyncio.create_task(b.run(work("b")))
    try:
        await asyncio.sleep(0.5)  # b retries a few times meanwhile, and is refused each time
        assert holding == ["a"] and b.role == "standby" and b.acquired == 0
        ta.cancel()  # a stops: its session ends, the lock is free
        await asyncio.gather(ta, return_exceptions=True)
        await b.wait_held(10)
        assert holding == ["b"] and a.role == "standby" and b.role == "holder"
    finally:
        for t in (ta, tb):
            t.cancel()
        await asyncio.gather(ta, tb, return_exceptions=True)
    assert holding == []


def _json(value: Any) -> str:
    import json

    return json.dumps(value, separators=(",", ":"))


@needs_pg
async def test_a_new_holder_starts_only_after_the_former_one_noticed_its_session_ended(
    store_url: str,
) -> None:
    """The former holder's session is cut (as a database restart does); it notices at its next check,
    up to a second later, while the other instance can take the lock at once: the grace keeps the
    two from working at the same time."""
    import psycopg

    a = RoleLock(store_url, "ami:test", retry=5.0, check_every=1.0)  # a does not come back first
    b = RoleLock(store_url, "ami:test", retry=0.1, check_every=1.0)
    assert b.grace > b.check_every + b.check_timeout
    events: list[str] = []

    def work(name: str) -> Any:
        async def held() -> None:
            events.append(f"{name} starts")
            try:
                await asyncio.Event().wait()
            finally:
                events.append(f"{name} stops")

        return held

    ta = asyncio.create_task(a.run(work("a")))
    await a.wait_held(10)
    tb = asyncio.create_task(b.run(work("b")))
    try:
        await _until(lambda: events == ["a starts"])
        async with await psycopg.AsyncConnection.connect(store_url, autocommit=True) as admin:
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_locks"
                " WHERE locktype = 'advisory' AND granted AND pid <> pg_backend_pid()"
            )
        await b.wait_held(20)
        await _until(lambda: "b starts" in events)
        assert events == ["a starts", "a stops", "b starts"], events
        assert a.role == "standby" and b.acquired == 1
    finally:
        for t in (ta, tb):
            t.cancel()
        await asyncio.gather(ta, tb, return_exceptions=True)


async def test_one_ami_connection_across_database_restarts(
    own_pg_cluster: tuple[Path, str], tmp_path: Path
) -> None:
    """Two serve processes on a PostgreSQL server that restarts twice: whichever holds the PBX's lock
    afterwards, the PBX never sees two logged-in sessions at once (sampled every 10 ms)."""
    base, url = own_pg_cluster
    async with Store(url, pool_size=2):
        pass  # migrated once, before the instances start
    most = 0
    async with (
        AmiTestServer(secret="crm-secret", speed=0.01) as pbx,
        Instances(tmp_path, url, pbx_port=pbx.port, standby_retry_seconds=0.1) as cluster,
    ):

        def sessions() -> int:
            return len([s for s in pbx.sessions if s.logged_in])

        async def sample() -> None:
            nonlocal most
            while True:
                most = max(most, sessions())
                await asyncio.sleep(0.01)

        sampler = asyncio.create_task(sample())
        try:
            for name in ("a", "b"):
                await cluster.start(name)
                await cluster.wait_ready(name)
            await cluster.wait_holder(["a", "b"])
            await _until(lambda: sessions() == 1)
            for _ in range(2):
                pg_cluster.stop(base, mode="immediate")
                await asyncio.to_thread(pg_cluster.restart, base)
                await cluster.wait_holder(["a", "b"], timeout=60)
                await _until(lambda: sessions() == 1, 30)
                await asyncio.sleep(3)  # a second holder, had there been one, would be connected by now
        finally:
            sampler.cancel()
            await asyncio.gather(sampler, return_exceptions=True)
        assert pbx.logins >= 2, "the restarts did not cost the holder its lock: nothing was tested"
    assert most == 1, f"{most} AMI sessions at once"
