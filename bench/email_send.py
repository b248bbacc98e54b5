"""Email benchmarks: merge-code renders/s, and merge jobs over 1, 4, 16 SMTP connections vs raw.

    python bench/email_send.py [--recipients 5000] [--connections 1 4 16] [--repeat 2] [--lanes N] [--window N]

The job's sending runs through the whole path (outbox claim, writing each message's bytes, the outbox
state machine with a touch per email, a pool of reused SMTP connections); the raw figure is aiosmtplib
sending a prebuilt message (`send_message`, which flattens it each time) over the same number of
connections to the same aiosmtpd, which runs in its own process. Raw and Switchboard runs alternate, so both see the same load on a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from email.message import Message
from typing import Any

import aiosmtplib
from _common import CACHE, free_port, report

from crm_link.contacts import ContactFields
from crm_link.store import Store
from templates.email_message import build_message
from templates.email_service import EmailService
from templates.render import Renderer
from templates.smtp import SmtpSender

HTML = (
    "<html><body><p>Dear {{ contact.first_name }} {{ contact.last_name }},</p>"
    + "<p>Thank you for choosing {{ dealer.name }} for your {{ contact.attributes.vehicle }}. " * 12
    + "</p><p>Your first service is due {{ contact.attributes.service_due }}. Call {{ user.name }} at"
    " {{ user.extension }} or {{ dealer.phone }}; email {{ user.email }}.</p><p>{{ dealer.website }}</p>"
    "</body></html>"
)


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--recipients", type=int, default=5_000)
    ap.add_argument("--renders", type=int, default=20_000)
    ap.add_argument("--connections", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--lanes", type=int, default=None, help="the service's lanes (default: its own)")
    ap.add_argument("--window", type=int, default=100, help="emails claimed per lane and step")
    args = ap.parse_args()
    lines = []
    r = Renderer()
    ctx = {
        "contact": {
            "first_name": "Jane",
            "last_name": "Doe",
            "attributes": {"vehicle": "2024 Civic", "service_due": "in March"},
        },
        "user": {"name": "John Smith", "extension": "1001", "email": "john@motors.example"},
        "dealer": {"name": "Switchboard Motors", "phone": "555-0100", "website": "motors.example"},
    }
    r.render(HTML, ctx, html=True)
    t = time.perf_counter()
    for _ in range(args.renders):
        r.render(HTML, ctx, html=True)
    dt = time.perf_counter() - t
    lines.append(
        f"email_render template_bytes={len(HTML)} merge_codes=10 renders_per_s={args.renders / dt:,.0f}"
    )

    sink = SinkProcess()
    try:
        msg = build_message(
            sender="s@motors.example",
            to_addr="jane@example.com",
            to_name="Jane",
            subject="s",
            html="<p>" + "x" * 2000 + "</p>",
            text=None,
            message_id="<1@motors.example>",
            unsubscribe_url=None,
            date=datetime(2026, 11, 23, 16, 0, tzinfo=UTC),
        )
        path = CACHE / "email.db"
        CACHE.mkdir(parents=True, exist_ok=True)
        for p in CACHE.glob("email.db*"):
            p.unlink()
        async with Store(str(path)) as store:
            await store.contacts.bulk_insert(
                [
                    ContactFields(
                        first_name=f"P{i}",
                        last_name="Doe",
                        email=f"p{i}@example.com",
                        attributes={"vehicle": "2024 Civic", "service_due": "in March"},
                    )
                    for i in range(args.recipients)
                ]
            )
            tpl = await store.email.save_template(
                template_id=None,
                name="b",
                subject="Hi {{ contact.first_name }}",
                html=HTML,
                text="",
                merge_codes=[],
                user_id=None,
            )
            user = await store.users.add(
                "jsmith",
                role="rep",
                password="bench-pass",
                extension="1001",
                display_name="John Smith",
                email="john@motors.example",
            )
            contacts = await store.contacts.get_many(list(range(1, args.recipients + 1)))
            for conns in args.connections:
                raws, ours = [], []
                for _ in range(args.repeat):  # interleaved, so both see the same machine load
                    raws.append(await raw_run(sink, msg, args.recipients, conns))
                    ours.append(
                        await merge_run(store, sink, tpl, contacts, user, conns, args.lanes, args.window)
                    )
                raw, our = statistics.median(raws), statistics.median(ours)
                lines.append(
                    f"email_pool connections={conns} recipients={args.recipients} lanes={args.lanes or 'default'}"
                    f" window={args.window}"
                    f" raw_per_s={'/'.join(f'{r:,.0f}' for r in raws)}"
                    f" switchboard_per_s={'/'.join(f'{o:,.0f}' for o in ours)}"
                    f" median_ratio={our / raw:.2f}"
                )
    finally:
        sink.stop()
    lines.append(f"load_average={' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    report(lines)


SINK = """
import asyncio, sys
from aiosmtpd.controller import Controller
class H:
    count = 0
    async def handle_DATA(self, server, session, envelope):
        H.count += 1
        return "250 OK"
c = Controller(H(), hostname="127.0.0.1", port=int(sys.argv[1]))
c.start()
print("ready", flush=True)
for _ in sys.stdin:
    print(H.count, flush=True)
c.stop()
"""


class SinkProcess:
    """aiosmtpd in its own process (so it does not share the sender's interpreter), counting."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SINK, str(self.port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "ready"

    def count(self) -> int:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("?\n")
        self.proc.stdin.flush()
        return int(self.proc.stdout.readline())

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(10)


async def raw_run(sink: SinkProcess, msg: Message, n: int, conns: int) -> float:
    """aiosmtplib → aiosmtpd: `conns` connections, each sending its share of prebuilt messages."""
    clients = [aiosmtplib.SMTP(hostname="127.0.0.1", port=sink.port, start_tls=False) for _ in range(conns)]
    for c in clients:
        await c.connect()
    before = sink.count()

    async def share(c: aiosmtplib.SMTP, k: int) -> None:
        for _ in range(k):
            await c.send_message(msg)

    t = time.perf_counter()
    await asyncio.gather(*(share(c, n // conns + (i < n % conns)) for i, c in enumerate(clients)))
    rate = n / (time.perf_counter() - t)
    for c in clients:
        await c.quit()
    assert sink.count() - before == n
    return rate


async def merge_run(
    store: Store,
    sink: SinkProcess,
    tpl: dict[str, Any],
    contacts: list[Any],
    user: Any,
    conns: int,
    lanes: int | None,
    window: int,
) -> float:
    """The whole path: queue a merge job, then drain it over a pool of `conns` connections."""
    svc = EmailService(
        store,
        Renderer(),
        SmtpSender("127.0.0.1", sink.port, rate_per_second=0, connections=conns, reconnect_every=10**9),
        sender="Sales <sales@motors.example>",
        public_url="https://crm.example",
        dealer={"name": "Switchboard Motors", "phone": "555-0100", "website": "motors.example"},
        window=window,
    )
    if lanes is not None:
        svc.lanes = lanes
    job = await svc.send(tpl["id"], contacts, user)  # queueing is not part of the sending rate
    before = sink.count()
    t = time.perf_counter()
    task = asyncio.create_task(svc.run(idle_poll=0.02))  # the service's own loop, both lanes
    # the end is the job `done` (every outcome settled); ask the sink's counter (a pipe to another
    # process) until it has every message, and only then the store: polling the job's counts all
    # along would add database work to the very loop being measured
    while sink.count() - before < len(contacts):  # noqa: ASYNC110 (polls the sink)
        await asyncio.sleep(0.02)
    while (await store.email.job(job))["state"] != "done":  # noqa: ASYNC110 (polls the store)
        await asyncio.sleep(0.005)
    rate = len(contacts) / (time.perf_counter() - t)
    svc.stop()
    await task
    await svc.smtp.close()
    counts = (await store.email.job(job))["counts"]
    assert counts["sent"] == len(contacts) and sink.count() - before == len(contacts)
    return rate


if __name__ == "__main__":
    asyncio.run(main())
