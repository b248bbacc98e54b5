"""A run of a blast is claimed exactly once: never two runs for one due time, whoever races."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from campaigns.sms.blasts import BlastService, BlastSpec
from campaigns.sms.kannel_standin import KannelStandIn
from crm_link.contacts import validate_contact
from crm_link.store import Store
from switchboard.app import create_app
from switchboard.keys import SMS, STORE
from switchboard.settings import SmsChannelSettings
from tests.conftest import free_port, make_api
from tests.sms.helpers import VirtualClock, blast_service


async def _tagged(store: Store, n: int, tag: str = "service") -> None:
    async with store.db.transaction() as tx:
        for i in range(n):
            fields = {
                "first_name": f"P{i}",
                "phones": [f"+1212{5550000 + i:07d}"],
                "tags": [tag],
                "time_zone": "UTC",
            }
            await store.contacts.insert_in(tx, validate_contact(fields, region="US"))


async def test_a_blast_sent_now_reaches_each_recipient_once_while_the_scheduler_ticks_flat_out(
    aiohttp_server: Any, aiohttp_client: Any, settings: Any
) -> None:
    n = 20_000
    async with KannelStandIn(dlr_delay=3600) as kannel:
        port = free_port()
        settings.server.public_url = f"http://127.0.0.1:{port}"
        settings.sms.quiet_start = settings.sms.quiet_end = "00:00"
        settings.sms.channels["main"] = SmsChannelSettings(
            name="main",
            type="kannel",
            rate_per_second=1_000_000,
            options={
                "sendsms_url": kannel.sendsms_url,
                "username": "tester",
                "password": "secret",
                "secret": "s",
            },
        )
        server = await aiohttp_server(create_app(settings), port=port)
        client = await aiohttp_client(server)
        store = server.app[STORE]
        await _tagged(store, n)
        mkt = await make_api(client, "kim", "marketing")
        blasts: BlastService = server.app[SMS].blasts
        stop = asyncio.Event()
        ticks = 0

        async def scheduler_flat_out() -> None:
            nonlocal ticks
            while not stop.is_set():
                await blasts.run_due()
                ticks += 1
                await asyncio.sleep(0)

        hammer = asyncio.create_task(scheduler_flat_out())
        resp = await mkt.post(
            "/api/v1/sms/blasts",
            json={"name": "Recall", "text": "Hi {{ contact.first_name }}", "channel": "main",
                  "audience": {"tag": "service"}},
        )  # fmt: skip
        assert resp.status == 201, await resp.text()
        blast_id = (await resp.json())["id"]
        async with asyncio.timeout(240):
            while True:
                body = await (await mkt.get(f"/api/v1/sms/blasts/{blast_id}")).json()
                if body["state"] == "done":
                    break
                await asyncio.sleep(0.1)
        ticks_at_done = ticks
        while ticks < ticks_at_done + 50:  # and the scheduler goes on ticking after the blast is done
            await asyncio.sleep(0.01)
        stop.set()
        await hammer
        received = Counter(q["to"] for q in kannel.received)
        assert len(kannel.received) == n, (
            f"the gateway got {len(kannel.received)} messages for {n} recipients"
        )
        assert len(received) == n and max(received.values()) == 1
        assert body["counts"]["sent"] == n and (await store.sms.blast(blast_id))["runs"] == 1


async def _two_instances(path: Path, clock: VirtualClock) -> tuple[list[Store], list[BlastService]]:
    stores = [await Store(str(path), clock=clock.now).open() for _ in range(2)]
    services = [
        blast_service(s, clock, quiet_start="00:00", quiet_end="00:00", claim_lease=timedelta(minutes=5))
        for s in stores
    ]  # fmt: skip
    return stores, services


async def test_two_schedulers_racing_on_one_due_recurring_blast_make_one_run(tmp_path: Path) -> None:
    clock = VirtualClock(datetime(2026, 11, 23, 14, 0, tzinfo=UTC))
    (a, b), (sa, sb) = await _two_instances(tmp_path / "shared.db", clock)
    try:
        await _tagged(a, 300)
        spec = BlastSpec(name="Weekly", text="Hi {{ contact.first_name }}", channel="main",
                         audience={"tag": "service"}, cron="0 9 * * *", time_zone="America/Chicago")  # fmt: skip
        blast = await sa.create(spec, created_by=None)
        for day in range(3):  # three due times, each raced by both instances several times over
            clock.t = datetime.fromisoformat(blast["next_run_at"].replace("Z", "+00:00")) + timedelta(
                seconds=1
            )
            started = await asyncio.gather(*(s.run_due() for s in (sa, sb, sa, sb)))
            assert sum(len(x) for x in started) == 1, f"day {day}: {started}"
            blast = await a.sms.blast(blast["id"])
            assert blast["runs"] == day + 1
        rows = await a.db.fetchall(
            "SELECT run, count(*) AS n FROM sms_outbox WHERE blast_id = ? GROUP BY run", (blast["id"],)
        )
        assert {r["run"]: r["n"] for r in rows} == {1: 300, 2: 300, 3: 300}
    finally:
        for s in (a, b):
            await s.close()


async def test_a_run_claimed_by_an_instance_that_died_is_written_once_by_another(tmp_path: Path) -> None:
    clock = VirtualClock(datetime(2026, 11, 23, 14, 0, tzinfo=UTC))
    (a, b), (sa, sb) = await _two_instances(tmp_path / "shared.db", clock)
    try:
        await _tagged(a, 40)
        spec = BlastSpec(name="Later", text="Hi", channel="main", audience={"tag": "service"},
                         send_at=clock.t + timedelta(minutes=1))  # fmt: skip
        blast = await sa.create(spec, created_by=None)
        clock.advance(120)
        (due,) = await a.sms.due_blasts(clock.t)
        assert await a.sms.claim_run(due, next_run_at=None, lease=timedelta(minutes=5)) == 1
        # instance A dies here, before writing the run; B sees nothing to do until the claim expires
        assert await sb.run_due() == []
        assert await b.sms.finish_blasts() == []  # a claimed, unwritten run is not "done"
        clock.advance(5 * 60 + 1)
        assert await sb.run_due() == [blast["id"]]
        assert await sb.run_due() == [] and await sa.run_due() == []
        got = await a.db.fetchall("SELECT run, to_e164 FROM sms_outbox WHERE blast_id = ?", (blast["id"],))
        assert len(got) == 40 and {r["run"] for r in got} == {1}
    finally:
        for s in (a, b):
            await s.close()


OPS = st.lists(
    st.one_of(
        st.tuples(st.just("create_now"), st.integers(1, 8)),
        st.tuples(st.just("create_later"), st.integers(1, 90)),
        st.tuples(st.just("create_cron"), st.integers(0, 0)),
        st.tuples(st.just("tick"), st.integers(1, 3)),
        st.tuples(st.just("claim_and_die"), st.integers(0, 0)),
        st.tuples(st.just("advance"), st.integers(1, 600)),
        st.tuples(st.just("restart"), st.integers(0, 0)),
    ),
    max_size=25,
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS)
def test_create_tick_crash_and_restart_interleaved_never_send_a_recipient_twice_in_a_run(
    tmp_path: Path, ops: list[tuple[str, int]]
) -> None:
    asyncio.run(_interleave(tmp_path, ops))


async def _interleave(tmp_path: Path, ops: list[tuple[str, int]]) -> None:
    import uuid

    path = tmp_path / f"{uuid.uuid4().hex}.db"
    clock = VirtualClock(datetime(2026, 11, 23, 14, 0, tzinfo=UTC))
    stores, services = await _two_instances(path, clock)
    await _tagged(stores[0], 6)
    one_off: set[int] = set()
    try:
        for op, arg in ops:
            if op.startswith("create"):
                spec = BlastSpec(
                    name=op, text="Hi", channel="main", audience={"tag": "service"},
                    send_at=clock.t + timedelta(seconds=arg) if op == "create_later" else None,
                    cron="*/5 * * * *" if op == "create_cron" else None,
                )  # fmt: skip
                made = await services[0].create(spec, created_by=None)
                if op != "create_cron":
                    one_off.add(made["id"])
            elif op == "tick":
                await asyncio.gather(*(services[i % 2].run_due() for i in range(arg)))
            elif op == "claim_and_die":
                for blast in await stores[1].sms.due_blasts(clock.t):
                    await stores[1].sms.claim_run(blast, next_run_at=None, lease=timedelta(minutes=5))
            elif op == "advance":
                clock.advance(arg)
            elif op == "restart":
                for s in stores:
                    await s.close()
                stores, services = await _two_instances(path, clock)
        # afterwards the instances run on: every one-off blast is written exactly once, in full
        for _ in range(3):
            clock.advance(6 * 60)
            await asyncio.gather(*(s.run_due() for s in services))
        rows = await stores[0].db.fetchall("SELECT blast_id, run, to_e164 FROM sms_outbox")
        per_run = Counter((r["blast_id"], r["run"], r["to_e164"]) for r in rows)
        assert not per_run or max(per_run.values()) == 1
        for blast_id in one_off:
            sent = [r for r in rows if r["blast_id"] == blast_id]
            assert len(sent) == 6 and {r["run"] for r in sent} == {1}, (blast_id, len(sent))
        for blast in await stores[0].sms.blasts():
            assert blast["materialized_runs"] == blast["runs"]
    finally:
        for s in stores:
            await s.close()
