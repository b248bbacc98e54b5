"""`[store] pool_size` on PostgreSQL: an instance never holds more connections than it says, and
uses them all when that many requests want the database at once."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from switchboard.app import open_store
from switchboard.settings import load_settings


async def _backends(admin_url: str, db: str) -> int:
    import psycopg

    async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as conn:
        cur = await conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (db,))
        row = await cur.fetchone()
        return int(row[0]) if row else 0


@pytest.mark.parametrize("size", [1, 3])
async def test_an_instance_holds_at_most_pool_size_connections_and_uses_them_all(
    pg_server: Any, size: int
) -> None:
    url = pg_server.create()
    db = url.rsplit("/", 1)[1]
    settings = load_settings(
        None, env={"SWITCHBOARD_STORE_URL": url, "SWITCHBOARD_STORE_POOL_SIZE": str(size)}
    )
    assert settings.store.pool_size == size
    store = open_store(settings)  # as the app opens it
    await store.open()
    try:
        peak = 0
        done = asyncio.Event()

        async def watch() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, await _backends(pg_server.admin_url, db))
                await asyncio.sleep(0.02)

        watcher = asyncio.create_task(watch())
        # three times as many requests as connections, each holding its connection a while
        results = await asyncio.gather(
            *(store.db.fetchall("SELECT pg_sleep(0.4), ?", (i,)) for i in range(3 * size))
        )
        done.set()
        await watcher
        assert sorted(r[0][1] for r in results) == list(range(3 * size))  # every request answered
        assert peak == size, f"{peak} connections to the database with pool_size = {size}"
        health = store.db.health()
        assert health["pool"]["max"] == size
        assert health["pool"]["size"] <= size
    finally:
        await store.close()
        pg_server.drop(url)
