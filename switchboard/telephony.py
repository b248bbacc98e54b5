"""Wiring of telephony: the call services of each enabled source, their webhooks and connectors."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from functools import partial

import aiohttp
from aiohttp import web
from yarl import URL

from crm_link.clock import Clock
from crm_link.cluster import RoleLock
from cti.ami.client import AmiClient
from cti.asterisk import AsteriskSource
from cti.directory import InterfaceDirectory
from cti.service import CallService
from cti.twilio_rest import close_client, twilio_api_url, twilio_client
from cti.twilio_web import TwilioVoiceWebhooks
from recordings.service import DownloadRefused
from switchboard.cluster import Instance, OriginateForwarding
from switchboard.keys import (
    ASTERISK,
    ASTERISK_CALLS,
    BOARD,
    CLOCK,
    FOLLOWUPS,
    HEALTH,
    HUB,
    INSTANCE,
    RECORDINGS,
    SETTINGS,
    STORE,
    SUPERVISOR,
    TWILIO_CALLS,
    TWILIO_CLIENT,
    TWILIO_VOICE,
)

log = logging.getLogger("switchboard.telephony")

DIRECTORY = web.AppKey("interface_directory", InterfaceDirectory)
TWILIO_VOICE_PATHS = {
    "/twilio/voice/incoming": "incoming",
    "/twilio/voice/leg-status": "leg_status",
    "/twilio/voice/status": "status",
    "/twilio/voice/dial-result": "dial_result",
    "/twilio/voice/outbound-connect": "outbound_connect",
    "/twilio/voice/recording": "recording",
}


async def _twilio_voice(name: str, request: web.Request) -> web.StreamResponse:
    hooks = request.app.get(TWILIO_VOICE)
    if hooks is None:
        raise web.HTTPNotFound(text="Twilio is not enabled")
    handler = getattr(hooks, name)
    return await handler(request)


def setup_routes(app: web.Application) -> None:
    """Webhook routes exist from the start; their handlers come alive when the connector starts."""
    if app[SETTINGS].twilio.enabled:
        for path, name in TWILIO_VOICE_PATHS.items():
            app.router.add_post(path, partial(_twilio_voice, name))


async def _download_loop(app: web.Application, wake: asyncio.Event) -> None:
    """Fetch Twilio recordings whose pointers were kept (at start, on each callback, and hourly)."""
    settings = app[SETTINGS]
    token = base64.b64encode(
        f"{settings.twilio.account_sid}:{settings.twilio.auth_token.reveal()}".encode()
    ).decode()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:

        async def fetch(url: str) -> bytes:
            target = twilio_api_url(url, settings.twilio.api_base)
            if target is None:  # never send the account's credentials anywhere but Twilio's API
                raise DownloadRefused(f"RecordingUrl host {URL(url).host or url!r} is not a Twilio API host")
            # aiohttp drops the Authorization header on a redirect to another origin
            async with session.get(target, headers={"Authorization": f"Basic {token}"}) as resp:
                if resp.status != 200:
                    raise RuntimeError(f"Twilio answered {resp.status} for a recording")
                return await resp.read()

        while True:
            wake.clear()  # before the pass: a callback that arrives during it wakes the next one
            try:
                await app[RECORDINGS].download_pending(fetch)
            except Exception:
                log.exception("event=twilio_recording_downloads_failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), 3600)


# Twilio ends every call after its time limit (4 hours unless raised): a call the store still has
# ringing or answered after that, plus a margin, lost its end (a restart mid-ring, a lost callback)
TWILIO_CALL_LIMIT = timedelta(hours=4, minutes=15)
STALE_CALLS_EVERY = 600.0


async def _close_stale_twilio_calls(service: CallService, clock: Callable[[], datetime]) -> None:
    """At start, then every few minutes: close the Twilio calls that cannot still be going."""
    hours = TWILIO_CALL_LIMIT.total_seconds() / 3600
    while True:
        now = clock()
        await service.close_vanished(
            (),
            now=now,
            started_before=now - TWILIO_CALL_LIMIT,
            reason=f"Twilio reported no end within {hours:g} hours",
        )
        await asyncio.sleep(STALE_CALLS_EVERY)


async def _hold_ami(holder: RoleLock, source: AsteriskSource, instance: Instance, clock: Clock) -> None:
    """Hold the AMI connection while this instance holds the PBX's lock; standby otherwise."""

    async def held() -> None:
        instance.ami, instance.ami_since = "holder", clock()
        instance.ami_taken += 1
        log.info("event=ami_holder instance=%s", instance.id)
        tasks = [
            asyncio.create_task(source.client.run(), name="ami-client"),
            asyncio.create_task(source.run(), name="asterisk-events"),
        ]
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            source.client.state = "down"  # the session ended with the task (the lock is gone)
            instance.ami, instance.ami_since = "standby", clock()
            log.warning("event=ami_standby instance=%s", instance.id)

    await holder.run(held)


async def telephony_ctx(app: web.Application) -> AsyncIterator[None]:
    """Start the call services of the enabled sources; stop them in reverse (also what had
    started when a later step fails)."""
    settings, store, hub, supervisor = app[SETTINGS], app[STORE], app[HUB], app[SUPERVISOR]
    directory = InterfaceDirectory(
        store,
        settings.interfaces,
        agent_dial=settings.asterisk.agent_dial,
        dial_interfaces=settings.dial_interfaces,
    )
    app[DIRECTORY] = directory
    services: list[CallService] = []
    source: AsteriskSource | None = None
    try:
        if settings.asterisk.enabled:
            a = settings.asterisk
            client = AmiClient(
                a.host,
                a.port,
                a.username,
                a.secret.reveal(),
                auth=a.auth,
                ping_interval=a.ping_seconds,
                clock=app[CLOCK],
            )
            service = CallService(
                store,
                hub,
                directory,
                source="asterisk",
                recordings=app.get(RECORDINGS),
                observers=[app[BOARD]] if BOARD in app else (),
                unknown_caller=app[FOLLOWUPS].unknown_call,
                lines=settings.lines,
            )
            services.append(service)
            source = AsteriskSource(
                client, service, directory, clock=app[CLOCK], region=settings.store.default_region
            )
            await source.start(run=False)
            instance = app[INSTANCE]
            if store.db.pg is None:  # one instance: it holds the AMI connection
                supervisor.start("ami-client", client.run)
                supervisor.start("asterisk-events", source.run)
                instance.ami, instance.ami_since, instance.ami_taken = "holder", app[CLOCK](), 1
                app[HEALTH]["asterisk"] = lambda: client.state
            else:  # instances sharing the store: one of those with this PBX holds it at a time
                holder = RoleLock(store.db.path, f"ami:{a.host}:{a.port}", retry=a.standby_retry_seconds)
                instance.ami = "standby"
                if instance.relay is not None:  # click-to-call on a standby goes to the holder
                    OriginateForwarding(source, instance.relay, instance)
                supervisor.start("ami-holder", partial(_hold_ami, holder, source, instance, app[CLOCK]))
                app[HEALTH]["asterisk"] = lambda: client.state if holder.role == "holder" else "standby"
            app[ASTERISK] = source
            app[ASTERISK_CALLS] = service
        if settings.twilio.enabled:
            service = CallService(
                store,
                hub,
                directory,
                source="twilio",
                recordings=app.get(RECORDINGS),
                observers=[app[BOARD]] if BOARD in app else (),
                unknown_caller=app[FOLLOWUPS].unknown_call,
                lines=settings.lines,
            )
            services.append(service)

            async def online() -> list[str]:
                ids = set(hub.online_user_ids())
                if (board := app.get(BOARD)) is not None:  # also tabs on the other instances
                    ids.update(a.user_id for a in board.agents.values() if a.online)
                return [
                    u.username
                    for u in await store.users.list()
                    if u.id in ids and u.role in ("rep", "manager")
                ]

            wake_downloads = asyncio.Event()
            app[TWILIO_VOICE] = TwilioVoiceWebhooks(
                recordings=app.get(RECORDINGS),
                on_recording=wake_downloads.set,
                auth_token=settings.twilio.auth_token.reveal(),
                public_url=settings.server.public_url,
                store=store,
                service=service,
                online_users=online,
                fallback_queue=settings.twilio.fallback_queue,
                owner_first_seconds=settings.followups.owner_first_seconds,
                record=settings.twilio.record_calls,
            )
            app[TWILIO_CALLS] = service
            app[TWILIO_CLIENT] = twilio_client(
                settings.twilio.account_sid, settings.twilio.auth_token.reveal(), settings.twilio.api_base
            )
            app[HEALTH]["twilio_voice"] = lambda: "up"
            supervisor.start("twilio-stale-calls", partial(_close_stale_twilio_calls, service, app[CLOCK]))
            if app.get(RECORDINGS) is not None:
                supervisor.start("twilio-recordings", partial(_download_loop, app, wake_downloads))
        yield
    finally:
        # first: the AMI lock is let go at once, so another instance takes over while this one stops
        await supervisor.stop("ami-holder")
        await supervisor.stop("twilio-recordings", "twilio-stale-calls", "asterisk-events")
        if (rest := app.get(TWILIO_CLIENT)) is not None:
            await close_client(rest)
        if source is not None:
            supervisor.expect_stop("ami-client")
            await source.close()
            await supervisor.stop("ami-client")
        for service in reversed(services):
            await service.close()
