"""Progressive dialing end to end: the AMI test PBX answers, is busy or does not answer."""

from __future__ import annotations

import asyncio
import warnings
from datetime import timedelta
from typing import Any

from campaigns.dialer.hours import CallingHours
from campaigns.dialer.service import Dialer
from crm_link.call_lists import ListSpec
from cti.ami.server import AmiTestServer
from switchboard.keys import ASTERISK, ASTERISK_CALLS, DIALER, STORE
from tests.dialer.conftest import FixedClock, Office, add_customers, another_dialer, settle, until

NEW_YORK = [f"+1212736{5000 + i}" for i in range(8)]
CHICAGO = [f"+1312736{5000 + i}" for i in range(6)]
LOS_ANGELES = [f"+1213736{5000 + i}" for i in range(6)]
ZONE = {
    **dict.fromkeys(NEW_YORK, "America/New_York"),
    **dict.fromkeys(CHICAGO, "America/Chicago"),
    **dict.fromkeys(LOS_ANGELES, "America/Los_Angeles"),
}
BUSY = {NEW_YORK[1], CHICAGO[2]}
NO_ANSWER = {NEW_YORK[3], LOS_ANGELES[4]}
HOURS = CallingHours.of("08:00", "21:00")


async def test_two_agents_twenty_customers_run_to_completion(
    office: Office, dial_app: Any, pbx: AmiTestServer, clock: FixedClock
) -> None:
    store = office.store
    dialer: Dialer = dial_app.app[DIALER]
    manager, jsmith, agarcia = office.manager, office.jsmith, office.agarcia
    numbers = NEW_YORK + CHICAGO + LOS_ANGELES
    ids = await add_customers(store, numbers)
    for n in BUSY:
        pbx.outcomes[n] = "busy"
    for n in NO_ANSWER:
        pbx.outcomes[n] = "noanswer"
    # how many calls are ever in flight at once
    peak = 0

    async def watch() -> None:
        nonlocal peak
        while True:
            peak = max(peak, len(dialer.in_flight))
            await asyncio.sleep(0.002)

    watcher = asyncio.create_task(watch())

    resp = await manager.post(
        "/api/v1/call-lists",
        {
            "name": "After-sale 4 days",
            "mode": "progressive",
            "contact_ids": ids,
            "max_attempts": 2,
            "retry_minutes": 30,
            "busy_retry_minutes": 90,
            "agents": ["jsmith", "agarcia"],
            "start": True,
        },
    )
    assert resp.status == 201, await resp.text()
    created = await resp.json()
    list_id = created["id"]
    assert created["build"] == {"added": 20} and created["state"] == "running"
    for agent in (jsmith, agarcia):
        resp = await agent.post("/api/v1/agent/ready", {"list_id": list_id})
        assert resp.status == 200, await resp.text()

    # 07:30 in New York, earlier further west: nobody is called, whatever the queue says
    await asyncio.sleep(0.5)
    await settle(dial_app.app)
    assert not [a for a in pbx.actions if a.name == "Originate"]

    # walk the day in 20-minute steps until the list is done
    for _ in range(40):
        clock.advance(minutes=20)
        await settle(dial_app.app)
        body = await (await manager.get(f"/api/v1/call-lists/{list_id}")).json()
        if body["state"] == "done":
            break
    watcher.cancel()
    assert body["state"] == "done", body

    attempts = await store.call_lists.attempts_of(list_id=list_id)
    assert all(a.state in ("answered", "busy", "noanswer") for a in attempts), [a.state for a in attempts]
    by_number: dict[str, list[Any]] = {}
    for a in attempts:
        by_number.setdefault(a.number, []).append(a)
        # never outside the customer's calling hours, by the dialer's clock
        assert HOURS.is_open(ZONE[a.number], a.started_at), (a.number, a.started_at)
    originated = [a.headers["Exten"] for a in pbx.actions if a.name == "Originate"]
    for number in numbers:
        mine = by_number[number]
        expected = 2 if number in BUSY | NO_ANSWER else 1
        assert len(mine) == expected, (number, [a.state for a in mine])
        assert originated.count(number) == expected  # no entry dialed twice
        if expected == 2:
            # retried after the configured delay, never overlapping the first attempt
            assert mine[1].started_at - mine[0].ended_at >= timedelta(minutes=30)
    # every attempt is one call touch on the customer's history
    for a in attempts:
        touch = await store.touches.get(a.touch_id)
        assert touch.source_key == f"asterisk:{a.call_id}" and touch.contact_id == a.contact_id
        # an outbound call not answered says how: busy or no answer (never "missed")
        assert touch.direction == "outbound" and touch.status == {
            "answered": "answered",
            "busy": "busy",
            "noanswer": "no answer",
        }.get(a.state, a.state)
    calls = await store.db.fetchall("SELECT count(*) FROM touches WHERE kind = 'call'")
    assert calls[0][0] == len(attempts) == 24
    # never more calls at once than free agents
    assert 1 <= peak <= 2
    # the results the list page shows
    assert body["counts"] == {"pending": 0, "in_progress": 0, "done": 20, "skipped": 0}
    assert body["attempts"]["total"] == 24 and body["reached"] == 16
    assert body["connect_rate"] == round(16 / 24, 3)
    assert body["results"] == {"reached": 16, "busy": 2, "no answer": 2}
    per_agent = {a["username"]: a for a in body["agents"]}
    assert set(per_agent) == {"jsmith", "agarcia"}
    assert sum(a["attempts"] for a in per_agent.values()) == 24


async def test_a_crashed_dialer_never_dials_twice_and_loses_nothing(
    office: Office, pbx: AmiTestServer, clock: FixedClock
) -> None:
    app, store = office.app, office.store
    clock.advance(hours=3)  # 10:30 in New York
    numbers = NEW_YORK
    ids = await add_customers(store, numbers)
    pbx.talk_seconds = 40.0  # 0.4 s at the test PBX's speed: the crash comes mid-call
    first: Dialer = office.dialer
    cl, _ = await store.call_lists.create(
        ListSpec(name="crash", mode="progressive", max_attempts=2, retry_minutes=30),
        contact_ids=ids,
        now=clock(),
    )
    await store.call_lists.set_state(cl.id, "running", clock())
    jsmith = await store.users.by_username("jsmith")
    agarcia = await store.users.by_username("agarcia")
    await first.set_ready(jsmith, cl.id)
    await first.set_ready(agarcia, cl.id)

    async def two_in_flight() -> bool:
        return len([f for f in first.in_flight.values() if f.call_id]) == 2

    await until(two_in_flight)
    in_doubt = {f.attempt_id for f in first.in_flight.values()}
    # the crash: the dialer's tasks die where they stand; nothing is written on the way out
    await first.close()
    app[ASTERISK_CALLS].on_ended = None

    # a new dialer starts after the old one's leases ran out, while those calls are still live
    clock.advance(seconds=61)
    second = another_dialer(app, first, clock)
    app[ASTERISK_CALLS].on_ended = second.call_ended
    with warnings.catch_warnings():
        # a started app's state is not meant to change (aiohttp warns); here the dialer restarts
        warnings.simplefilter("ignore", DeprecationWarning)
        app[DIALER] = second
    await second.start()
    try:
        for a in in_doubt:
            assert (await store.call_lists.attempt(a)).state in ("unknown", "answered")
        await second.set_ready(jsmith, cl.id)
        await second.set_ready(agarcia, cl.id)
        pbx.talk_seconds = 3.0
        for _ in range(10):
            await settle(app)
            if (await store.call_lists.get(cl.id)).state == "done":
                break
            clock.advance(minutes=31)
        assert (await store.call_lists.get(cl.id)).state == "done"
    finally:
        await second.close()
    # the calls in doubt ended after the restart and settled their attempts: nobody was called twice
    for a in in_doubt:
        assert (await store.call_lists.attempt(a)).state == "answered"
    originated = [a.headers["Exten"] for a in pbx.actions if a.name == "Originate"]
    assert sorted(originated) == sorted(numbers)
    stats = await store.call_lists.stats(cl.id)
    assert stats["counts"]["done"] == len(numbers) and stats["reached"] == len(numbers)


async def test_two_dialers_on_one_list_never_dial_an_entry_twice(
    office: Office, pbx: AmiTestServer, clock: FixedClock
) -> None:
    """Two dialer tasks (as two instances would run) share a list; each has its own agent."""
    app, store = office.app, office.store
    clock.advance(hours=3)
    numbers = NEW_YORK + [f"+1212736{5100 + i}" for i in range(12)]
    ids = await add_customers(store, numbers)
    first: Dialer = office.dialer
    second = another_dialer(app, first, clock)
    both = first.call_ended

    async def ended(ev: Any, touch_id: Any) -> None:  # the call service tells both instances
        await both(ev, touch_id)
        await second.call_ended(ev, touch_id)

    app[ASTERISK_CALLS].on_ended = ended
    await second.start()
    try:
        cl, _ = await store.call_lists.create(
            ListSpec(name="one list", mode="progressive", max_attempts=1), contact_ids=ids, now=clock()
        )
        await store.call_lists.set_state(cl.id, "running", clock())
        await first.set_ready(await store.users.by_username("jsmith"), cl.id)
        await second.set_ready(await store.users.by_username("agarcia"), cl.id)

        async def finished() -> bool:
            return (await store.call_lists.get(cl.id)).state == "done"

        await until(finished, timeout=30)
    finally:
        await second.close()
    originated = [a.headers["Exten"] for a in pbx.actions if a.name == "Originate"]
    assert sorted(originated) == sorted(numbers)  # each exactly once
    by_agent = {a.agent_id for a in await store.call_lists.attempts_of(list_id=cl.id)}
    assert len(by_agent) == 2  # both instances dialed


async def test_an_agent_on_an_inbound_call_is_not_dialed_for(
    aiohttp_server: Any, settings: Any, pbx: AmiTestServer, clock: FixedClock
) -> None:
    from switchboard.app import create_app

    settings.asterisk.enabled = True
    settings.asterisk.port = pbx.port
    settings.asterisk.secret.__init__("crm-secret")
    settings.interfaces = {"Local/agent1@agents/n": "jsmith"}
    settings.dialer.tick_seconds = 0.05
    settings.dialer.calls_per_second = 1000
    settings.dialer.wrap_up_seconds = 0
    app = create_app(settings, clock=clock)
    await aiohttp_server(app)
    await app[ASTERISK].client.wait_connected(5)
    store = app[STORE]
    jsmith = await store.users.add("jsmith", role="rep", password="x" * 12, extension="1001")
    await app[ASTERISK].directory.reload()
    clock.advance(hours=3)
    ids = await add_customers(store, NEW_YORK[:2])
    dialer: Dialer = app[DIALER]
    inbound = asyncio.create_task(
        pbx.inbound_call(
            "+13125550199", agents=["Local/agent1@agents/n"], answer="Local/agent1@agents/n", talk_seconds=60
        )
    )

    async def on_the_phone() -> bool:
        return jsmith.id in app[ASTERISK_CALLS].agents_on_calls()

    await until(on_the_phone)
    cl, _ = await store.call_lists.create(
        ListSpec(name="x", mode="progressive"), contact_ids=ids, now=clock()
    )
    await store.call_lists.set_state(cl.id, "running", clock())
    await dialer.set_ready(jsmith, cl.id)
    await asyncio.sleep(0.4)  # several ticks: the agent is talking to a customer who called in
    assert not [a for a in pbx.actions if a.name == "Originate"]
    await inbound  # the inbound call ends; now the list is dialed

    async def dialed() -> bool:
        return bool([a for a in pbx.actions if a.name == "Originate"])

    await until(dialed)


async def test_trunk_concurrency_and_the_lists_date_window(
    office: Office, pbx: AmiTestServer, clock: FixedClock
) -> None:
    store, manager = office.store, office.manager
    clock.advance(hours=3)
    dialer: Dialer = office.dialer
    dialer.max_concurrent = 1  # a one-channel trunk: two free agents, one call at a time
    ids = await add_customers(store, NEW_YORK[:6])
    today = clock().date()
    resp = await manager.post(
        "/api/v1/call-lists",
        {
            "name": "window",
            "mode": "progressive",
            "contact_ids": ids[:3],
            "window": {"start": str(today + timedelta(days=1))},  # starts tomorrow
            "start": True,
        },
    )
    future_list = (await resp.json())["id"]
    resp = await manager.post(
        "/api/v1/call-lists", {"name": "now", "mode": "progressive", "contact_ids": ids[3:], "start": True}
    )
    list_id = (await resp.json())["id"]
    peak = 0

    async def watch() -> None:
        nonlocal peak
        while True:
            peak = max(peak, len(dialer.in_flight))
            await asyncio.sleep(0.002)

    watcher = asyncio.create_task(watch())
    for name in ("jsmith", "agarcia"):
        await dialer.set_ready(await store.users.by_username(name), list_id)

    async def done() -> bool:
        return (await store.call_lists.get(list_id)).state == "done"

    await until(done, timeout=30)
    for name in ("jsmith", "agarcia"):
        await dialer.set_ready(await store.users.by_username(name), future_list)
    await asyncio.sleep(0.3)
    watcher.cancel()
    assert peak == 1
    originated = [a.headers["Exten"] for a in pbx.actions if a.name == "Originate"]
    assert sorted(originated) == sorted(NEW_YORK[3:6])  # nothing from the list whose window opens tomorrow
    assert (await store.call_lists.stats(future_list))["counts"]["pending"] == 3


async def test_a_customer_put_on_do_not_call_after_the_list_was_built_is_not_dialed(
    office: Office, pbx: AmiTestServer, clock: FixedClock
) -> None:
    store = office.store
    clock.advance(hours=3)
    ids = await add_customers(store, NEW_YORK[:3])
    cl, _ = await store.call_lists.create(
        ListSpec(name="x", mode="progressive"), contact_ids=ids, now=clock()
    )
    await store.contacts.set_flags(ids[1], do_not_call=True)  # e.g. from the contact page
    await store.call_lists.set_state(cl.id, "running", clock())
    dialer: Dialer = office.dialer
    await dialer.set_ready(await store.users.by_username("jsmith"), cl.id)

    async def done() -> bool:
        return (await store.call_lists.get(cl.id)).state == "done"

    await until(done)
    originated = [a.headers["Exten"] for a in pbx.actions if a.name == "Originate"]
    assert sorted(originated) == sorted([NEW_YORK[0], NEW_YORK[2]])
    assert (await store.call_lists.stats(cl.id))["skipped"] == {"do not call": 1}


async def test_a_call_closed_in_the_store_by_another_instance_stops_counting_here(
    office: Office, dial_app: Any, pbx: AmiTestServer, clock: FixedClock
) -> None:
    """A call whose end reached another instance (a webhook sent there) is closed in the store: the
    dialer that placed it forgets it at its next tick instead of holding the agent for ever."""
    store = office.store
    dialer: Dialer = dial_app.app[DIALER]
    pbx.talk_seconds = 3000.0  # about 30 s: the call is still up here when the store closes it
    ids = await add_customers(store, NEW_YORK[:1])
    clock.advance(hours=2)  # 09:30 in New York
    resp = await office.manager.post(
        "/api/v1/call-lists",
        {"name": "x", "mode": "progressive", "contact_ids": ids, "agents": ["jsmith"], "start": True},
    )
    list_id = (await resp.json())["id"]
    assert (await office.jsmith.post("/api/v1/agent/ready", {"list_id": list_id})).status == 200

    async def placed() -> bool:
        return any(f.call_id is not None for f in dialer.in_flight.values())

    await until(placed)
    (attempt_id,) = list(dialer.in_flight)
    await store.call_lists.finish_attempt(attempt_id, "answered", now=clock())

    async def forgotten() -> bool:
        return attempt_id not in dialer.in_flight

    await until(forgotten, timeout=5)
    assert (await store.call_lists.attempt(attempt_id)).state == "answered"
