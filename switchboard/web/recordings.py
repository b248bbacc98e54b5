"""Recordings over HTTP: search with the managers' filters, play (Range), annotate, export as a zip."""

from __future__ import annotations

import asyncio
import csv
import io
import tempfile
import zipfile
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import IO, Any
from zoneinfo import ZoneInfo

from aiohttp import web

from crm_link.errors import ValidationError
from crm_link.models import User
from crm_link.phones import normalize_phone
from crm_link.recordings import RecordingFilter
from switchboard.keys import SETTINGS, STORE
from switchboard.web.auth import require
from switchboard.web.errors import ApiError, json_body, path_int, query_int, query_limit
from switchboard.web.render import render

EXPORT_CHUNK = 1 << 20
VIEWERS = ("manager", "admin", "rep")  # marketing sees no recordings
FILTERS = (
    "extension",
    "agent",
    "direction",
    "number",
    "contact_id",
    "since",
    "until",
    "min_duration",
    "q",
    "limit",
    "cursor",
    "sort",
)


def _when(value: str, field: str, zone: str, *, end: bool) -> datetime:
    """An ISO time; a date alone means the whole day in the viewer's time zone."""
    try:
        if len(value) == 10:
            day = datetime.fromisoformat(value).date()
            return datetime.combine(day + timedelta(days=1) if end else day, time(0), tzinfo=ZoneInfo(zone))
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValidationError(field, f"{value!r} is not a date (YYYY-MM-DD) or an ISO time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=ZoneInfo(zone))


async def build_filter(request: web.Request, user: User) -> RecordingFilter:
    q = request.query
    for key in q:
        if key not in FILTERS:
            raise ApiError(400, "unknown_field", f"unknown filter {key!r}", key)
    store = request.app[STORE]
    zone = user.time_zone or request.app[SETTINGS].server.time_zone
    agent_id = None
    if q.get("agent"):
        agent = await store.users.by_username(q["agent"])
        if agent is None:
            raise ValidationError("agent", f"no user named {q['agent']!r}")
        agent_id = agent.id
    direction = q.get("direction") or None
    if direction not in (None, "inbound", "outbound", "internal"):
        raise ValidationError("direction", "must be inbound, outbound or internal")
    min_duration = None
    if q.get("min_duration"):
        try:
            min_duration = float(q["min_duration"])
        except ValueError:
            raise ValidationError("min_duration", "must be a number of seconds") from None
    return RecordingFilter(
        extension=q.get("extension") or None,
        user_id=agent_id,
        direction=direction,
        number=normalize_phone(q["number"], store.region, field="number").e164 if q.get("number") else None,
        contact_id=query_int(request, "contact_id"),
        since=_when(q["since"], "since", zone, end=False) if q.get("since") else None,
        until=_when(q["until"], "until", zone, end=True) if q.get("until") else None,
        min_duration=min_duration,
        q=q.get("q") or None,
        only_user_id=user.id if user.role == "rep" else None,
    )


async def search(request: web.Request) -> web.Response:
    user = require(request, *VIEWERS)
    f = await build_filter(request, user)
    sort = request.query.get("sort", "newest")
    if sort not in ("newest", "oldest"):
        raise ValidationError("sort", "must be newest or oldest")
    page = await request.app[STORE].recordings.search(
        f,
        limit=query_limit(request),
        cursor=request.query.get("cursor"),
        newest_first=sort == "newest",
    )
    return web.json_response({"items": page.items, "next_cursor": page.next_cursor})


async def _visible(request: web.Request, user: User, recording_id: int) -> dict[str, Any]:
    rec = await request.app[STORE].recordings.get(recording_id)
    if user.role == "rep" and rec["_user_id"] != user.id:
        raise ApiError(403, "forbidden", "this recording is of another salesperson's call")
    return rec


def _public(rec: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in rec.items() if not k.startswith("_")}


async def get_one(request: web.Request) -> web.Response:
    user = require(request, *VIEWERS)
    return web.json_response(_public(await _visible(request, user, path_int(request))))


async def audio(request: web.Request) -> web.StreamResponse:
    """The audio, with Range support so the player can seek; every play is audited."""
    user = require(request, *VIEWERS)
    rec = await _visible(request, user, path_int(request))
    if not rec["_storage_path"]:
        raise ApiError(404, "no_audio", f"recording {rec['id']} has no audio ({rec['state']})")
    path = Path(request.app[SETTINGS].recordings.storage_dir) / rec["_storage_path"]
    if (
        not request.headers.get("Range", "").startswith("bytes=")
        or request.headers.get("Range") == "bytes=0-"
    ):
        await request.app[STORE].audit.write(
            "recording.play", user_id=user.id, object_type="recording", object_id=rec["id"]
        )
    resp = web.FileResponse(
        path,
        headers={
            "Content-Type": "audio/wav" if rec["format"] == "wav" else "audio/mpeg",
            "Cache-Control": "private, no-store",
        },
    )
    return resp


async def annotate(request: web.Request) -> web.Response:
    user = require(request, "manager", "admin")
    rec = await _visible(request, user, path_int(request))
    data = await json_body(request, allowed=("notes", "tags"))
    notes = data.get("notes")
    if notes is not None and not isinstance(notes, str):
        raise ValidationError("notes", "must be text")
    tags = data.get("tags")
    if tags is not None and (not isinstance(tags, list) or not all(isinstance(t, str) for t in tags)):
        raise ValidationError("tags", "must be a list of strings")
    out = await request.app[STORE].recordings.annotate(rec["id"], notes=notes, tags=tags)
    return web.json_response(_public(out))


MANIFEST_COLUMNS = (
    "file",
    "id",
    "started_at",
    "direction",
    "from",
    "to",
    "extension",
    "agent",
    "contact",
    "duration_s",
    "sha256",
    "notes",
)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """A manifest cell a spreadsheet shows as text: one starting like a formula gets a leading quote."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def _manifest_row(name: str, rec: dict[str, Any]) -> list[Any]:
    values = [
        name,
        rec["id"],
        rec["started_at"],
        rec["direction"],
        rec["from"],
        rec["to"],
        rec["extension"],
        rec["agent"],
        rec["contact_name"],
        rec["duration_s"],
        rec["sha256"],
        rec["notes"],
    ]
    return [csv_cell(v) for v in values]


def write_export(out: IO[bytes], storage: Path, recs: list[dict[str, Any]]) -> None:
    """The export zip (audio files and manifest.csv) written to `out`; blocking, run in a thread."""
    manifest = io.StringIO()
    writer = csv.writer(manifest)
    writer.writerow(MANIFEST_COLUMNS)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zf:
        for rec in recs:
            name = f"recording-{rec['id']}.{rec['format'] or 'wav'}" if rec["_storage_path"] else ""
            if name:
                zf.write(storage / rec["_storage_path"], name)
            writer.writerow(_manifest_row(name, rec))
        zf.writestr("manifest.csv", manifest.getvalue())


async def export(request: web.Request) -> web.StreamResponse:
    """A zip of the chosen recordings with a CSV manifest; audited.

    The zip is built in a thread into a temporary file (reading hundreds of recordings must not hold
    the event loop, nor all of them sit in memory), then sent from that file.
    """
    user = require(request, "manager", "admin")
    data = await json_body(request, allowed=("ids",))
    ids = data.get("ids")
    if not isinstance(ids, list) or not ids or not all(isinstance(i, int) for i in ids) or len(ids) > 500:
        raise ValidationError("ids", "must be a list of 1-500 recording ids")
    storage = Path(request.app[SETTINGS].recordings.storage_dir)
    recs = [await _visible(request, user, i) for i in dict.fromkeys(ids)]
    out = tempfile.TemporaryFile()
    try:
        await asyncio.to_thread(write_export, out, storage, recs)
        await request.app[STORE].audit.write(
            "recording.export",
            user_id=user.id,
            object_type="recording",
            object_id=",".join(str(r["id"]) for r in recs),
        )
        size = out.tell()
        resp = web.StreamResponse(
            headers={
                "Content-Type": "application/zip",
                "Content-Disposition": 'attachment; filename="recordings.zip"',
            }
        )
        resp.content_length = size
        await resp.prepare(request)
        await asyncio.to_thread(out.seek, 0)
        while chunk := await asyncio.to_thread(out.read, EXPORT_CHUNK):
            await resp.write(chunk)
        await resp.write_eof()
        return resp
    finally:
        out.close()  # not in a thread: a cancelled await there would leave the file open


async def transcript_progress(request: web.Request) -> web.Response:
    """Whether transcripts are made here, and the queue's counts by state."""
    require(request, *VIEWERS)
    return web.json_response(
        {
            "enabled": request.app[SETTINGS].recordings.transcribe,
            "counts": await request.app[STORE].transcripts.counts(),
        }
    )


async def page(request: web.Request) -> web.Response:
    user = require(request, *VIEWERS)
    return render(
        request, "recordings.html", {"zone": user.time_zone or request.app[SETTINGS].server.time_zone}
    )


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/api/v1/recordings", search)
    r.add_post("/api/v1/recordings/export", export)
    r.add_get("/api/v1/recordings/transcripts", transcript_progress)
    r.add_get("/api/v1/recordings/{id}", get_one)
    r.add_patch("/api/v1/recordings/{id}", annotate)
    r.add_get("/api/v1/recordings/{id}/audio", audio)
    r.add_get("/recordings", page)
