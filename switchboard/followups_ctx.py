"""Wiring of the follow-up loop: the service, the shipped cadences, declared attribute types and the
daily sweep worker under the supervisor."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

from aiohttp import web

from crm_link.clock import Clock
from crm_link.importer import ImportReport, import_contacts
from crm_link.store import Store
from followups.service import FollowupService, LoopSettings, Notify
from followups.survey_service import SurveyService
from switchboard.keys import CLOCK, FOLLOWUPS, HUB, SETTINGS, STORE, SUPERVISOR, SURVEYS
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
        ),
        **({"notify": notify} if notify is not None else {}),
    )
    store.touches.unowned_pool = f.unowned_pool or None
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
