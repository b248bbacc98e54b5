"""An instance cut off from the database past its lease: another instance takes its emails as in
doubt, and when the mail server's answers come in at last the first one does not record them (the
emails stay `unknown`, no touch says they were sent), logs it and counts it in /healthz.

Runs on SQLite (two stores on one file) and, with SWITCHBOARD_TEST_STORE=postgres, on PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from crm_link.clock import ManualClock
from crm_link.contacts import ContactFields
from crm_link.store import Store
from switchboard.app import create_app
from switchboard.keys import EMAIL, STORE
from switchboard.settings import StoreSettings

T0 = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)
LEASE = 600  # seconds: the instance's lease keeper (every third of it, in loop time) stays asleep here


async def test_results_that_come_after_the_lease_lapsed_stay_in_doubt_and_are_counted(
    aiohttp_client: Any, settings: Any, inbox: Any, store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    clock = ManualClock(T0)
    settings.smtp.port = inbox.port
    settings.smtp.connections = 1
    settings.server.public_url = "https://crm.motors.example"
    settings.server.instance_id = "a"
    settings.server.lease_seconds = LEASE
    client = await aiohttp_client(create_app(settings, clock=clock))
    app = client.server.app
    store: Store = app[STORE]
    assert (await (await client.get("/healthz")).json())["lapsed_lease_results"] == {"email": 0}
    tpl = await store.email.save_template(
        template_id=None, name="n", subject="Hi {{ contact.first_name }}", html="<p>Hi</p>", text="",
        merge_codes=[], user_id=None,
    )  # fmt: skip
    await store.contacts.bulk_insert(
        [ContactFields(first_name=f"P{i}", email=f"p{i}@example.com") for i in range(3)]
    )
    inbox.block_after = 0  # the mail server holds the first message: A waits on it, its rows `sending`
    job_id = await app[EMAIL].send(tpl["id"], await store.contacts.get_many([1, 2, 3]), None)
    await asyncio.wait_for(inbox.blocked.wait(), 20)
    rows = await store.db.fetchall("SELECT state, owner FROM email_outbox WHERE job_id = ?", (job_id,))
    assert [tuple(r) for r in rows] == [("sending", "a")] * 3
    # A cannot renew (it stands for an instance out of reach of the database); its lease runs out
    # and B, sharing the store, takes its emails as in doubt
    clock.advance(timedelta(seconds=LEASE + 1))
    async with Store(StoreSettings(url=store_url).sqlite_path, clock=clock) as other:
        assert await other.email.recover_after_crash(owner="b", starting=False) == 3
    with caplog.at_level(logging.WARNING):
        inbox.block_after = None  # the server answers at last: A hands over all three
        async with asyncio.timeout(20):
            while app[EMAIL].lapsed < 3:
                await asyncio.sleep(0.02)
    assert len(inbox.messages) == 3
    assert (await store.email.job(job_id))["counts"]["unknown"] == 3
    # nor a touch saying they were sent: their history is what B left (in doubt)
    assert await store.db.fetchall("SELECT status FROM touches WHERE kind = 'email'") == []
    assert any("event=email_result_after_lease owner=a rows=" in r.getMessage() for r in caplog.records)
    health = await (await client.get("/healthz")).json()
    assert health["lapsed_lease_results"] == {"email": 3}
