"""Wiring of outbound messaging: the email sender (and its outbox loop) as a cleanup context."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from switchboard.keys import SERVICES, SETTINGS, STORE
from templates.email_service import EmailService
from templates.render import Renderer
from templates.smtp import SmtpSender


async def email_ctx(app: web.Application) -> AsyncIterator[None]:
    """Start the email outbox loop; on shutdown let it finish the message in hand, then stop."""
    settings, store = app[SETTINGS], app[STORE]
    s = settings.smtp
    smtp = SmtpSender(
        s.host,
        s.port,
        username=s.username,
        password=s.password.reveal(),
        starttls=s.starttls,
        use_tls=s.use_tls,
        rate_per_second=s.rate_per_second,
    )
    d = settings.dealer
    service = EmailService(
        store,
        Renderer(default_time_zone=settings.server.time_zone),
        smtp,
        sender=s.from_,
        public_url=settings.server.public_url or f"http://{settings.server.host}:{settings.server.port}",
        dealer={"name": d.name, "phone": d.phone, "address": d.address, "website": d.website},
    )
    app[SERVICES]["email"] = service
    task = asyncio.create_task(service.run(), name="email-outbox")
    yield
    service.stop()
    try:
        await asyncio.wait_for(task, 10)
    except TimeoutError:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await smtp.close()
