"""The transcript queue: a durable job per recording, claimed with a lease, done exactly once."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from crm_link.db import Database, to_db_time
from crm_link.recordings import Recordings

STATES = ("queued", "working", "done", "failed")
# recordings with audio the transcriber reads (others are not queued)
_TRANSCRIBABLE = "r.state IN ('indexed', 'unlinked') AND r.format = 'wav' AND r.storage_path IS NOT NULL"


class Transcripts:
    def __init__(self, db: Database, recordings: Recordings) -> None:
        self._db = db
        self._recordings = recordings

    async def enqueue_missing(self) -> int:
        """Queue every transcribable recording that has no job yet; how many were queued."""
        now = to_db_time(self._db.now())
        async with self._db.transaction() as tx:
            cur = await tx.execute(
                "INSERT INTO transcript_jobs (recording_id, state, created_at, updated_at)"
                f" SELECT r.id, 'queued', ?, ? FROM recordings r WHERE {_TRANSCRIBABLE}"
                " AND NOT EXISTS (SELECT 1 FROM transcript_jobs j WHERE j.recording_id = r.id)",
                (now, now),
            )
            return cur.rowcount

    async def claim(self, limit: int, lease: timedelta, *, max_attempts: int = 3) -> list[dict[str, Any]]:
        """Take up to `limit` jobs: queued ones, and working ones whose lease ran out (their worker died).

        A job already tried `max_attempts` times is marked failed instead of taken again.
        """
        now = self._db.now()
        stamp, until = to_db_time(now), to_db_time(now + lease)
        async with self._db.transaction() as tx:
            await tx.execute(
                "UPDATE transcript_jobs SET state = 'failed', lease_until = NULL, updated_at = ?,"
                " error = 'gave up: the transcriber stopped during every attempt'"
                " WHERE state = 'working' AND lease_until < ? AND attempts >= ?",
                (stamp, stamp, max_attempts),
            )
            async with tx.execute(
                "UPDATE transcript_jobs SET state = 'working', lease_until = ?, attempts = attempts + 1,"
                " updated_at = ? WHERE recording_id IN (SELECT recording_id FROM transcript_jobs"
                " WHERE state = 'queued' OR (state = 'working' AND lease_until < ?)"
                f" ORDER BY recording_id LIMIT ?{self._db.skip_locked()}) AND (state = 'queued' OR"
                " (state = 'working' AND lease_until < ?)) RETURNING recording_id, attempts",
                (until, stamp, stamp, limit, stamp),
            ) as cur:
                claimed = {r[0]: r[1] for r in await cur.fetchall()}
            if not claimed:
                return []
            marks = ",".join("?" * len(claimed))
            async with tx.execute(
                f"SELECT id, storage_path FROM recordings WHERE id IN ({marks}) ORDER BY id", list(claimed)
            ) as cur:
                rows = await cur.fetchall()
        return [{"recording_id": r[0], "storage_path": r[1], "attempts": claimed[r[0]]} for r in rows]

    async def renew(self, recording_ids: list[int], lease: timedelta) -> None:
        """Extend the lease of jobs still being decoded."""
        if not recording_ids:
            return
        marks = ",".join("?" * len(recording_ids))
        async with self._db.transaction() as tx:
            await tx.execute(
                f"UPDATE transcript_jobs SET lease_until = ? WHERE state = 'working' AND recording_id IN ({marks})",
                [to_db_time(self._db.now() + lease), *recording_ids],
            )

    async def complete(self, recording_id: int, text: str, segments: list[dict[str, Any]]) -> bool:
        """Store a transcript and index its words; False (nothing written) if the job is not ours to
        finish any more (already done by another worker)."""
        now = to_db_time(self._db.now())
        async with self._db.transaction() as tx:
            cur = await tx.execute(
                "UPDATE transcript_jobs SET state = 'done', lease_until = NULL, error = NULL, updated_at = ?"
                " WHERE recording_id = ? AND state = 'working'",
                (now, recording_id),
            )
            if cur.rowcount != 1:
                return False
            await tx.execute(
                "UPDATE recordings SET transcript = ?, transcript_segments = ? WHERE id = ?",
                (text, json.dumps(segments), recording_id),
            )
            await self._recordings.reindex_text(tx, recording_id=recording_id)
        return True

    async def fail(self, recording_id: int, error: str) -> None:
        """This file cannot be transcribed: keep why; it is not tried again."""
        async with self._db.transaction() as tx:
            await tx.execute(
                "UPDATE transcript_jobs SET state = 'failed', lease_until = NULL, error = ?, updated_at = ?"
                " WHERE recording_id = ? AND state = 'working'",
                (error[:500], to_db_time(self._db.now()), recording_id),
            )

    async def release(self, recording_ids: list[int]) -> None:
        """Give claimed jobs back to the queue (a worker stopping cleanly), keeping their attempts."""
        if not recording_ids:
            return
        marks = ",".join("?" * len(recording_ids))
        async with self._db.transaction() as tx:
            await tx.execute(
                "UPDATE transcript_jobs SET state = 'queued', lease_until = NULL, attempts = attempts - 1"
                f" WHERE state = 'working' AND recording_id IN ({marks})",
                recording_ids,
            )

    async def counts(self) -> dict[str, int]:
        """Jobs by state, every state present."""
        rows = await self._db.fetchall("SELECT state, count(*) FROM transcript_jobs GROUP BY state")
        out = dict.fromkeys(STATES, 0)
        out.update({r[0]: r[1] for r in rows})
        return out

    async def job(self, recording_id: int) -> dict[str, Any] | None:
        row = await self._db.fetchone(
            "SELECT recording_id, state, attempts, error FROM transcript_jobs WHERE recording_id = ?",
            (recording_id,),
        )
        return dict(row) if row else None
