"""Screen-pop latency: AMI event written to the socket → pop JSON received on the agent's WebSocket.

    python bench/screenpop.py [--agents 1000] [--seconds 60] [--contacts 1000000]

The real app (store on a copy of the 1M-contact database from bench/store.py, Asterisk connector,
hub) against the in-process AMI test PBX on loopback; `--agents` WebSocket clients stay connected;
scripted queue calls from known customers ring random agents at about 100 AMI events per second.
The clock starts when the PBX writes the AgentCalled event that rings the agent.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import shutil
import time
from typing import Any

import aiohttp
from _common import CACHE, describe_us, report
from aiohttp import web

from cti.ami.server import AmiTestServer
from switchboard.app import create_app
from switchboard.keys import ASTERISK, HUB, STORE
from switchboard.settings import load_settings


class TimedPbx(AmiTestServer):
    """Remembers when it wrote the event that rings each call's agent."""

    sent: dict[str, float]

    async def event(self, name: str, channel: Any = None, **headers: Any) -> None:
        if name == "AgentCalled" and channel is not None:
            self.sent.setdefault(channel.linkedid, time.perf_counter())
        await super().event(name, channel, **headers)


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--agents", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--contacts", type=int, default=1_000_000)
    ap.add_argument("--calls-per-second", type=float, default=3.0)  # ~33 AMI events per call
    args = ap.parse_args()
    source = CACHE / f"contacts-{args.contacts}.db"
    if not source.exists():
        raise SystemExit(f"run bench/store.py --contacts {args.contacts} first (it builds {source})")
    db = CACHE / "screenpop.db"
    for p in CACHE.glob("screenpop.db*"):
        p.unlink()
    shutil.copyfile(source, db)

    pbx = TimedPbx(secret="bench", speed=0.25)
    pbx.sent = {}
    await pbx.start()
    settings = load_settings(env={})
    settings.store.url = f"sqlite:///{db}"
    settings.asterisk.enabled = True
    settings.asterisk.port = pbx.port
    settings.asterisk.secret.__init__("bench")  # type: ignore[misc]
    settings.asterisk.username = "switchboard"
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
    await app[ASTERISK].client.wait_connected(10)
    await app[ASTERISK].directory.reload()

    latencies: list[float] = []
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))  # one connection per socket
    sockets = []
    t_connect = time.perf_counter()
    for i in range(args.agents):
        ws = await session.ws_connect(f"http://127.0.0.1:{port}/ws/agent?token={tokens[f'agent{i}']}")
        await ws.receive()
        sockets.append(ws)

    async def listen(ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            got = time.perf_counter()
            data = json.loads(msg.data)
            if data["type"] == "screen_pop":
                sent = pbx.sent.get(data["call"]["id"])
                if sent is not None:
                    latencies.append(got - sent)

    print(f"connected {len(sockets)} sockets in {time.perf_counter() - t_connect:.1f} s", flush=True)
    listeners = [asyncio.create_task(listen(ws)) for ws in sockets]
    rng = random.Random(3)
    calls: set[asyncio.Task[Any]] = set()
    events_before = app[ASTERISK].events_seen
    started = time.perf_counter()
    while time.perf_counter() - started < args.seconds:
        agent = rng.randrange(args.agents)
        contact = rng.randrange(2 * args.contacts)
        area = 201 + (contact // 10_000_000) % 700
        number = f"+1{area}{2000000 + contact % 8000000:07d}"
        iface = f"PJSIP/{2000 + agent}"
        task = asyncio.create_task(
            pbx.inbound_call(number, agents=[iface], answer=iface, ring_seconds=2, talk_seconds=4)
        )
        calls.add(task)
        task.add_done_callback(calls.discard)
        await asyncio.sleep(1 / args.calls_per_second)
    await asyncio.gather(*calls)
    elapsed = time.perf_counter() - started
    events = app[ASTERISK].events_seen - events_before
    await asyncio.sleep(1)
    connected = app[HUB].connections
    for ws in sockets:
        await ws.close()
    await asyncio.gather(*listeners, return_exceptions=True)
    await session.close()
    await runner.cleanup()
    await pbx.close()
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    report(
        [
            describe_us(
                "screen_pop_latency",
                latencies,
                agents_connected=connected,
                contacts=args.contacts,
                ami_events_per_s=f"{events / elapsed:.0f}",
                calls=len(pbx.sent),
                max_rss_mb=f"{rss_mb:.0f}",
            ),
        ]
    )


if __name__ == "__main__":
    asyncio.run(main())
