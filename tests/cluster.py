"""Several `switchboard serve` processes on loopback sharing one PostgreSQL store, sending SMS through
one Kannel stand-in: what the blast tests and bench/cluster_blast.py start (the processes through
tests/instances.py, the one process starter).

Each instance has its own port, instance id and public URL; the Kannel stand-in runs in the caller's
event loop and tells, from a request's dlr-url, which instance sent it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from campaigns.sms.kannel_standin import KannelStandIn
from crm_link.contacts import validate_contact
from crm_link.store import Store
from switchboard.settings import StoreSettings
from tests.instances import REPO, free_port
from tests.instances import Instance as _Instance

__all__ = [
    "REPO",
    "TAG",
    "EmailInstance",
    "Instance",
    "Outcome",
    "blast_progress",
    "create_blast",
    "free_port",
    "outcome",
    "seed",
    "sent_by",
    "write_config",
]

TAG = "cluster"


class Instance(_Instance):
    """One `switchboard serve` process sending SMS: ready once its channel's worker runs."""

    wait_workers = ("sms:main",)


class EmailInstance(_Instance):
    """One `switchboard serve` process sending email: ready once its email worker runs."""

    wait_workers = ("email",)


def write_config(
    path: Path, *, name: str, port: int, store_url: str, sendsms_url: str, lease_seconds: int, rate: float
) -> None:
    path.write_text(
        f'[server]\nport = {port}\npublic_url = "http://127.0.0.1:{port}"\ninstance_id = "{name}"\n'
        f"lease_seconds = {lease_seconds}\n"
        f'[store]\nurl = "{store_url}"\npool_size = 8\n'
        '[sms]\nquiet_start = "00:00"\nquiet_end = "00:00"\n'
        f'[sms.channels.main]\ntype = "kannel"\nsendsms_url = "{sendsms_url}"\nusername = "tester"\n'
        f'password = "secret"\nsecret = "s"\nrate_per_second = {rate}\n'
    )


async def seed(store_url: str, n: int) -> str:
    """`n` contacts tagged for the blast, and a marketing user; that user's API token."""
    async with Store(StoreSettings(url=store_url).sqlite_path) as store:
        for start in range(0, n, 5000):
            await store.contacts.bulk_insert(
                [
                    validate_contact(
                        {
                            "first_name": f"P{i}",
                            "phones": [f"+1212{5550000 + i:07d}"],
                            "tags": [TAG],
                            "time_zone": "UTC",
                        },
                        region="US",
                    )
                    for i in range(start, min(n, start + 5000))
                ]
            )
        user = await store.users.add("kim", role="marketing", password="correct-horse-1")
        return await store.users.create_token(user.id, "cluster")


async def create_blast(instance: Instance, token: str) -> int:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
        async with http.post(
            f"{instance.url}/api/v1/sms/blasts",
            json={
                "name": "Recall",
                "text": "Hi {{ contact.first_name }}",
                "channel": "main",
                "audience": {"tag": TAG},
            },
        ) as resp:
            body = await resp.json()
            if resp.status != 201:
                raise RuntimeError(f"blast refused: {resp.status} {body}")
            return int(body["id"])


async def blast_progress(instance: Instance, token: str, blast_id: int) -> dict[str, Any]:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
        async with http.get(f"{instance.url}/api/v1/sms/blasts/{blast_id}") as resp:
            body: dict[str, Any] = await resp.json()
            return body


def sent_by(kannel: KannelStandIn) -> Counter[int]:
    """Messages the gateway took, by the port of the instance that sent them (from its dlr-url)."""
    return Counter(urlsplit(q.get("dlr-url", "")).port or 0 for q in kannel.received)


@dataclass
class Outcome:
    """A blast's end as the gateway and the store see it."""

    recipients: int
    at_gateway: int  # requests the gateway took
    duplicates: int  # recipients the gateway got more than one message for
    lost: int  # recipients neither sent (once, at the gateway) nor flagged in doubt
    in_doubt: int  # rows flagged `unknown`
    in_doubt_at_gateway: int  # of those, how many the gateway did get (at most once each)
    states: dict[str, int]
    owners_of_in_doubt: set[str]
    sent_by_owner: dict[str, int]


async def outcome(store_url: str, blast_id: int, kannel: KannelStandIn, recipients: int) -> Outcome:
    got = Counter(q["to"] for q in kannel.received)
    async with Store(StoreSettings(url=store_url).sqlite_path) as store:
        rows = await store.db.fetchall(
            "SELECT to_e164, state, owner FROM sms_outbox WHERE blast_id = ? ORDER BY id", (blast_id,)
        )
    states = Counter(r["state"] for r in rows)
    lost = 0
    for r in rows:
        if r["state"] in ("sent", "delivered") and got[r["to_e164"]] != 1:
            lost += 1
        elif r["state"] not in ("sent", "delivered", "unknown"):
            lost += 1
    lost += recipients - len(rows)
    unknown = [r for r in rows if r["state"] == "unknown"]
    return Outcome(
        recipients=recipients,
        at_gateway=len(kannel.received),
        duplicates=sum(1 for n in got.values() if n > 1),
        lost=lost,
        in_doubt=len(unknown),
        in_doubt_at_gateway=sum(1 for r in unknown if got[r["to_e164"]]),
        states=dict(states),
        owners_of_in_doubt={r["owner"] for r in unknown},
        sent_by_owner=dict(Counter(r["owner"] for r in rows if r["state"] in ("sent", "delivered"))),
    )
