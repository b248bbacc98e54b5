"""Outbox claims shared by several instances of one store: disjoint full batches, an owner and a
lease on every claimed row, and in-doubt recovery that takes only rows whose lease ran out.

Each runs on SQLite and (SWITCHBOARD_TEST_STORE=postgres) on PostgreSQL, with two `Store`s on one
database standing for two instances (each with its own connections and its own write lock)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from campaigns.sms.sender import ChannelWorker
from crm_link.call_lists import ListSpec
from crm_link.clock import ManualClock
from crm_link.contacts import ContactFields, validate_contact
from crm_link.db import to_db_time
from crm_link.email import EmailRow
from crm_link.sms import OutboxRow
from crm_link.store import Store
from recordings.service import RecordingService
from switchboard.settings import StoreSettings
from tests.recordings.test_recordings import make_wav
from tests.sms.helpers import RecordingChannel, VirtualClock

T0 = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)
LEASE = timedelta(seconds=60)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
async def pair(store_url: str, clock: ManualClock) -> AsyncIterator[tuple[Store, Store]]:
    where = StoreSettings(url=store_url).sqlite_path  # a file path, or the postgresql:// URL
    a = await Store(where, clock=clock).open()
    b = await Store(where, clock=clock).open()
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


async def _queue_sms(store: Store, n: int) -> None:
    for i in range(n):
        await store.sms.enqueue(
            OutboxRow(to_e164=f"+1212555{i:04d}", text=f"m{i}", channel="main", not_before=T0 - timedelta(1))
        )


async def test_two_instances_claiming_at_once_take_disjoint_full_batches(pair: tuple[Store, Store]) -> None:
    a, b = pair
    await _queue_sms(a, 200)
    batches: dict[str, list[list[int]]] = {"a": [], "b": []}

    async def drain(name: str, store: Store) -> None:
        while batch := await store.sms.claim("main", T0, 10, owner=name, lease=LEASE):
            batches[name].append([m.id for m in batch])
            assert all(m.state == "sending" for m in batch)

    await asyncio.gather(drain("a", a), drain("b", b), drain("a", a), drain("b", b))
    ids = [i for name in batches for batch in batches[name] for i in batch]
    assert sorted(ids) == list(range(1, 201)) and len(set(ids)) == 200
    # every claim came back full while rows were due: none waited on another's rows and came back short
    assert all(len(batch) == 10 for name in batches for batch in batches[name])
    rows = await a.db.fetchall("SELECT owner, count(*) FROM sms_outbox GROUP BY owner ORDER BY owner")
    assert {r[0]: r[1] for r in rows} == {name: 10 * len(batches[name]) for name in batches if batches[name]}


async def test_a_claim_passes_over_rows_another_instance_is_claiming(pair: tuple[Store, Store]) -> None:
    a, b = pair
    if not a.db.shared:
        pytest.skip("SQLite: one writer at a time, no row locks to pass over")
    await _queue_sms(a, 30)
    async with a.db.transaction() as tx:
        # instance A is in the middle of claiming the first ten (their rows locked, not yet committed)
        async with tx.execute(
            "SELECT id FROM sms_outbox WHERE state = 'queued' ORDER BY id LIMIT 10 FOR UPDATE"
        ) as cur:
            held = [r[0] for r in await cur.fetchall()]
        async with asyncio.timeout(10):
            batch = await b.sms.claim("main", T0, 10, owner="b", lease=LEASE)
    assert held == list(range(1, 11))
    assert [m.id for m in batch] == list(range(11, 21))


async def test_in_doubt_recovery_takes_only_rows_whose_lease_ran_out(
    pair: tuple[Store, Store], clock: ManualClock
) -> None:
    a, b = pair
    await _queue_sms(a, 6)
    mine = await a.sms.claim("main", T0, 3, owner="a", lease=LEASE)
    assert [m.id for m in mine] == [1, 2, 3]
    rows = await a.db.fetchall("SELECT DISTINCT owner, lease_until FROM sms_outbox WHERE state = 'sending'")
    assert [tuple(r) for r in rows] == [("a", "2026-11-23T15:01:00.000000Z")]
    # B, running, looks for rows in doubt: A's lease holds, so none
    assert await b.sms.recover_after_crash("main", owner="b", starting=False) == 0
    clock.advance(timedelta(seconds=40))
    assert await a.sms.renew("main", "a", clock() + LEASE) == 3  # A is alive and sending: renewed
    clock.advance(timedelta(seconds=40))  # past the first lease, inside the renewed one
    assert await b.sms.recover_after_crash("main", owner="b", starting=False) == 0
    if a.db.shared:
        # another instance starting up leaves A's live rows alone
        assert await b.sms.recover_after_crash("main", owner="b") == 0
    clock.advance(timedelta(seconds=61))  # A stopped renewing: its rows are in doubt
    assert await a.sms.recover_after_crash("main", owner="a", starting=False) == 0  # never its own, live
    assert await b.sms.recover_after_crash("main", owner="b", starting=False) == 3
    for m in mine:
        msg = await b.sms.message(m.id)
        assert (msg.state, msg.reason) == ("unknown", "process stopped while sending")
    # in doubt is never resent blindly: the next claim takes the other three only
    assert [m.id for m in await b.sms.claim("main", clock(), 10, owner="b", lease=LEASE)] == [4, 5, 6]


async def test_an_instance_restarting_under_its_id_takes_back_its_rows_at_once(
    pair: tuple[Store, Store],
) -> None:
    a, b = pair
    await _queue_sms(a, 4)
    await a.sms.claim("main", T0, 2, owner="a", lease=LEASE)
    await b.sms.claim("main", T0, 2, owner="b", lease=LEASE)
    # "a" restarts (same configured id): its own rows are in doubt now, "b"'s are not (on
    # PostgreSQL; an SQLite file is one process's, so everything it finds sending is its own)
    n = await a.sms.recover_after_crash("main", owner="a")
    states = [(await a.sms.message(i)).state for i in (1, 2, 3, 4)]
    if a.db.shared:
        assert n == 2 and states == ["unknown", "unknown", "sending", "sending"]
    else:
        assert n == 4 and states == ["unknown"] * 4


async def test_email_claims_carry_an_owner_and_a_lease(pair: tuple[Store, Store], clock: ManualClock) -> None:
    a, b = pair
    await a.contacts.bulk_insert(
        [ContactFields(first_name=f"P{i}", email=f"p{i}@example.com") for i in range(40)]
    )
    for i in range(40):
        await a.email.enqueue(
            EmailRow(
                to_addr=f"p{i}@example.com", to_name="", subject="s", html="<p>x</p>", text="x",
                message_id=f"<{i}@example>", not_before=T0 - timedelta(1), contact_id=None, user_id=None,
                template_id=None,
            )
        )  # fmt: skip
    taken: dict[str, list[int]] = {"a": [], "b": []}

    async def drain(name: str, store: Store) -> None:
        while batch := await store.email.claim(T0, 5, owner=name, lease=LEASE):
            assert len(batch) == 5
            taken[name] += [e.id for e in batch]

    await asyncio.gather(drain("a", a), drain("b", b))
    assert sorted(taken["a"] + taken["b"]) == list(range(1, 41))
    assert not set(taken["a"]) & set(taken["b"])
    clock.advance(timedelta(seconds=30))
    await a.email.renew("a", clock() + LEASE)
    clock.advance(timedelta(seconds=31))
    # B's lease ran out, A's was renewed: A (running) takes B's rows as in doubt, not its own
    assert await a.email.recover_after_crash(owner="a", starting=False) == len(taken["b"])
    counts = await a.email.counts()
    assert counts["unknown"] == len(taken["b"]) and counts["sending"] == len(taken["a"])


async def test_transcript_jobs_claimed_by_two_instances_are_disjoint(
    pair: tuple[Store, Store], tmp_path: Path
) -> None:
    a, b = pair
    monitor = tmp_path / "pbx"
    monitor.mkdir()
    service = RecordingService(a, watch_dir=monitor, storage_dir=tmp_path / "store")
    for n in range(12):
        make_wav(monitor / f"r{n}.wav", 0.1)
        await service.ingest(monitor / f"r{n}.wav")
    assert await a.transcripts.enqueue_missing() == 12
    taken: list[int] = []

    async def drain(store: Store) -> None:
        while jobs := await store.transcripts.claim(2, LEASE):
            assert len(jobs) == 2
            taken.extend(j["recording_id"] for j in jobs)

    await asyncio.gather(drain(a), drain(b), drain(a))
    assert len(taken) == len(set(taken)) == 12


async def test_call_list_entries_are_claimed_once_across_instances(
    pair: tuple[Store, Store], clock: ManualClock
) -> None:
    a, b = pair
    await a.contacts.bulk_insert(
        [
            validate_contact(
                {"first_name": f"C{i}", "phones": [f"+1212555{i:04d}"], "time_zone": zone}, region="US"
            )
            for i in range(24)
            for zone in [("America/New_York", "America/Chicago", "America/Denver")[i % 3]]
        ]
    )
    ids = [c.id for c in await a.contacts.get_many(list(range(1, 25)))]
    cl, _ = await a.call_lists.create(ListSpec(name="l", mode="progressive"), contact_ids=ids, now=T0)
    zones = await a.call_lists.zones(cl.id)
    if a.db.shared:
        # while A holds the best candidate of every zone (claiming, not yet committed), B gets the next
        async with a.db.transaction() as tx:
            async with tx.execute(
                "SELECT id FROM call_list_entries WHERE id IN (1, 2, 3) FOR UPDATE"  # the first of each zone
            ) as cur:
                assert len(list(await cur.fetchall())) == 3
            async with asyncio.timeout(10):
                entry = await b.call_lists.claim(cl.id, zones=zones, now=T0, owner="dialer-b", lease=LEASE)
        assert entry is not None and entry.id not in (1, 2, 3)
        await b.call_lists.release(entry.id, "dialer-b", T0 - timedelta(minutes=1))
    taken: dict[str, list[int]] = {"dialer-a": [], "dialer-b": []}

    async def drain(owner: str, store: Store) -> None:
        while entry := await store.call_lists.claim(cl.id, zones=zones, now=T0, owner=owner, lease=LEASE):
            assert entry.lease_owner == owner
            taken[owner].append(entry.id)

    await asyncio.gather(drain("dialer-a", a), drain("dialer-b", b), drain("dialer-a", a))
    every = taken["dialer-a"] + taken["dialer-b"]
    assert sorted(every) == sorted(set(every)) and len(every) == 24
    # both instances find the leases expired at once: each entry goes back to the queue once
    clock.advance(LEASE + timedelta(seconds=1))
    await asyncio.gather(a.call_lists.expire_leases(clock()), b.call_lists.expire_leases(clock()))
    assert (await a.call_lists.stats(cl.id))["counts"]["pending"] == 24


async def test_a_live_sender_renews_its_lease_and_a_dead_ones_rows_go_in_doubt(
    pair: tuple[Store, Store], clock: ManualClock
) -> None:
    a, b = pair
    await _queue_sms(a, 5)
    gateway = RecordingChannel("main", VirtualClock(T0))
    gateway.hang_after = 0  # the gateway takes the requests and never answers
    worker = ChannelWorker(
        a, gateway, name="main", rate_per_second=1000, quiet_start="00:00", quiet_end="00:00",
        clock=clock, owner="a", lease=LEASE, renew_every=0.01, lanes=1,
    )  # fmt: skip
    other = ChannelWorker(
        b, RecordingChannel("main", VirtualClock(T0)), name="main", rate_per_second=1000,
        quiet_start="00:00", quiet_end="00:00", clock=clock, owner="b", lease=LEASE,
    )  # fmt: skip
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(gateway.hung.wait(), 10)
    for _ in range(3):  # three lease lengths pass while A waits on the gateway, renewing
        clock.advance(LEASE - timedelta(seconds=5))
        async with asyncio.timeout(10):
            while True:
                rows = await b.db.fetchall("SELECT min(lease_until) FROM sms_outbox WHERE state = 'sending'")
                if rows[0][0] == to_db_time(clock() + LEASE):
                    break
                await asyncio.sleep(0.01)
        assert await other.keep_leases() == 0
    task.cancel()  # A dies (no clean stop: its rows stay `sending`)
    with pytest.raises(asyncio.CancelledError):
        await task
    rows = await b.db.fetchall(
        "SELECT owner, count(*) FROM sms_outbox WHERE state = 'sending' GROUP BY owner"
    )
    assert [tuple(r) for r in rows] == [("a", 5)]
    clock.advance(LEASE + timedelta(seconds=1))
    assert await other.keep_leases() == 5
    states = {(await b.sms.message(i)).state for i in range(1, 6)}
    assert states == {"unknown"}


async def test_an_agent_claiming_on_two_instances_at_once_holds_one_entry(
    pair: tuple[Store, Store], clock: ManualClock
) -> None:
    a, b = pair
    await a.contacts.bulk_insert(
        [
            validate_contact({"first_name": f"C{i}", "phones": [f"+1212555{i:04d}"]}, region="US")
            for i in range(4)
        ]
    )
    ids = [c.id for c in await a.contacts.get_many([1, 2, 3, 4])]
    cl, _ = await a.call_lists.create(ListSpec(name="l", mode="preview"), contact_ids=ids, now=T0)
    zones = await a.call_lists.zones(cl.id)
    agent = "agent:7"
    if a.db.shared:
        # A leases entry 1 to the agent (not yet committed) while B claims for the same agent: B
        # passes over entry 1, leases the next one, waits on the agents' lease index for A's commit,
        # and then returns the entry A leased instead of a second one
        async with a.db.transaction() as tx:
            await tx.execute(
                "UPDATE call_list_entries SET state = 'in_progress', lease_owner = ?, lease_until = ? WHERE id = 1",
                (agent, to_db_time(T0 + LEASE)),
            )
            claim = asyncio.create_task(
                b.call_lists.claim(
                    cl.id, zones=zones, now=T0, owner=agent, lease=LEASE, agent_id=7, sole=True
                )
            )
            async with asyncio.timeout(10):
                while not await a.db.fetchall(
                    "SELECT 1 FROM pg_stat_activity WHERE datname = current_database()"
                    " AND wait_event_type = 'Lock'"
                ):
                    await asyncio.sleep(0.01)
            assert not claim.done()
        async with asyncio.timeout(10):
            entry = await claim
    else:
        first = await a.call_lists.claim(cl.id, zones=zones, now=T0, owner=agent, lease=LEASE, sole=True)
        assert first is not None and first.id == 1
        entry = await b.call_lists.claim(cl.id, zones=zones, now=T0, owner=agent, lease=LEASE, sole=True)
    assert entry is not None and entry.id == 1 and entry.lease_owner == agent
    held = await a.db.fetchall(
        "SELECT id FROM call_list_entries WHERE state = 'in_progress' AND lease_owner = ?", (agent,)
    )
    assert [r[0] for r in held] == [1]
    # a dialer's claim (not an agent's) may hold many
    for _ in range(3):
        assert await b.call_lists.claim(cl.id, zones=zones, now=T0, owner="dialer-b", lease=LEASE) is not None
    # and the index refuses a second lease for the agent whatever writes it
    with pytest.raises(Exception) as refused:
        await a.db.write_returning(
            "UPDATE call_list_entries SET state = 'in_progress', lease_owner = ? WHERE id = 2 RETURNING id",
            (agent,),
        )
    from crm_link.db import is_unique_violation

    assert is_unique_violation(refused.value)


class _HeldGateway(RecordingChannel):
    """Takes every request, answers only once `answer` is set."""

    def __init__(self) -> None:
        super().__init__("main", VirtualClock(T0))
        self.answer = asyncio.Event()
        self.waiting = 0

    async def send(self, message: Any) -> Any:
        self.waiting += 1
        await self.answer.wait()
        return await super().send(message)


async def test_sms_results_after_a_lapsed_lease_are_not_recorded_but_counted(
    pair: tuple[Store, Store], clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = pair
    await _queue_sms(a, 5)
    gateway = _HeldGateway()
    # A renews no lease here: it stands for an instance out of reach of the database
    worker = ChannelWorker(
        a, gateway, name="main", rate_per_second=1000, quiet_start="00:00", quiet_end="00:00",
        clock=clock, owner="a", lease=LEASE, lanes=1,
    )  # fmt: skip
    step = asyncio.create_task(worker.step())
    async with asyncio.timeout(10):
        while gateway.waiting < 5:
            await asyncio.sleep(0.01)
    clock.advance(LEASE + timedelta(seconds=1))
    other = ChannelWorker(
        b, RecordingChannel("main", VirtualClock(T0)), name="main", rate_per_second=1000,
        quiet_start="00:00", quiet_end="00:00", clock=clock, owner="b", lease=LEASE,
    )  # fmt: skip
    assert await other.keep_leases() == 5
    with caplog.at_level(logging.WARNING):
        gateway.answer.set()  # the gateway took all five; A learns it too late
        async with asyncio.timeout(10):
            assert await step
    assert len(gateway.sent) == 5 and worker.lapsed == 5 and worker.sent == 5
    assert {(await b.sms.message(i)).state for i in range(1, 6)} == {"unknown"}
    touches = await b.db.fetchall("SELECT status FROM touches WHERE kind = 'sms' ORDER BY id")
    assert [r[0] for r in touches] == ["unknown"] * 5  # as B left them: in doubt
    assert any(
        "event=sms_result_after_lease channel=main owner=a rows=5" in r.getMessage() for r in caplog.records
    )
    # an outcome of a row this instance still holds is recorded as before
    await _queue_sms(a, 1)
    gateway.answer.set()
    assert await worker.step()
    assert (await a.sms.message(6)).state == "sent" and worker.lapsed == 5


async def test_migration_0083_leaves_each_agent_one_entry(store_url: str, clock: ManualClock) -> None:
    where = StoreSettings(url=store_url).sqlite_path
    async with Store(where, clock=clock) as store:
        await store.contacts.bulk_insert(
            [
                validate_contact({"first_name": f"C{i}", "phones": [f"+1212555{i:04d}"]}, region="US")
                for i in range(5)
            ]
        )
        ids = [c.id for c in await store.contacts.get_many([1, 2, 3, 4, 5])]
        cl, _ = await store.call_lists.create(ListSpec(name="l"), contact_ids=ids, now=T0)
        # as a store before 0083 could be: agent 7 holds three entries (the second being dialed),
        # agent 8 two, both being dialed
        async with store.db.transaction() as tx:
            await tx.execute("DROP INDEX call_list_entries_agent_lease")
            await tx.execute("DELETE FROM schema_migrations WHERE version = 83")
            for entry_id, owner in (
                (1, "agent:7"),
                (2, "agent:7"),
                (3, "agent:7"),
                (4, "agent:8"),
                (5, "agent:8"),
            ):
                await tx.execute(
                    "UPDATE call_list_entries SET state = 'in_progress', lease_owner = ?, lease_until = ?"
                    " WHERE id = ?",
                    (owner, to_db_time(T0 + LEASE), entry_id),
                )
            for entry_id in (2, 4, 5):
                await tx.execute(
                    "INSERT INTO call_attempts (entry_id, list_id, number, state, started_at)"
                    " VALUES (?, ?, '+12125550000', 'dialing', ?)",
                    (entry_id, cl.id, to_db_time(T0)),
                )
    async with Store(where, clock=clock) as store:
        assert 83 in store.db.applied
        rows = await store.db.fetchall("SELECT id, state, lease_owner FROM call_list_entries ORDER BY id")
        assert [tuple(r) for r in rows] == [
            (1, "pending", None),
            (2, "in_progress", "agent:7"),
            (3, "pending", None),
            (4, "in_progress", "agent:8"),
            (5, "in_progress", "agent:8#5"),
        ]
