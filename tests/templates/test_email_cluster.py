"""Two instances sharing one PostgreSQL store drain one email job: each recipient gets one email at
the SMTP server (aiosmtpd on loopback), and both instances sent part of it.

PostgreSQL only (SWITCHBOARD_TEST_STORE=postgres): an SQLite file is one process's store.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from copy import deepcopy
from typing import Any

import pytest

from crm_link.contacts import ContactFields
from switchboard.app import create_app
from switchboard.keys import EMAIL, STORE
from switchboard.settings import Settings

pytestmark = pytest.mark.skipif(
    os.environ.get("SWITCHBOARD_TEST_STORE", "sqlite") != "postgres",
    reason="several instances share a PostgreSQL store (SWITCHBOARD_TEST_STORE=postgres)",
)


async def test_two_instances_send_one_email_job_each_recipient_once(
    aiohttp_server: Any, settings: Settings, inbox: Any
) -> None:
    n = 400
    servers = []
    for name in ("a", "b"):
        s = deepcopy(settings)
        s.server.instance_id = name
        s.server.public_url = "https://crm.motors.example"
        s.smtp.port = inbox.port
        s.smtp.rate_per_second = 100  # each: 400 emails take a few seconds, the idle one joins in a second
        servers.append(await aiohttp_server(create_app(s)))
    store = servers[0].app[STORE]
    tpl = await store.email.save_template(
        template_id=None, name="n", subject="Hi {{ contact.first_name }}", html="<p>{{ contact.first_name }}</p>",
        text="", merge_codes=[], user_id=None,
    )  # fmt: skip
    await store.contacts.bulk_insert(
        [ContactFields(first_name=f"P{i}", email=f"p{i}@example.com") for i in range(n)]
    )
    contacts = await store.contacts.get_many(list(range(1, n + 1)))
    job_id = await servers[0].app[EMAIL].send(tpl["id"], contacts, None)
    async with asyncio.timeout(60):
        while (job := await store.email.job(job_id))["state"] != "done":
            await asyncio.sleep(0.05)
    to = Counter(m["To"] for m in inbox.messages)
    assert len(inbox.messages) == n and len(to) == n and max(to.values()) == 1
    assert job["counts"]["sent"] == n and job["counts"]["unknown"] == 0
    owners = Counter(
        r[0] for r in await store.db.fetchall("SELECT owner FROM email_outbox WHERE job_id = ?", (job_id,))
    )
    assert set(owners) == {"a", "b"} and sum(owners.values()) == n, owners
