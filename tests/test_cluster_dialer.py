"""Progressive dialing with several instances on one PostgreSQL store: the list is started and the
agent joins through a standby's API, the AMI holder dials, each entry once; the holder is killed
mid-list and the instance that takes the PBX over goes on with the same agent."""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from crm_link.contacts import validate_contact
from crm_link.store import Store
from cti.ami.server import AmiTestServer
from switchboard.sim.twilio_api import FakeTwilioApi
from tests.conftest import PASSWORD
from tests.instances import Instances, free_port, rep_and_manager

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


async def _a_holds_b_and_c_stand_by(cluster: Instances) -> None:
    """Start a, wait until it holds the PBX, then start b and c as standbys."""
    await cluster.start("a")
    await cluster.wait_ready("a")
    assert await cluster.wait_holder(["a"]) == "a"
    await cluster.start("b")
    await cluster.start("c")
    for name in ("b", "c"):
        await cluster.wait_ready(name)


async def _progressive_list(
    http: aiohttp.ClientSession, url: str, name: str, ids: list[int], manager_token: str, rep_token: str
) -> int:
    """A manager starts a progressive list for jsmith through `url`; jsmith says ready there."""
    async with http.post(
        f"{url}/api/v1/call-lists",
        json={"name": name, "mode": "progressive", "contact_ids": ids, "max_attempts": 1,
              "agents": ["jsmith"], "start": True},
        headers={"Authorization": f"Bearer {manager_token}"},
    ) as r:  # fmt: skip
        assert r.status == 201, await r.text()
        list_id = int((await r.json())["id"])
    async with http.post(
        f"{url}/api/v1/agent/ready",
        json={"list_id": list_id},
        headers={"Authorization": f"Bearer {rep_token}"},
    ) as r:
        assert r.status == 200, await r.text()
    return list_id


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
            await _a_holds_b_and_c_stand_by(cluster)
            b = cluster.running["b"]
            health = await cluster.health("b")
            assert health is not None and health["instance"]["role"] == "standby"
            assert health["dialer"]["progressive"] == "idle" and "standby" in health["dialer"]["reason"]
            holder_health = await cluster.health("a")
            assert holder_health is not None and holder_health["dialer"]["progressive"] == "dialing"

            list_id = await _progressive_list(
                cluster.http, b.url, "Service reminder", ids, maria_token, rep_token
            )

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


async def test_a_preview_dial_on_a_standby_is_placed_by_the_holder_and_closed_through_the_standby(
    tmp_path: Path, store_url: str
) -> None:
    async with Store(store_url) as store:
        rep = await store.users.add("jsmith", role="rep", password=PASSWORD, extension="1001")
        rep_token = await store.users.create_token(rep.id, "test")
        maria = await store.users.add("maria", role="manager", password=PASSWORD)
        maria_token = await store.users.create_token(maria.id, "test")
        people = []
        for i, name in enumerate(("Jane", "Pat")):
            contact = validate_contact({"first_name": name, "phones": [NUMBERS[i]]}, region="US")
            people.append((await store.contacts.create(contact)).id)
        as_rep = {"Authorization": f"Bearer {rep_token}"}

        async with (
            AmiTestServer(secret="crm-secret", speed=0.01) as pbx,
            Instances(tmp_path, store_url, pbx_port=pbx.port, extra=EXTRA) as cluster,
        ):
            pbx.talk_seconds = 300.0  # about 3 s: long enough to be listed while it lasts
            await _a_holds_b_and_c_stand_by(cluster)
            b, c = cluster.running["b"], cluster.running["c"]
            assert await cluster.role("b") == "standby"

            async with cluster.http.post(
                f"{b.url}/api/v1/call-lists",
                json={"name": "Follow-ups", "contact_ids": people, "max_attempts": 1, "start": True},
                headers={"Authorization": f"Bearer {maria_token}"},
            ) as r:
                assert r.status == 201, await r.text()
                list_id = (await r.json())["id"]
            async with cluster.http.post(
                f"{b.url}/api/v1/agent/next-call", json={"list_id": list_id}, headers=as_rep
            ) as r:
                assert r.status == 200, await r.text()
                entry_id = (await r.json())["entry"]["id"]
            first = await store.call_lists.entry(entry_id)
            async with cluster.http.post(
                f"{b.url}/api/v1/agent/entries/{entry_id}/dial", headers=as_rep
            ) as r:
                assert r.status == 202, await r.text()
                attempt = await r.json()
            assert attempt["state"] == "dialing" and attempt["entry_id"] == entry_id
            call_id = attempt["call_id"]
            assert call_id and call_id.startswith(f"attempt-{attempt['id']}-")

            async def originated() -> bool:
                return len(_originated(pbx)) >= 1

            await _until(originated)
            # the agent's calls, asked of the instance that placed none of them
            for inst in (b, c):
                async with cluster.http.get(f"{inst.url}/api/v1/agent/dialer", headers=as_rep) as r:
                    assert r.status == 200, await r.text()
                    state = await r.json()
                assert state["calls"] == [
                    {
                        "attempt_id": attempt["id"],
                        "entry_id": entry_id,
                        "list_id": list_id,
                        "call_id": call_id,
                    }
                ], inst.name

            async def answered() -> bool:
                done = await store.call_lists.attempt(attempt["id"])
                return done.state == "answered" and done.touch_id is not None

            await _until(answered)
            async with cluster.http.post(
                f"{b.url}/api/v1/call-attempts/{attempt['id']}/disposition",
                json={"disposition": "not interested", "note": "bought elsewhere"},
                headers=as_rep,
            ) as r:
                assert r.status == 200, await r.text()
            entry = await store.call_lists.entry(entry_id)
            assert entry.state == "done" and entry.result == "not interested"
            done = await store.call_lists.attempt(attempt["id"])
            assert done.call_id == call_id
            assert _originated(pbx) == [first.number]  # one Originate, by the holder's session
            assert pbx.logins == 1
            rows = await store.db.fetchall(
                "SELECT count(*) FROM call_attempts WHERE entry_id = ?", (entry_id,)
            )
            assert rows[0][0] == 1
            rows = await store.db.fetchall(
                "SELECT count(*) FROM touches WHERE contact_id = ? AND kind = 'call'", (first.contact_id,)
            )
            assert rows[0][0] == 1
            async with cluster.http.get(f"{b.url}/api/v1/agent/dialer", headers=as_rep) as r:
                assert (await r.json())["calls"] == []

            # the holder hangs (its lock stays held, so nobody takes the PBX over): a dial on a standby
            # is refused after the wait, and nothing is written
            async with cluster.http.post(
                f"{b.url}/api/v1/agent/next-call", json={"list_id": list_id}, headers=as_rep
            ) as r:
                second = (await r.json())["entry"]["id"]
            holder = cluster.running["a"].proc
            holder.send_signal(signal.SIGSTOP)
            try:
                async with cluster.http.post(
                    f"{b.url}/api/v1/agent/entries/{second}/dial", headers=as_rep
                ) as r:
                    assert r.status == 503, await r.text()
                    error = (await r.json())["error"]
                assert error["code"] == "no_phone_system" and "no instance holding it" in error["message"]
            finally:
                holder.send_signal(signal.SIGCONT)
            rows = await store.db.fetchall("SELECT count(*) FROM call_attempts WHERE entry_id = ?", (second,))
            assert rows[0][0] == 0
            assert len(_originated(pbx)) == 1


async def test_with_twilio_alone_the_lock_holder_dials_for_an_agent_who_joined_elsewhere(
    tmp_path: Path, store_url: str
) -> None:
    """No Asterisk: the instance holding the Twilio dialer's lock dials for an agent who joined through
    another one (whose dialer idles); Twilio's webhooks for the calls reach the dialing instance."""
    sid, token = "AC" + "3" * 32, "rest-token"
    async with Store(store_url) as store:
        rep = await store.users.add("jsmith", role="rep", password=PASSWORD)
        rep_token = await store.users.create_token(rep.id, "test")
        maria = await store.users.add("maria", role="manager", password=PASSWORD)
        maria_token = await store.users.create_token(maria.id, "test")
        ids = []
        for i, number in enumerate(NUMBERS[:4]):
            contact = validate_contact({"first_name": f"C{i}", "phones": [number]}, region="US")
            ids.append((await store.contacts.create(contact)).id)

        async with FakeTwilioApi(sid, token, talk_seconds=0.05) as fake:
            extra = EXTRA + (
                "[twilio]\nenabled = true\n"
                f'account_sid = "{sid}"\nauth_token = "{token}"\n'
                f'api_base = "{fake.base_url}"\ncaller_id = "+15557650000"\n'
            )
            async with Instances(tmp_path, store_url, extra=extra) as cluster:
                port_b = free_port()
                webhooks = {"SWITCHBOARD_SERVER_PUBLIC_URL": f"http://127.0.0.1:{port_b}"}
                await cluster.start("b", port=port_b, env=webhooks)
                await cluster.wait_ready("b")

                async def dialing(name: str) -> bool:
                    health = await cluster.health(name)
                    return health is not None and health["dialer"]["progressive"] == "dialing"

                await _until(lambda: dialing("b"))
                a = await cluster.start("a", env=webhooks)
                await cluster.wait_ready("a")
                health = await cluster.health("a")
                assert health is not None and health["dialer"]["progressive"] == "idle", health
                assert "Twilio dialer" in health["dialer"]["reason"]

                list_id = await _progressive_list(cluster.http, a.url, "tw", ids, maria_token, rep_token)

                async def list_done() -> bool:
                    return (await store.call_lists.get(list_id)).state == "done"

                await _until(list_done, timeout=60)
                created = [r[2] for r in fake.requests if r[1].endswith("/Calls.json")]
                attempts = await store.call_lists.attempts_of(list_id=list_id)
                assert len(created) == len(attempts) == 4
                assert {c["To"] for c in created} == {"client:jsmith"}
                assert all(x.state == "answered" and x.touch_id is not None for x in attempts)
                health_b = await cluster.health("b")
                assert health_b is not None and health_b["dialer"]["in_flight"] == 0
                health_a = await cluster.health("a")
                assert health_a is not None and health_a["dialer"]["progressive"] == "idle"
                assert health_a["dialer"]["ready_agents"] == 1  # the agent joined here
                async with cluster.http.get(
                    f"{a.url}/api/v1/agent/dialer", headers={"Authorization": f"Bearer {rep_token}"}
                ) as r:
                    assert (await r.json()) == {"ready_list_id": list_id, "calls": []}


async def test_a_disposition_on_a_standby_ends_the_wrap_up_on_the_dialing_holder(
    tmp_path: Path, store_url: str
) -> None:
    async with Store(store_url) as store:
        rep = await store.users.add("jsmith", role="rep", password=PASSWORD, extension="1001")
        as_rep = {"Authorization": f"Bearer {await store.users.create_token(rep.id, 'test')}"}
        maria = await store.users.add("maria", role="manager", password=PASSWORD)
        as_maria = {"Authorization": f"Bearer {await store.users.create_token(maria.id, 'test')}"}
        ids = []
        for i, number in enumerate(NUMBERS[:2]):
            contact = validate_contact({"first_name": f"C{i}", "phones": [number]}, region="US")
            ids.append((await store.contacts.create(contact)).id)
        extra = EXTRA.replace("wrap_up_seconds = 0", "wrap_up_seconds = 600")

        async with (
            AmiTestServer(secret="crm-secret", speed=0.01) as pbx,
            Instances(tmp_path, store_url, pbx_port=pbx.port, extra=extra) as cluster,
        ):
            await cluster.start("a")
            await cluster.wait_ready("a")
            assert await cluster.wait_holder(["a"]) == "a"
            b = await cluster.start("b")
            await cluster.wait_ready("b")
            async with cluster.http.post(
                f"{b.url}/api/v1/call-lists",
                json={
                    "name": "Two",
                    "mode": "progressive",
                    "contact_ids": ids,
                    "max_attempts": 1,
                    "agents": ["jsmith"],
                    "start": True,
                },
                headers=as_maria,
            ) as r:
                assert r.status == 201, await r.text()
                list_id = (await r.json())["id"]
            async with cluster.http.post(
                f"{b.url}/api/v1/agent/ready", json={"list_id": list_id}, headers=as_rep
            ) as r:
                assert r.status == 200, await r.text()

            async def first_done() -> bool:
                rows = await store.call_lists.attempts_of(list_id=list_id)
                return len(rows) == 1 and rows[0].state == "answered"

            await _until(first_done)
            (first,) = await store.call_lists.attempts_of(list_id=list_id)
            await asyncio.sleep(1.0)  # ten ticks of the holder's dialer: the wrap-up holds the agent
            assert len(_originated(pbx)) == 1
            async with cluster.http.post(
                f"{b.url}/api/v1/call-attempts/{first.id}/disposition",
                json={"disposition": "sold"},
                headers=as_rep,
            ) as r:
                assert r.status == 200, await r.text()

            async def second() -> bool:
                return len(_originated(pbx)) == 2

            await _until(second, timeout=15)
