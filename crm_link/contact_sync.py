"""Contacts pushed by the dealership's CRM (upsert by external id, per-row results) and merges of two
contacts that are one person."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from crm_link.contacts import ContactFields, Contacts, validate_contact
from crm_link.crm_events import CrmEvents
from crm_link.db import Database, to_db_time
from crm_link.errors import NotFound, StoreError, ValidationError

MAX_BATCH = 1000

# every table whose rows belong to a contact and move with a merge (contact_phones/tags are copied)
_MOVED = ("touches", "followups", "recordings", "sms_outbox", "call_list_entries", "call_attempts")


@dataclass(slots=True)
class RowResult:
    """What became of one pushed row."""

    index: int
    external_id: str | None
    status: str  # created | updated | unchanged | error
    contact_id: int | None = None
    error: ValidationError | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"index": self.index, "external_id": self.external_id, "status": self.status}
        if self.contact_id is not None:
            out["id"] = self.contact_id
        if self.error is not None:
            out["error"] = {"code": self.error.code, "message": self.error.reason, "field": self.error.field}
        return out


def _unchanged(
    current: Any, phones: set[str], tags: set[str], fields: ContactFields, owner: str | None
) -> bool:
    """True when applying `fields` (merge semantics) would change nothing."""
    for name in ("external_id", "first_name", "last_name", "email", "time_zone"):
        if name in fields.present and current[name] != getattr(fields, name):
            return False
    for name in ("do_not_call", "sms_opt_out", "email_opt_out"):
        if name in fields.present and bool(current[name]) != getattr(fields, name):
            return False
    if "owner" in fields.present and owner != fields.owner:
        return False
    if "sms_consent" in fields.present:
        has = current["sms_consent_at"] is not None
        # merge semantics: a given consent is kept as it is, and never re-subscribes an opt-out
        if (fields.sms_consent is None) == has and (has or not current["sms_opt_out"]):
            return False
    if "phones" in fields.present and any(p.e164 not in phones for p in fields.phones):
        return False
    if "tags" in fields.present and any(t.lower() not in tags for t in fields.tags):
        return False
    if "attributes" in fields.present:
        attrs = json.loads(current["attributes"])
        if any(k not in attrs or attrs[k] != v for k, v in fields.attributes.items()):
            return False
    return True


class ContactSync:
    """The CRM's side door into contacts; every change still raises its contact event (triggers)."""

    def __init__(self, db: Database, contacts: Contacts, events: CrmEvents) -> None:
        self._db = db
        self._contacts = contacts
        self._events = events

    async def upsert(self, rows: Sequence[Any]) -> list[RowResult]:
        """Create or update contacts by `external_id`, each row on its own (a bad row fails alone,
        named by index and field); sending the same rows again changes nothing."""
        if len(rows) > MAX_BATCH:
            raise ValidationError("contacts", f"at most {MAX_BATCH} rows per request, got {len(rows)}")
        results: list[RowResult] = []
        checked: list[tuple[int, ContactFields]] = []
        seen: set[str] = set()
        for i, row in enumerate(rows):
            ext = row.get("external_id") if isinstance(row, Mapping) else None
            try:
                if not isinstance(row, Mapping):
                    raise ValidationError(f"contacts[{i}]", "must be an object")
                if not isinstance(ext, str) or not ext.strip():
                    raise ValidationError(f"contacts[{i}].external_id", "is required (the CRM's own id)")
                fields = validate_contact(row, region=self._contacts.region, partial=True)
                if fields.external_id in seen:
                    raise ValidationError(f"contacts[{i}].external_id", "appears twice in this batch")
                seen.add(fields.external_id or "")
            except ValidationError as exc:
                if not exc.field.startswith("contacts["):
                    exc = ValidationError(f"contacts[{i}].{exc.field}", exc.reason, code=exc.code)
                results.append(RowResult(i, ext if isinstance(ext, str) else None, "error", error=exc))
                continue
            checked.append((i, fields))
        async with self._db.transaction() as tx:
            for i, fields in checked:
                await tx.execute("SAVEPOINT crm_row")
                try:
                    result = await self._upsert_one(tx, i, fields)
                except ValidationError as exc:
                    await tx.execute("ROLLBACK TO SAVEPOINT crm_row")
                    err = ValidationError(f"contacts[{i}].{exc.field}", exc.reason, code=exc.code)
                    result = RowResult(i, fields.external_id, "error", error=err)
                await tx.execute("RELEASE SAVEPOINT crm_row")
                results.append(result)
        results.sort(key=lambda r: r.index)
        return results

    async def _upsert_one(self, tx: Any, i: int, fields: ContactFields) -> RowResult:
        async with tx.execute(
            "SELECT c.*, u.username AS owner_username FROM contacts c LEFT JOIN users u ON u.id = c.owner_id"
            " WHERE c.external_id = ?",
            (fields.external_id,),
        ) as cur:
            current = await cur.fetchone()
        if current is None:
            if not (fields.first_name or fields.last_name or fields.phones or fields.email):
                raise ValidationError("body", "a new contact needs a name, a phone number or an email")
            contact_id = await self._contacts.insert_in(tx, fields)
            return RowResult(i, fields.external_id, "created", contact_id)
        contact_id = int(current["id"])
        async with tx.execute("SELECT e164 FROM contact_phones WHERE contact_id = ?", (contact_id,)) as cur:
            phones = {r[0] for r in await cur.fetchall()}
        async with tx.execute("SELECT tag FROM contact_tags WHERE contact_id = ?", (contact_id,)) as cur:
            tags = {r[0].lower() for r in await cur.fetchall()}
        if _unchanged(current, phones, tags, fields, current["owner_username"]):
            return RowResult(i, fields.external_id, "unchanged", contact_id)
        await self._contacts.update_in(tx, contact_id, fields, merge=True)
        return RowResult(i, fields.external_id, "updated", contact_id)

    async def merge(self, keep_id: int, other_id: int, *, user_id: int | None) -> dict[str, Any]:
        """Fold `other_id` into `keep_id` (one person twice): its touches, follow-ups, recordings,
        messages and call-list entries move, its phones and tags are added, blanks of the kept
        contact are filled from it (the kept contact's values win; consent flags: either says no),
        then it is deleted; audited, and a `contact.merged` event is written, all in one transaction."""
        if keep_id == other_id:
            raise ValidationError("from", "cannot merge a contact into itself")
        now = self._db.now()
        async with self._db.transaction() as tx:
            snap: dict[int, Any] = {}
            for cid, field_name in ((keep_id, "id"), (other_id, "from")):
                async with tx.execute("SELECT * FROM contacts WHERE id = ?", (cid,)) as cur:
                    row = await cur.fetchone()
                if row is None:
                    if field_name == "id":
                        raise NotFound("contact", cid)
                    raise ValidationError("from", f"no contact {cid}", code="not_found")
                snap[cid] = dict(row)
            keep, other = snap[keep_id], snap[other_id]
            if keep["external_id"] and other["external_id"]:
                raise ValidationError(
                    "from",
                    f"both contacts carry a CRM id ({keep['external_id']!r}, {other['external_id']!r}):"
                    " merge them in the CRM first",
                    code="conflict",
                )
            moved: dict[str, int] = {}
            for table in _MOVED:
                async with tx.execute(
                    f"UPDATE {table} SET contact_id = ? WHERE contact_id = ?", (keep_id, other_id)
                ) as cur:
                    moved[table] = int(cur.rowcount)
            # an email job holds one row per contact: rows of a job both were in stay with the deleted one
            async with tx.execute(
                "UPDATE email_outbox SET contact_id = ? WHERE contact_id = ? AND NOT EXISTS (SELECT 1 FROM"
                " email_outbox e2 WHERE e2.job_id = email_outbox.job_id AND e2.contact_id = ?)",
                (keep_id, other_id, keep_id),
            ) as cur:
                moved["email_outbox"] = int(cur.rowcount)
            async with tx.execute(
                "SELECT COALESCE(MAX(position), -1) + 1 FROM contact_phones WHERE contact_id = ?", (keep_id,)
            ) as cur:
                top = await cur.fetchone()
            base = int(top[0]) if top else 0
            async with tx.execute(
                "INSERT INTO contact_phones (contact_id, raw, e164, valid, kind, position)"
                " SELECT ?, raw, e164, valid, kind, ? + position FROM contact_phones WHERE contact_id = ?"
                " ORDER BY position ON CONFLICT (contact_id, e164) DO NOTHING",
                (keep_id, base, other_id),
            ) as cur:
                moved["phones"] = int(cur.rowcount)
            await tx.execute(
                "INSERT INTO contact_tags (tag, contact_id) SELECT tag, ? FROM contact_tags WHERE contact_id = ?"
                " ON CONFLICT DO NOTHING",
                (keep_id, other_id),
            )
            await self._events.emit_in(
                tx,
                "contact.merged",
                keep_id,
                {
                    "contact_id": keep_id,
                    "contact_external_id": keep["external_id"] or other["external_id"],
                    "merged_id": other_id,
                    "merged_external_id": other["external_id"],
                    "moved": moved,
                },
                now,
            )
            await tx.execute(
                "INSERT INTO audit_log (at, user_id, action, object_type, object_id, detail) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    to_db_time(now),
                    user_id,
                    "contact.merge",
                    "contact",
                    str(keep_id),
                    json.dumps({"kept": keep, "merged": other, "moved": moved}, default=str),
                ),
            )
            await tx.execute("DELETE FROM contacts WHERE id = ?", (other_id,))
            attrs = json.loads(other["attributes"])
            attrs.update(json.loads(keep["attributes"]))
            async with tx.execute(
                "UPDATE contacts SET external_id = COALESCE(external_id, ?), email = COALESCE(email, ?),"
                " first_name = CASE WHEN first_name = '' THEN ? ELSE first_name END,"
                " last_name = CASE WHEN last_name = '' THEN ? ELSE last_name END,"
                " owner_id = COALESCE(owner_id, ?), time_zone = COALESCE(time_zone, ?), attributes = ?,"
                " do_not_call = MAX(do_not_call, ?), sms_opt_out = MAX(sms_opt_out, ?),"
                " email_opt_out = MAX(email_opt_out, ?), updated_at = ? WHERE id = ?",
                (
                    other["external_id"],
                    other["email"],
                    other["first_name"],
                    other["last_name"],
                    other["owner_id"],
                    other["time_zone"],
                    json.dumps(attrs),
                    other["do_not_call"],
                    other["sms_opt_out"],
                    other["email_opt_out"],
                    to_db_time(now),
                    keep_id,
                ),
            ) as cur:
                if cur.rowcount != 1:
                    raise StoreError(f"contact {keep_id} vanished during a merge")
        return {"id": keep_id, "merged_id": other_id, "moved": moved}
