"""Contacts and their history as CSV, streamed page by page (what the user may see, nothing more)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from typing import Any

from aiohttp import web

from crm_link.models import Contact, Touch
from switchboard.keys import CLOCK, STORE
from switchboard.web.auth import require
from switchboard.web.errors import ApiError

PAGE = 500
CONTACT_COLUMNS = [
    "id", "external_id", "first_name", "last_name", "email", "phones", "owner", "tags", "time_zone",
    "do_not_call", "sms_opt_out", "email_opt_out", "created_at", "attributes",
]  # fmt: skip
HISTORY_COLUMNS = [
    "contact_id", "external_id", "contact_name", "at", "kind", "direction", "status", "channel",
    "number", "duration_s", "user", "summary",
]  # fmt: skip


def _phone(p: Any) -> str:
    return p.e164 + (f" x{p.extension}" if p.extension else "")


def contact_row(c: Contact) -> list[Any]:
    return [
        c.id, c.external_id or "", c.first_name, c.last_name, c.email or "",
        "; ".join(_phone(p) for p in c.phones), c.owner_username or "", "; ".join(c.tags),
        c.time_zone or "", int(c.do_not_call), int(c.sms_opt_out), int(c.email_opt_out),
        c.created_at.isoformat(), json.dumps(c.attributes, ensure_ascii=False) if c.attributes else "",
    ]  # fmt: skip


def touch_row(c: Contact, t: Touch) -> list[Any]:
    return [
        c.id, c.external_id or "", c.name, t.started_at.isoformat(), t.kind, t.direction, t.status,
        t.channel, t.number or "", "" if t.duration_s is None else round(t.duration_s), t.username or "",
        t.summary,
    ]  # fmt: skip


def _safe(value: Any) -> Any:
    """A cell a spreadsheet will not run as a formula (=, +, -, @ at the start)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r") and not value[1:2].isdigit():
        return "'" + value
    return value


def _encode(rows: Iterable[list[Any]]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf)
    for row in rows:
        w.writerow([_safe(v) for v in row])
    return buf.getvalue().encode("utf-8")


async def export_contacts(request: web.Request) -> web.StreamResponse:
    """GET /contacts/export.csv?what=contacts|history[&tag=]: reps get their own and unowned customers."""
    user = require(request)
    what = request.query.get("what", "contacts")
    if what not in ("contacts", "history"):
        raise ApiError(400, "invalid", "must be contacts or history", "what")
    tag = request.query.get("tag") or None
    store = request.app[STORE]
    stamp = request.app[CLOCK]().strftime("%Y%m%d-%H%M")
    headers = {
        "Content-Type": "text/csv; charset=utf-8",
        "Content-Disposition": f'attachment; filename="{what}-{stamp}.csv"',
        "Cache-Control": "no-store",
    }
    if request.method == "HEAD":
        return web.Response(headers=headers)
    resp = web.StreamResponse(headers=headers)
    await resp.prepare(request)
    await resp.write(b"\xef\xbb\xbf" + _encode([CONTACT_COLUMNS if what == "contacts" else HISTORY_COLUMNS]))
    cursor: str | None = None
    contacts = touches = 0
    while True:
        page = await store.contacts.search(
            tag=tag,
            owner_id=user.id if user.role == "rep" else None,
            include_unowned=True,
            limit=PAGE,
            cursor=cursor,
        )
        contacts += len(page.items)
        if what == "contacts":
            await resp.write(_encode(contact_row(c) for c in page.items))
        else:
            by_id = {c.id: c for c in page.items}
            found = await store.touches.of_contacts(list(by_id))
            touches += len(found)
            await resp.write(_encode(touch_row(by_id[t.contact_id], t) for t in found if t.contact_id))
        cursor = page.next_cursor
        if cursor is None:
            break
    await store.audit.write(
        f"contacts.export.{what}", user_id=user.id, object_type="contacts", rows=touches or contacts
    )
    await resp.write_eof()
    return resp


def setup(app: web.Application) -> None:
    app.router.add_get("/contacts/export.csv", export_contacts)
