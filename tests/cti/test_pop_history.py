"""What a pop shows besides the card: the caller's latest touches and open follow-ups, read with the
caller-ID lookup, as the store has them when the phone rings."""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta
from typing import Any

import pytest

from crm_link.contacts import validate_contact
from crm_link.touches import TouchInput
from cti.events import CallRinging
from switchboard.keys import STORE
from tests.conftest import Api, make_api
from tests.cti.test_call_service import T0, _next, _service, _ws

AGENT = "Local/agent1@agents/n"


def _ring(call_id: str) -> CallRinging:
    return CallRinging(call_id, "inbound", "+15551234567", "7000", AGENT, "sales", T0)


async def _jane(store: Any, owner: str) -> Any:
    return await store.contacts.create(
        validate_contact(
            {"first_name": "Jane", "last_name": "Doe", "phones": ["+15551234567"], "owner": owner},
            region="US",
        )
    )


async def _touch(store: Any, contact_id: int, n: int) -> None:
    await store.touches.record(
        TouchInput(
            source_key=f"test:{n}",
            kind="call" if n % 2 else "note",
            direction="inbound" if n % 3 else "outbound",
            started_at=T0 - timedelta(days=10 - n),
            contact_id=contact_id,
            status="answered" if n % 2 else "",
            summary=f"touch {n}",
        )
    )


async def _as_the_store_has_them(store: Any, contact_id: int) -> tuple[list[Any], list[Any]]:
    """The pop's lists built from the store's own reads (history, open follow-ups)."""
    touches = [
        {k: t.to_dict()[k] for k in ("kind", "direction", "at", "summary", "status")}
        for t in (await store.touches.history(contact_id, limit=5)).items
    ]
    followups = [
        {"due_at": f.to_dict()["due_at"], "note": f.note, "kind": f.kind}
        for f in await store.touches.open_followups(contact_id)
    ]
    return touches, followups


async def test_pop_shows_the_five_latest_touches_and_the_open_followups(client: Any, rep: Api) -> None:
    store = client.server.app[STORE]
    jane = await _jane(store, "jsmith")
    for n in range(7):
        await _touch(store, jane.id, n)
    later = await store.touches.add_followup(jane.id, T0 + timedelta(days=2), kind="followup", note="later")
    await store.touches.add_followup(jane.id, T0 + timedelta(days=1), kind="callback", note="sooner")
    done = await store.touches.add_followup(jane.id, T0, kind="missed_call", note="done already")
    assert later is not None and done is not None
    await store.touches.close_followup(done.id)
    ws = await _ws(rep)
    touches, followups = await _as_the_store_has_them(store, jane.id)  # before the ring's own touch
    await _service(client).handle(_ring("c1"))
    pop = await _next(ws)
    assert [t["summary"] for t in pop["recent_touches"]] == [f"touch {n}" for n in (6, 5, 4, 3, 2)]
    assert pop["recent_touches"] == touches
    assert [f["note"] for f in pop["open_followups"]] == ["sooner", "later"]
    assert pop["open_followups"] == followups
    assert pop["survey"] is None
    await ws.close()


async def test_another_reps_customer_pops_without_history(client: Any, rep: Api) -> None:
    store = client.server.app[STORE]
    await make_api(client, "agarcia", "rep", extension="1002")
    jane = await _jane(store, "agarcia")
    await _touch(store, jane.id, 1)
    await store.touches.add_followup(jane.id, T0 + timedelta(days=1), note="hers")
    ws = await _ws(rep)
    await _service(client).handle(_ring("c2"))
    pop = await _next(ws)
    assert pop["contact"]["id"] == jane.id and pop["contact"]["restricted"] is True
    assert pop["recent_touches"] == [] and pop["open_followups"] == []
    await ws.close()


async def test_a_ring_after_the_lookup_finished_shows_what_was_written_meanwhile(
    client: Any, rep: Api
) -> None:
    store = client.server.app[STORE]
    jane = await _jane(store, "jsmith")
    await _touch(store, jane.id, 1)
    svc = _service(client)
    svc.prefetch("c3", "+15551234567")  # the call arrives; the caller waits in the queue
    _, lookup = svc._prefetched["c3"]
    found = await lookup
    assert [t["summary"] for t in found.history[jane.id].touches] == ["touch 1"]
    # meanwhile a colleague logs a note and a follow-up for her
    await _touch(store, jane.id, 2)
    await store.touches.add_followup(jane.id, T0 + timedelta(days=1), note="call her back")
    ws = await _ws(rep)
    expected = await _as_the_store_has_them(store, jane.id)
    await svc.handle(_ring("c3"))
    pop = await _next(ws)
    assert [t["summary"] for t in pop["recent_touches"]] == ["touch 2", "touch 1"]
    assert [f["note"] for f in pop["open_followups"]] == ["call her back"]
    assert (pop["recent_touches"], pop["open_followups"]) == expected
    await ws.close()


async def test_caller_file_of_a_shared_number_has_each_contacts_history(client: Any, admin: Api) -> None:
    store = client.server.app[STORE]
    jane, john = await _jane(store, "admin"), await _jane(store, "admin")
    await _touch(store, john.id, 3)
    found = await store.contacts.caller_file("(555) 123-4567", recent=5)
    assert [c.id for c in found.contacts] == [jane.id, john.id]
    assert found.history[jane.id].touches == []
    assert [t["summary"] for t in found.history[john.id].touches] == ["touch 3"]
    assert (await store.contacts.caller_file("not a number", recent=5)).contacts == []


async def test_caller_lookup_does_not_wait_behind_a_long_read(client: Any, admin: Api) -> None:
    store = client.server.app[STORE]
    if store.db.dialect != "sqlite":
        pytest.skip("SQLite's reader connections; PostgreSQL reads from a pool")
    jane = await _jane(store, "admin")
    started, gate = threading.Event(), threading.Event()

    def long_read() -> None:  # a report or an export holding the shared reader's thread
        started.set()
        gate.wait(10)

    held = asyncio.ensure_future(store.db._r._execute(long_read))
    assert await asyncio.to_thread(started.wait, 5)
    found = await asyncio.wait_for(store.contacts.caller_file("+15551234567", recent=5), 5)
    assert [c.id for c in found.contacts] == [jane.id] and not held.done()
    gate.set()
    await held
