"""SMS over HTTP: blasts (create, progress, cancel/pause/resume), preview, a rep's one-off text, the page."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web

from campaigns.sms.blasts import QUIET_HOURS, BlastService, BlastSpec
from campaigns.sms.sender import ChannelWorker
from crm_link.errors import NotFound, ValidationError
from crm_link.models import Contact
from crm_link.sms import OutboxRow
from switchboard.keys import CLOCK, SETTINGS, SMS, SMS_CHANNELS, SMS_EVENTS, STORE, SURVEYS
from switchboard.web.api import can_see_contact
from switchboard.web.auth import require
from switchboard.web.errors import ApiError, json_body, path_int
from switchboard.web.render import render
from templates.render import TemplateTooCostly, render_in_thread

SENDERS = ("marketing", "manager", "admin")
BLAST_FIELDS = (
    "name",
    "text",
    "audience",
    "channel",
    "send_at",
    "cron",
    "rate_per_second",
    "time_zone",
    "survey_id",
)


@dataclass(slots=True)
class SmsRuntime:
    """What the SMS endpoints need at run time (built by the messaging connector)."""

    blasts: BlastService
    workers: dict[str, ChannelWorker]
    cost_per_segment: float = 0.0079

    def wake(self, channel: str) -> None:
        worker = self.workers.get(channel)
        if worker is not None:
            worker.wake()


def runtime(request: web.Request) -> SmsRuntime:
    rt = request.app.get(SMS)
    if rt is None:
        raise ApiError(
            503, "sms_unavailable", "no SMS channel is configured ([sms.channels.NAME] in the settings)"
        )
    return rt


def _local_time(value: Any, field: str, zone: str) -> datetime:
    """An ISO time; without an offset it is read in the sender's time zone."""
    if not isinstance(value, str):
        raise ValidationError(field, "must be an ISO-8601 time")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValidationError(field, f"{value!r} is not an ISO-8601 time such as 2026-11-28T09:00") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=ZoneInfo(zone))


async def _blast_json(request: web.Request, blast: dict[str, Any]) -> dict[str, Any]:
    store = request.app[STORE]
    progress = await store.sms.progress(blast["id"])
    rt = request.app.get(SMS)
    cost = round(progress["segments"] * (rt.cost_per_segment if rt else 0), 2)
    until, held = await store.sms.held(blast["id"], QUIET_HOURS)
    return (
        blast
        | progress
        | {
            "cost_estimate": cost,
            "held_until": until.astimezone(UTC).isoformat() if until else None,
            "held": held,
            "held_reason": QUIET_HOURS if held else None,
        }
    )


async def create_blast(request: web.Request) -> web.Response:
    user = require(request, *SENDERS)
    rt = runtime(request)
    data = await json_body(request, allowed=BLAST_FIELDS)
    zone = data.get("time_zone") or user.time_zone or request.app[SETTINGS].server.time_zone
    try:
        ZoneInfo(zone)
    except (ValueError, KeyError):
        raise ValidationError("time_zone", f"{zone!r} is not an IANA time zone") from None
    survey_id = data.get("survey_id")
    if survey_id is not None:  # a one-question survey: the replies are its answers
        if isinstance(survey_id, bool) or not isinstance(survey_id, int):
            raise ValidationError("survey_id", "must be a survey id")
        default_text = await request.app[SURVEYS].sms_text(survey_id)
        data.setdefault("text", default_text)
    for name in ("name", "text", "audience", "channel"):
        if name not in data:
            raise ValidationError(name, "is required")
    if not isinstance(data["name"], str):
        raise ValidationError("name", "must be a string")
    if not isinstance(data["channel"], str):
        raise ValidationError("channel", "must be a channel name")
    rate = data.get("rate_per_second")
    if rate is not None and (isinstance(rate, bool) or not isinstance(rate, int | float)):
        raise ValidationError("rate_per_second", "must be a number")
    cron = data.get("cron")
    if cron is not None and not isinstance(cron, str):
        raise ValidationError("cron", "must be a cron expression such as '0 9 * * *'")
    spec = BlastSpec(
        name=data["name"],
        text=data["text"] if isinstance(data["text"], str) else "",
        channel=data["channel"],
        audience=data["audience"],
        send_at=_local_time(data["send_at"], "send_at", zone) if data.get("send_at") else None,
        cron=cron,
        time_zone=zone,
        rate_per_second=float(rate) if rate is not None else None,
        survey_id=survey_id,
    )
    blast = await rt.blasts.create(spec, created_by=user.id)
    rt.wake(spec.channel)
    await request.app[STORE].audit.write(
        "sms.blast.create", user_id=user.id, object_type="blast", object_id=blast["id"]
    )
    return web.json_response(await _blast_json(request, blast), status=201)


async def dry_run(request: web.Request) -> web.Response:
    """Before scheduling: how many an audience would reach, who would be skipped and why, and how
    many quiet hours would hold (at `send_at`, default now). Nothing is stored."""
    user = require(request, *SENDERS)
    rt = runtime(request)
    data = await json_body(request, allowed=("audience", "send_at", "time_zone"))
    zone = data.get("time_zone") or user.time_zone or request.app[SETTINGS].server.time_zone
    try:
        ZoneInfo(zone)
    except (ValueError, KeyError):
        raise ValidationError("time_zone", f"{zone!r} is not an IANA time zone") from None
    if "audience" not in data:
        raise ValidationError("audience", "is required")
    at = _local_time(data["send_at"], "send_at", zone) if data.get("send_at") else None
    return web.json_response(await rt.blasts.dry_run(data["audience"], at))


async def get_blast(request: web.Request) -> web.Response:
    require(request, *SENDERS)
    blast = await request.app[STORE].sms.blast(path_int(request))
    return web.json_response(await _blast_json(request, blast))


async def list_blasts(request: web.Request) -> web.Response:
    require(request, *SENDERS)
    items = [await _blast_json(request, b) for b in await request.app[STORE].sms.blasts()]
    return web.json_response({"items": items, "next_cursor": None})


async def control_blast(request: web.Request) -> web.Response:
    user = require(request, *SENDERS)
    store = request.app[STORE]
    blast_id = path_int(request)
    blast = await store.sms.blast(blast_id)
    action = request.match_info["action"]
    allowed = {
        "cancel": ("scheduled", "running", "paused"),
        "pause": ("scheduled", "running"),
        "resume": ("paused",),
    }
    if blast["state"] not in allowed[action]:
        raise ApiError(409, "conflict", f"cannot {action} a blast that is {blast['state']}", "state")
    target = {
        "cancel": "cancelled",
        "pause": "paused",
        "resume": "running" if blast["runs"] else "scheduled",
    }[action]
    await store.sms.set_blast_state(
        blast_id, target, reason=f"{action} by {user.username}" if action == "pause" else None
    )
    if action == "resume":
        runtime(request).wake(blast["channel"])
    await store.audit.write(f"sms.blast.{action}", user_id=user.id, object_type="blast", object_id=blast_id)
    return web.json_response(await _blast_json(request, await store.sms.blast(blast_id)))


async def resend_unknown(request: web.Request) -> web.Response:
    """An operator decides the blast's messages in doubt (`unknown`) were not sent: queue them again."""
    user = require(request, "manager", "admin")
    store = request.app[STORE]
    blast_id = path_int(request)
    blast = await store.sms.blast(blast_id)
    if blast["state"] == "cancelled":
        raise ApiError(409, "conflict", "the blast was cancelled", "state")
    ids = await store.sms.unknown_ids(blast_id)
    n = await store.sms.requeue_unknown(ids) if ids else 0
    if n and blast["state"] == "done":
        await store.sms.set_blast_state(blast_id, "running")  # done again once they are sent
    if n:
        runtime(request).wake(blast["channel"])
    await store.audit.write(
        "sms.blast.resend_unknown", user_id=user.id, object_type="blast", object_id=blast_id, rows=n
    )
    return web.json_response({"requeued": n} | await _blast_json(request, await store.sms.blast(blast_id)))


async def _render(rt: SmsRuntime, text: str, contact: Contact) -> str:
    """A sender's text merged for one customer, rendered off the event loop; 400 naming `text`."""
    try:
        return await render_in_thread(rt.blasts.render, text, contact)
    except ValidationError:
        raise
    except TemplateTooCostly as exc:
        raise ValidationError("text", str(exc), code="template_too_costly") from None
    except ValueError as exc:
        raise ValidationError("text", str(exc), code="missing_merge_code") from None


async def preview(request: web.Request) -> web.Response:
    """Rendered text, encoding, segments, cost and warnings for one customer."""
    user = require(request, *SENDERS, "rep")
    rt = runtime(request)
    data = await json_body(request, allowed=("text", "contact_id"))
    text = rt.blasts.check_text(data.get("text"))
    contact_id = data.get("contact_id")
    if contact_id is not None:
        if isinstance(contact_id, bool) or not isinstance(contact_id, int):
            raise ValidationError("contact_id", "must be a contact id")
        contact = await request.app[STORE].contacts.get(contact_id)
        if not can_see_contact(user, contact):
            raise ApiError(403, "forbidden", "this customer belongs to another salesperson")
        text = await _render(rt, text, contact)
    info = rt.blasts.describe(text)
    return web.json_response(info | {"cost": round(info["segments"] * rt.cost_per_segment, 4)})


async def send_one(request: web.Request) -> web.Response:
    """A rep texts one customer now (quiet hours do not hold a person's own text)."""
    user = require(request, "rep", "manager", "admin")
    rt = runtime(request)
    store = request.app[STORE]
    data = await json_body(request, allowed=("contact_id", "text", "channel", "followup_id"))
    contact_id = data.get("contact_id")
    if isinstance(contact_id, bool) or not isinstance(contact_id, int):
        raise ValidationError("contact_id", "must be a contact id")
    contact = await store.contacts.get(contact_id)
    if not can_see_contact(user, contact):
        raise ApiError(403, "forbidden", "this customer belongs to another salesperson")
    channel = data.get("channel") or next(iter(rt.workers), None)
    if channel not in rt.workers:
        raise ValidationError("channel", f"unknown channel {channel!r}")
    if contact.sms_opt_out:
        raise ApiError(409, "opted_out", "this customer has opted out of SMS", "contact_id")
    if rt.blasts.require_consent and not contact.sms_consent:
        raise ApiError(
            409,
            "no_consent",
            "this customer has not agreed to receive texts (texts need recorded consent here):"
            " record their consent on the contact page first",
            "contact_id",
        )
    from campaigns.sms.blasts import pick_number

    number, why = pick_number(contact)
    if number is None:
        raise ValidationError("contact_id", f"cannot text this customer: {why}")
    followup_id = data.get("followup_id")
    if followup_id is not None:
        # a text sent from a follow-up closes it once sent; the customer's reply answers it
        if isinstance(followup_id, bool) or not isinstance(followup_id, int):
            raise ValidationError("followup_id", "must be the id of an open follow-up of this customer")
        try:
            served = await store.followups.get(followup_id)
        except NotFound:
            served = None
        if served is None or served.contact_id != contact.id or served.status != "open":
            raise ValidationError("followup_id", "must be the id of an open follow-up of this customer")
    text = await _render(rt, rt.blasts.check_text(data.get("text")), contact)
    info = rt.blasts.describe(text)
    msg = await store.sms.enqueue(
        OutboxRow(
            to_e164=number,
            text=text,
            channel=channel,
            not_before=request.app[CLOCK]() - timedelta(seconds=1),
            contact_id=contact.id,
            user_id=user.id,
            encoding=info["encoding"],
            segments=info["segments"],
            followup_id=followup_id,
        )
    )
    rt.wake(channel)
    return web.json_response(
        {"id": msg.id if msg else None, "state": "queued", "to": number} | info, status=202
    )


async def blasts_page(request: web.Request) -> web.Response:
    require(request, *SENDERS)
    rt = request.app.get(SMS)
    channels = list(rt.workers) if rt else []
    store = request.app[STORE]
    segments = await store.segments.list()
    # the surveys a blast can ask: one question in one text (the others, switched off or longer,
    # are listed with why they cannot go)
    surveys: list[dict[str, Any]] = []
    for row in await store.surveys.all():
        try:
            surveys.append(
                {"id": row.id, "name": row.name, "text": await request.app[SURVEYS].sms_text(row.id)}
            )
        except ValidationError as exc:
            surveys.append({"id": row.id, "name": row.name, "text": None, "why": exc.reason})
    return render(
        request,
        "sms_blasts.html",
        {"channels": channels, "available": rt is not None, "segments": segments, "surveys": surveys},
    )


async def kannel_webhook(request: web.Request) -> web.Response:
    """Kannel's DLR and sms-service GETs; authenticated by the channel's secret."""
    from campaigns.sms.kannel import KannelChannel, parse_kannel_dlr, parse_kannel_inbound, secret_ok

    q = request.query
    channels = request.app.get(SMS_CHANNELS, {})
    channel = channels.get(q.get("channel", ""))
    if not isinstance(channel, KannelChannel):
        raise ApiError(404, "not_found", "no such Kannel channel", "channel")
    if not secret_ok(q.get("secret"), channel.secret):
        raise ApiError(403, "bad_secret", "the channel secret is missing or wrong", "secret")
    events = request.app[SMS_EVENTS]
    try:
        if request.path.endswith("/dlr"):
            await events.on_delivery(parse_kannel_dlr(q, channel.name))
        else:
            await events.on_inbound(parse_kannel_inbound(q, channel.name))
    except ValueError as exc:
        field, _, reason = str(exc).partition(": ")
        raise ApiError(400, "invalid", reason or str(exc), field) from None
    return web.Response(text="ok")


async def twilio_sms_webhook(request: web.Request) -> web.Response:
    """Twilio's message status callbacks and incoming messages, checked with its signature."""
    from twilio.request_validator import RequestValidator

    from campaigns.sms.twilio_sms import TwilioSmsChannel, parse_twilio_inbound, parse_twilio_status

    settings = request.app[SETTINGS]
    form = {k: str(v) for k, v in (await request.post()).items()}
    url = settings.server.public_url.rstrip("/") + request.path_qs
    signature = request.headers.get("X-Twilio-Signature", "")
    if not signature or not RequestValidator(settings.twilio.auth_token.reveal()).validate(
        url, form, signature
    ):
        raise ApiError(
            403, "bad_signature", "X-Twilio-Signature is missing or does not match", "X-Twilio-Signature"
        )
    channels = request.app.get(SMS_CHANNELS, {})
    twilio = [c for c in channels.values() if isinstance(c, TwilioSmsChannel)]
    if not twilio:
        raise ApiError(404, "not_found", "no Twilio SMS channel is configured")
    channel = channels.get(request.query.get("channel", "")) or twilio[0]
    events = request.app[SMS_EVENTS]
    try:
        if request.path.endswith("/status"):
            await events.on_delivery(parse_twilio_status(form, channel.name, request.query.get("mid")))
            return web.Response(status=204)
        await events.on_inbound(parse_twilio_inbound(form, channel.name))
    except ValueError as exc:
        field, _, reason = str(exc).partition(": ")
        raise ApiError(400, "invalid", reason or str(exc), field) from None
    return web.Response(text="<Response/>", content_type="application/xml")


def setup(app: web.Application) -> None:
    app.router.add_post("/twilio/sms/status", twilio_sms_webhook)
    app.router.add_post("/twilio/sms/incoming", twilio_sms_webhook)
    app.router.add_get("/sms/kannel/dlr", kannel_webhook)
    app.router.add_get("/sms/kannel/incoming", kannel_webhook)
    r = app.router
    r.add_post("/api/v1/sms/blasts", create_blast)
    r.add_get("/api/v1/sms/blasts", list_blasts)
    r.add_post("/api/v1/sms/blasts/dry-run", dry_run)
    r.add_get("/api/v1/sms/blasts/{id}", get_blast)
    r.add_post("/api/v1/sms/blasts/{id}/{action:cancel|pause|resume}", control_blast)
    r.add_post("/api/v1/sms/blasts/{id}/resend-unknown", resend_unknown)
    r.add_post("/api/v1/sms/preview", preview)
    r.add_post("/api/v1/sms/send", send_one)
    r.add_get("/sms/blasts", blasts_page)
