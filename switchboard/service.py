"""Running the service: the app with every connector the settings enable, graceful on SIGTERM."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from aiohttp import web

from switchboard.app import CleanupCtx, create_app
from switchboard.settings import Settings

log = logging.getLogger("switchboard.service")


def connector_contexts(settings: Settings) -> list[CleanupCtx]:
    """The cleanup contexts of the connectors the settings enable, in start order."""
    contexts: list[CleanupCtx] = []
    return contexts


def build_app(
    settings: Settings,
    extra: Sequence[CleanupCtx] = (),
    setup: Callable[[web.Application], None] | None = None,
) -> web.Application:
    """The production app: the store, anything extra (the demo's simulators), then the connectors."""
    app = create_app(settings, contexts=[*extra, *connector_contexts(settings)])
    if setup is not None:
        setup(app)
    return app


def run_service(
    settings: Settings,
    extra: Sequence[CleanupCtx] = (),
    setup: Callable[[web.Application], None] | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM, then stop taking requests, close sockets and connectors in order."""
    app = build_app(settings, extra, setup)
    log.info("event=serve host=%s port=%d", settings.server.host, settings.server.port)
    web.run_app(
        app,
        host=settings.server.host,
        port=settings.server.port,
        shutdown_timeout=10,
        print=None,
        access_log=None,
        handle_signals=True,
    )
