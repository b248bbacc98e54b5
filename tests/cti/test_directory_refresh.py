"""An interface directory older than its TTL keeps answering while it reloads in the background."""

from __future__ import annotations

import asyncio
from typing import Any

from crm_link.models import User
from crm_link.store import Store
from cti.directory import InterfaceDirectory


async def test_an_expired_directory_answers_at_once_and_reloads_beside_the_call(store: Store) -> None:
    await store.users.add("ann", role="rep", password="pw-ann-123456", extension="1001")
    now = [0.0]
    directory = InterfaceDirectory(store, {}, ttl=30.0, clock=lambda: now[0])
    ann = await directory.user_for("PJSIP/1001")
    assert ann is not None and ann.username == "ann"

    # the next reload is held until the test lets it go, and (as if ann were deactivated by
    # another instance of the service) no longer lists her
    gate = asyncio.Event()
    calls = 0
    real_list = store.users.list

    async def held_list() -> list[User]:
        nonlocal calls
        calls += 1
        await gate.wait()
        return [u for u in await real_list() if u.username != "ann"]

    store.users.list = held_list  # type: ignore[method-assign]
    now[0] = 31.0
    # the ringing event is answered from what is loaded: it does not wait for the reload
    user: Any = await asyncio.wait_for(directory.user_for("PJSIP/1001"), 5)
    assert user is not None and user.username == "ann"
    await asyncio.wait_for(directory.ensure_fresh(), 5)
    assert calls == 1  # one reload in flight, however many events arrive meanwhile
    assert directory.stale()

    gate.set()
    for _ in range(500):
        if not directory.stale():
            break
        await asyncio.sleep(0.01)
    assert not directory.stale()
    assert not directory.is_agent("PJSIP/1001")  # the background reload's answer is now used
    assert calls == 1


async def test_users_changed_in_this_process_are_reloaded_before_answering(store: Store) -> None:
    now = [0.0]
    directory = InterfaceDirectory(store, {}, ttl=30.0, clock=lambda: now[0])
    assert await directory.user_for("PJSIP/1002") is None
    await store.users.add("bob", role="rep", password="pw-bob-123456", extension="1002")
    bob = await directory.user_for("PJSIP/1002")  # within the TTL, no background wait either
    assert bob is not None and bob.username == "bob"
