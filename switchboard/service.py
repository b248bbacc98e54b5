"""Running the service: the app with every connector the settings enable, graceful on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import logging
from collections.abc import Callable, Sequence

from aiohttp import web
from aiohttp.web_runner import GracefulExit

from switchboard.app import CleanupCtx, create_app
from switchboard.settings import Settings, SettingsError

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


def freeze_startup_heap() -> int:
    """Once every context has started, what exists (modules, code, settings, the store's objects)
    lives as long as the process: move it out of the cyclic GC's reach and return how many objects
    that was. Otherwise each full (generation 2) collection walks all of it, stopping the event
    loop for 38-44 ms three times a minute under 1,000 agents' screen-pops; frozen objects are
    never walked nor collected again (start-up's garbage is collected first, so none of it is
    kept). Objects made later (calls, sockets) stay collectable as before."""
    gc.collect()
    gc.freeze()
    count = gc.get_freeze_count()
    log.info("event=gc_frozen objects=%d", count)
    return count


def run_service(
    settings: Settings,
    extra: Sequence[CleanupCtx] = (),
    setup: Callable[[web.Application], None] | None = None,
    ready: Callable[[], None] | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM, then stop taking requests, close sockets and connectors in order.

    `ready` runs once the port is listening (the demo prints its banner then). A start that fails
    half-way (a bad setting, the port in use) closes what had started and raises: SettingsError
    for what the settings got wrong."""
    app = build_app(settings, extra, setup)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    main = loop.create_task(_serve(app, settings, ready))
    try:
        loop.run_until_complete(main)
    except (GracefulExit, KeyboardInterrupt):
        pass
    finally:
        try:
            if not main.done():
                main.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    loop.run_until_complete(main)
        finally:
            _cancel_all(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
            asyncio.set_event_loop(None)
            loop.close()
    if not main.cancelled() and main.exception() is not None:
        raise main.exception()  # type: ignore[misc]


async def _serve(app: web.Application, settings: Settings, ready: Callable[[], None] | None) -> None:
    host, port = settings.server.host, settings.server.port
    runner = web.AppRunner(app, access_log=None, handle_signals=True, shutdown_timeout=10)
    try:
        # a start-up that fails part-way leaves the started contexts to runner.cleanup() below
        await runner.setup()
        freeze_startup_heap()
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            reason = (
                "is already in use" if exc.errno == errno.EADDRINUSE else f"cannot be used: {exc.strerror}"
            )
            raise SettingsError("server.port", f"{host}:{port} {reason}") from None
        log.info("event=serve host=%s port=%d", host, port)
        if ready is not None:
            ready()
        await asyncio.Event().wait()  # until a signal raises GracefulExit
    finally:
        await runner.cleanup()


def _cancel_all(loop: asyncio.AbstractEventLoop) -> None:
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for t in tasks:
        t.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
