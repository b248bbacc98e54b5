"""Failed sign-ins in the store (crm_link.logins): the windows, the clearing, the pruning.

Runs on SQLite, and on PostgreSQL with SWITCHBOARD_TEST_STORE=postgres.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from crm_link.clock import ManualClock
from crm_link.store import Store
from switchboard.app import open_store
from switchboard.settings import Settings

START = datetime(2031, 3, 4, 15, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
async def timed_store(settings: Settings, clock: ManualClock) -> AsyncIterator[Store]:
    async with open_store(settings, clock) as s:
        yield s


async def test_an_address_is_judged_by_its_last_minute_newest_first(
    timed_store: Store, clock: ManualClock
) -> None:
    logins = timed_store.logins
    for n in range(4):
        await logins.failed("192.0.2.1", f"user{n}")
        clock.advance(seconds=20)
    await logins.failed("192.0.2.2", "user9")
    # now START+80s: the failures at +40 and +60 are within the minute; the one at +20 is a minute
    # old, no longer counted
    standing = await logins.standing("192.0.2.1", "nobody", address_limit=10)
    assert standing.now == START + timedelta(seconds=80)
    assert standing.address_failures == [START + timedelta(seconds=s) for s in (60, 40)]
    clock.advance(seconds=-1)
    limited = await logins.standing("192.0.2.1", "nobody", address_limit=2)
    assert limited.address_failures == [START + timedelta(seconds=s) for s in (60, 40)]
    assert standing.account_failures == 0 and standing.account_last is None


async def test_a_sign_in_clears_the_account_not_the_addresses(timed_store: Store, clock: ManualClock) -> None:
    logins = timed_store.logins
    for n in range(3):
        await logins.failed(f"192.0.2.{n}", "jsmith")
    clock.advance(seconds=5)
    before = await logins.standing("198.51.100.1", "jsmith", address_limit=10)
    assert (before.account_failures, before.account_last, before.known_address) == (3, START, False)
    await logins.succeeded("198.51.100.1", "jsmith")
    await logins.failed("192.0.2.0", "jsmith")  # at the same instant as the sign-in, but after it
    after = await logins.standing("198.51.100.1", "jsmith", address_limit=10)
    assert (after.account_failures, after.known_address) == (1, True)
    # the guesser's address still carries its failures
    assert len((await logins.standing("192.0.2.0", "other", address_limit=10)).address_failures) == 2


async def test_failures_older_than_the_account_window_are_forgotten_and_pruned(
    timed_store: Store, clock: ManualClock
) -> None:
    logins = timed_store.logins
    for _ in range(7):
        await logins.failed("192.0.2.1", "jsmith")
    clock.advance(hours=23)
    assert (await logins.standing("192.0.2.9", "jsmith", address_limit=10)).account_failures == 7
    clock.advance(hours=1, seconds=1)
    assert (await logins.standing("192.0.2.9", "jsmith", address_limit=10)).account_failures == 0
    await logins.failed("192.0.2.2", "agarcia")  # a failure prunes the old ones
    rows = await timed_store.db.fetchall("SELECT account FROM login_failures")
    assert [r["account"] for r in rows] == ["agarcia"]


async def test_an_account_keeps_its_five_latest_addresses(timed_store: Store, clock: ManualClock) -> None:
    logins = timed_store.logins
    for n in range(7):
        await logins.succeeded(f"192.0.2.{n}", "jsmith")
        clock.advance(minutes=1)
    await logins.succeeded("192.0.2.0", "jsmith")  # back at the first desk: the newest again
    rows = await timed_store.db.fetchall(
        "SELECT address FROM login_known_addresses WHERE account = ? ORDER BY address", ("jsmith",)
    )
    assert [r["address"] for r in rows] == [f"192.0.2.{n}" for n in (0, 3, 4, 5, 6)]


async def test_names_longer_than_any_username_are_cut_to_one_key(timed_store: Store) -> None:
    logins = timed_store.logins
    await logins.failed("192.0.2.1", "x" * 5000)
    await logins.failed("192.0.2.1", "x" * 64 + "y")
    standing = await logins.standing("192.0.2.1", "x" * 70, address_limit=10)
    assert standing.account_failures == 2
    (row,) = await timed_store.db.fetchall("SELECT MAX(LENGTH(account)) AS n FROM login_failures")
    assert row["n"] == 64
