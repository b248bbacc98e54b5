"""Three instances on one PostgreSQL: pop latency on the AMI holder and on another instance, and how
long the AMI connection takes to move when its holder is SIGKILLed.

    python bench/cluster_pops.py --calls 300 --rate 10 --kills 5

A throwaway PostgreSQL cluster (tests/pg_cluster.py), three `python -m switchboard serve` processes
(tests/instances.py) and, in this process, the AMI test PBX and every agent's two WebSockets: one on
the instance holding the AMI connection (A), one on an instance that does not (C). The clock starts
when the PBX writes the AgentCalled event that rings the agent and stops when the pop's JSON
arrives on each socket (`time.perf_counter()`, one clock for all processes). Take-over: from the
SIGKILL of the holder to the PBX's next successful login, and to the pop of a call placed as soon
as that login is seen arriving on a surviving instance's socket.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from _common import pct, report

from crm_link.contacts import validate_contact
from crm_link.store import Store
from cti.ami.server import AmiTestServer
from tests import pg_cluster
from tests.instances import Instances


class TimedPbx(AmiTestServer):
    """Remembers when it wrote the event that rings each call's agent."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.sent: dict[str, float] = {}

    async def event(self, name: str, channel: Any = None, **headers: Any) -> None:
        if name == "AgentCalled" and channel is not None:
            self.sent.setdefault(channel.linkedid, time.perf_counter())
        await super().event(name, channel, **headers)


def ms(samples: list[float]) -> str:
    xs = [s * 1000 for s in samples]
    if not xs:
        return "no samples"
    return f"p50 {pct(xs, 50):.1f} ms, p99 {pct(xs, 99):.1f} ms, max {max(xs):.1f} ms (n={len(xs)})"


async def until(done: Any, timeout: float, step: float = 0.005) -> None:
    """Poll `done()` every `step` seconds until it is true (TimeoutError after `timeout`)."""
    async with asyncio.timeout(timeout):
        while True:
            if done():
                return
            await asyncio.sleep(step)


async def listen(ws: aiohttp.ClientWebSocketResponse, arrived: dict[str, float]) -> None:
    async for msg in ws:
        if msg.type != aiohttp.WSMsgType.TEXT:
            break
        data = json.loads(msg.data)
        if data.get("type") == "screen_pop":
            arrived.setdefault(data["call"]["id"], time.perf_counter())


async def run(args: argparse.Namespace, pg_base: Path, base: Path) -> None:
    t = time.perf_counter()
    admin = pg_cluster.start(pg_base)
    import psycopg

    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("CREATE DATABASE switchboard")
    url = admin.rsplit("/", 1)[0] + "/switchboard"
    interfaces = {f"Local/agent{i}@agents/n": f"agent{i}" for i in range(args.agents)}
    tokens: list[str] = []
    numbers: list[str] = []
    async with Store(url, pool_size=2) as store:
        for i in range(args.agents):
            user = await store.users.add(
                f"agent{i}", role="rep", password="bench-pass-1", extension=f"{1000 + i}"
            )
            tokens.append(await store.users.create_token(user.id, "bench"))
            number = f"+1212555{i:04d}"
            await store.contacts.create(
                validate_contact(
                    {"first_name": f"Customer{i}", "phones": [number], "owner": f"agent{i}"}, region="US"
                )
            )
            numbers.append(number)
    print(f"PostgreSQL up, {args.agents} agents and customers in {time.perf_counter() - t:.1f} s", flush=True)

    pbx = TimedPbx(secret="crm-secret", speed=args.speed)
    async with (
        pbx,
        Instances(
            base / "instances",
            url,
            pbx_port=pbx.port,
            interfaces=interfaces,
            standby_retry_seconds=args.retry,
        ) as cluster,
    ):
        await cluster.start("a")
        await cluster.wait_ready("a")
        await cluster.wait_holder(["a"])
        await cluster.start("b")
        await cluster.start("c")
        await cluster.wait_ready("b")
        await cluster.wait_ready("c")
        a, c = cluster.running["a"], cluster.running["c"]
        on_a: dict[str, float] = {}
        on_c: dict[str, float] = {}
        sockets = []
        readers = []
        for token in tokens:
            for inst, arrived in ((a, on_a), (c, on_c)):
                ws = await cluster.http.ws_connect(f"{inst.url}/ws/agent?token={token}")
                await ws.receive(timeout=10)  # hello
                sockets.append(ws)
                readers.append(asyncio.create_task(listen(ws, arrived)))
        print(
            f"3 instances, {len(sockets)} agent sockets; placing {args.calls} calls at {args.rate}/s",
            flush=True,
        )

        calls = []
        started = time.perf_counter()
        for n in range(args.calls):
            i = n % args.agents
            iface = f"Local/agent{i}@agents/n"
            calls.append(
                asyncio.create_task(
                    pbx.inbound_call(numbers[i], agents=[iface], answer=iface, ring_seconds=1, talk_seconds=2)
                )
            )
            await asyncio.sleep(max(0.0, started + (n + 1) / args.rate - time.perf_counter()))
        ids = await asyncio.gather(*calls)
        await until(lambda: all(i in on_a and i in on_c for i in ids), 30)
        local = [on_a[i] - pbx.sent[i] for i in ids]
        remote = [on_c[i] - pbx.sent[i] for i in ids]
        extra = [on_c[i] - on_a[i] for i in ids]
        for task in readers:
            task.cancel()
        for ws in sockets:
            await ws.close()

        # take-overs: SIGKILL the holder, time the PBX's next login and a pop on a surviving instance
        moved: list[float] = []
        popped: list[float] = []
        names = ["a", "b", "c"]
        spare = 0
        for _ in range(args.kills):
            holder = await cluster.wait_holder(names)
            survivor = next(n for n in names if n != holder)
            inst = cluster.running[survivor]
            got: dict[str, float] = {}
            ws = await cluster.http.ws_connect(f"{inst.url}/ws/agent?token={tokens[0]}")
            await ws.receive(timeout=10)
            reader = asyncio.create_task(listen(ws, got))
            logins = pbx.logins
            t0 = time.perf_counter()
            await cluster.kill(holder)
            await until(lambda n=logins: pbx.logins > n, 60)
            moved.append(time.perf_counter() - t0)
            call_id = await pbx.inbound_call(numbers[0], agents=["Local/agent0@agents/n"], ring_seconds=1)
            await until(lambda k=call_id, seen=got: k in seen, 30)
            popped.append(got[call_id] - t0)
            reader.cancel()
            await ws.close()
            names.remove(holder)
            spare += 1
            fresh = f"r{spare}"
            await cluster.start(fresh)
            await cluster.wait_ready(fresh)
            names.append(fresh)
        elapsed = time.perf_counter() - started

    report(
        [
            f"cluster_pops calls={args.calls} rate={args.rate}/s agents={args.agents} "
            f"standby_retry_s={args.retry} elapsed_s={elapsed:.0f}",
            f"pop latency, tab on the AMI holder (A): {ms(local)}",
            f"pop latency, tab on another instance (C): {ms(remote)}",
            f"C after A, same pop: {ms(extra)}",
            f"AMI take-over, SIGKILL to the PBX's next login ({args.kills} kills): {ms(moved)}",
            f"SIGKILL to a new call's pop on a surviving instance: {ms(popped)}",
        ]
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--calls", type=int, default=300)
    p.add_argument("--rate", type=float, default=10.0, help="calls started per second")
    p.add_argument("--agents", type=int, default=20)
    p.add_argument("--kills", type=int, default=5)
    p.add_argument("--retry", type=float, default=2.0, help="[asterisk] standby_retry_seconds")
    p.add_argument("--speed", type=float, default=0.1, help="PBX script speed (1.0 = real time)")
    args = p.parse_args()
    # two folders: PostgreSQL runs as its own user, which the cluster's folder is handed to
    pg_base = Path(tempfile.mkdtemp(prefix="switchboard-cluster-bench-pg-"))
    base = Path(tempfile.mkdtemp(prefix="switchboard-cluster-bench-"))
    try:
        asyncio.run(run(args, pg_base, base))
    finally:
        pg_cluster.stop(pg_base, mode="immediate")
        shutil.rmtree(pg_base, ignore_errors=True)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
