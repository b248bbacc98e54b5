"""Several instances sharing one PostgreSQL store send one blast: every recipient gets one message
at the gateway (counted there), and an instance SIGKILLed mid-blast leaves its rows to the others
once its lease runs out: none sent twice, none lost, the ones it had in flight flagged in doubt.

PostgreSQL only (SWITCHBOARD_TEST_STORE=postgres): an SQLite file is one process's store.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from campaigns.sms.kannel_standin import KannelStandIn
from switchboard.app import create_app
from switchboard.keys import INSTANCE, SMS, STORE
from switchboard.settings import Settings, SmsChannelSettings
from tests.cluster import (
    Instance,
    blast_progress,
    create_blast,
    outcome,
    seed,
    sent_by,
    write_config,
)
from tests.conftest import free_port, make_api

pytestmark = pytest.mark.skipif(
    os.environ.get("SWITCHBOARD_TEST_STORE", "sqlite") != "postgres",
    reason="several instances share a PostgreSQL store (SWITCHBOARD_TEST_STORE=postgres)",
)


def _instance_settings(settings: Settings, name: str, port: int, sendsms_url: str) -> Settings:
    from copy import deepcopy

    s = deepcopy(settings)
    s.server.instance_id = name
    s.server.public_url = f"http://127.0.0.1:{port}"
    s.sms.quiet_start = s.sms.quiet_end = "00:00"
    s.sms.channels = {
        "main": SmsChannelSettings(
            name="main",
            type="kannel",
            rate_per_second=300,
            options={"sendsms_url": sendsms_url, "username": "tester", "password": "secret", "secret": "s"},
        )
    }
    return s


async def test_three_instances_send_one_blast_each_recipient_once(
    aiohttp_server: Any, aiohttp_client: Any, settings: Settings, store_url: str
) -> None:
    n = 3000
    async with KannelStandIn(dlr_delay=3600) as kannel:
        servers = []
        for name in ("a", "b", "c"):
            port = free_port()
            app = create_app(_instance_settings(settings, name, port, kannel.sendsms_url))
            servers.append(await aiohttp_server(app, port=port))
        assert [s.app[INSTANCE].id for s in servers] == ["a", "b", "c"]
        await seed_in(servers[0].app[STORE], n)
        mkt = await make_api(await aiohttp_client(servers[0]), "kim", "marketing")
        resp = await mkt.post(
            "/api/v1/sms/blasts",
            json={"name": "Recall", "text": "Hi {{ contact.first_name }}", "channel": "main",
                  "audience": {"tag": "cluster"}},
        )  # fmt: skip
        assert resp.status == 201, await resp.text()
        blast_id = (await resp.json())["id"]
        async with asyncio.timeout(90):
            while (body := await (await mkt.get(f"/api/v1/sms/blasts/{blast_id}")).json())["state"] != "done":
                await asyncio.sleep(0.1)
        got = Counter(q["to"] for q in kannel.received)
        assert len(kannel.received) == n and len(got) == n and max(got.values()) == 1
        assert body["counts"]["sent"] == n and body["counts"]["unknown"] == 0
        # the blast was spread: each instance's worker sent part of it (at 300/s each, 3,000 take
        # several seconds; an idle instance looks for work every second)
        per_instance = [s.app[SMS].workers["main"].sent for s in servers]
        assert sum(per_instance) == n and all(k > 0 for k in per_instance), per_instance


async def seed_in(store: Any, n: int) -> None:
    from crm_link.contacts import validate_contact

    await store.contacts.bulk_insert(
        [
            validate_contact(
                {
                    "first_name": f"P{i}",
                    "phones": [f"+1212{5550000 + i:07d}"],
                    "tags": ["cluster"],
                    "time_zone": "UTC",
                },
                region="US",
            )
            for i in range(n)
        ]
    )


async def test_an_instance_killed_mid_blast_leaves_its_rows_to_the_others_after_its_lease(
    tmp_path: Path, store_url: str
) -> None:
    n = 3000
    lease = 3
    token = await seed(store_url, n)
    async with KannelStandIn(dlr_delay=3600) as kannel:
        instances = []
        for name in ("a", "b", "c"):
            port = free_port()
            config = tmp_path / f"{name}.toml"
            write_config(
                config, name=name, port=port, store_url=store_url, sendsms_url=kannel.sendsms_url,
                lease_seconds=lease, rate=250,
            )  # fmt: skip
            instances.append(Instance(name, port, config))
        try:
            for inst in instances:
                await inst.start(tmp_path)
            await asyncio.gather(*(inst.ready() for inst in instances))
            victim = instances[1]
            blast_id = await create_blast(instances[0], token)
            async with asyncio.timeout(60):  # the victim is sending its share
                while sent_by(kannel)[victim.port] < 150 or len(kannel.received) < n // 4:
                    await asyncio.sleep(0.02)
            victim.kill()
            await victim.proc.wait()
            at_kill = len(kannel.received)
            assert at_kill < n, "the kill came too late to test anything"
            async with asyncio.timeout(120):
                while (await blast_progress(instances[0], token, blast_id))["state"] != "done":
                    await asyncio.sleep(0.2)
        finally:
            for inst in instances:
                await inst.stop()
        result = await outcome(store_url, blast_id, kannel, n)
    assert victim.proc.returncode == -9
    assert result.duplicates == 0 and result.lost == 0, result
    # what the victim had claimed and not settled is in doubt, flagged, never resent
    assert set(result.states) <= {"sent", "unknown"}, result.states
    assert result.owners_of_in_doubt <= {"b"}, result
    assert result.in_doubt <= 3 * 16  # at most what its lanes held: 3 windows of 16
    assert result.states.get("sent", 0) + result.in_doubt == n
    # the survivors finished the victim's share: both sent after the kill
    assert result.sent_by_owner.get("a", 0) > 0 and result.sent_by_owner.get("c", 0) > 0, result
    assert len(kannel.received) > at_kill
