"""The transcript worker: takes recordings from the store's durable queue, has them transcribed off the
event loop, and stores each transcript once. Indexing and playback never wait for it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Protocol

from crm_link.store import Store
from recordings.transcribe import Transcript, TranscriptionError

log = logging.getLogger("recordings.transcripts")


class Transcriber(Protocol):
    """Turns a recording's audio into timed words (PocketSphinxTranscriber; tests plug in their own)."""

    async def transcribe(self, path: Path) -> Transcript: ...


class TranscriptWorker:
    """Claims up to `concurrency` jobs at a time (one per transcriber process), renews their leases
    while they decode, and stores each result; a file that fails is marked with why and the rest go on."""

    def __init__(
        self,
        store: Store,
        transcriber: Transcriber,
        storage_dir: Path,
        *,
        concurrency: int = 1,
        lease: timedelta = timedelta(seconds=60),
        idle_seconds: float = 5.0,
    ) -> None:
        self.store = store
        self.transcriber = transcriber
        self.storage_dir = storage_dir
        self.concurrency = concurrency
        self.lease = lease
        self.idle_seconds = idle_seconds
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """New recordings were indexed: look for work now rather than at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        """For ever: queue new recordings, transcribe what is queued, sleep when there is nothing."""
        while True:
            self._wake.clear()
            if await self.run_once() == 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.idle_seconds)

    async def run_backlog(self, progress: Callable[[int, int], None] | None = None) -> dict[str, int]:
        """Transcribe everything queued, then return the counts by state (the CLI's one-off run)."""
        await self.store.transcripts.enqueue_missing()
        counts = await self.store.transcripts.counts()
        total = counts["queued"] + counts["working"]
        done = 0
        if progress is not None:
            progress(0, total)
        while n := await self.run_once():
            done += n
            if progress is not None:
                progress(min(done, total), total)
        return await self.store.transcripts.counts()

    async def run_once(self) -> int:
        """One batch: how many jobs were taken (0 when the queue is empty)."""
        tx = self.store.transcripts
        await tx.enqueue_missing()
        jobs = await tx.claim(self.concurrency, self.lease)
        if not jobs:
            return 0
        ids = [j["recording_id"] for j in jobs]
        renewer = asyncio.create_task(self._renew(ids))
        try:
            await asyncio.gather(*(self._one(j) for j in jobs))
        except asyncio.CancelledError:
            # stopping: what was not finished goes back to the queue for the next start
            await asyncio.shield(tx.release(ids))
            raise
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
        return len(jobs)

    async def _renew(self, ids: list[int]) -> None:
        while True:
            await asyncio.sleep(self.lease.total_seconds() / 3)
            await self.store.transcripts.renew(ids, self.lease)

    async def _one(self, job: dict[str, object]) -> None:
        rid = int(str(job["recording_id"]))
        if not job["storage_path"]:
            await self.store.transcripts.fail(rid, "the audio is gone (deleted by retention)")
            return
        path = self.storage_dir / str(job["storage_path"])
        try:
            transcript = await self.transcriber.transcribe(path)
        except asyncio.CancelledError:
            raise
        except (TranscriptionError, OSError) as exc:
            log.warning("event=transcription_failed id=%d error=%r", rid, str(exc))
            await self.store.transcripts.fail(rid, str(exc) or type(exc).__name__)
            return
        except Exception as exc:  # the engine's own error: this file is marked, the rest go on
            log.exception("event=transcription_failed id=%d", rid)
            await self.store.transcripts.fail(rid, f"{type(exc).__name__}: {exc}")
            return
        if await self.store.transcripts.complete(rid, transcript.text, transcript.as_json()):
            log.info("event=transcribed id=%d words=%d", rid, len(transcript.text.split()))
        else:
            log.warning("event=transcript_not_stored id=%d reason=job_taken_by_another_worker", rid)
