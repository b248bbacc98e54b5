"""Wiring of the follow-up loop: the service, the shipped cadences, declared attribute types and the
daily sweep worker under the supervisor."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

from aiohttp import web

from campaigns.sms.blasts import pick_number
from campaigns.sms.quiet import quiet_until
from crm_link.clock import Clock
from crm_link.errors import NotFound, ValidationError
from crm_link.importer import ImportReport, import_contacts
from crm_link.models import FollowUp
from crm_link.sms import OutboxRow
from crm_link.store import Store
from followups.rules import Step
from followups.service import MANAGERS, FollowupService, LoopSettings, Notify
from followups.steps import StepChannel, StepSender
from followups.survey_service import SurveyService
from switchboard.keys import (
    CLOCK,
    EMAIL,
    FOLLOWUP_STEPS,
    FOLLOWUPS,
    HUB,
    SETTINGS,
    SMS,
    STORE,
    SUPERVISOR,
    SURVEYS,
)
from switchboard.settings import Settings

SWEEP_WORKER = "followup-sweep"


def build_service(
    settings: Settings, store: Store, clock: Clock, notify: Notify | None = None
) -> FollowupService:
    """The follow-up loop on a store, as the settings say (the app and the CLI import share it)."""
    f = settings.followups
    service = FollowupService(
        store,
        clock,
        LoopSettings(
            time_zone=settings.server.time_zone,
            pools=f.pools,
            unowned_pool=f.unowned_pool,
            sweep_at=f.sweep_at,
            call_at=f.call_at,
            lookahead_days=f.lookahead_days,
            catch_up_days=f.catch_up_days,
            retry_hours=f.retry_hours,
            max_attempts=f.max_attempts,
            reply_days=f.reply_days,
        ),
        **({"notify": notify} if notify is not None else {}),
    )
    # a missed call or a reply nobody owns is never nobody's: the unowned pool's, else the managers'
    store.touches.unowned_pool = f.unowned_pool or MANAGERS
    if notify is not None:
        store.touches.on_followup = service.followup_added
    return service


async def followups_ctx(app: web.Application) -> AsyncIterator[None]:
    settings, store = app[SETTINGS], app[STORE]
    service = build_service(settings, store, app[CLOCK], app[HUB].publish)
    if settings.attributes:
        await store.followups.set_attribute_types(settings.attributes, source="declared")
    await service.ensure_defaults()
    app[FOLLOWUPS] = service
    app[SURVEYS] = SurveyService(service)
    app[SUPERVISOR].start(SWEEP_WORKER, service.run)
    yield
    await app[SUPERVISOR].stop(SWEEP_WORKER)


async def import_with_followups(
    settings: Settings,
    store: Store,
    service: FollowupService,
    path: Path,
    *,
    dry_run: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[ImportReport, int]:
    """A CSV import with typed attributes, then the cadences applied to every imported contact (a
    re-import makes nothing new; a corrected date moves the open follow-ups). The report and how many
    follow-ups were made."""
    if settings.attributes:
        await store.followups.set_attribute_types(settings.attributes, source="declared")
    await service.ensure_defaults()
    report = await import_contacts(
        store,
        path,
        dry_run=dry_run,
        progress=progress,
        declared_types=settings.attributes,
        date_format=settings.import_.date_format,
    )
    made = 0 if dry_run else await service.apply_to(report.contact_ids)
    return report, made


STEPS_WORKER = "followup-steps"


def sms_step(app: web.Application) -> StepChannel:
    """A cadence SMS step through the SMS outbox: the saved text merged for the customer, held by
    the sender in the customer's quiet hours; an opted-out customer, a missing mobile number or a
    missing merge code is a reason, not a send."""
    settings, store, clock = app[SETTINGS], app[STORE], app[CLOCK]

    async def send(f: FollowUp, step: Step) -> str | None:
        rt = app.get(SMS)
        channel = settings.followups.sms_channel or next(iter(rt.workers), None) if rt else None
        if rt is None or channel not in rt.workers:
            return "SMS not sent (no SMS channel is configured)"
        contact = await store.contacts.get(f.contact_id)
        if contact.sms_opt_out:
            return "SMS not sent (the customer opted out)"
        if rt.blasts.require_consent and not contact.sms_consent:
            return "SMS not sent (no consent to texts)"
        number, why = pick_number(contact)
        if number is None:
            return f"SMS not sent ({why})"
        try:
            if step.template_id is not None:
                source = (await store.sms_templates.get(step.template_id)).text
            elif step.survey_id is not None:  # a one-question survey step: the text asks it
                source = await app[SURVEYS].sms_text(step.survey_id)
            else:
                return "SMS not sent (the step has no saved text or survey)"
            text = rt.blasts.render(source, contact)
            info = rt.blasts.describe(text)
        except NotFound:
            return f"SMS not sent (saved text {step.template_id} is gone)"
        except (ValueError, ValidationError) as exc:
            return f"SMS not sent ({exc})"
        await store.sms.enqueue(
            OutboxRow(
                to_e164=number,
                text=text,
                channel=channel,
                not_before=clock(),
                contact_id=contact.id,
                encoding=info["encoding"],
                segments=info["segments"],
                dedupe_key=f"followup:{f.id}",
                time_zone=contact.time_zone or settings.server.time_zone,
                followup_id=f.id,
                survey_id=step.survey_id,
            )
        )
        rt.wake(channel)
        return None

    return send


def email_step(app: web.Application) -> StepChannel:
    """A cadence email step through the email outbox (closed once sent), after quiet hours in the
    customer's zone; no address, unsubscribed or a missing merge code is a reason, not a send."""
    settings, store, clock = app[SETTINGS], app[STORE], app[CLOCK]

    async def send(f: FollowUp, step: Step) -> str | None:
        contact = await store.contacts.get(f.contact_id)
        if not contact.email:
            return "Email not sent (no email address)"
        if contact.email_opt_out:
            return "Email not sent (the customer unsubscribed)"
        now = clock()
        zone = contact.time_zone or settings.server.time_zone
        at = quiet_until(now, zone, settings.sms.quiet_start, settings.sms.quiet_end) or now
        try:
            job_id = await app[EMAIL].send(
                step.template_id or 0, [contact], None, send_at=at, followup_id=f.id
            )
        except NotFound:
            return f"Email not sent (template {step.template_id} is gone)"
        job = await store.email.job(job_id)
        if job["counts"].get("skipped"):
            reason = job["errors"][0]["reason"] if job["errors"] else "skipped"
            return f"Email not sent ({reason})"
        return None

    return send


async def steps_ctx(app: web.Application) -> AsyncIterator[None]:
    """The worker that sends SMS and email cadence steps when they come due."""
    sender = StepSender(
        app[STORE],
        app[CLOCK],
        {"sms": sms_step(app), "email": email_step(app)},
        poll_seconds=app[SETTINGS].followups.step_poll_seconds,
    )
    app[FOLLOWUP_STEPS] = sender
    app[SUPERVISOR].start(STEPS_WORKER, sender.run)
    yield
    await app[SUPERVISOR].stop(STEPS_WORKER)
