"""The store against a real SQLite file: idempotent touches, follow-ups, lookup by any format."""

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from crm_link.contacts import validate_contact
from crm_link.errors import Conflict, ValidationError
from crm_link.store import Store
from crm_link.touches import TouchInput


async def _contact(store: Store, **kw):
    data = {"first_name": "Jane", "last_name": "Doe", "phones": ["+15551234567"]} | kw
    return await store.contacts.create(validate_contact(data, region="US"))


async def test_lookup_by_any_format(store: Store) -> None:
    c = await _contact(store, phones=["(555) 123-4567", "+1 212 736 5000"])
    for raw in ("+15551234567", "5551234567", "1-555-123-4567", "+12127365000", "212.736.5000"):
        found = await store.contacts.find_by_phone(raw)
        assert [x.id for x in found] == [c.id], raw
    assert await store.contacts.find_by_phone("+15550000000") == []
    assert await store.contacts.find_by_phone("garbage") == []
    assert [p.valid for p in c.phones] == [False, True]


async def test_record_touch_is_idempotent(store: Store) -> None:
    c = await _contact(store)
    t0 = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
    first = await store.touches.record(
        TouchInput(
            source_key="asterisk:1795346245.0",
            kind="call",
            direction="inbound",
            started_at=t0,
            contact_id=c.id,
            status="ringing",
            number="+15551234567",
        )
    )
    again = await store.touches.record(
        TouchInput(
            source_key="asterisk:1795346245.0",
            kind="call",
            direction="inbound",
            started_at=t0,
            status="answered",
            duration_s=9.0,
            payload={"queue": "sales"},
        )
    )
    assert first.created and not again.created
    assert again.id == first.id
    assert again.status == "answered" and again.duration_s == 9.0
    assert again.contact_id == c.id  # kept from the first write
    assert again.payload == {"queue": "sales"}
    assert await store.touches.count() == 1


async def test_concurrent_replays_write_one_row(store: Store) -> None:
    c = await _contact(store)
    await store.touches.start_batching()
    t0 = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
    items = [
        TouchInput(source_key=f"k{i % 10}", kind="sms", direction="outbound", started_at=t0, contact_id=c.id)
        for i in range(200)
    ]
    results = await asyncio.gather(*(store.touches.record(i) for i in items))
    assert sum(r.created for r in results) == 10
    assert await store.touches.count() == 10
    await store.touches.stop_batching()


async def test_bad_touch_in_batch_does_not_sink_neighbours(store: Store) -> None:
    c = await _contact(store)
    await store.touches.start_batching()
    t0 = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
    good = [
        TouchInput(source_key=f"g{i}", kind="sms", direction="outbound", started_at=t0, contact_id=c.id)
        for i in range(5)
    ]
    bad = TouchInput(source_key="bad", kind="sms", direction="outbound", started_at=t0, contact_id=999_999)
    results = await asyncio.gather(
        *(store.touches.record(i) for i in [*good[:2], bad, *good[2:]]), return_exceptions=True
    )
    assert isinstance(results[2], Exception)  # foreign key: no such contact
    assert all(not isinstance(r, Exception) for i, r in enumerate(results) if i != 2)
    assert await store.touches.count() == 5
    await store.touches.stop_batching()


async def test_touch_closes_due_followup_and_sets_next(store: Store) -> None:
    owner = await store.users.add("jsmith", role="rep", password="password-1")
    c = await _contact(store, owner="jsmith")
    now = datetime.now(UTC)
    fu = await store.touches.add_followup(c.id, now - timedelta(hours=1), note="call back")
    assert fu is not None and fu.assignee_id == owner.id
    nxt = now + timedelta(days=3)
    t = await store.touches.record(
        TouchInput(
            source_key="n1",
            kind="call",
            direction="outbound",
            started_at=now,
            contact_id=c.id,
            user_id=owner.id,
            close_followups=True,
            next_followup=nxt,
            followup_note="send quote",
        )
    )
    open_now = await store.touches.open_followups(c.id)
    assert [(f.note, f.created_by_touch_id) for f in open_now] == [("send quote", t.id)]
    closed = await store.touches.followup(fu.id)
    assert closed.status == "done" and closed.closed_by_touch_id == t.id
    # replaying the same touch neither closes nor creates anything more
    await store.touches.record(
        TouchInput(
            source_key="n1",
            kind="call",
            direction="outbound",
            started_at=now,
            contact_id=c.id,
            close_followups=True,
            next_followup=nxt + timedelta(days=1),
        )
    )
    assert len(await store.touches.open_followups(c.id)) == 1


async def test_a_touch_closes_only_the_followup_it_served(store: Store) -> None:
    """A touch closes one follow-up: the one it names, else the soonest due today of its user;
    never another rep's, never one due later, and it adds none of its own."""
    ann = await store.users.add("ann", role="rep", password="password-1")
    bob = await store.users.add("bob", role="rep", password="password-1")
    c = await _contact(store, owner="ann")
    now = datetime.now(UTC)
    bobs = await store.touches.add_followup(c.id, now - timedelta(hours=2), note="bob's", assignee_id=bob.id)
    later = await store.touches.add_followup(c.id, now + timedelta(days=3), note="later")
    mine = await store.touches.add_followup(c.id, now - timedelta(hours=1), note="mine")
    assert bobs and later and mine
    await store.touches.record(
        TouchInput(
            source_key="e1",
            kind="email",
            direction="outbound",
            started_at=now,
            contact_id=c.id,
            user_id=ann.id,
            status="sent",
            close_followups=True,
        )
    )
    states = {f.note: f.status for f in [await store.followups.get(x.id) for x in (bobs, later, mine)]}
    assert states == {"bob's": "open", "later": "open", "mine": "done"}
    assert (await store.followups.get(mine.id)).result == "sent"
    assert len(await store.touches.open_followups(c.id)) == 2


async def test_duplicate_username_and_extension(store: Store) -> None:
    await store.users.add("jsmith", role="rep", password="password-1", extension="1001")
    with pytest.raises(Conflict) as exc:
        await store.users.add("JSmith".lower(), role="rep", password="password-1")
    assert exc.value.field == "username"
    with pytest.raises(Conflict) as exc:
        await store.users.add("other", role="rep", password="password-1", extension="1001")
    assert exc.value.field == "extension"
    with pytest.raises(ValidationError) as invalid:
        await store.users.add("x y", role="rep", password="password-1")
    assert invalid.value.field == "username"


async def test_passwords_and_tokens(store: Store) -> None:
    u = await store.users.add("jsmith", role="rep", password="password-1")
    authenticated = await store.users.authenticate("jsmith", "password-1")
    assert authenticated is not None and authenticated.id == u.id
    assert await store.users.authenticate("jsmith", "wrong-password") is None
    assert await store.users.authenticate("nobody", "password-1") is None
    token = await store.users.create_token(u.id)
    holder = await store.users.user_for_token(token)
    assert holder is not None and holder.id == u.id
    row = await store.db.fetchone("SELECT token_hash FROM api_tokens")
    assert row is not None and token not in row[0]
    await store.users.revoke_tokens(u.id)
    assert await store.users.user_for_token(token) is None


async def test_reopen_applies_no_migration_twice(settings) -> None:
    from switchboard.app import open_store

    async with open_store(settings) as s:
        assert await s.db.migrate() == []
    async with open_store(settings) as s:
        rows = await s.db.fetchall("SELECT version FROM schema_migrations")
        assert len(rows) >= 1


async def test_a_task_cancelled_anywhere_in_a_transaction_leaves_the_store_usable(store: Store) -> None:
    """A worker cancelled mid-write (a shutdown, a crash drill) must not leave the writer connection
    inside an open transaction, nor commit half of its work."""

    async def write(n: int) -> None:
        async with store.db.transaction() as tx:
            await tx.execute(
                "INSERT INTO audit_log (at, action) VALUES ('2026-01-01T00:00:00.000000Z', ?)", (f"a{n}",)
            )
            await tx.execute(
                "INSERT INTO audit_log (at, action) VALUES ('2026-01-01T00:00:00.000000Z', ?)", (f"b{n}",)
            )

    for n in range(40):  # cancel after 0, 1, 2 … loop turns: before, during and after each statement
        task = asyncio.create_task(write(n))
        for _ in range(n % 20):
            await asyncio.sleep(0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        async with store.db.transaction() as tx:  # "cannot start a transaction within a transaction" before
            await tx.execute("SELECT 1")
    rows = await store.db.fetchall("SELECT action FROM audit_log WHERE action GLOB '[ab]*'")
    actions = {r[0] for r in rows}
    assert all((f"a{n}" in actions) == (f"b{n}" in actions) for n in range(40))  # all or nothing


async def test_closing_lets_store_work_still_running_finish(store_url: str) -> None:
    """At shutdown a task may still be writing after its owner stopped waiting for it (a settle under
    asyncio.shield whose awaiting task was cancelled): close() lets it finish instead of failing its
    next statement with "the store is not open"."""
    store = await Store(store_url).open()
    first = asyncio.Event()

    async def settle() -> list[int]:
        ids = []
        for i in range(5):
            c = await store.contacts.create(validate_contact({"first_name": f"S{i}"}, region="US"))
            ids.append(c.id)
            first.set()
        return ids

    owner = asyncio.ensure_future(asyncio.shield(work := asyncio.ensure_future(settle())))
    await first.wait()
    owner.cancel()  # the owner stops waiting; the shielded work goes on
    with pytest.raises(asyncio.CancelledError):
        await owner
    await store.close()
    assert len(await work) == 5  # every statement ran before the connections closed
    async with Store(store_url) as again:
        assert len(await again.contacts.get_many(await work)) == 5


async def test_a_row_just_committed_is_read_back_while_other_reads_run(store: Store) -> None:
    """Each request writes and then reads back what it wrote while other requests read (a blast
    created while the scheduler polls flat out answered "blast 1 not found"): a read that starts after
    a commit sees it, however the reads of other tasks interleave on the shared reader."""
    stop = asyncio.Event()
    polls = 0

    async def poller() -> None:  # one-row reads back to back, as a ticking scheduler makes
        nonlocal polls
        while not stop.is_set():
            await store.db.fetchone("SELECT COUNT(*) FROM audit_log")
            polls += 1

    pollers = [asyncio.create_task(poller()) for _ in range(3)]
    missing = []
    try:
        for n in range(300):
            async with store.db.transaction() as tx:
                async with tx.execute(
                    "INSERT INTO audit_log (at, action) VALUES ('2026-01-01T00:00:00.000000Z', ?) RETURNING id",
                    (f"w{n}",),
                ) as cur:
                    row = await cur.fetchone()
            assert row is not None
            if await store.db.fetchone("SELECT action FROM audit_log WHERE id = ?", (row[0],)) is None:
                missing.append(n)
            await asyncio.sleep(0)
    finally:
        stop.set()
        await asyncio.gather(*pollers)
    assert polls > 300  # the reads really ran alongside
    assert missing == []


def test_store_times_read_back_as_written() -> None:
    from datetime import timezone

    from crm_link.db import from_db_time, to_db_time

    for t in (
        datetime(2026, 12, 2, 22, 13, 0, 123456, tzinfo=UTC),
        datetime(2026, 1, 1, tzinfo=UTC),
        datetime(2026, 3, 29, 1, 30, 5, 7, tzinfo=timezone(timedelta(hours=-5))),
    ):
        back = from_db_time(to_db_time(t))
        assert back == t and back is not None and back.utcoffset() == timedelta(0)
    assert from_db_time("2026-12-02T22:13:00.5Z") == datetime(2026, 12, 2, 22, 13, 0, 500000, tzinfo=UTC)
    assert from_db_time(None) is None


async def test_a_missed_call_and_its_call_back_commit_together(store: Store) -> None:
    """A known customer's missed call ends with its call-back on the owner's day in one
    transaction: nobody reads the ended call without it; a failure leaves the call as it was;
    the end recorded again makes no second call-back."""
    owner = await store.users.add("jsmith", role="rep", password="password-1")
    c = await _contact(store, owner="jsmith")
    rang = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
    ringing = TouchInput(
        source_key="asterisk:m1", kind="call", direction="inbound", started_at=rang, contact_id=c.id,
        status="ringing", number="+15551234567",
    )  # fmt: skip
    await store.touches.record(ringing)
    ended = TouchInput(
        source_key="asterisk:m1", kind="call", direction="inbound", started_at=rang, contact_id=c.id,
        status="missed", number="+15551234567", ended_at=rang + timedelta(seconds=30),
    )  # fmt: skip
    with pytest.raises(ValidationError):  # the call-back cannot be written: neither is the end
        await store.touches.record_with_followup(
            ended, datetime(2026, 3, 2, 15, 1), kind="missed_call", note="Missed call"
        )
    (row,) = await store.db.fetchall("SELECT status, ended_at FROM touches WHERE source_key = 'asterisk:m1'")
    assert (row[0], row[1]) == ("ringing", None)
    assert await store.touches.open_followups(c.id) == []

    touch, made = await store.touches.record_with_followup(
        ended, rang + timedelta(seconds=30), kind="missed_call", note="Missed call"
    )
    assert touch.status == "missed" and made is not None
    assert (made.kind, made.assignee_id, made.created_by_touch_id) == ("missed_call", owner.id, touch.id)
    again, none = await store.touches.record_with_followup(
        ended, rang + timedelta(minutes=5), kind="missed_call", note="Missed call"
    )
    assert again.id == touch.id and none is None
    assert [f.kind for f in await store.touches.open_followups(c.id)] == ["missed_call"]


async def test_a_screen_pop_read_sees_the_commit_before_it_and_a_long_one_still_answers(store: Store) -> None:
    """A caller's file is read for a pop right after the contact is written (a new prospect, a call
    back); a read too long for the event loop's thread still gives every row, from a reader thread."""
    found = []
    for n in range(50):
        number = f"+1312555{n:04d}"
        await store.contacts.create(
            validate_contact({"first_name": f"C{n}", "phones": [number]}, region="US")
        )
        found.append(len((await store.contacts.caller_file(number, recent=5)).contacts))
    assert found == [1] * 50
    # a statement of ~10^6 of SQLite's steps: past the loop's budget, answered all the same
    rows = await store.db.fetchall_for_pop(
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 200000)"
        " SELECT count(*), max(x) FROM c"
    )
    assert tuple(rows[0]) == (200000, 200000)
    if store.db.dialect == "sqlite":
        assert store.db.pop_reads_inline >= 50  # the callers' files: on the loop's thread
        assert store.db.pop_reads_moved == 1  # the long one: handed to the pop reader's thread
