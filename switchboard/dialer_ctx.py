"""Wiring of the dialer: built after telephony, hooked to the call services' end-of-call events."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from functools import partial
from typing import Any

from aiohttp import web

from campaigns.dialer.backends import DialBackend
from campaigns.dialer.hours import CallingHours
from campaigns.dialer.service import Dialer
from crm_link.cluster import RoleLock
from cti.screenpop import build_pop
from switchboard.cluster import DialerSync, PreviewForwarding
from switchboard.dialing import AmiDialBackend, TwilioDialBackend
from switchboard.keys import (
    ASTERISK,
    CALL_SERVICES,
    CLOCK,
    DIALER,
    HEALTH_DETAILS,
    HUB,
    INSTANCE,
    MY_DAY_EXTRAS,
    SETTINGS,
    STORE,
    SUPERVISOR,
    TWILIO_CLIENT,
    TWILIO_VOICE,
)

log = logging.getLogger("switchboard.dialer")


def backend_of(app: web.Application) -> DialBackend | None:
    """Asterisk when it is enabled, else Twilio, else none (preview lists still hand out entries)."""
    settings = app[SETTINGS]
    if (source := app.get(ASTERISK)) is not None:
        return AmiDialBackend(source, context=settings.asterisk.originate_context)
    if (voice := app.get(TWILIO_VOICE)) is not None and settings.twilio.caller_id:
        return TwilioDialBackend(voice, app[TWILIO_CLIENT], caller_id=settings.twilio.caller_id)
    return None


def _holder_dials(app: web.Application, twilio_lock: RoleLock | None) -> Callable[[], str | None] | None:
    """Instances sharing the store with one AMI connection: only its holder dials progressive lists
    (a call's events reach that instance alone); the others' dialers idle, saying why. With Twilio
    alone, only the holder of the dialer's own lock dials."""
    source, instance = app.get(ASTERISK), app[INSTANCE]
    if twilio_lock is not None:
        lock = twilio_lock

        def twilio_reason() -> str | None:
            if lock.role != "holder":
                return "standby: the instance holding the Twilio dialer's lock dials progressive lists"
            return None

        return twilio_reason
    if source is None or app[STORE].db.pg is None or instance.relay is None:
        return None

    def reason() -> str | None:
        if instance.ami != "holder":
            return "standby: the instance holding the AMI connection dials progressive lists"
        if source.client.state != "up":
            return f"the PBX connection is {source.client.state}"
        return None

    return reason


async def dialer_ctx(app: web.Application) -> AsyncIterator[None]:
    settings, store = app[SETTINGS], app[STORE]
    d = settings.dialer
    instance = app[INSTANCE]
    backend = backend_of(app)
    twilio_lock = None
    if backend is not None and backend.source == "twilio" and store.db.pg is not None and instance.relay:
        # instances sharing the store: one dials progressive lists (readiness is relayed to it)
        twilio_lock = RoleLock(store.db.path, "dialer:twilio", retry=settings.asterisk.standby_retry_seconds)
    dialer = Dialer(
        store,
        app[HUB],
        backend,
        hours=CallingHours.of(
            settings.calling_hours.start, settings.calling_hours.end, settings.calling_hours.holidays
        ),
        clock=app[CLOCK],
        max_concurrent=d.max_concurrent_calls,
        calls_per_second=d.calls_per_second,
        lease=timedelta(seconds=d.lease_seconds),
        preview_lease=timedelta(minutes=d.preview_lease_minutes),
        wrap_up=timedelta(seconds=d.wrap_up_seconds),
        dial_timeout_s=d.dial_timeout_seconds,
        tick_seconds=d.tick_seconds,
        dispositions=tuple(d.dispositions),
        busy_agents=lambda: _agents_on_calls(app),
        owner_wait=timedelta(minutes=d.owner_wait_minutes),
        pop_builder=build_pop,
        owner=f"dialer-{instance.id}-{secrets.token_hex(3)}",
        may_dial=_holder_dials(app, twilio_lock),
    )
    if dialer.may_dial is not None and instance.relay is not None:
        sync = DialerSync(dialer, instance.relay, instance.id)
        sync.hello()
        if (source := app.get(ASTERISK)) is not None:
            PreviewForwarding(dialer, source, instance.relay, instance)
    if twilio_lock is not None:
        app[SUPERVISOR].start("dialer-holder", partial(twilio_lock.run, _hold_until_cancelled))
    app[HEALTH_DETAILS]["dialer"] = lambda: _health(dialer)
    for key in CALL_SERVICES.values():
        service = app.get(key)
        if service is not None:
            service.on_ended = dialer.call_ended
    app[DIALER] = dialer
    app[MY_DAY_EXTRAS].append(_my_day)
    await dialer.start(run=False)
    app[SUPERVISOR].start("dialer", dialer.run)
    log.info(
        "event=dialer_started owner=%s backend=%s", dialer.owner, dialer.backend and dialer.backend.source
    )
    try:
        yield
    finally:
        await app[SUPERVISOR].stop("dialer", "dialer-holder")
        await dialer.close()


async def _hold_until_cancelled() -> None:
    await asyncio.Event().wait()  # the lock is held while this waits; the dialer reads its role


def _health(dialer: Dialer) -> dict[str, Any]:
    reason = dialer.idle_reason()
    out: dict[str, Any] = {
        "progressive": "idle" if reason else "dialing",
        "ready_agents": len(dialer.ready),
        "in_flight": len(dialer.in_flight),
    }
    if reason:
        out["reason"] = reason
    return out


def _agents_on_calls(app: web.Application) -> set[int]:
    busy: set[int] = set()
    for key in CALL_SERVICES.values():
        service = app.get(key)
        if service is not None:
            busy |= service.agents_on_calls()
    return busy


async def _my_day(request: web.Request, user: Any) -> dict[str, Any]:
    """My Day: the agent's call-list call-backs due today, and how many list entries wait for them."""
    store = request.app[STORE]
    dialer = request.app[DIALER]
    now = dialer.clock()
    callbacks = await store.call_lists.callbacks_for(user.id, now + timedelta(hours=24))
    return {"call_list_callbacks": callbacks, "call_lists": await lists_for(store, dialer, user)}


async def lists_for(store: Any, dialer: Dialer, user: Any) -> list[dict[str, Any]]:
    """The running lists this user works, with how many entries wait."""
    if user.role not in ("rep", "manager"):
        return []
    lists = [cl for cl in await store.call_lists.all(states=("running",)) if dialer.may_work(cl, user)]
    pending = await store.call_lists.pending_counts([cl.id for cl in lists])
    return [{"id": cl.id, "name": cl.name, "mode": cl.mode, "pending": pending[cl.id]} for cl in lists]
