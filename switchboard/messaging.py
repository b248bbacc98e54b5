"""Wiring of messaging: the email outbox loop, and the SMS channels, workers and blast scheduler."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from functools import partial
from typing import Any

from aiohttp import web

from campaigns.sms.blasts import BlastService
from campaigns.sms.channel import InboundSms, SmsChannel
from campaigns.sms.gsm7 import MessageTooLong, analyze
from campaigns.sms.inbound import SmsEvents
from campaigns.sms.kannel import KannelChannel
from campaigns.sms.sender import ChannelWorker
from campaigns.sms.twilio_sms import TwilioSmsChannel
from crm_link.clock import Clock
from crm_link.errors import ValidationError
from crm_link.models import Contact, Touch
from switchboard.keys import (
    CLOCK,
    EMAIL,
    FOLLOWUPS,
    HEALTH,
    INSTANCE,
    SETTINGS,
    SMS,
    SMS_CHANNELS,
    SMS_EVENTS,
    STORE,
    SUPERVISOR,
    SURVEYS,
)
from switchboard.settings import Settings, SettingsError, SmsChannelSettings
from switchboard.web.sms import SmsRuntime
from templates.context import merge_context, unknown_codes, unknown_codes_message
from templates.email_service import EmailService
from templates.render import Renderer, TemplateError, TemplateTooCostly
from templates.smtp import SmtpSender

log = logging.getLogger("switchboard.messaging")


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
        rate_per_connection=s.rate_per_connection,
        connections=s.connections,
    )
    d = settings.dealer
    service = EmailService(
        store,
        Renderer(default_time_zone=settings.server.time_zone),
        smtp,
        sender=s.from_,
        public_url=settings.server.public_url or f"http://{settings.server.host}:{settings.server.port}",
        dealer={"name": d.name, "phone": d.phone, "address": d.address, "website": d.website},
        clock=app[CLOCK],
        owner=app[INSTANCE].id,
        lease=timedelta(seconds=settings.server.lease_seconds),
    )
    app[EMAIL] = service
    loop = app.get(FOLLOWUPS)
    if loop is not None:  # a cadence email refused for good is a call now: the assignee's My Day is told

        async def to_call(ids: list[int]) -> None:
            await loop.changed(ids, "followup.email_failed")

        service.on_followups_to_call = to_call
    supervisor = app[SUPERVISOR]
    supervisor.start("email", service.run)
    try:
        yield
    finally:
        service.stop()
        await supervisor.stop("email", timeout=10)
        await smtp.close()


def build_channel(cfg: SmsChannelSettings, settings: Settings) -> SmsChannel:
    """The channel a `[sms.channels.NAME]` table describes."""
    o = cfg.options
    key = f"sms.channels.{cfg.name}"
    if o.get("unknown_policy", "hold") not in ("hold", "resend"):
        raise SettingsError(f"{key}.unknown_policy", "must be hold (an operator decides) or resend")
    if cfg.type == "kannel":
        for name in ("sendsms_url", "username", "password", "secret"):
            if not o.get(name):
                raise SettingsError(f"{key}.{name}", "is required for a kannel channel")
        base = settings.server.public_url or f"http://{settings.server.host}:{settings.server.port}"
        return KannelChannel(
            cfg.name,
            o["sendsms_url"],
            o["username"],
            str(o["password"]),
            sender=o.get("from"),
            dlr_url=base.rstrip("/") + "/sms/kannel/dlr",
            secret=str(o["secret"]),
            max_parts=settings.sms.max_parts,
            connections=_positive_int(o, "connections", 32, key),
        )
    if cfg.type == "twilio":
        from cti.twilio_rest import twilio_client

        t = settings.twilio
        if not t.account_sid.startswith("AC") or not t.auth_token:
            raise SettingsError(
                "twilio.account_sid", "a twilio SMS channel needs twilio.account_sid and auth_token"
            )
        if not settings.server.public_url:
            raise SettingsError("server.public_url", "required with Twilio: it is the URL Twilio signs")
        if not (o.get("from") or o.get("messaging_service_sid")):
            raise SettingsError(f"{key}.from", "a Twilio number (or messaging_service_sid) is required")
        client = twilio_client(t.account_sid, t.auth_token.reveal(), t.api_base)
        return TwilioSmsChannel(
            cfg.name,
            client,
            from_number=o.get("from"),
            messaging_service_sid=o.get("messaging_service_sid"),
            status_callback_url=settings.server.public_url.rstrip("/") + "/twilio/sms/status",
        )
    if cfg.type == "modem":
        from campaigns.sms.modem.channel import ModemChannel

        if not o.get("port"):
            raise SettingsError(f"{key}.port", "is required for a modem channel (e.g. /dev/ttyUSB2)")
        numbers = {"baudrate": int, "command_timeout": float, "send_timeout": float}
        values: dict[str, Any] = {}
        for name, tp in numbers.items():
            if name in o:
                try:
                    values[name] = tp(o[name])
                except (TypeError, ValueError):
                    raise SettingsError(f"{key}.{name}", f"expected a number, got {o[name]!r}") from None
                if values[name] <= 0:
                    raise SettingsError(f"{key}.{name}", "must be greater than 0")
        return ModemChannel(
            cfg.name,
            str(o["port"]),
            smsc=str(o["smsc"]) if o.get("smsc") else None,
            pin=str(o["pin"]) if o.get("pin") else None,
            max_parts=settings.sms.max_parts,
            status_reports=bool(o.get("status_reports", True)),
            **values,
        )
    raise SettingsError(f"{key}.type", f"unknown channel type {cfg.type!r}; use kannel, twilio or modem")


def _positive_int(options: dict[str, Any], name: str, default: int, key: str) -> int:
    value = options.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SettingsError(f"{key}.{name}", f"must be a whole number of at least 1, got {value!r}")
    return value


def merge_code_check(renderer: Renderer) -> Callable[[str], None]:
    """A check that names a misspelt merge code (and the closest known one) or a syntax error, for
    any customer: the preview shows it before a sample customer is even chosen."""

    def check(text: str) -> None:
        try:
            codes = renderer.validate(text).merge_codes
        except TemplateTooCostly as exc:
            raise ValidationError("text", str(exc), code="template_too_costly") from None
        except TemplateError as exc:
            raise ValidationError("text", str(exc), code="template_syntax") from None
        found = unknown_codes(codes)
        if found:
            raise ValidationError("text", unknown_codes_message(found), code="unknown_merge_code")

    return check


def sms_render(renderer: Renderer, dealer: dict[str, Any], clock: Clock) -> Callable[[str, Contact], str]:
    """The blast engine's render: a ValueError naming the problem for a customer (a missing merge
    code), a ValidationError on `text` for a template no customer can be rendered with (too costly)."""

    def render(text: str, contact: Contact) -> str:
        ctx = merge_context(contact, dealer=dealer, now=clock())
        try:
            return renderer.render(text, ctx)
        except TemplateTooCostly as exc:
            raise ValidationError("text", str(exc), code="template_too_costly") from None
        except TemplateError as exc:
            raise ValueError(str(exc)) from None

    return render


async def sms_ctx(app: web.Application) -> AsyncIterator[None]:
    """Start every configured SMS channel, its send loop, and the blast scheduler; whatever started
    is closed again, also when a later channel fails to start."""
    settings, store, supervisor = app[SETTINGS], app[STORE], app[SUPERVISOR]
    if not settings.sms.channels:
        yield
        return
    channels: dict[str, SmsChannel] = {}
    started: list[SmsChannel] = []
    workers: dict[str, ChannelWorker] = {}
    events: SmsEvents | None = None
    try:
        for name, cfg in settings.sms.channels.items():
            channels[name] = build_channel(cfg, settings)
        followups = app[FOLLOWUPS]

        async def on_reply(contact: Contact | None, touch: Touch, msg: InboundSms) -> bool:
            return await followups.inbound_text(contact, touch, msg.text)

        events = SmsEvents(
            store,
            help_text=settings.sms.help_text,
            on_queued=lambda ch: workers[ch].wake(),
            on_reply=on_reply,
            unknown_sender=followups.unknown_sender,
            clock=app[CLOCK],
        )

        async def to_call(ids: list[int]) -> None:
            await followups.changed(ids, "followup.sms_failed")

        events.on_followups_to_call = to_call
        d = settings.dealer
        dealer = {"name": d.name, "phone": d.phone, "address": d.address, "website": d.website}
        renderer = Renderer(default_time_zone=settings.server.time_zone)
        render = sms_render(renderer, dealer, app[CLOCK])

        def describe(text: str) -> dict[str, object]:
            try:
                return analyze(text, settings.sms.max_parts).as_dict()
            except MessageTooLong as exc:
                raise ValueError(str(exc)) from None

        for name, channel in channels.items():
            await channel.start(events)
            started.append(channel)
            workers[name] = ChannelWorker(
                store,
                channel,
                name=name,
                rate_per_second=settings.sms.channels[name].rate_per_second,
                quiet_start=settings.sms.quiet_start,
                quiet_end=settings.sms.quiet_end,
                unknown_policy=str(settings.sms.channels[name].options.get("unknown_policy", "hold")),
                clock=app[CLOCK],
                owner=app[INSTANCE].id,
                lease=timedelta(seconds=settings.server.lease_seconds),
            )
        blasts = BlastService(
            store,
            channels=lambda: list(channels),
            render=render,
            check_codes=merge_code_check(renderer),
            analyze=describe,
            quiet_start=settings.sms.quiet_start,
            quiet_end=settings.sms.quiet_end,
            segment_ids=_segment_ids(store),
            clock=app[CLOCK],
            require_consent=settings.sms.require_consent,
        )
        app[SMS] = SmsRuntime(blasts, workers)
        app[SMS_EVENTS] = events
        events.survey_reply = app[SURVEYS].take_sms_reply  # a reply to a survey text is its answer
        app[SMS_CHANNELS] = channels

        def channel_state(worker_name: str) -> str:
            w = supervisor.workers.get(worker_name)
            return "up" if w is not None and w.state == "running" else "down"

        for name, worker in workers.items():
            supervisor.start(f"sms:{name}", worker.run)
            app[HEALTH][f"sms:{name}"] = partial(channel_state, f"sms:{name}")

        async def scheduler() -> None:
            while True:
                try:
                    for blast_id in await blasts.run_due():
                        blast = await store.sms.blast(blast_id)
                        if blast["channel"] in workers:
                            workers[blast["channel"]].wake()
                except Exception:
                    log.exception("event=blast_scheduler_error")
                await asyncio.sleep(1.0)

        supervisor.start("sms-scheduler", scheduler)
        yield
    finally:
        for w in workers.values():
            w.stop()
        await supervisor.stop("sms-scheduler", *(f"sms:{n}" for n in workers))
        if events is not None:
            await events.close()  # delivery reports received are written before the store closes
        for channel in started:
            await channel.close()
        for channel in channels.values():
            if isinstance(channel, TwilioSmsChannel):
                from cti.twilio_rest import close_client

                await close_client(channel.client)


def _segment_ids(store: Any) -> Any:
    """A blast audience {"segment": id | name | {"filter": ...}}: the contacts it selects now."""

    async def ids(spec: Any) -> list[int]:
        return await store.segments.ids(await store.segments.resolve(spec))

    return ids
