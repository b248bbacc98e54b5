"""Screen-pop latency while a CRM backlog drains: AMI event → pop on the agent's WebSocket, with the
webhook outbox idle and while a backlog of --backlog events is delivered to a loopback receiver.

    python bench/webhooks_pop.py [--backlog 100000] [--seconds 40] [--agents 50] [--connections 32]

The whole app (a fresh store with --callers known customers, the Asterisk connector, the hub, the
CRM delivery worker) against the in-process AMI test PBX on loopback; --agents WebSocket clients stay
connected; queue calls from known customers ring random agents at --calls-per-second. The CRM
stand-in (signature checks, dedup by event id) runs in a child process, so its work does not share
the app's loop (a real CRM is another machine). Phase 1: calls for --seconds with the outbox empty.
Phase 2: --backlog contacts are inserted (one event each, written by the triggers), then the same
calls for --seconds while the worker drains them; the backlog left at the end is printed, so the
whole phase ran during the drain.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from _common import describe_us, free_port, pct, report
from aiohttp import web
from screenpop import TimedPbx

from crm_link.contacts import ContactFields, validate_contact
from switchboard.app import create_app
from switchboard.keys import ASTERISK, STORE
from switchboard.settings import Secret, WebhookSettings, load_settings
from switchboard.sim.crm_standin import CrmStandIn
from tests.loop_lag import LoopLag

SECRET = "bench-secret-0123456789"


async def receiver(port: int) -> None:
    """The child process: the CRM stand-in on `port` until stdin closes."""
    crm = await CrmStandIn(secret=SECRET).start(port=port)
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await crm.stop()


def _number(i: int) -> str:
    return f"+1201{2000000 + i:07d}"


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backlog", type=int, default=100_000)
    ap.add_argument("--seconds", type=float, default=40)
    ap.add_argument("--agents", type=int, default=50)
    ap.add_argument("--callers", type=int, default=2000)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--calls-per-second", type=float, default=3.0)
    ap.add_argument("--receiver", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.receiver:
        await receiver(args.receiver)
        return

    rport = free_port()
    child = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--receiver", str(rport),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert child.stdout is not None and child.stdin is not None
    assert (await child.stdout.readline()).strip() == b"ready"

    tmp = tempfile.TemporaryDirectory()
    pbx = TimedPbx(secret="bench", speed=0.25)
    pbx.sent = {}
    await pbx.start()
    settings = load_settings(env={})
    settings.store.url = f"sqlite:///{Path(tmp.name) / 'pop.db'}"
    settings.asterisk.enabled = True
    settings.asterisk.port = pbx.port
    settings.asterisk.secret.__init__("bench")  # type: ignore[misc]
    settings.asterisk.username = "switchboard"
    settings.crm.webhooks = [
        WebhookSettings(
            name="dms",
            url=f"http://127.0.0.1:{rport}/hooks/switchboard",
            secret=Secret(SECRET),
            connections=args.connections,
        )
    ]
    app = create_app(settings)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    store = app[STORE]
    await store.users.add_many(
        [(f"agent{i}", "rep", str(2000 + i)) for i in range(args.agents)], password="bench-pass"
    )
    users = {u.username: u for u in await store.users.list()}
    tokens = {name: await store.users.create_token(u.id) for name, u in users.items()}
    await store.contacts.bulk_insert(
        [validate_contact({"first_name": f"Caller{i}", "phones": [_number(i)]}, region="US") for i in range(args.callers)]
    )  # fmt: skip
    await app[ASTERISK].client.wait_connected(10)
    await app[ASTERISK].directory.reload()

    async def backlog() -> int:
        c = await store.crm_events.counts()
        return int(c["backlog"] + c["unfanned"])

    while await backlog():  # noqa: ASYNC110 (the callers' own events go first)
        await asyncio.sleep(0.2)

    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    sockets = []
    for i in range(args.agents):
        ws = await session.ws_connect(f"http://127.0.0.1:{port}/ws/agent?token={tokens[f'agent{i}']}")
        await ws.receive()
        sockets.append(ws)
    phase: dict[str, list[float]] = {"idle": [], "drain": []}
    current = ["idle"]

    async def listen(ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            got = time.perf_counter()
            data = json.loads(msg.data)
            if data["type"] == "screen_pop":
                sent = pbx.sent.get(data["call"]["id"])
                if sent is not None:
                    phase[current[0]].append(got - sent)

    listeners = [asyncio.create_task(listen(ws)) for ws in sockets]
    rng = random.Random(3)

    async def calls(seconds: float) -> None:
        running: set[asyncio.Task[Any]] = set()
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            iface = f"PJSIP/{2000 + rng.randrange(args.agents)}"
            task = asyncio.create_task(
                pbx.inbound_call(
                    _number(rng.randrange(args.callers)), agents=[iface], answer=iface, ring_seconds=2, talk_seconds=4
                )
            )  # fmt: skip
            running.add(task)
            task.add_done_callback(running.discard)
            await asyncio.sleep(1 / args.calls_per_second)
        await asyncio.gather(*running)

    print("phase idle", flush=True, file=sys.stderr)
    cpu0, wall0 = time.thread_time(), time.perf_counter()
    async with LoopLag() as idle_lag:
        await calls(args.seconds)
    idle_cpu = (time.thread_time() - cpu0) / (time.perf_counter() - wall0)
    t0 = time.perf_counter()
    await store.contacts.bulk_insert([ContactFields(first_name=f"B{i}") for i in range(args.backlog)])
    fill_s = time.perf_counter() - t0
    current[0] = "drain"
    before = await backlog()
    print("phase drain", flush=True, file=sys.stderr)
    t0, cpu0 = time.perf_counter(), time.thread_time()
    async with LoopLag() as drain_lag:
        await calls(args.seconds)
    elapsed = time.perf_counter() - t0
    drain_cpu = (time.thread_time() - cpu0) / elapsed
    print("phase done", flush=True, file=sys.stderr)
    left = await backlog()
    for ws in sockets:
        await ws.close()
    await asyncio.gather(*listeners, return_exceptions=True)
    await session.close()
    await runner.cleanup()
    await pbx.close()
    child.stdin.close()
    await child.wait()
    tmp.cleanup()
    idle, drain = phase["idle"], phase["drain"]
    report(
        [
            describe_us(
                "pop, outbox idle",
                idle,
                loop_cpu=f"{idle_cpu:.0%}",
                loop_max_busy_ms=f"{idle_lag.max_busy_ms:.0f}",
                loop_max_stall_ms=f"{idle_lag.max_stall_ms:.0f}",
            ),
            describe_us(
                f"pop, {args.backlog} events draining",
                drain,
                backlog_at_start=before,
                backlog_at_end=left,
                delivered_per_s=f"{(before - left) / elapsed:.0f}",
                fill_s=f"{fill_s:.1f}",
                loop_cpu=f"{drain_cpu:.0%}",
                loop_max_busy_ms=f"{drain_lag.max_busy_ms:.0f}",
                loop_max_stall_ms=f"{drain_lag.max_stall_ms:.0f}",
            ),
            f"ratio p50 {pct(drain, 50) / pct(idle, 50):.1f}x, p99 {pct(drain, 99) / pct(idle, 99):.1f}x"
            f" (load average at the end {' '.join(f'{x:.1f}' for x in os.getloadavg())})",
            f"added p99: {(pct(drain, 99) - pct(idle, 99)) * 1e3:.2f} ms",
        ]
    )


if __name__ == "__main__":
    asyncio.run(main())
