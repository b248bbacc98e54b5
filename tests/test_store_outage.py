"""PostgreSQL going away under a running instance: requests answer 503 naming the store, /healthz
says the database is down, and once PostgreSQL is back the same instance serves again (its pool
reconnects) with every write it acknowledged still there.

The test runs its own throwaway cluster (tests/pg_cluster.py) so it can stop and start it with
pg_ctl; it needs Debian's `postgresql` server binaries and the `postgres` extra, which `.ci/run`
installs.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from switchboard.app import create_app
from switchboard.settings import Settings
from tests import pg_cluster
from tests.conftest import make_api


def _create_database(admin_url: str) -> str:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute("CREATE DATABASE switchboard")
    return admin_url.rsplit("/", 1)[0] + "/switchboard"


def _contact_ids(url: str) -> set[int]:
    import psycopg

    with psycopg.connect(url) as conn:
        return {r[0] for r in conn.execute("SELECT id FROM contacts").fetchall()}


async def _until(what: str, ok: Any, seconds: float = 30.0) -> None:
    async with asyncio.timeout(seconds):
        while not await ok():
            await asyncio.sleep(0.05)


async def test_a_lost_database_answers_503_and_the_instance_recovers_losing_nothing_acknowledged(
    aiohttp_client: Any, settings: Settings, own_pg_cluster: tuple[Path, str]
) -> None:
    base, admin_url = own_pg_cluster
    url = await asyncio.to_thread(_create_database, admin_url)
    settings.store.url = url
    client = await aiohttp_client(create_app(settings))
    api = await make_api(client, "maria", "manager")

    acknowledged: list[int] = []
    refused: list[dict[str, Any]] = []
    done = asyncio.Event()

    async def writer() -> None:
        i = 0
        while not done.is_set():
            i += 1
            resp = await api.post(
                "/api/v1/contacts",
                json={"first_name": f"W{i}", "last_name": "Outage", "phones": [f"+1212555{i % 10000:04d}"]},
            )
            body = await resp.json()
            if resp.status == 201:
                acknowledged.append(body["id"])
            else:
                assert resp.status == 503, body  # never a 500 while the database is away
                refused.append(body)
            await asyncio.sleep(0.005)  # pacing: a customer a few ms, not a flood

    async def have(n: int) -> bool:
        return len(acknowledged) >= n

    task = asyncio.create_task(writer())
    try:
        await _until("writes before the outage", lambda: have(5))
        first = acknowledged[0]

        await asyncio.to_thread(pg_cluster.stop, base, "fast")

        resp = await api.get(f"/api/v1/contacts/{first}")
        assert resp.status == 503
        assert resp.headers["Retry-After"]
        err = (await resp.json())["error"]
        assert err["code"] == "store_unavailable"
        assert url.split("@", 1)[1] in err["message"]  # names the store (host:port/db)

        health = await (await client.get("/healthz")).json()
        assert health["status"] == "degraded"
        assert health["connectors"]["store"] == "down"
        assert health["database"]["state"] == "down" and health["database"]["dialect"] == "postgres"

        async def writer_refused() -> bool:
            return bool(refused)

        await _until("a write refused while down", writer_refused)
        assert refused[0]["error"]["code"] == "store_unavailable"
        before_restart = len(acknowledged)

        await asyncio.to_thread(pg_cluster.restart, base)

        async def serves_again() -> bool:
            return (await api.get(f"/api/v1/contacts/{first}")).status == 200

        await _until("the instance serves again", serves_again)
        await _until("writes after the outage", lambda: have(before_restart + 5))
    finally:
        done.set()
        await task

    async def listening() -> bool:  # the instance's LISTEN connection came back too
        health = await (await client.get("/healthz")).json()
        return bool(health["connectors"]["cluster_events"] == "up")

    await _until("the event listener reconnects", listening)
    health = await (await client.get("/healthz")).json()
    assert health["connectors"]["store"] == "up" and health["database"]["state"] == "up"
    assert "error" not in health["database"] and health["instance"]["events"]["listener_connects"] == 2
    stored = await asyncio.to_thread(_contact_ids, url)
    lost = [i for i in acknowledged if i not in stored]
    assert not lost, f"acknowledged (201) but not in the store: {lost}"
    assert len(set(acknowledged)) == len(acknowledged)
