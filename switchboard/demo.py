"""`switchboard demo`: the service on an embedded store with sample data and built-in simulators."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

from aiohttp import web

from crm_link.contacts import validate_contact
from crm_link.store import Store
from crm_link.touches import TouchInput
from switchboard.app import CleanupCtx, open_store
from switchboard.settings import Secret, Settings

DEMO_PASSWORD = "switchboard"
# username, role, display name, extension, PBX interfaces (as in the recorded Asterisk's queues)
DEMO_USERS = (
    ("admin", "admin", "Administrator", None, ()),
    ("maria", "manager", "Maria Lopez", None, ()),
    (
        "jsmith",
        "rep",
        "John Smith",
        "1001",
        ("PJSIP/1001", "Local/agent1@agents/n", "Local/click1001@agents"),
    ),
    (
        "agarcia",
        "rep",
        "Ana Garcia",
        "1002",
        ("PJSIP/1002", "Local/agent2@agents/n", "Local/click1002@agents"),
    ),
    ("kim", "marketing", "Kim Park", None, ()),
)
DEMO_TEMPLATES = (
    (
        "Thank you for considering us",
        "Thanks for visiting {{ dealer.name }}, {{ contact.first_name }}",
        "<p>Hi {{ contact.first_name }},</p><p>Thank you for considering {{ dealer.name }}. If you have any questions"
        " about the {{ contact.attributes.vehicle | default('car') }}, just reply to this email.</p>"
        "<p>{{ user.name }}</p>",
    ),
    (
        "Thank you for your purchase",
        "Enjoy your {{ contact.attributes.vehicle }}, {{ contact.first_name }}!",
        "<p>Hi {{ contact.first_name }},</p><p>Congratulations on your {{ contact.attributes.vehicle }}! Your first"
        " service is due in about 90 days.</p><p>{{ user.name }}</p>",
    ),
    (
        "Service reminder",
        "Time for service, {{ contact.first_name }}",
        "<p>Hi {{ contact.first_name }},</p><p>Your {{ contact.attributes.vehicle | default('car') }} is due for"
        ' service. <a href="https://motors.example/service">Book a time</a>.</p><p>{{ user.name }}</p>',
    ),
)
# the customers of the recorded calls, so replayed transcripts pop a known record
KNOWN: tuple[tuple[str, str, str, str, dict[str, str | None]], ...] = (
    ("Jane", "Doe", "+15551234567", "jsmith", {"vehicle": "2024 Civic EX", "purchase_date": None}),
    ("John", "Smith", "+15559876543", "agarcia", {"vehicle": "2021 CR-V"}),
    ("Pat", "Taylor", "+15557654321", "jsmith", {"vehicle": "2025 Accord"}),
    ("Chris", "Lee", "+15550001111", "agarcia", {}),
)
FIRST = "Olivia Liam Emma Noah Ava Elijah Sophia James Isabella William Mia Benjamin Charlotte Lucas Amelia Henry Harper Theo Evelyn Jack".split()
LAST = "Johnson Williams Brown Jones Miller Davis Rodriguez Martinez Hernandez Wilson Anderson Thomas Moore Jackson Martin White Harris Clark Lewis Walker".split()
VEHICLES = (
    "2023 Civic LX",
    "2024 Accord Sport",
    "2022 CR-V EX",
    "2025 Pilot",
    "2021 Odyssey",
    "2024 HR-V",
    "2023 Ridgeline",
)
AREAS = ("212", "312", "415", "512", "602", "713", "917", "305", "206", "303")
ZONES = {
    "212": "America/New_York",
    "917": "America/New_York",
    "305": "America/New_York",
    "312": "America/Chicago",
    "512": "America/Chicago",
    "713": "America/Chicago",
    "303": "America/Denver",
    "602": "America/Phoenix",
    "415": "America/Los_Angeles",
    "206": "America/Los_Angeles",
}


async def seed(store: Store, contacts: int = 300) -> bool:
    """Users, contacts, history and follow-ups; does nothing when the demo store is already seeded."""
    if await store.users.by_username("jsmith") is not None:
        return False
    for username, role, name, ext, ifaces in DEMO_USERS:
        if await store.users.by_username(username) is None:
            await store.users.add(
                username,
                role=role,
                password=DEMO_PASSWORD,
                display_name=name,
                extension=ext,
                interfaces=list(ifaces),
                email=f"{username}@example.com",
            )
    rng = random.Random(42)
    today = store.clock().date()
    rows: list[dict[str, object]] = []
    for first, last, phone, owner, known_attrs in KNOWN:
        data: dict[str, object] = {
            "first_name": first,
            "last_name": last,
            "phones": [phone],
            "owner": owner,
            "email": f"{first.lower()}.{last.lower()}@example.com",
            "time_zone": "America/Chicago",
            "attributes": {k: v for k, v in known_attrs.items() if v},
            "tags": ["demo"],
        }
        rows.append(data)
    for i in range(contacts):
        area = rng.choice(AREAS)
        first, last = rng.choice(FIRST), rng.choice(LAST)
        attrs: dict[str, object] = {"vehicle": rng.choice(VEHICLES)}
        tags = []
        roll = rng.random()
        if roll < 0.3:
            bought = today - timedelta(days=rng.choice((3, 4, 5, 24, 25, 26, 90, 200, 510, 517)))
            attrs["purchase_date"] = bought.isoformat()
            tags.append("customer")
        elif roll < 0.6:
            tags.append("prospect")
        else:
            attrs["last_service_date"] = (today - timedelta(days=rng.randint(20, 400))).isoformat()
            attrs["service_visits"] = rng.randint(1, 8)
            tags.append("service")
        if rng.random() < 0.2:
            attrs["birth_date"] = f"19{rng.randint(50, 99)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        rows.append(
            {
                "first_name": first,
                "last_name": last,
                "phones": [f"+1{area}555{i:04d}"[:12]]
                + ([f"+1{area}555{(i + 5000):04d}"] if rng.random() < 0.15 else []),
                "email": f"{first.lower()}.{last.lower()}{i}@example.com",
                "owner": rng.choice(("jsmith", "agarcia")),
                "time_zone": ZONES[area],
                "attributes": attrs,
                "tags": tags,
                "do_not_call": rng.random() < 0.03,
                "sms_opt_out": rng.random() < 0.05,
            }
        )
    async with store.db.transaction() as tx:
        ids = [await store.contacts.insert_in(tx, validate_contact(r, region=store.region)) for r in rows]
    users = {u.username: u for u in await store.users.list()}
    now = store.clock()
    touches = []
    for n, cid in enumerate(ids[:120]):
        rep = users["jsmith" if n % 2 == 0 else "agarcia"]
        for k in range(rng.randint(1, 3)):
            at = now - timedelta(days=rng.randint(1, 60), minutes=rng.randint(0, 600))
            kind = rng.choice(("call", "call", "email", "sms", "note"))
            touches.append(
                TouchInput(
                    source_key=f"demo:{cid}:{k}",
                    kind=kind,
                    direction="none" if kind == "note" else rng.choice(("inbound", "outbound")),
                    started_at=at,
                    contact_id=cid,
                    user_id=rep.id,
                    channel="demo",
                    status={"call": "answered", "email": "sent", "sms": "delivered", "note": "logged"}[kind],
                    duration_s=float(rng.randint(30, 600)) if kind == "call" else None,
                    summary=rng.choice(
                        (
                            "Asked about trade-in value",
                            "Wants a test drive Saturday",
                            "Service reminder sent",
                            "Happy with the car",
                            "Call back next week",
                        )
                    ),
                )
            )
    await store.touches.record_many(touches)
    from templates.render import Renderer

    renderer = Renderer()
    for name, subject, html in DEMO_TEMPLATES:
        codes = sorted(
            {*renderer.validate(subject).merge_codes, *renderer.validate(html, html=True).merge_codes}
        )
        await store.email.save_template(
            template_id=None, name=name, subject=subject, html=html, text="", merge_codes=codes, user_id=None
        )
    await seed_call_lists(store, [users["jsmith"].id, users["agarcia"].id])
    for n, cid in enumerate(ids[:40]):
        rep = users["jsmith" if n % 2 == 0 else "agarcia"]
        due = now + timedelta(hours=rng.randint(-30, 6))
        await store.touches.add_followup(
            cid,
            due,
            note=rng.choice(
                ("Call about the test drive", "Send the trade-in estimate", "4-day after-sale call")
            ),
            assignee_id=rep.id,
        )
    return True


# the dealership's standing call lists, as saved segments (filters are data, see crm_link.segments)
DEMO_SEGMENTS = (
    (
        "After-sale: 4 days",
        "Is it running well? Any referrals?",
        {"field": "attributes.purchase_date", "op": "days_ago_between", "value": [3, 5]},
    ),
    (
        "After-sale: 25 days",
        "Before the manufacturer's survey",
        {"field": "attributes.purchase_date", "op": "days_ago_between", "value": [24, 26]},
    ),
    (
        "After-sale: 17 months",
        "Ready to trade up?",
        {"field": "attributes.purchase_date", "op": "days_ago_between", "value": [505, 520]},
    ),
    (
        "First service due",
        "About 90 days after purchase",
        {"field": "attributes.purchase_date", "op": "days_ago_between", "value": [85, 95]},
    ),
    (
        "Lost service customers",
        "No visit in 6 months after 3 or more",
        {
            "all": [
                {"field": "attributes.last_service_date", "op": "older_than_days", "value": 180},
                {"field": "attributes.service_visits", "op": "gte", "value": 3},
            ]
        },
    ),
    (
        "Birthdays this week",
        "",
        {"field": "attributes.birth_date", "op": "anniversary_within_days", "value": 6},
    ),
)


async def seed_call_lists(store: Store, agent_ids: list[int]) -> None:
    """Saved segments, a running preview list and a progressive list ready to start."""
    from crm_link.call_lists import ListSpec

    for name, description, f in DEMO_SEGMENTS:
        await store.segments.create(name, f, description=description)
    now = store.clock()
    preview, _ = await store.call_lists.create(
        ListSpec(name="After-sale: 4 days", mode="preview", source={"segment": "After-sale: 4 days"}),
        contact_ids=await store.segments.ids(DEMO_SEGMENTS[0][2]),
        agent_ids=agent_ids,
        now=now,
    )
    await store.call_lists.set_state(preview.id, "running", now)
    await store.call_lists.create(
        ListSpec(
            name="Lost service customers",
            mode="progressive",
            max_attempts=2,
            retry_minutes=2,
            busy_retry_minutes=5,
            source={"segment": "Lost service customers"},
        ),
        contact_ids=await store.segments.ids(DEMO_SEGMENTS[4][2]),
        agent_ids=agent_ids,
        now=now,
    )


def demo_outcome(number: str) -> str:
    """How the demo's customers take an outbound call: most answer, some are busy or away."""
    return {"3": "busy", "7": "noanswer"}.get(number[-1:], "answer")


# (caller, interfaces rung in order, the one that answers or None) the demo PBX cycles through
DEMO_CALLS = (
    ("+15551234567", ("Local/agent1@agents/n",), "Local/agent1@agents/n"),  # Jane Doe → John Smith answers
    ("+15559876543", ("Local/agent1@agents/n", "Local/agent2@agents/n"), None),  # John Smith, missed
    ("+12125550147", ("Local/agent1@agents/n",), "Local/agent1@agents/n"),  # an unknown number
    ("+15550001111", ("Local/agent2@agents/n",), "Local/agent2@agents/n"),  # Chris Lee → Ana Garcia
)


def demo_contexts(
    settings: Settings, data_dir: Path, *, call_every: float = 30.0, pbx_speed: float = 1.0
) -> list[CleanupCtx]:
    """The simulators the demo runs in-process, as cleanup contexts started before the connectors."""
    import contextlib
    import secrets

    from cti.ami.server import AmiTestServer

    monitor = data_dir.resolve() / "monitor"
    monitor.mkdir(parents=True, exist_ok=True)
    settings.asterisk.recordings_dir = str(monitor)
    settings.recordings.storage_dir = str(data_dir.resolve() / "recordings")

    async def pbx_ctx(app: web.Application) -> AsyncIterator[None]:
        from recordings.demo_audio import record_demo_call

        secret = secrets.token_urlsafe(16)
        pbx = AmiTestServer(
            username="switchboard",
            secret=secret,
            recordings_dir=monitor,
            record=record_demo_call,
            speed=pbx_speed,
        )
        pbx.outcome_for = demo_outcome
        await pbx.start()
        settings.asterisk.enabled = True
        settings.asterisk.host, settings.asterisk.port = "127.0.0.1", pbx.port
        settings.asterisk.username = "switchboard"
        settings.asterisk.secret = Secret(secret)

        async def calls() -> None:
            n = 0
            await asyncio.sleep(5)
            while True:
                number, agents, answer = DEMO_CALLS[n % len(DEMO_CALLS)]
                n += 1
                await pbx.inbound_call(
                    number, agents=list(agents), answer=answer, ring_seconds=8, talk_seconds=12
                )
                await asyncio.sleep(call_every)

        task = asyncio.create_task(calls(), name="demo-pbx-calls")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await pbx.close()

    async def smtp_ctx(app: web.Application) -> AsyncIterator[None]:
        # the sink is served on the app's own loop: listening is ready once create_server returns,
        # so nothing needs to connect and hang up to find out (aiosmtpd's Controller does, and
        # its SMTP then logs "Connection lost during _handle_client()" at every start)
        from aiosmtpd.smtp import SMTP

        mailbox = DemoMailbox(app)
        server = await asyncio.get_running_loop().create_server(
            lambda: SMTP(mailbox, hostname="demo-mail-sink"), "127.0.0.1", 0
        )
        settings.smtp.host, settings.smtp.port = "127.0.0.1", server.sockets[0].getsockname()[1]
        settings.smtp.starttls = "never"
        try:
            yield
        finally:
            server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 5)

    async def sms_gateway_ctx(app: web.Application) -> AsyncIterator[None]:
        from campaigns.sms.kannel_standin import KannelStandIn
        from switchboard.settings import SmsChannelSettings

        secret = secrets.token_urlsafe(12)
        async with KannelStandIn(username="demo", password=secret, dlr_delay=1.0) as gateway:
            settings.sms.channels["main"] = SmsChannelSettings(
                name="main",
                type="kannel",
                rate_per_second=5,
                options={
                    "sendsms_url": gateway.sendsms_url,
                    "username": "demo",
                    "password": secret,
                    "secret": secret,
                    "from": "55500",
                },
            )
            gateway.inbound_url = (
                f"{settings.server.public_url.rstrip('/')}/sms/kannel/incoming?channel=main&secret={secret}"
            )
            gateway.reply_stop_to = {"+15559876543"}  # John Smith texts STOP after a blast
            yield

    return [pbx_ctx, smtp_ctx, sms_gateway_ctx]


MAILBOX = web.AppKey("demo_mailbox", list)


class DemoMailbox:
    """The demo's SMTP sink: keeps the last 200 messages it accepted for the /demo/mail page."""

    def __init__(self, app: web.Application) -> None:
        self.messages: list[dict[str, str]] = app.setdefault(MAILBOX, [])

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        import email
        from email.policy import default

        msg = email.message_from_bytes(envelope.content, policy=default)  # type: ignore[attr-defined]
        text = msg.get_body(("plain",))
        html = msg.get_body(("html",))
        self.messages.insert(
            0,
            {
                "to": str(msg["To"]),
                "subject": str(msg["Subject"]),
                "date": str(msg["Date"]),
                "message_id": str(msg["Message-ID"]),
                "text": text.get_content() if text else "",
                "html": html.get_content() if html else "",
            },
        )
        del self.messages[200:]
        return "250 OK"


def demo_routes(app: web.Application) -> None:
    """The demo's own page: what its SMTP sink received."""
    from switchboard.web.auth import require
    from switchboard.web.render import render

    async def mail_page(request: web.Request) -> web.Response:
        require(request)
        return render(request, "demo_mail.html", {"messages": request.app.get(MAILBOX, [])})

    app.router.add_get("/demo/mail", mail_page)


def run_demo(settings: Settings, *, port: int, data_dir: Path) -> None:
    """Seed (first run only) and serve the demo until interrupted."""
    from switchboard.service import run_service

    data_dir.mkdir(parents=True, exist_ok=True)
    settings.store.url = f"sqlite:///{(data_dir / 'demo.db').resolve()}"
    settings.server.port = port
    if settings.server.time_zone == "UTC":
        settings.server.time_zone = "America/Chicago"
    if not settings.server.public_url:
        settings.server.public_url = f"http://127.0.0.1:{port}"
    settings.calling_hours.start, settings.calling_hours.end = "00:00", "23:59"
    settings.dialer.wrap_up_seconds = 5

    async def prepare() -> bool:
        async with open_store(settings) as store:
            return await seed(store)

    seeded = asyncio.run(prepare())

    def banner() -> None:
        """Printed once the port is listening (a port in use gives one error line instead)."""
        url = f"http://{settings.server.host}:{port}/"
        print(f"Switchboard demo {'(new sample data)' if seeded else '(existing sample data)'} at {url}")
        print(f"  store: {settings.store.url}")
        print(f"  logins (password '{DEMO_PASSWORD}' for each):")
        for username, role, name, ext, _ in DEMO_USERS:
            print(f"    {username:8} {role:9} {name}{'  ext ' + ext if ext else ''}")
        print("  The simulated PBX rings John Smith (jsmith) and Ana Garcia (agarcia) every 30 seconds:")
        print("  sign in as jsmith and keep My Day open to see the screen-pops.")
        print(
            f"  Each call is recorded: sign in as maria (manager) to search and play them at {url}recordings."
        )
        print(f"  Emails go to a built-in mail sink: {url}demo/mail shows what it received.")
        print("  SMS goes through a built-in stand-in of Kannel's HTTP interface: sign in as kim (marketing)")
        print(
            f"  and send a blast to the tag 'service' at {url}sms/blasts (held in a customer's quiet hours)."
        )
        print(
            f"  Call lists at {url}call-lists: as jsmith, 'Next customer' works the after-sale list in preview;"
        )
        print(
            "  as maria, start 'Lost service customers' (progressive), then as jsmith/agarcia click 'I'm ready'."
        )
        print(
            "  The simulated customers answer, are busy (numbers ending in 3) or do not answer (ending in 7);"
        )
        print("  the demo dials around the clock (production dials within [calling_hours] of each customer).")
        print("  Ctrl-C stops it; running it again reuses the same data.", flush=True)

    run_service(settings, demo_contexts(settings, data_dir), demo_routes, ready=banner)
