"""Progressive dialing with several instances on one PostgreSQL store: the list is started and the
agent joins through a standby's API, the AMI holder dials, each entry once; the holder is killed
mid-list and the instance that takes the PBX over goes on with the same agent."""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from crm_link.contacts import validate_contact
from crm_link.store import Store
from cti.ami.server import AmiTestServer
from tests.instances import Instances, rep_and_manager

pytestmark = pytest.mark.skipif(
    os.environ.get("SWITCHBOARD_TEST_STORE") != "postgres",
    reason="several instances share a PostgreSQL store (SWITCHBOARD_TEST_STORE=postgres)",
)

NUMBERS = [f"+1212736{5000 + i}" for i in range(10)]
EXTRA = """
[calling_hours]
start = "00:00"
end = "23:59"
[dialer]
tick_seconds = 0.1
calls_per_second = 100
wrap_up_seconds = 0
lease_seconds = 30
"""


def _originated(pbx: AmiTestServer) -> list[str]:
    return [a.get("Exten") or "" for a in pbx.actions if a.name == "Originate"]


async def _until(cond: Any, timeout: float = 30) -> None:
    async with asyncio.timeout(timeout):
        while not await cond():
            await asyncio.sleep(0.05)


async def test_a_list_run_through_a_standby_is_dialed_by_the_holder_and_goes_on_after_it_dies(
    tmp_path: Path, store_url: str
) -> None:
    async with Store(store_url) as store:
        rep_token, maria_token = await rep_and_manager(store)
        ids = []
        for i, number in enumerate(NUMBERS):
            contact = validate_contact({"first_name": f"C{i}", "phones": [number]}, region="US")
            ids.append((await store.contacts.create(contact)).id)

        async with (
            AmiTestServer(secret="crm-secret", speed=0.01) as pbx,
            Instances(tmp_path, store_url, pbx_port=pbx.port, extra=EXTRA) as cluster,
        ):
            pbx.talk_seconds = 100.0  # a call lasts about a second: the kill comes mid-list
            await cluster.start("a")
            await cluster.wait_ready("a")
            assert await cluster.wait_holder(["a"]) == "a"
            await cluster.start("b")
            await cluster.start("c")
            for name in ("b", "c"):
                await cluster.wait_ready(name)
            b = cluster.running["b"]
            health = await cluster.health("b")
            assert health is not None and health["instance"]["role"] == "standby"
            assert health["dialer"]["progressive"] == "idle" and "standby" in health["dialer"]["reason"]
            holder_health = await cluster.health("a")
            assert holder_health is not None and holder_health["dialer"]["progressive"] == "dialing"

            async with cluster.http.post(
                f"{b.url}/api/v1/call-lists",
                json={
                    "name": "Service reminder",
                    "mode": "progressive",
                    "contact_ids": ids,
                    "max_attempts": 1,
                    "agents": ["jsmith"],
                    "start": True,
                },
                headers={"Authorization": f"Bearer {maria_token}"},
            ) as r:
                assert r.status == 201, await r.text()
                list_id = (await r.json())["id"]
            async with cluster.http.post(
                f"{b.url}/api/v1/agent/ready",
                json={"list_id": list_id},
                headers={"Authorization": f"Bearer {rep_token}"},
            ) as r:
                assert r.status == 200, await r.text()

            async def dialed(n: int) -> bool:
                return len(_originated(pbx)) >= n

            await _until(lambda: dialed(3))
            # every Originate so far came through the holder's session: the standbys have none
            assert pbx.logins == 1
            await cluster.kill("a")
            before = len(_originated(pbx))
            holder = await cluster.wait_holder(["b", "c"], timeout=30)
            health = await cluster.health(holder)
            assert health is not None and health["dialer"]["ready_agents"] == 1, health

            async def list_done() -> bool:
                rows = await store.db.fetchall(
                    "SELECT count(*) FROM call_list_entries WHERE list_id = ? AND state IN ('pending', 'in_progress')",
                    (list_id,),
                )
                return int(rows[0][0]) == 0

            await _until(list_done, timeout=90)  # the entry a was calling: its lease (30 s) runs out
            numbers = _originated(pbx)
            twice = [n for n, k in Counter(numbers).items() if k > 1]
            assert not twice, f"dialed more than once: {twice}"
            assert len(numbers) > before, "the new holder dialed nothing"
            assert pbx.logins == 2
            attempts = await store.db.fetchall(
                "SELECT entry_id, count(*) AS n FROM call_attempts WHERE list_id = ? GROUP BY entry_id",
                (list_id,),
            )
            assert all(r["n"] == 1 for r in attempts)
            assert len(attempts) == len(numbers)
            # nothing was failed by a standby's dialer
            failed = await store.db.fetchall(
                "SELECT count(*) FROM call_attempts WHERE list_id = ? AND state = 'failed'", (list_id,)
            )
            assert failed[0][0] == 0
