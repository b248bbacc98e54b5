"""Wiring of recordings: the service the call sources report to, the directory watcher, retention."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

from aiohttp import web

from recordings.service import RecordingService
from recordings.transcripts import TranscriptWorker
from switchboard.keys import CLOCK, RECORDINGS, SETTINGS, STORE, SUPERVISOR

# the transcript worker when `[recordings] transcribe = true`, else absent
TRANSCRIPTS = web.AppKey("transcripts", TranscriptWorker)

log = logging.getLogger("switchboard.recordings")
RETENTION_EVERY = 6 * 3600.0


def recording_service(app: web.Application) -> RecordingService:
    settings = app[SETTINGS]
    watch = Path(settings.asterisk.recordings_dir) if settings.asterisk.enabled else None
    return RecordingService(
        app[STORE], watch_dir=watch, storage_dir=Path(settings.recordings.storage_dir), clock=app[CLOCK]
    )


async def recordings_ctx(app: web.Application) -> AsyncIterator[None]:
    """Started before the call sources, so they can announce recordings to it."""
    settings, supervisor = app[SETTINGS], app[SUPERVISOR]
    service = recording_service(app)
    app[RECORDINGS] = service
    names: list[str] = []
    transcriber = None
    if settings.recordings.transcribe:
        from recordings.transcribe import PocketSphinxTranscriber

        transcriber = PocketSphinxTranscriber(settings.recordings.transcribe_workers)
        worker = TranscriptWorker(
            app[STORE],
            transcriber,
            service.storage_dir,
            concurrency=settings.recordings.transcribe_workers,
        )
        app[TRANSCRIPTS] = worker
        service.on_indexed = lambda _rid: worker.wake()
        supervisor.start("recordings-transcribe", worker.run)
        names.append("recordings-transcribe")
    if service.watch_dir is not None:
        supervisor.start("recordings-watch", partial(service.watch, settings.recordings.poll_seconds))
        names.append("recordings-watch")
    if settings.recordings.retention_days > 0:

        async def retention() -> None:
            while True:
                try:
                    n = await service.apply_retention(settings.recordings.retention_days)
                    if n:
                        log.info("event=recordings_retention deleted=%d", n)
                except Exception:
                    log.exception("event=recordings_retention_failed")
                await asyncio.sleep(RETENTION_EVERY)

        supervisor.start("recordings-retention", retention)
        names.append("recordings-retention")
    try:
        yield
    finally:
        await supervisor.stop(*names)
        if transcriber is not None:
            await asyncio.to_thread(transcriber.close)
