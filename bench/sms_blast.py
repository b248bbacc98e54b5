"""SMS blast benchmarks: materialize 100k recipients, dispatch them to a gateway stand-in as fast as
the durable outbox allows, rate accuracy at a configured 50/s, memory; PDU encoder throughput.

python bench/sms_blast.py [--recipients 100000] [--rate-seconds 10]
python bench/sms_blast.py --kannel [--recipients 3000] [--in-flight 16] [--repeat 3]
python bench/sms_blast.py --store postgres [--recipients 100000]   # the same on a throwaway PostgreSQL
python bench/sms_blast.py --recipients 100000 --refuse-last   # a blast refused on its last recipient

The gateway is the loopback stand-in of Kannel's sendsms interface, run in its own process (the
other core), reached over HTTP by the real KannelChannel; every message is committed `sending`
before its request and `sent` (with its touch) after, as in production. Delivery reports are not
part of these figures (the stand-in's DLR callbacks go to a closed port).

With --kannel, Debian's Kannel (bearerbox + smsbox + fakesmsc, started as tests/sms does) takes
raw `sendsms` requests (dlr-mask 31, reports to a do-nothing sink) and then a Switchboard blast
through the whole app (its delivery reports come back to the app's webhook and store), the same
number of requests in flight, alternately; both rates and their ratio are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import queue
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
from _common import CACHE, ROOT, BenchStore, free_port, report
from _kannel import real_kannel
from aiohttp import web

from campaigns.sms.blasts import BlastService, BlastSpec
from campaigns.sms.gsm7 import analyze
from campaigns.sms.kannel import KannelChannel
from campaigns.sms.modem.pdu import encode_submit
from campaigns.sms.sender import ChannelWorker
from crm_link.clock import system_clock
from crm_link.contacts import ContactFields
from crm_link.db import to_db_time
from crm_link.errors import ValidationError
from crm_link.models import Contact
from crm_link.phones import Phone
from crm_link.store import Store
from templates.context import merge_context
from templates.render import Renderer

LANES = 2

STANDIN = """
import asyncio, sys, time
sys.path.insert(0, {root!r})
from campaigns.sms.kannel_standin import KannelStandIn
async def main():
    async with KannelStandIn(dlr_delay=3600) as k:
        print(k.sendsms_url, flush=True)
        last = 0
        while True:
            await asyncio.sleep(0.05)
            if len(k.received) != last:
                last = len(k.received)
                print("n", last, time.time(), flush=True)
asyncio.run(main())
"""


class Sink:
    async def on_delivery(self, report: object) -> None:
        pass

    async def on_inbound(self, message: object) -> None:
        pass


async def blast_run(
    store: Store,
    url: str,
    n: int,
    rate: float | None,
    tag: str,
    lines: list[str],
    *,
    dispatch: bool = True,
    refuse_last: bool = False,
) -> float:
    renderer = Renderer()

    def render(text: str, contact: Contact) -> str:
        return renderer.render(
            text, merge_context(contact, dealer={"name": "Switchboard Motors"}, now=system_clock())
        )

    def describe(text: str) -> dict[str, object]:
        return analyze(text).as_dict()

    blasts = BlastService(
        store,
        channels=lambda: ["main"],
        render=render,
        analyze=describe,
        quiet_start="00:00",
        quiet_end="00:00",
    )
    name = "{{ contact.first_name }}"
    if refuse_last:  # a merge code with no value for the last recipient alone (contact id n)
        name = f"{{{{ contact.first_name if contact.id != {n} else contact.attributes.vehicle }}}}"
    spec = BlastSpec(
        name=tag,
        text=f"Service special this Saturday, {name}! Reply STOP to opt out.",
        channel="main",
        audience={"tag": tag},
        rate_per_second=rate,
    )
    started = time.perf_counter()
    if refuse_last:
        try:
            await blasts.create(spec, created_by=None)
        except ValidationError as exc:
            refused_s = time.perf_counter() - started
            left = await store.db.fetchone(
                "SELECT (SELECT count(*) FROM sms_outbox), (SELECT count(*) FROM sms_blasts)"
            )
            assert left is not None
            lines.append(
                f"refused recipients={n} seconds={refused_s:.2f} field={exc.field} code={exc.code}"
                f" outbox_rows_left={left[0]} blasts_left={left[1]}"
            )
            return 0.0
        raise AssertionError("the blast was not refused")
    blast = await blasts.create(spec, created_by=None)
    await blasts.run_due()
    materialize_s = time.perf_counter() - started
    if rate is None:
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        lines.append(f"peak_rss_mb_after_materialize={rss:.0f}")
    if not dispatch:
        lines.append(
            f"materialize recipients={n} seconds={materialize_s:.2f} rows_per_s={n / materialize_s:,.0f}"
        )
        return 0.0
    channel = KannelChannel(
        "main", url, "tester", "secret", sender=None, dlr_url="http://127.0.0.1:9/dlr", secret="s", timeout=30
    )
    await channel.start(Sink())
    worker = ChannelWorker(
        store,
        channel,
        name="main",
        rate_per_second=1e9,
        quiet_start="00:00",
        quiet_end="00:00",
        window=64,
        lanes=LANES,
    )
    task = asyncio.create_task(worker.run())
    t0 = time.perf_counter()
    try:
        while True:
            await asyncio.sleep(0.2)
            p = await store.sms.progress(blast["id"])
            if p["counts"]["queued"] == 0 and p["counts"]["sending"] == 0:
                break
    finally:
        dispatch_s = time.perf_counter() - t0
        worker.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await channel.close()
    sent = p["counts"]["sent"]
    if rate is None:
        lines.append(
            f"materialize recipients={n} seconds={materialize_s:.2f} rows_per_s={n / materialize_s:,.0f}"
        )
        lines.append(
            f"dispatch sent={sent} failed={p['counts']['failed']} seconds={dispatch_s:.2f} msg_per_s={sent / dispatch_s:,.0f}"
        )
    return dispatch_s


# the recipients, generated inside SQLite (one INSERT … SELECT per table and chunk, no Python object
# per contact): `n` tagged "all", then `extra` tagged "rate"; first name C<i>, one mobile number each
_SEED = (
    "WITH RECURSIVE k(i) AS (SELECT ? UNION ALL SELECT i + 1 FROM k WHERE i + 1 < ?)"
    " INSERT INTO contacts (id, first_name, time_zone, attributes, created_at, updated_at)"
    " SELECT i + 1, 'C' || i, 'America/Chicago', '{}', ?, ? FROM k",
    "WITH RECURSIVE k(i) AS (SELECT ? UNION ALL SELECT i + 1 FROM k WHERE i + 1 < ?)"
    " INSERT INTO contact_phones (contact_id, raw, e164, valid, kind, position)"
    " SELECT i + 1, '+1212' || (2000000 + i), '+1212' || (2000000 + i), 1, 'mobile', 0 FROM k",
    "WITH RECURSIVE k(i) AS (SELECT ? UNION ALL SELECT i + 1 FROM k WHERE i + 1 < ?)"
    " INSERT INTO contact_tags (tag, contact_id) SELECT CASE WHEN i < ? THEN 'all' ELSE 'rate' END, i + 1 FROM k",
)


async def seed(store: Store, n: int, extra: int, chunk: int = 250_000) -> None:
    now = to_db_time(datetime.now(UTC))
    total = n + extra
    for lo in range(0, total, chunk):
        hi = min(total, lo + chunk)
        async with store.db.transaction() as tx:
            await tx.execute(_SEED[0], (lo, hi, now, now))
            await tx.execute(_SEED[1], (lo, hi))
            await tx.execute(_SEED[2], (lo, hi, n))
    row = await store.db.fetchone("SELECT count(*) FROM contact_tags WHERE tag = 'all'")
    assert row is not None and row[0] == n, (row, n)


def pdu_throughput(lines: list[str]) -> None:
    cases = {
        "gsm7_160": "A" * 160,
        "ucs2_70": "Merci Zoë, à bientôt! 🚗 " * 2 + "Z" * 20,
        "gsm7_3_parts": "Service special this Saturday! " * 14,
    }
    for name, text in cases.items():
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < 2.0:
            encode_submit("+12125550147", text, reference=n % 256)
            n += 1
        lines.append(
            f"pdu_encode {name} parts={len(encode_submit('+12125550147', text))} msg_per_s={n / (time.perf_counter() - t0):,.0f}"
        )


async def main(
    n: int,
    rate_seconds: int,
    materialize_only: bool = False,
    store_kind: str = "sqlite",
    refuse_last: bool = False,
) -> list[str]:
    with BenchStore(store_kind) as where:
        lines = [where.describe(), f"load_average={' '.join(f'{x:.2f}' for x in os.getloadavg())}"]
        lines += await _main(where, n, rate_seconds, materialize_only or refuse_last, refuse_last)
        lines.append(f"load_average={' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        return lines


async def _main(
    where: BenchStore, n: int, rate_seconds: int, materialize_only: bool, refuse_last: bool = False
) -> list[str]:
    lines: list[str] = []
    if not materialize_only:
        pdu_throughput(lines)
    CACHE.mkdir(exist_ok=True)
    path = where.fresh("sms_blast")
    proc = subprocess.Popen(  # noqa: ASYNC220 (started once, before the measured part)
        [sys.executable, "-c", STANDIN.format(root=str(ROOT))], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    # read the stand-in's progress lines all the time: a full pipe would stop it answering
    lines_in: queue.Queue[str] = queue.Queue()
    out = proc.stdout

    def pump() -> None:
        for line in out:
            lines_in.put(line)

    threading.Thread(target=pump, daemon=True).start()
    try:
        async with Store(path) as store:
            t_contacts = time.perf_counter()
            rate_n = rate_seconds * 50 + 200
            await seed(store, n, rate_n)
            contacts_s = time.perf_counter() - t_contacts
            lines.append(f"contacts recipients={n} seconds={contacts_s:.1f}")
            lines.append(
                f"peak_rss_mb_before_blast={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}"
            )
            await blast_run(
                store, url, n, None, "all", lines, dispatch=not materialize_only, refuse_last=refuse_last
            )
            if materialize_only:
                return lines
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            lines.append(f"peak_rss_mb={rss:.0f}")
            # rate accuracy: the stand-in reports how many it has received, we count per second
            drain = lines_in.get  # discard what was printed during the big run
            start_count = 0
            while True:
                line = await asyncio.to_thread(drain)
                parts = line.split()
                if parts and parts[0] == "n":
                    start_count = int(parts[1])
                    if start_count >= n:
                        break
            runner = asyncio.create_task(blast_run(store, url, rate_n, 50.0, "rate", lines))
            stamps: list[tuple[float, int]] = []
            deadline = time.time() + rate_seconds + 2
            while time.time() < deadline:
                line = await asyncio.to_thread(drain)
                parts = line.split()
                if parts and parts[0] == "n":
                    stamps.append((float(parts[2]), int(parts[1]) - start_count))
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
            per_second: Counter[int] = Counter()
            prev = 0
            t_first = stamps[0][0]
            for t, count in stamps:
                per_second[int(t - t_first)] += count - prev
                prev = count
            full = [per_second[s] for s in range(1, rate_seconds)]  # whole seconds after the first
            lines.append(
                f"rate_50_per_s seconds={len(full)} mean={sum(full) / len(full):.1f} min={min(full)} max={max(full)}"
            )
    finally:
        proc.terminate()
    return lines


# --- against Debian's real Kannel (--kannel) -------------------------------------------------

TEXT = "Service special this Saturday, {{ contact.first_name }}! Reply STOP to opt out."


async def raw_kannel(url: str, n: int, concurrency: int, offset: int) -> tuple[float, float]:
    """`n` sendsms requests, `concurrency` in flight, dlr-mask 31 with the reports going to a
    do-nothing HTTP sink in this loop; (sent per second, seconds until every message's final report)."""
    finals = 0
    done = asyncio.Event()

    async def dlr(request: web.Request) -> web.Response:
        nonlocal finals
        if request.query.get("type") in ("1", "2", "16"):
            finals += 1
            if finals >= n:
                done.set()
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/dlr", dlr)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)
    try:
        async with aiohttp.ClientSession() as session:

            async def worker() -> None:
                while not queue.empty():
                    i = queue.get_nowait()
                    params = {
                        "username": "tester",
                        "password": "secret",
                        "from": "100",
                        "to": f"+1212{3000000 + offset + i:07d}",
                        "text": f"Service special this Saturday, C{i}! Reply STOP to opt out.",
                        "dlr-mask": "31",
                        "dlr-url": f"http://127.0.0.1:{port}/dlr?id={i}&type=%d&answer=%A&ts=%T",
                        "max-messages": "10",
                    }
                    async with session.get(url, params=params) as resp:
                        body = await resp.text()
                        assert resp.status == 202 or body.startswith("0:"), body

            t0 = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            sent_s = time.perf_counter() - t0
            await asyncio.wait_for(done.wait(), 120)
            final_s = time.perf_counter() - t0
    finally:
        await runner.cleanup()
    return n / sent_s, final_s


async def switchboard_kannel(
    url: str, n: int, concurrency: int, run: int, workdir: Path, *, wait_final: bool = True
) -> dict[str, float]:
    """A blast of `n` through the whole app (worker, KannelChannel, the DLR webhook, the store) on the
    same Kannel; the worker's lanes keep `concurrency` sendsms requests in flight, as raw does."""
    from switchboard.app import create_app
    from switchboard.keys import SMS, SMS_CHANNELS, STORE
    from switchboard.settings import SmsChannelSettings, load_settings

    settings = load_settings(env={})
    db = workdir / f"kannel-{run}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)  # noqa: ASYNC240 (before the measured part)
    settings.store.url = f"sqlite:///{db}"
    settings.recordings.storage_dir = str(workdir / "recordings")
    settings.asterisk.recordings_dir = str(workdir / "monitor")
    port = free_port()
    settings.server.port = port
    settings.server.public_url = f"http://127.0.0.1:{port}"
    settings.sms.quiet_start = settings.sms.quiet_end = "00:00"
    settings.sms.channels["main"] = SmsChannelSettings(
        name="main",
        type="kannel",
        rate_per_second=1e9,
        options={
            "sendsms_url": url,
            "username": "tester",
            "password": "secret",
            "secret": "bench-secret",
            "from": "100",
            "connections": concurrency,
        },
    )
    app = create_app(settings)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        store, sms = app[STORE], app[SMS]
        worker = sms.workers["main"]
        channel = app[SMS_CHANNELS]["main"]
        assert isinstance(channel, KannelChannel) and channel.connections == concurrency
        await store.contacts.bulk_insert(
            [
                ContactFields(
                    present={"first_name", "phones", "tags"},
                    first_name=f"C{i}",
                    time_zone="America/Chicago",
                    phones=[Phone(f"+1212{4000000 + i:07d}", f"+1212{4000000 + i:07d}", True, "mobile")],
                    tags=["all"],
                )
                for i in range(n)
            ]
        )
        blast = await sms.blasts.create(
            BlastSpec(name=f"bench {run}", text=TEXT, channel="main", audience={"tag": "all"}),
            created_by=None,
        )
        await sms.blasts.run_due()
        t0 = time.perf_counter()
        worker.wake()
        sent_s = final_s = 0.0
        async with asyncio.timeout(300):
            while True:
                await asyncio.sleep(0.05)
                c = (await store.sms.progress(blast["id"]))["counts"]
                if not sent_s and c["queued"] == 0 and c["sending"] == 0:
                    sent_s = time.perf_counter() - t0
                if c["delivered"] + c["failed"] + c["unknown"] >= n or (sent_s and not wait_final):
                    final_s = time.perf_counter() - t0
                    break
        ((touches,),) = await store.db.fetchall(
            "SELECT count(*) FROM touches WHERE kind = 'sms' AND direction = 'outbound'"
        )
        ((keys,),) = await store.db.fetchall(
            "SELECT count(DISTINCT source_key) FROM touches WHERE kind = 'sms'"
        )
    finally:
        await runner.cleanup()
    return {
        "rate": n / sent_s,
        "final_s": final_s,
        "delivered": c["delivered"],
        "other": n - c["delivered"],
        "touches": touches,
        "distinct": keys,
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


async def kannel_main(n: int, concurrency: int, repeat: int) -> list[str]:
    lines: list[str] = []
    workdir = CACHE / "kannel"
    workdir.mkdir(parents=True, exist_ok=True)
    with real_kannel() as url:
        raw_rates, ours = [], []
        for run in range(repeat):  # interleaved: both see the same load on a shared machine
            rate, final = await raw_kannel(url, n, concurrency, offset=run * n)
            raw_rates.append(rate)
            lines.append(
                f"kannel_raw run={run} n={n} in_flight={concurrency} msg_per_s={rate:,.0f} all_final_s={final:.2f}"
            )
            r = await switchboard_kannel(url, n, concurrency, run, workdir)
            ours.append(r["rate"])
            lines.append(
                f"kannel_switchboard run={run} n={n} in_flight={concurrency} msg_per_s={r['rate']:,.0f}"
                f" all_final_s={r['final_s']:.2f} delivered={r['delivered']} not_delivered={r['other']}"
                f" outbound_touches={r['touches']} distinct_touch_keys={r['distinct']} ratio={r['rate'] / rate:.2f}"
            )
    raw, our = statistics.median(raw_rates), statistics.median(ours)
    lines.append(
        f"kannel_median raw_msg_per_s={raw:,.0f} switchboard_msg_per_s={our:,.0f} ratio={our / raw:.2f}"
    )
    lines.append(f"load_average={' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return lines


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--recipients", type=int, default=100_000)
    ap.add_argument("--rate-seconds", type=int, default=10)
    ap.add_argument("--kannel", action="store_true", help="raw sendsms vs a blast through Debian's Kannel")
    ap.add_argument("--in-flight", type=int, default=16, help="--kannel: sendsms requests in flight")
    ap.add_argument("--repeat", type=int, default=3, help="--kannel: interleaved raw/blast pairs")
    ap.add_argument("--materialize-only", action="store_true", help="create the blast, do not send it")
    ap.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    ap.add_argument(
        "--refuse-last",
        action="store_true",
        help="a blast whose text has no value for its last recipient: time to the refusal, rows left",
    )
    args = ap.parse_args()
    if args.kannel:
        report(asyncio.run(kannel_main(args.recipients, args.in_flight, args.repeat)))
    else:
        report(
            asyncio.run(
                main(args.recipients, args.rate_seconds, args.materialize_only, args.store, args.refuse_last)
            )
        )
