"""Wiring: the delivery worker under the supervisor, its backlog in /healthz."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from switchboard.keys import CLOCK, HEALTH_DETAILS, INSTANCE, SETTINGS, STORE, SUPERVISOR
from switchboard.settings import SettingsError
from switchboard.webhooks.mapping import MappingError
from switchboard.webhooks.worker import DeliveryWorker

CRM_WORKER = web.AppKey("crm_worker", DeliveryWorker)


async def crm_ctx(app: web.Application) -> AsyncIterator[None]:
    """Start the CRM delivery worker; on shutdown let in-flight requests finish, then stop."""
    settings = app[SETTINGS]
    try:
        worker = DeliveryWorker(
            app[STORE],
            settings.crm,
            clock=app[CLOCK],
            instance=app[INSTANCE].id,
            public_url=settings.server.public_url or f"http://{settings.server.host}:{settings.server.port}",
        )
    except MappingError as exc:
        i = next(i for i, w in enumerate(settings.crm.webhooks) if w.mapping)
        raise SettingsError(f"crm.webhooks[{i}].mapping", str(exc)) from None
    app[CRM_WORKER] = worker
    app[HEALTH_DETAILS]["crm"] = worker.health
    supervisor = app[SUPERVISOR]
    supervisor.start("crm-webhooks", worker.run)
    try:
        yield
    finally:
        worker.stop()
        await supervisor.stop("crm-webhooks", timeout=15)
