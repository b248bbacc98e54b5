"""Contacts and their history as CSV: streamed, what the user may see (reps: their own and unowned)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from typing import Any

from crm_link.contacts import validate_contact
from crm_link.touches import TouchInput
from switchboard.keys import STORE
from tests.conftest import make_api


def _rows(body: bytes) -> list[dict[str, str]]:
    assert body.startswith(b"\xef\xbb\xbf")  # Excel reads it as UTF-8
    return list(csv.DictReader(io.StringIO(body.decode("utf-8-sig"))))


async def test_export_contacts_and_history_by_role(client: Any) -> None:
    admin = await make_api(client, "root", "admin")
    rep = await make_api(client, "jsmith", "rep")
    await make_api(client, "other", "rep")
    store = client.server.app[STORE]
    made = {}
    for name, owner, phone in (
        ("Jane", "jsmith", "(312) 555-0142 ext. 12"),
        ("Olga", "other", "+13125550150"),
        ("Uma", None, "+13125550160"),
        ('=HYPERLINK("x")', None, "+13125550170"),
    ):
        data = {"first_name": name, "last_name": "Zed", "phones": [phone], "tags": ["service"]}
        if owner:
            data["owner"] = owner
        made[name] = await store.contacts.create(validate_contact(data, region="US"))
    for i, who in enumerate(("Jane", "Olga", "Jane")):
        await store.touches.record(
            TouchInput(
                source_key=f"test:{i}",
                kind="call",
                direction="inbound",
                started_at=datetime(2026, 11, 20 + i, 15, 0, tzinfo=UTC),
                contact_id=made[who].id,
                channel="asterisk",
                status="answered",
                number="+13125550142",
                duration_s=42,
                summary=f"call {i}",
            )
        )
    resp = await admin.get("/contacts/export.csv?what=contacts")
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/csv")
    assert resp.headers["Content-Disposition"].startswith('attachment; filename="contacts-')
    rows = _rows(await resp.read())
    assert [r["first_name"] for r in rows] == ["Jane", "Olga", "Uma", '\'=HYPERLINK("x")']
    jane = rows[0]
    assert jane["phones"] == "+13125550142 x12" and jane["owner"] == "jsmith" and jane["tags"] == "service"
    # a rep: their own and the unowned, never another rep's
    rows = _rows(await (await rep.get("/contacts/export.csv")).read())
    assert [r["first_name"] for r in rows] == ["Jane", "Uma", '\'=HYPERLINK("x")']
    history = _rows(await (await rep.get("/contacts/export.csv?what=history")).read())
    assert [(h["contact_name"], h["summary"]) for h in history] == [
        ("Jane Zed", "call 0"),
        ("Jane Zed", "call 2"),
    ]
    assert history[0]["at"] == "2026-11-20T15:00:00+00:00" and history[0]["duration_s"] == "42"
    history = _rows(await (await admin.get("/contacts/export.csv?what=history")).read())
    assert len(history) == 3
    resp = await admin.get("/contacts/export.csv?what=everything")
    assert resp.status == 400 and (await resp.json())["error"]["field"] == "what"
    assert (await client.get("/contacts/export.csv", allow_redirects=False)).status in (302, 303, 401)
    audit = await store.db.fetchall("SELECT action FROM audit_log WHERE action LIKE 'contacts.export%'")
    assert len(audit) == 4
