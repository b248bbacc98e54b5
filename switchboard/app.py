"""The app factory: settings in, an aiohttp application with an ordered start/stop lifecycle out."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from functools import partial
from pathlib import Path

from aiohttp import web

from crm_link.clock import Clock, system_clock
from crm_link.store import Store
from switchboard.cluster import Instance, cluster_ctx
from switchboard.hub import Hub
from switchboard.keys import (
    CLOCK,
    EMAIL,
    HEALTH,
    HEALTH_DETAILS,
    HUB,
    INSTANCE,
    LIMITER,
    MY_DAY_EXTRAS,
    PROXY_TRUST,
    SETTINGS,
    SMS,
    STORE,
    SUPERVISOR,
)
from switchboard.settings import Settings, default_instance_id
from switchboard.supervisor import Supervisor
from switchboard.web.auth import LoginLimiter, make_auth_middleware
from switchboard.web.client_address import ProxyTrust
from switchboard.web.errors import error_middleware, path_id_middleware
from switchboard.web.render import setup_pages

log = logging.getLogger("switchboard.app")


CleanupCtx = Callable[[web.Application], AsyncIterator[None]]
WEB_DIR = Path(__file__).parent / "web"


def open_store(settings: Settings, clock: Clock = system_clock) -> Store:
    """The store the settings point at (not yet opened)."""
    return Store(
        settings.store.sqlite_path,
        region=settings.store.default_region,
        time_zone=settings.server.time_zone,
        clock=clock,
        pool_size=settings.store.pool_size,
    )


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    store = open_store(app[SETTINGS], app[CLOCK])
    await store.open()
    await store.touches.start_batching()
    app[STORE] = store
    app[HEALTH]["store"] = lambda: store.db.state
    app[HEALTH_DETAILS]["database"] = store.db.health
    app[HEALTH_DETAILS]["lapsed_lease_results"] = partial(lapsed_lease_results, app)
    log.info("event=store_open path=%s", store.db.description)
    yield
    await store.close()
    log.info("event=store_closed")


def lapsed_lease_results(app: web.Application) -> dict[str, int]:
    """Per sender, the send outcomes this instance could not record since it started: it was out
    of reach of the database past its lease, and another instance took those rows as in doubt
    (they stay `unknown`). Zero on an instance that kept its leases."""
    out: dict[str, int] = {}
    email = app.get(EMAIL)
    if email is not None:
        out["email"] = email.lapsed
    sms = app.get(SMS)
    if sms is not None:
        out |= {f"sms:{name}": w.lapsed for name, w in sms.workers.items()}
    return out


async def _close_websockets(app: web.Application) -> None:
    await app[HUB].close_all()


def create_app(
    settings: Settings, *, contexts: Sequence[CleanupCtx] = (), clock: Clock = system_clock
) -> web.Application:
    """Build the application.

    Start order: the store, then `contexts` (e.g. the demo's simulators), then the connectors the
    settings enable (telephony, gateways); shutdown runs the same list in reverse.
    """
    app = web.Application(
        middlewares=[
            error_middleware,
            make_auth_middleware(lambda r: r.app[STORE]),
            path_id_middleware,
        ],
        client_max_size=32 * 1024**2,
    )
    app[SETTINGS] = settings
    app[CLOCK] = clock
    app[HUB] = Hub()
    app[INSTANCE] = Instance(id=settings.server.instance_id or default_instance_id())
    app[HEALTH] = {}
    app[HEALTH_DETAILS] = {}
    app[MY_DAY_EXTRAS] = []
    app[SUPERVISOR] = Supervisor()
    app[LIMITER] = LoginLimiter(lambda: app[STORE].logins, settings.server.login_attempts_per_minute)
    app[PROXY_TRUST] = ProxyTrust(settings.server.trusted_proxies)
    from switchboard import dialer_ctx, followups_ctx, messaging, recording_ctx, telephony
    from switchboard.web import reports
    from switchboard.webhooks.ctx import crm_ctx

    app.cleanup_ctx.append(_store_ctx)
    app.cleanup_ctx.append(cluster_ctx)
    app.cleanup_ctx.append(followups_ctx.followups_ctx)
    for ctx in contexts:
        app.cleanup_ctx.append(ctx)
    app.cleanup_ctx.append(reports.board_ctx)
    app.cleanup_ctx.append(recording_ctx.recordings_ctx)
    app.cleanup_ctx.append(telephony.telephony_ctx)
    app.cleanup_ctx.append(dialer_ctx.dialer_ctx)
    app.cleanup_ctx.append(messaging.email_ctx)
    app.cleanup_ctx.append(messaging.sms_ctx)
    app.cleanup_ctx.append(followups_ctx.steps_ctx)  # after SMS and email: it sends through them
    app.cleanup_ctx.append(crm_ctx)
    app.on_shutdown.append(_close_websockets)
    setup_pages(app)
    from switchboard.web import (
        admin_pages,
        api,
        call_lists,
        calls,
        crm,
        email,
        export,
        followups,
        headers,
        pages,
        pbx_route,
        recordings,
        sms,
        sms_templates,
        surveys,
        ws,
    )

    headers.setup(app)

    app.router.add_static("/static/", WEB_DIR / "static", name="static")
    app.router.add_get("/favicon.ico", favicon)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    api.setup(app)
    followups.setup(app)
    pbx_route.setup(app)
    pages.setup(app)
    admin_pages.setup(app)
    ws.setup(app)
    sms.setup(app)
    sms_templates.setup(app)
    calls.setup(app)
    call_lists.setup(app)
    email.setup(app)
    recordings.setup(app)
    crm.setup(app)
    reports.setup(app)
    export.setup(app)
    surveys.setup(app)
    telephony.setup_routes(app)
    return app


async def favicon(request: web.Request) -> web.Response:
    """The site's icon where browsers look for it first."""
    return web.Response(
        body=(WEB_DIR / "static" / "favicon.svg").read_bytes(),
        content_type="image/svg+xml",
        headers={"Cache-Control": "max-age=86400"},
    )


# connector states that serve: "standby" is the AMI connection held by another instance
SERVING = ("up", "disabled", "standby")


async def readyz(request: web.Request) -> web.Response:
    """Readiness for a load balancer (no auth): 200 when every configured connector is up, else 503
    naming the ones that are not (`/healthz` stays 200 with `"status": "degraded"` meanwhile)."""
    states = {name: fn() for name, fn in request.app[HEALTH].items()}
    down = sorted(name for name, s in states.items() if s not in SERVING)
    return web.json_response(
        {"status": "ready" if not down else "not_ready", "down": down, "connectors": states},
        status=200 if not down else 503,
    )


async def healthz(request: web.Request) -> web.Response:
    """Liveness plus each connector's and background worker's state (no auth)."""
    states = {name: fn() for name, fn in request.app[HEALTH].items()}
    supervisor = request.app[SUPERVISOR]
    ok = all(s in SERVING for s in states.values()) and supervisor.healthy()
    details = {name: fn() for name, fn in request.app[HEALTH_DETAILS].items()}
    return web.json_response(
        {
            "status": "ok" if ok else "degraded",
            "connectors": states,
            "workers": supervisor.states(),
        }
        | details
    )
