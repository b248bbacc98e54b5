"""Email benchmarks: merge-code renders/s, and a 10,000-recipient merge job to aiosmtpd on loopback.

    python bench/email_send.py [--recipients 10000]

The job runs through the whole path (store rows, rendering, MIME building, the outbox state machine
with a touch per email, one reused SMTP connection); the raw figure is aiosmtplib sending prebuilt
messages to the same aiosmtpd server over one connection, measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import UTC, datetime

import aiosmtplib
from _common import CACHE, free_port, report
from _common import SmtpCountingSink as Sink
from aiosmtpd.controller import Controller

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
    ap.add_argument("--recipients", type=int, default=10_000)
    ap.add_argument("--renders", type=int, default=20_000)
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

    sink = Sink()
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        # raw: aiosmtplib → aiosmtpd, one connection, prebuilt messages
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
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
        await smtp.connect()
        t = time.perf_counter()
        for _ in range(args.recipients):
            await smtp.send_message(msg)
        raw = args.recipients / (time.perf_counter() - t)
        await smtp.quit()
        lines.append(f"email_raw_aiosmtplib_to_aiosmtpd messages={args.recipients} messages_per_s={raw:,.0f}")

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
            svc = EmailService(
                store,
                Renderer(),
                SmtpSender("127.0.0.1", port, rate_per_second=0, reconnect_every=10**9),
                sender="Sales <sales@motors.example>",
                public_url="https://crm.example",
                dealer={"name": "Switchboard Motors", "phone": "555-0100", "website": "motors.example"},
                window=100,
            )
            before = sink.count
            t = time.perf_counter()
            job = await svc.send(tpl["id"], contacts, user)
            queued = time.perf_counter() - t
            while await svc.step():
                pass
            dt = time.perf_counter() - t
            await svc.smtp.close()
            counts = (await store.email.job(job))["counts"]
            assert counts["sent"] == args.recipients and sink.count - before == args.recipients
            lines.append(
                f"email_merge_job recipients={args.recipients} seconds={dt:.1f} messages_per_s="
                f"{args.recipients / dt:,.0f} queue_seconds={queued:.1f} ratio_to_raw={raw / (args.recipients / dt):.2f}"
            )
    finally:
        controller.stop()
    report(lines)


if __name__ == "__main__":
    asyncio.run(main())
