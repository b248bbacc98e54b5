"""Several `switchboard serve` processes on loopback sharing one PostgreSQL store, sending SMS through
one Kannel stand-in: what the cluster tests and bench/cluster_blast.py start.

Each instance is a real subprocess (so it can be SIGKILLed), with its own port, instance id and
public URL; the Kannel stand-in runs in the caller's event loop and tells, from a request's dlr-url,
which instance sent it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from campaigns.sms.kannel_standin import KannelStandIn
from crm_link.contacts import validate_contact
from crm_link.store import Store
from switchboard.settings import StoreSettings

REPO = Path(__file__).resolve().parents[1]
TAG = "cluster"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Instance:
    """One `switchboard serve` process."""

    name: str
    port: int
    config: Path
    proc: Any = None
    stderr: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, cwd: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")} | {
            "PYTHONPATH": str(REPO)
        }
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "switchboard", "serve", "--config", str(self.config),
            cwd=cwd, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        self._drain = asyncio.create_task(self._read_stderr())

    async def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        async for line in self.proc.stderr:
            self.stderr.append(line.decode(errors="replace").rstrip())
            del self.stderr[:-200]

    async def ready(self, timeout: float = 60, worker: str = "sms:main") -> None:
        """Wait until its /healthz answers with `worker` (the SMS channel's, by default) running."""
        async with aiohttp.ClientSession() as http, asyncio.timeout(timeout):
            while True:
                if self.proc.returncode is not None:
                    raise RuntimeError(
                        f"{self.name} exited {self.proc.returncode}: " + "\n".join(self.stderr[-20:])
                    )
                try:
                    async with http.get(f"{self.url}/healthz") as resp:
                        body = await resp.json()
                        if (body.get("instance") or {}).get("id") == self.name and body["workers"].get(
                            worker, {}
                        ).get("state") == "running":
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)

    async def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(30):
                    await self.proc.wait()
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        await self._drain


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
