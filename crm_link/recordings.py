"""The recording index: rows, their links to calls, search with the managers' filters, full text."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from crm_link.db import Database, from_db_time, one_row, to_db_time
from crm_link.errors import NotFound
from crm_link.models import Page, check_limit, decode_cursor, encode_cursor, iso

_WORD = re.compile(r"\w+", re.UNICODE)
SNIPPET_BEFORE, SNIPPET_AFTER = 6, 12


def transcript_snippet(transcript: str, q: str) -> list[dict[str, Any]] | None:
    """The part of a transcript around the first word the search matched, as text runs with the
    matched words marked (`hit`); None when no word of `q` is in it. Matching is the search's:
    case-insensitive, a query word matches words it begins."""
    wanted = [w.casefold() for w in _WORD.findall(q)[:8]]
    words = list(_WORD.finditer(transcript))
    hits = [i for i, m in enumerate(words) if any(m.group().casefold().startswith(w) for w in wanted)]
    if not wanted or not hits:
        return None
    first = max(0, hits[0] - SNIPPET_BEFORE)
    last = min(len(words), hits[0] + SNIPPET_AFTER + 1)
    parts: list[dict[str, Any]] = []
    if first > 0:
        parts.append({"text": "… ", "hit": False})
    for i in range(first, last):
        hit = i in hits
        text = words[i].group()
        if parts and not hit and not parts[-1]["hit"]:
            parts[-1]["text"] += text
        else:
            parts.append({"text": text, "hit": hit})
        sep = " " if i < last - 1 else (" …" if last < len(words) else "")
        if sep:
            if hit:
                parts.append({"text": sep, "hit": False})
            else:
                parts[-1]["text"] += sep
    return parts


@dataclass(frozen=True, slots=True)
class RecordingFilter:
    extension: str | None = None
    user_id: int | None = None
    direction: str | None = None
    number: str | None = None  # E.164
    contact_id: int | None = None
    since: datetime | None = None
    until: datetime | None = None
    min_duration: float | None = None
    q: str | None = None
    only_user_id: int | None = None  # a rep: their own calls only


_SELECT = (
    "SELECT r.*, u.username, trim(c.first_name || ' ' || c.last_name) AS contact_name FROM recordings r"
    " LEFT JOIN users u ON u.id = r.user_id LEFT JOIN contacts c ON c.id = r.contact_id"
)


def recording_json(r: Any) -> dict[str, Any]:
    return {
        "id": r["id"],
        "source": r["source"],
        "call_id": (r["call_key"] or "").partition(":")[2] or None,
        "touch_id": r["touch_id"],
        "contact_id": r["contact_id"],
        "contact_name": r["contact_name"] or None,
        "agent": r["username"],
        "extension": r["extension"],
        "direction": r["direction"],
        "from": r["from_number"],
        "to": r["to_number"],
        "started_at": iso(from_db_time(r["started_at"])),
        "duration_s": r["duration_s"],
        "format": r["format"],
        "size": r["size"],
        "sha256": r["sha256"],
        "state": r["state"],
        "notes": r["notes"],
        "tags": json.loads(r["tags"]),
        "error": r["error"],
        "audio_url": f"/api/v1/recordings/{r['id']}/audio" if r["storage_path"] else None,
        "has_transcript": bool(r["transcript"]),
    }


class Recordings:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def announce(self, source: str, pbx_name: str, call_key: str) -> None:
        """The PBX said this call is recorded into a file of this name (the file may come later)."""
        now = to_db_time(self._db.now())
        async with self._db.transaction() as tx:
            await tx.execute(
                "INSERT INTO recordings (source, pbx_name, call_key, state, created_at, updated_at)"
                " VALUES (?, ?, ?, 'pending', ?, ?) ON CONFLICT (source, pbx_name) DO UPDATE SET"
                " call_key = excluded.call_key,"
                " state = CASE WHEN state = 'unlinked' THEN 'indexed' ELSE state END, updated_at = excluded.updated_at",
                (source, pbx_name, call_key, now, now),
            )
            await self._link(tx, call_key)

    async def call_facts(self, call_key: str, facts: dict[str, Any]) -> None:
        """What the call service knows of the call; kept and copied onto its recordings."""
        async with self._db.transaction() as tx:
            await tx.execute(
                "INSERT INTO recording_calls (call_key, facts) VALUES (?, ?) ON CONFLICT (call_key) DO UPDATE"
                " SET facts = excluded.facts",
                (call_key, json.dumps(facts, default=str)),
            )
            await self._link(tx, call_key)

    async def attach_contact_in(self, tx: Any, call_key: str, contact_id: int) -> None:
        """The call's caller is now this contact: on its recordings, and on what comes later."""
        async with tx.execute("SELECT facts FROM recording_calls WHERE call_key = ?", (call_key,)) as cur:
            row = await cur.fetchone()
        if row is not None:
            facts = json.loads(row[0])
            if facts.get("contact_id") is None:
                facts["contact_id"] = contact_id
                await tx.execute(
                    "UPDATE recording_calls SET facts = ? WHERE call_key = ?",
                    (json.dumps(facts, default=str), call_key),
                )
        await tx.execute(
            "UPDATE recordings SET contact_id = ?, updated_at = ? WHERE call_key = ? AND contact_id IS NULL",
            (contact_id, to_db_time(self._db.now()), call_key),
        )
        await self.reindex_text(tx, call_key=call_key)

    async def _link(self, tx: Any, call_key: str) -> None:
        async with tx.execute("SELECT facts FROM recording_calls WHERE call_key = ?", (call_key,)) as cur:
            row = await cur.fetchone()
        if row is None:
            return
        f = json.loads(row[0])
        await tx.execute(
            "UPDATE recordings SET touch_id = ?, contact_id = ?, user_id = ?, extension = ?, direction = ?,"
            " from_number = ?, to_number = ?, started_at = COALESCE(?, started_at), updated_at = ?"
            " WHERE call_key = ?",
            (
                f.get("touch_id"),
                f.get("contact_id"),
                f.get("agent_user_id"),
                f.get("extension"),
                f.get("direction"),
                f.get("from_number"),
                f.get("to_number"),
                f.get("started_at"),
                to_db_time(self._db.now()),
                call_key,
            ),
        )
        await self.reindex_text(tx, call_key=call_key)

    async def remember_remote(self, source: str, name: str, call_key: str, url: str) -> None:
        """A provider holds the audio at `url`: keep the pointer durably before fetching it."""
        now = to_db_time(self._db.now())
        async with self._db.transaction() as tx:
            await tx.execute(
                "INSERT INTO recordings (source, pbx_name, call_key, remote_url, state, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, 'pending', ?, ?) ON CONFLICT (source, pbx_name) DO UPDATE SET"
                " remote_url = excluded.remote_url, call_key = excluded.call_key, error = NULL",
                (source, name, call_key, url, now, now),
            )
            await self._link(tx, call_key)

    async def pending_downloads(self) -> list[dict[str, Any]]:
        rows = await self._db.fetchall(
            "SELECT source, pbx_name, remote_url FROM recordings WHERE remote_url IS NOT NULL"
            " AND storage_path IS NULL AND state = 'pending' AND error IS NULL ORDER BY id"
        )
        return [dict(r) for r in rows]

    async def refuse_download(self, source: str, pbx_name: str, reason: str) -> None:
        """A remote recording will not be fetched: keep why (a new callback for it clears this)."""
        async with self._db.transaction() as tx:
            await tx.execute(
                "UPDATE recordings SET error = ?, updated_at = ? WHERE source = ? AND pbx_name = ?",
                (reason, to_db_time(self._db.now()), source, pbx_name),
            )

    async def call_has_ended(self, call_key: str) -> bool:
        """Whether the call service reported this call's end (its facts are written only then)."""
        row = await self._db.fetchone("SELECT 1 FROM recording_calls WHERE call_key = ?", (call_key,))
        return row is not None

    async def by_name(self, source: str, pbx_name: str) -> dict[str, Any] | None:
        row = await self._db.fetchone(
            "SELECT * FROM recordings WHERE source = ? AND pbx_name = ?", (source, pbx_name)
        )
        return dict(row) if row else None

    async def store_file(
        self,
        source: str,
        pbx_name: str,
        *,
        storage_path: str,
        size: int,
        sha256: str,
        fmt: str,
        duration_s: float | None,
        state: str,
        mtime: datetime,
        settled: bool = True,
    ) -> int:
        """A file is in our storage: index it (linked if its call was announced, else `unlinked`).

        `state` is `indexed` for a good file, or `empty` / `truncated` as the audio check found it.
        """
        now = to_db_time(self._db.now())
        async with self._db.transaction() as tx:
            async with tx.execute(
                "INSERT INTO recordings (source, pbx_name, state, storage_path, size, sha256, format, duration_s,"
                " started_at, created_at, updated_at, settled) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (source, pbx_name) DO UPDATE SET storage_path = excluded.storage_path,"
                " settled = excluded.settled,"
                " size = excluded.size, sha256 = excluded.sha256, format = excluded.format,"
                " duration_s = excluded.duration_s, started_at = COALESCE(started_at, excluded.started_at),"
                " state = excluded.state, updated_at = excluded.updated_at RETURNING id, call_key",
                (
                    source,
                    pbx_name,
                    state,
                    storage_path,
                    size,
                    sha256,
                    fmt,
                    duration_s,
                    to_db_time(mtime),
                    now,
                    now,
                    1 if settled else 0,
                ),
            ) as cur:
                row = await one_row(cur)
            if state == "indexed" and row["call_key"] is None:
                await tx.execute("UPDATE recordings SET state = 'unlinked' WHERE id = ?", (row["id"],))
            if row["call_key"] is not None:
                await self._link(tx, row["call_key"])
            else:
                await self.reindex_text(tx, recording_id=row["id"])
            return int(row["id"])

    async def reindex_text(
        self, tx: Any, *, call_key: str | None = None, recording_id: int | None = None
    ) -> None:
        """Rebuild the full-text row (customer, notes, tags, transcript) of these recordings, in `tx`."""
        where, param = ("r.call_key = ?", call_key) if call_key is not None else ("r.id = ?", recording_id)
        async with tx.execute(
            "SELECT r.id, r.notes, r.tags, r.transcript, trim(COALESCE(c.first_name, '') || ' ' ||"
            f" COALESCE(c.last_name, '')) FROM recordings r LEFT JOIN contacts c ON c.id = r.contact_id WHERE {where}",
            (param,),
        ) as cur:
            rows = await cur.fetchall()
        for r in rows:
            body = " ".join([r[4] or "", r[1] or "", " ".join(json.loads(r[2])), r[3] or ""])
            await tx.execute("DELETE FROM recordings_fts WHERE rowid = ?", (r[0],))
            await tx.execute("INSERT INTO recordings_fts (rowid, body) VALUES (?, ?)", (r[0], body))

    async def annotate(
        self, recording_id: int, *, notes: str | None, tags: list[str] | None
    ) -> dict[str, Any]:
        async with self._db.transaction() as tx:
            await tx.execute(
                "UPDATE recordings SET notes = COALESCE(?, notes), tags = COALESCE(?, tags), updated_at = ?"
                " WHERE id = ?",
                (
                    notes,
                    json.dumps(tags) if tags is not None else None,
                    to_db_time(self._db.now()),
                    recording_id,
                ),
            )
            await self.reindex_text(tx, recording_id=recording_id)
        return await self.get(recording_id)

    async def get(self, recording_id: int) -> dict[str, Any]:
        row = await self._db.fetchone(_SELECT + " WHERE r.id = ?", (recording_id,))
        if row is None:
            raise NotFound("recording", recording_id)
        return recording_json(row) | {
            "transcript": row["transcript"],
            "transcript_segments": json.loads(row["transcript_segments"]),
            "_storage_path": row["storage_path"],
            "_user_id": row["user_id"],
        }

    async def search(
        self,
        f: RecordingFilter,
        *,
        limit: int | None = None,
        cursor: str | None = None,
        newest_first: bool = True,
    ) -> Page:
        limit = check_limit(limit)
        # pending rows (announced, no file yet) have no start time; every other row has one
        where = ["r.started_at IS NOT NULL", "r.state != 'pending'"]
        params: list[Any] = []
        for column, value in (
            ("r.extension", f.extension),
            ("r.user_id", f.user_id),
            ("r.direction", f.direction),
            ("r.contact_id", f.contact_id),
            ("r.user_id", f.only_user_id),
        ):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if f.number:
            where.append("(r.from_number = ? OR r.to_number = ?)")
            params += [f.number, f.number]
        if f.since:
            where.append("r.started_at >= ?")
            params.append(to_db_time(f.since))
        if f.until:
            where.append("r.started_at < ?")
            params.append(to_db_time(f.until))
        if f.min_duration is not None:
            where.append("r.duration_s >= ?")
            params.append(f.min_duration)
        if f.q:
            words = _WORD.findall(f.q)[:8]
            if words:
                where.append("r.id IN (SELECT rowid FROM recordings_fts WHERE recordings_fts MATCH ?)")
                params.append(" ".join(f'"{w}"*' for w in words))
        order = "DESC" if newest_first else "ASC"
        if cursor:
            started, last_id = decode_cursor(cursor, str, int)
            op = "<" if newest_first else ">"
            where.append(f"(r.started_at {op} ? OR (r.started_at = ? AND r.id {op} ?))")
            params += [started, started, last_id]
        sql = (
            _SELECT
            + " WHERE "
            + " AND ".join(where)
            + f" ORDER BY r.started_at {order}, r.id {order} LIMIT ?"
        )
        rows = await self._db.fetchall(sql, [*params, limit + 1])
        items = [recording_json(r) for r in rows[:limit]]
        if f.q:
            for item, r in zip(items, rows, strict=False):
                item["transcript_match"] = (
                    transcript_snippet(r["transcript"], f.q) if r["transcript"] else None
                )
        nxt = None
        if len(rows) > limit:
            last = rows[limit - 1]
            nxt = encode_cursor(last["started_at"] or "", last["id"])
        return Page(items, nxt)

    async def bulk_load(self, rows: list[dict[str, Any]]) -> int:
        """Index many recordings at once (moving an archive in, benchmarks); each dict names the columns."""
        now = to_db_time(self._db.now())
        cols = (
            "source",
            "pbx_name",
            "call_key",
            "contact_id",
            "user_id",
            "extension",
            "direction",
            "from_number",
            "to_number",
            "started_at",
            "duration_s",
            "format",
            "size",
            "storage_path",
            "state",
            "notes",
        )
        async with self._db.transaction() as tx:
            await tx.executemany(
                f"INSERT INTO recordings ({', '.join(cols)}, created_at, updated_at)"
                f" VALUES ({', '.join('?' * len(cols))}, ?, ?)",
                [(*tuple(r.get(c) for c in cols), now, now) for r in rows],
            )
            await tx.execute(
                "INSERT INTO recordings_fts (rowid, body) SELECT r.id, trim(COALESCE(c.first_name, '') || ' ' ||"
                " COALESCE(c.last_name, '') || ' ' || r.notes) FROM recordings r LEFT JOIN contacts c"
                " ON c.id = r.contact_id WHERE r.id NOT IN (SELECT rowid FROM recordings_fts)"
            )
        return len(rows)

    async def older_than(self, cutoff: datetime) -> list[dict[str, Any]]:
        rows = await self._db.fetchall(
            "SELECT id, storage_path FROM recordings WHERE storage_path IS NOT NULL AND state != 'deleted'"
            " AND created_at < ?",
            (to_db_time(cutoff),),
        )
        return [dict(r) for r in rows]

    async def mark_deleted(self, recording_id: int) -> None:
        async with self._db.transaction() as tx:
            await tx.execute(
                "UPDATE recordings SET state = 'deleted', storage_path = NULL, updated_at = ? WHERE id = ?",
                (to_db_time(self._db.now()), recording_id),
            )
