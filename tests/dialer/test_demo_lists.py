"""The demo's call lists: saved segments, a preview list to work, a progressive list that dials the
simulated PBX, whose customers answer, are busy or do not answer."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from switchboard.app import create_app, open_store
from switchboard.demo import demo_contexts, demo_outcome, demo_routes, seed
from switchboard.keys import DIALER, STORE


async def test_demo_lists_run_on_the_simulated_pbx(
    aiohttp_server: Any, settings: Any, tmp_path: Path
) -> None:
    settings.calling_hours.start, settings.calling_hours.end = "00:00", "23:59"
    settings.dialer.tick_seconds = 0.1
    settings.dialer.calls_per_second = 50
    settings.dialer.wrap_up_seconds = 0
    settings.server.public_url = "http://127.0.0.1:1"
    async with open_store(settings) as store:
        assert await seed(store, contacts=300)
    app = create_app(settings, contexts=demo_contexts(settings, tmp_path, call_every=3600, pbx_speed=0.1))
    demo_routes(app)
    await aiohttp_server(app)
    store = app[STORE]
    dialer = app[DIALER]
    lists = {cl.name: cl for cl in await store.call_lists.all()}
    assert set(lists) == {"After-sale: 4 days", "Lost service customers"}
    preview, progressive = lists["After-sale: 4 days"], lists["Lost service customers"]
    assert preview.state == "running" and progressive.state == "draft"
    assert len(await store.segments.list()) == 6
    stats = await store.call_lists.stats(progressive.id)
    assert stats["counts"]["pending"] >= 5, stats

    jsmith = await store.users.by_username("jsmith")
    assert jsmith is not None
    item = await dialer.next_call(jsmith)
    assert item is not None and item["list"]["name"] == "After-sale: 4 days"
    assert item["pop"]["contact"]["id"] == item["entry"]["contact_id"]

    await store.call_lists.set_state(progressive.id, "running", store.clock())
    agarcia = await store.users.by_username("agarcia")
    assert agarcia is not None
    await dialer.set_ready(agarcia, progressive.id)

    async def three_done() -> bool:
        done = [a for a in await store.call_lists.attempts_of(list_id=progressive.id) if a.state != "dialing"]
        return len(done) >= 3

    async with asyncio.timeout(60):
        while not await three_done():
            await asyncio.sleep(0.1)
    for a in await store.call_lists.attempts_of(list_id=progressive.id):
        if a.state != "dialing":
            assert a.state == {"answer": "answered"}.get(demo_outcome(a.number), demo_outcome(a.number))
            assert a.touch_id is not None
