"""Screen-pop latency: AMI event written to the socket → pop JSON received on the agent's WebSocket.

    python bench/screenpop.py [--agents 1000] [--seconds 60] [--contacts 1000000] [--out-of-process]

The real app (store on a copy of the 1M-contact database from bench/store.py, Asterisk connector,
hub) against the in-process AMI test PBX on loopback; `--agents` WebSocket clients stay connected;
scripted queue calls from known customers ring random agents at about 100 AMI events per second.
The clock starts when the PBX writes the AgentCalled event that rings the agent.

With `--out-of-process` the app runs in a child process of its own and the agents' WebSocket
clients in another; the PBX stays in this one. Times are `time.perf_counter()` (CLOCK_MONOTONIC,
the same clock in every process); the app's RSS is its VmHWM/VmRSS from /proc. It also prints where
each pop's time went, step by step inside the app (bench/_popspans.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
from _common import CACHE, ROOT, describe_us, report
from _popspans import PopSpans, analyse
from aiohttp import web

from crm_link.store import Store
from cti.ami.server import AmiTestServer
from switchboard.app import create_app
from switchboard.keys import ASTERISK, HUB, STORE
from switchboard.service import freeze_startup_heap
from switchboard.settings import load_settings


class TimedPbx(AmiTestServer):
    """Remembers when it wrote the event that rings each call's agent."""

    sent: dict[str, float]
    numbers: dict[str, str]
    events_written = 0

    async def event(self, name: str, channel: Any = None, **headers: Any) -> None:
        self.events_written += 1
        if name == "AgentCalled" and channel is not None:
            self.sent.setdefault(channel.linkedid, time.perf_counter())
            self.numbers.setdefault(channel.linkedid, channel.caller)
        await super().event(name, channel, **headers)


def bench_settings(db: Any, pbx_port: int) -> Any:
    settings = load_settings(env={})
    settings.store.url = f"sqlite:///{db}"
    settings.asterisk.enabled = True
    settings.asterisk.port = pbx_port
    settings.asterisk.secret.__init__("bench")  # type: ignore[misc]
    settings.asterisk.username = "switchboard"
    return settings


async def serve_app(db: str, pbx_port: int) -> None:
    """Child process: the app alone; prints its port, runs until stdin closes."""
    app = create_app(bench_settings(db, pbx_port))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    await app[ASTERISK].client.wait_connected(10)
    await app[ASTERISK].directory.reload()
    # as `switchboard serve` does once every context has started
    frozen = freeze_startup_heap()
    print(f"gc: {frozen} objects frozen after start-up", file=sys.stderr, flush=True)
    # where the AMI consumer's time goes: how long each event waited in the client's queue, and
    # how long the call service took over each kind of domain event
    asterisk = app[ASTERISK]
    queue = asterisk.client.events
    enqueued: dict[int, float] = {}
    waits: dict[str, list[float]] = {}
    handling: dict[str, list[float]] = {}
    put, get = queue.put_nowait, queue.get

    def stamped_put(ev: Any) -> None:
        enqueued[id(ev)] = time.perf_counter()
        put(ev)

    async def stamped_get() -> Any:
        ev = await get()
        t = enqueued.pop(id(ev), None)
        if t is not None:
            waits.setdefault(ev.name, []).append(time.perf_counter() - t)
        return ev

    handle = asterisk.service.handle

    async def timed_handle(event: Any) -> None:
        t = time.perf_counter()
        await handle(event)
        handling.setdefault(type(event).__name__, []).append(time.perf_counter() - t)

    queue.put_nowait = stamped_put  # type: ignore[method-assign,assignment]
    queue.get = stamped_get  # type: ignore[method-assign]
    asterisk.service.handle = timed_handle  # type: ignore[method-assign]
    spans = PopSpans()
    spans.install(app)
    print(f"port {port}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for label, series in (("queue_wait", waits), ("handle", handling)):
        for name, samples in sorted(series.items()):
            if name in ("AgentCalled", "Newchannel") or label == "handle":
                print(describe_us(f"app_{label}_{name}", samples), file=sys.stderr, flush=True)
    print(f"connected {app[HUB].connections}", flush=True)
    print(spans.dump(), flush=True)
    await runner.cleanup()


async def run_clients(port: int, token_file: str) -> None:
    """Child process: one WebSocket per token; on a line from stdin, prints every pop's arrival."""
    tokens = json.loads(Path(token_file).read_text())  # noqa: ASYNC240 (before any socket)
    arrivals: list[tuple[str, float]] = []
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    sockets = []
    for token in tokens:
        ws = await session.ws_connect(f"http://127.0.0.1:{port}/ws/agent?token={token}")
        await ws.receive()
        sockets.append(ws)

    async def listen(ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            got = time.perf_counter()
            data = json.loads(msg.data)
            if data["type"] == "screen_pop":
                arrivals.append((data["call"]["id"], got))

    listeners = [asyncio.create_task(listen(ws)) for ws in sockets]
    print(f"ready {len(sockets)}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    for ws in sockets:
        await ws.close()
    await asyncio.gather(*listeners, return_exceptions=True)
    await session.close()
    print(json.dumps(arrivals), flush=True)


def schedstat(pid: int) -> tuple[float, float]:
    """(CPU seconds, seconds runnable but waiting for a core) over all the process's threads."""
    cpu = wait = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
            on, waited, _ = f.read().split()
        cpu += int(on)
        wait += int(waited)
    return cpu / 1e9, wait / 1e9


def proc_memory_mb(pid: int) -> dict[str, float]:
    out = {}
    for line in open(f"/proc/{pid}/status"):
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            out[key] = int(value.split()[0]) / 1024
    return out


async def out_of_process(args: argparse.Namespace, db: Any) -> None:
    async with Store(str(db)) as store:
        await store.users.add_many(
            [(f"agent{i}", "rep", str(2000 + i)) for i in range(args.agents)], password="bench-pass"
        )
        users = await store.users.list()
        tokens = [await store.users.create_token(u.id) for u in users if u.username.startswith("agent")]
    token_file = CACHE / "screenpop-tokens.json"
    token_file.write_text(json.dumps(tokens))
    pbx = TimedPbx(secret="bench", speed=0.25)
    pbx.dialplan_seconds = args.dialplan_ms / 1000 / pbx.speed  # in real time, whatever the speed
    pbx.sent, pbx.numbers = {}, {}
    await pbx.start()
    me = str(ROOT / "bench" / "screenpop.py")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    nice = ["nice", "-n", str(args.app_nice)] if args.app_nice else []
    app_proc = await asyncio.create_subprocess_exec(
        *nice, sys.executable, me, "--serve-app", str(db), str(pbx.port),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, limit=2**28,
    )  # fmt: skip
    assert app_proc.stdout and app_proc.stdin
    line = (await app_proc.stdout.readline()).decode()
    if not line.startswith("port "):
        raise SystemExit(f"the app did not start: {line!r}")
    port = int(line.split()[1])
    print(f"app pid {app_proc.pid} on port {port}", flush=True)
    t_connect = time.perf_counter()
    clients = await asyncio.create_subprocess_exec(
        sys.executable, me, "--clients", str(port), str(token_file),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, limit=2**26,
    )  # fmt: skip
    assert clients.stdout and clients.stdin
    line = (await clients.stdout.readline()).decode()
    print(f"clients pid {clients.pid}: {line.strip()} in {time.perf_counter() - t_connect:.1f} s", flush=True)
    rng = random.Random(3)
    calls: set[asyncio.Task[Any]] = set()
    events_before = pbx.events_written
    sched_before = schedstat(app_proc.pid)
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
    events = pbx.events_written - events_before
    sched_after = schedstat(app_proc.pid)
    await asyncio.sleep(1)
    memory = proc_memory_mb(app_proc.pid)
    clients.stdin.write(b"stop\n")
    await clients.stdin.drain()
    arrivals = json.loads(await clients.stdout.readline())
    await clients.wait()
    app_proc.stdin.close()
    connected = (await app_proc.stdout.readline()).decode().split()[-1]
    spans = json.loads(await app_proc.stdout.readline())
    await app_proc.wait()
    await pbx.close()
    latencies = [got - pbx.sent[call] for call, got in arrivals if call in pbx.sent]
    print("where the time goes (PBX write → … → clients' receive):")
    for line in analyse(spans, pbx.sent, dict(arrivals), pbx.numbers):
        print(line)
    report(
        [
            describe_us(
                "screen_pop_latency_out_of_process",
                latencies,
                agents_connected=connected,
                contacts=args.contacts,
                ami_events_per_s=f"{events / elapsed:.0f}",
                dialplan_ms=args.dialplan_ms,
                calls=len(pbx.sent),
                app_vmhwm_mb=f"{memory['VmHWM']:.0f}",
                app_rss_mb=f"{memory['VmRSS']:.0f}",
                app_cpu_s=f"{sched_after[0] - sched_before[0]:.1f}",
                app_runqueue_wait_s=f"{sched_after[1] - sched_before[1]:.1f}",
                seconds=f"{elapsed:.0f}",
                app_nice=args.app_nice,
                load=" ".join(f"{x:.2f}" for x in os.getloadavg()),
            ),
        ]
    )


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--agents", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--contacts", type=int, default=1_000_000)
    ap.add_argument("--calls-per-second", type=float, default=3.0)  # ~33 AMI events per call
    ap.add_argument(
        "--dialplan-ms",
        type=float,
        default=5.0,
        help="the PBX's pause between a call's caller ID and its queue ringing an agent "
        "(4-5 ms in the Asterisk 22 recordings; 0: all in one burst)",
    )
    ap.add_argument("--out-of-process", action="store_true", help="app, PBX and clients in 3 processes")
    ap.add_argument("--app-nice", type=int, default=0, help="--out-of-process: run the app under nice -n N")
    ap.add_argument("--serve-app", nargs=2, metavar=("DB", "PBX_PORT"), help=argparse.SUPPRESS)
    ap.add_argument("--clients", nargs=2, metavar=("PORT", "TOKENS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_app:
        await serve_app(args.serve_app[0], int(args.serve_app[1]))
        return
    if args.clients:
        await run_clients(int(args.clients[0]), args.clients[1])
        return
    source = CACHE / f"contacts-{args.contacts}.db"
    if not source.exists():
        raise SystemExit(f"run bench/store.py --contacts {args.contacts} first (it builds {source})")
    # the contacts' import left one CRM event per contact to fan out: a running dealership's store
    # has them behind it, so the runs start from a copy where they are (once, cached)
    settled = CACHE / f"screenpop-source-{args.contacts}.db"
    if not settled.exists():
        partial = settled.with_suffix(".partial")
        shutil.copyfile(source, partial)
        async with Store(str(partial)) as store:
            fanned = 0
            while n := await store.crm_events.fan_out([], limit=100_000):
                fanned += n
        for p in CACHE.glob(f"{partial.name}-*"):
            p.unlink()
        partial.rename(settled)
        print(f"{settled.name}: {fanned} imported CRM events fanned out (no subscriber)", flush=True)
    db = CACHE / "screenpop.db"
    for p in CACHE.glob("screenpop.db*"):
        p.unlink()
    shutil.copyfile(settled, db)
    if args.out_of_process:
        await out_of_process(args, db)
        return

    pbx = TimedPbx(secret="bench", speed=0.25)
    pbx.dialplan_seconds = args.dialplan_ms / 1000 / pbx.speed  # in real time, whatever the speed
    pbx.sent, pbx.numbers = {}, {}
    await pbx.start()
    app = create_app(bench_settings(db, pbx.port))
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
                dialplan_ms=args.dialplan_ms,
                calls=len(pbx.sent),
                max_rss_mb=f"{rss_mb:.0f}",
            ),
        ]
    )


if __name__ == "__main__":
    asyncio.run(main())
