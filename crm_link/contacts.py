"""Contacts: validation of their fields, create/update/upsert, lookup by any phone format."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from crm_link.db import Database, from_db_time, to_db_time
from crm_link.errors import NotFound, ValidationError
from crm_link.models import (
    SMS_CONSENT_SOURCES,
    Contact,
    ContactPhone,
    Page,
    check_limit,
    decode_cursor,
    encode_cursor,
    iso,
)
from crm_link.phones import Phone, normalize_phone, try_e164, zone_for_number

_EMAIL = re.compile(r"^[^@\s<>(),;:\"]+@[^@\s<>(),;:\"]+\.[^@\s<>(),;:\"]+$")
_TAG = re.compile(r"^[\w][\w .:/+-]{0,63}$")

CONTACT_FIELDS = (
    "external_id",
    "first_name",
    "last_name",
    "email",
    "owner",
    "time_zone",
    "phones",
    "tags",
    "attributes",
    "do_not_call",
    "sms_opt_out",
    "email_opt_out",
    "sms_consent",
)


@dataclass(slots=True)
class SmsConsent:
    """A customer's agreement to receive texts: how, when (None: now) and who recorded it."""

    source: str
    at: datetime | None = None
    by_user_id: int | None = None


@dataclass(slots=True)
class ContactFields:
    """Checked contact input; only the names in `present` were given (for partial updates)."""

    present: set[str] = field(default_factory=set)
    external_id: str | None = None
    first_name: str = ""
    last_name: str = ""
    email: str | None = None
    owner: str | None = None
    time_zone: str | None = None
    phones: list[Phone] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    attributes: dict[str, Any] = field(default_factory=dict)
    do_not_call: bool = False
    sms_opt_out: bool = False
    email_opt_out: bool = False
    sms_consent: SmsConsent | None = None  # with "sms_consent" in present: None withdraws it


def _text(data: Mapping[str, Any], name: str, max_len: int = 200) -> str | None:
    value = data[name]
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValidationError(name, f"must be a string, got {type(value).__name__}")
    value = value.strip()
    if len(value) > max_len:
        raise ValidationError(name, f"is longer than {max_len} characters")
    if any(ord(ch) < 32 for ch in value):
        raise ValidationError(name, "contains control characters")
    return value


def _bool(data: Mapping[str, Any], name: str) -> bool:
    value = data[name]
    if isinstance(value, bool):
        return value
    raise ValidationError(name, f"must be true or false, got {value!r}")


def validate_sms_consent(value: Any, field_name: str = "sms_consent") -> SmsConsent | None:
    """`{"source": ..., "at"?: ISO time}` gives consent; null or false withdraws it."""
    if value is None or value is False:
        return None
    sources = ", ".join(SMS_CONSENT_SOURCES)
    if not isinstance(value, Mapping):
        raise ValidationError(
            field_name, f'must be {{"source": one of {sources}, "at": optional time}}, or null to withdraw it'
        )
    for key in value:
        if key not in ("source", "at"):
            raise ValidationError(f"{field_name}.{key}", "unknown field")
    source = value.get("source")
    if source not in SMS_CONSENT_SOURCES:
        raise ValidationError(f"{field_name}.source", f"must be one of {sources}, got {source!r}")
    at = value.get("at")
    if at is None:
        return SmsConsent(source)
    if not isinstance(at, str):
        raise ValidationError(f"{field_name}.at", "must be an ISO-8601 time such as 2026-11-23T15:00:00Z")
    try:
        when = datetime.fromisoformat(at.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValidationError(f"{field_name}.at", f"{at!r} is not an ISO-8601 time") from None
    if when.tzinfo is None:
        raise ValidationError(f"{field_name}.at", "must include a time zone offset (Z or +hh:mm)")
    return SmsConsent(source, when.astimezone(UTC))


def validate_email(value: str, field_name: str = "email") -> str:
    """A plausible single email address, or ValidationError."""
    if not _EMAIL.match(value) or len(value) > 254:
        raise ValidationError(field_name, f"{value!r} is not an email address")
    return value


def validate_time_zone(value: str, field_name: str = "time_zone") -> str:
    """An IANA time zone name, or ValidationError."""
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationError(
            field_name, f"{value!r} is not an IANA time zone (e.g. America/Chicago)"
        ) from None
    return value


def validate_contact(
    data: Mapping[str, Any], *, region: str, partial: bool = False, allowed: Sequence[str] = CONTACT_FIELDS
) -> ContactFields:
    """Check API/CSV contact input field by field; unknown fields and wrong types are errors."""
    if not isinstance(data, Mapping):
        raise ValidationError("body", "must be a JSON object")
    for name in data:
        if name not in allowed:
            raise ValidationError(name, "unknown field")
    out = ContactFields(present=set(data))
    for name in ("external_id", "first_name", "last_name", "owner"):
        if name in data:
            value = _text(data, name)
            if name in ("first_name", "last_name"):
                value = value or ""
            setattr(out, name, value or (None if name in ("external_id", "owner") else ""))
    if "email" in data:
        value = _text(data, "email", 254)
        out.email = validate_email(value) if value else None
    if "time_zone" in data:
        value = _text(data, "time_zone", 64)
        out.time_zone = validate_time_zone(value) if value else None
    if "phones" in data:
        phones = data["phones"]
        if isinstance(phones, str):
            phones = [phones]
        if not isinstance(phones, list):
            raise ValidationError("phones", "must be a list of phone numbers")
        seen: set[str] = set()
        for i, item in enumerate(phones):
            raw = item.get("number") if isinstance(item, Mapping) else item
            if not isinstance(raw, str):
                raise ValidationError(f"phones[{i}]", "must be a phone number string")
            phone = normalize_phone(raw, region, field=f"phones[{i}]")
            if phone.e164 not in seen:
                seen.add(phone.e164)
                out.phones.append(phone)
    if "tags" in data:
        tags = data["tags"]
        if isinstance(tags, str):
            tags = [t for t in (s.strip() for s in tags.split(",")) if t]
        if not isinstance(tags, list):
            raise ValidationError("tags", "must be a list of strings")
        clean: list[str] = []
        for i, tag in enumerate(tags):
            if not isinstance(tag, str) or not _TAG.match(tag.strip()):
                raise ValidationError(f"tags[{i}]", "must be 1-64 letters, digits, spaces or . : / + -")
            if tag.strip().lower() not in (t.lower() for t in clean):
                clean.append(tag.strip())
        out.tags = clean
    if "attributes" in data:
        attrs = data["attributes"]
        if attrs is None:
            attrs = {}
        if not isinstance(attrs, Mapping):
            raise ValidationError("attributes", "must be an object")
        for key in attrs:
            if not isinstance(key, str) or not key or len(key) > 64:
                raise ValidationError("attributes", f"key {key!r} must be a name of 1-64 characters")
        try:
            encoded = json.dumps(dict(attrs))
        except (TypeError, ValueError):
            raise ValidationError(
                "attributes", "values must be JSON (strings, numbers, lists, objects)"
            ) from None
        if len(encoded) > 20_000:
            raise ValidationError("attributes", "is larger than 20 kB")
        out.attributes = dict(attrs)
    for name in ("do_not_call", "sms_opt_out", "email_opt_out"):
        if name in data:
            setattr(out, name, _bool(data, name))
    if "sms_consent" in data:
        out.sms_consent = validate_sms_consent(data["sms_consent"])
        if out.sms_consent is not None and out.sms_opt_out:
            raise ValidationError("sms_consent", "cannot be given while sms_opt_out is true")
    if not partial and not (out.first_name or out.last_name or out.phones or out.email):
        raise ValidationError("body", "a contact needs a name, a phone number or an email")
    return out


def guess_time_zone(phones: Sequence[Phone], fallback: str | None) -> str | None:
    """The zone of the first number whose area maps to exactly one zone, else `fallback`."""
    return next((z for p in phones if (z := zone_for_number(p.e164))), fallback)


# one round trip per page of contacts: phones and tags come along as JSON arrays
_CONTACT_COLUMNS = """
SELECT c.*, u.username AS owner_username,
       COALESCE(NULLIF(u.display_name, ''), u.username) AS owner_name,
       (SELECT username FROM users cu WHERE cu.id = c.sms_consent_by) AS sms_consent_by_username,
       (SELECT json_group_array(json_array(raw, e164, valid, kind, extension)) FROM
          (SELECT raw, e164, valid, kind, extension FROM contact_phones p WHERE p.contact_id = c.id ORDER BY position, id))
         AS phones_json,
       (SELECT json_group_array(tag) FROM
          (SELECT tag FROM contact_tags t WHERE t.contact_id = c.id ORDER BY tag)) AS tags_json"""
_CONTACT_FROM = """
FROM contacts c LEFT JOIN users u ON u.id = c.owner_id
"""
_CONTACT_SELECT = _CONTACT_COLUMNS + _CONTACT_FROM

# a screen-pop's reads in one statement: the contact, its latest touches (the LIMIT is the first
# parameter) and its open follow-ups, each with the survey its cadence step carries
_POP_SELECT = (
    _CONTACT_COLUMNS
    + """,
       (SELECT json_group_array(json_array(kind, direction, started_at, summary, status)) FROM
          (SELECT kind, direction, started_at, summary, status FROM touches t WHERE t.contact_id = c.id
           ORDER BY t.started_at DESC, t.id DESC LIMIT ?)) AS recent_json,
       (SELECT json_group_array(json_array(due_at, note, kind, survey_id)) FROM
          (SELECT f.due_at, f.note, f.kind, json_extract(k.steps, '$[' || f.step || '].survey_id') AS survey_id
           FROM followups f LEFT JOIN cadences k ON k.id = f.cadence_id
           WHERE f.contact_id = c.id AND f.status = 'open' ORDER BY f.due_at, f.id)) AS followups_json"""
    + _CONTACT_FROM
)


@dataclass(slots=True)
class PopHistory:
    """What a screen-pop shows of a contact besides its card, read in the same statement."""

    touches: list[dict[str, Any]]  # the latest, newest first: kind, direction, at, summary, status
    followups: list[dict[str, Any]]  # the open ones, soonest first: due_at, note, kind
    cadence_surveys: list[tuple[datetime, int]]  # (due, survey id) of open cadence steps with a survey

    def followup_survey(self, until: datetime) -> int | None:
        """The survey of the soonest open cadence follow-up due before `until` whose step has one."""
        return next((survey for due, survey in self.cadence_surveys if due < until), None)


@dataclass(slots=True)
class CallerFile:
    """A caller-ID lookup with what the pop shows: every contact with the number, and the history of
    each (`history[contact id]`), all from one statement."""

    contacts: list[Contact]
    history: dict[int, PopHistory]


def _pop_history(row: Any) -> PopHistory:
    touches = [
        {"kind": k, "direction": d, "at": iso(from_db_time(at)), "summary": summary, "status": status}
        for k, d, at, summary, status in json.loads(row["recent_json"])
    ]
    followups: list[dict[str, Any]] = []
    surveys: list[tuple[datetime, int]] = []
    for due, note, kind, survey in json.loads(row["followups_json"]):
        when = from_db_time(due)
        followups.append({"due_at": iso(when), "note": note, "kind": kind})
        if survey is not None and when is not None:
            surveys.append((when, int(survey)))
    return PopHistory(touches, followups, surveys)


class Contacts:
    """Contacts, their phones and tags."""

    def __init__(self, db: Database, region: str, default_time_zone: str | None) -> None:
        self._db = db
        self.region = region
        self.default_time_zone = default_time_zone

    async def _owner_id(self, conn: Any, username: str | None) -> int | None:
        if username is None:
            return None
        async with conn.execute("SELECT id FROM users WHERE username = ?", (username,)) as cur:
            row = await cur.fetchone()
        if row is None:
            raise ValidationError("owner", f"no user named {username!r}")
        return int(row[0])

    async def create(self, fields: ContactFields) -> Contact:
        """Insert one contact with its phones and tags, all or nothing."""
        async with self._db.transaction() as tx:
            contact_id = await self.insert_in(tx, fields)
        return await self.get(contact_id)

    async def insert_in(self, tx: Any, fields: ContactFields) -> int:
        """Insert within an open transaction; the new id."""
        now = to_db_time(self._db.now())
        owner_id = await self._owner_id(tx, fields.owner)
        tz = fields.time_zone or guess_time_zone(fields.phones, self.default_time_zone)
        if fields.external_id:
            async with tx.execute(
                "SELECT 1 FROM contacts WHERE external_id = ?", (fields.external_id,)
            ) as cur:
                if await cur.fetchone():
                    raise ValidationError(
                        "external_id", f"{fields.external_id!r} is already used", code="conflict"
                    )
        async with tx.execute(
            "INSERT INTO contacts (external_id, first_name, last_name, email, owner_id, time_zone, attributes,"
            " do_not_call, sms_opt_out, email_opt_out, sms_consent_at, sms_consent_source, sms_consent_by,"
            " created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (
                fields.external_id,
                fields.first_name,
                fields.last_name,
                fields.email,
                owner_id,
                tz,
                json.dumps(fields.attributes),
                int(fields.do_not_call),
                int(fields.sms_opt_out),
                int(fields.email_opt_out),
                *self._consent_values(fields.sms_consent),
                now,
                now,
            ),
        ) as cur:
            contact_id = int((await cur.fetchone())[0])
        # a new contact has no phones or tags to replace (two round trips fewer on PostgreSQL)
        await self._replace_phones(tx, contact_id, fields.phones, keep_existing=True)
        await self._replace_tags(tx, contact_id, fields.tags, keep_existing=True)
        return contact_id

    async def update_in(
        self, tx: Any, contact_id: int, fields: ContactFields, *, merge: bool = False
    ) -> None:
        """Apply the given fields to a contact within an open transaction.

        With `merge`, phones and tags are added to the existing ones and attributes merged
        (what an import wants); otherwise they replace them (what a PUT wants).
        """
        sets: list[str] = []
        params: list[Any] = []
        simple = ("external_id", "first_name", "last_name", "email", "time_zone")
        for name in simple:
            if name in fields.present:
                sets.append(f"{name} = ?")
                params.append(getattr(fields, name))
        for name in ("do_not_call", "sms_opt_out", "email_opt_out"):
            if name in fields.present:
                sets.append(f"{name} = ?")
                params.append(int(getattr(fields, name)))
        consent_cols = ("sms_consent_at", "sms_consent_source", "sms_consent_by")
        if "sms_consent" in fields.present and fields.sms_consent is not None:
            values = self._consent_values(fields.sms_consent)
            if merge:
                # an import or sync never rewrites an earlier consent, nor re-subscribes a customer
                # who opted out (texted STOP)
                keep = "sms_consent_at IS NOT NULL OR sms_opt_out = 1"
                sets += [f"{col} = CASE WHEN {keep} THEN {col} ELSE ? END" for col in consent_cols]
            else:
                sets += [f"{col} = ?" for col in consent_cols]
                if "sms_opt_out" not in fields.present:
                    sets.append("sms_opt_out = 0")  # agreeing to texts again ends an opt-out
            params += values
        elif "sms_consent" in fields.present or ("sms_opt_out" in fields.present and fields.sms_opt_out):
            sets += [f"{col} = NULL" for col in consent_cols]  # withdrawn; an opt-out withdraws it too
        if "owner" in fields.present:
            sets.append("owner_id = ?")
            params.append(await self._owner_id(tx, fields.owner))
        if "attributes" in fields.present:
            if merge:
                sets.append("attributes = json_patch(attributes, ?)")
            else:
                sets.append("attributes = ?")
            params.append(json.dumps(fields.attributes))
        sets.append("updated_at = ?")
        params.append(to_db_time(self._db.now()))
        params.append(contact_id)
        async with tx.execute(f"UPDATE contacts SET {', '.join(sets)} WHERE id = ?", params) as cur:
            if cur.rowcount == 0:
                raise NotFound("contact", contact_id)
        if "phones" in fields.present:
            await self._replace_phones(tx, contact_id, fields.phones, keep_existing=merge)
        if "tags" in fields.present:
            await self._replace_tags(tx, contact_id, fields.tags, keep_existing=merge)

    async def update(self, contact_id: int, fields: ContactFields) -> Contact:
        """Change the given fields of one contact."""
        async with self._db.transaction() as tx:
            await self.update_in(tx, contact_id, fields)
        return await self.get(contact_id)

    def _consent_values(self, consent: SmsConsent | None) -> tuple[str | None, str | None, int | None]:
        """The (at, source, by) columns of a consent; ValidationError for a time in the future."""
        if consent is None:
            return None, None, None
        now = self._db.now()
        at = consent.at or now
        if at > now:
            raise ValidationError("sms_consent.at", "is in the future")
        return to_db_time(at), consent.source, consent.by_user_id

    async def set_sms_consent(self, contact_id: int, consent: SmsConsent | None) -> None:
        """Record (and end any opt-out) or withdraw a customer's consent to texts."""
        fields = ContactFields(present={"sms_consent"}, sms_consent=consent)
        async with self._db.transaction() as tx:
            await self.update_in(tx, contact_id, fields)

    async def set_flags(self, contact_id: int, **flags: bool) -> None:
        """Set consent flags (do_not_call, sms_opt_out, email_opt_out); an SMS opt-out also
        withdraws the customer's consent to texts."""
        fields = ContactFields(present=set(flags))
        for name, value in flags.items():
            if name not in ("do_not_call", "sms_opt_out", "email_opt_out"):
                raise ValidationError(name, "not a consent flag")
            setattr(fields, name, bool(value))
        async with self._db.transaction() as tx:
            await self.update_in(tx, contact_id, fields)

    async def _replace_phones(
        self, tx: Any, contact_id: int, phones: list[Phone], keep_existing: bool = False
    ) -> None:
        if not keep_existing:
            await tx.execute("DELETE FROM contact_phones WHERE contact_id = ?", (contact_id,))
        await tx.executemany(
            "INSERT INTO contact_phones (contact_id, raw, e164, valid, kind, position, extension)"
            " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (contact_id, e164) DO NOTHING",
            [(contact_id, p.raw, p.e164, int(p.valid), p.kind, i, p.extension) for i, p in enumerate(phones)],
        )

    async def _replace_tags(
        self, tx: Any, contact_id: int, tags: list[str], keep_existing: bool = False
    ) -> None:
        if not keep_existing:
            await tx.execute("DELETE FROM contact_tags WHERE contact_id = ?", (contact_id,))
        await tx.executemany(
            "INSERT INTO contact_tags (tag, contact_id) VALUES (?, ?) ON CONFLICT DO NOTHING",
            [(t, contact_id) for t in tags],
        )

    async def get(self, contact_id: int) -> Contact:
        """One contact with phones and tags; NotFound when absent."""
        rows = await self._db.fetchall(_CONTACT_SELECT + " WHERE c.id = ?", (contact_id,))
        if not rows:
            raise NotFound("contact", contact_id)
        return (await self._hydrate(rows))[0]

    async def get_many(self, ids: Sequence[int]) -> list[Contact]:
        """Contacts by id, in the order given (missing ones left out)."""
        by_id: dict[int, Contact] = {}
        unique = list(dict.fromkeys(ids))
        for start in range(0, len(unique), 500):
            chunk = unique[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = await self._db.fetchall(_CONTACT_SELECT + f" WHERE c.id IN ({marks})", chunk)
            by_id.update((c.id, c) for c in await self._hydrate(rows))
        return [by_id[i] for i in ids if i in by_id]

    async def find_by_phone(self, raw: str) -> list[Contact]:
        """Every contact with this number, whatever format it is written in (caller-ID lookup)."""
        e164 = try_e164(raw, self.region)
        if e164 is None:
            return []
        rows = await self._db.fetchall(
            _CONTACT_SELECT
            + " WHERE c.id IN (SELECT contact_id FROM contact_phones WHERE e164 = ?) ORDER BY c.id",
            (e164,),
        )
        return await self._hydrate(rows)

    async def caller_file(self, raw: str, *, recent: int) -> CallerFile:
        """Caller-ID lookup for a screen-pop: the contacts with this number (as find_by_phone), each
        with its `recent` latest touches and its open follow-ups, in one read."""
        e164 = try_e164(raw, self.region)
        if e164 is None:
            return CallerFile([], {})
        rows = await self._db.fetchall_for_pop(
            _POP_SELECT
            + " WHERE c.id IN (SELECT contact_id FROM contact_phones WHERE e164 = ?) ORDER BY c.id",
            (recent, e164),
        )
        return CallerFile(await self._hydrate(rows), {r["id"]: _pop_history(r) for r in rows})

    async def pop_file(self, ids: Sequence[int], *, recent: int) -> CallerFile:
        """The same for contacts by id (their history as it is now), in one read."""
        if not ids:
            return CallerFile([], {})
        marks = ",".join("?" * len(ids))
        rows = await self._db.fetchall_for_pop(
            _POP_SELECT + f" WHERE c.id IN ({marks}) ORDER BY c.id", (recent, *ids)
        )
        return CallerFile(await self._hydrate(rows), {r["id"]: _pop_history(r) for r in rows})

    async def ids_with_tag(self, tag: str, *, after: int = 0, limit: int | None = None) -> list[int]:
        """Ids of every contact carrying a tag (case-insensitive), ascending; with `limit`, one page
        of them after the id `after` (the key's order: a page is one index range)."""
        if limit is None:
            rows = await self._db.fetchall(
                "SELECT contact_id FROM contact_tags WHERE tag = ? AND contact_id > ? ORDER BY contact_id",
                (tag, after),
            )
        else:
            rows = await self._db.fetchall(
                "SELECT contact_id FROM contact_tags WHERE tag = ? AND contact_id > ?"
                " ORDER BY contact_id LIMIT ?",
                (tag, after, limit),
            )
        return [r[0] for r in rows]

    async def ids_by_phone(self, e164: str) -> list[int]:
        """Contact ids for an E.164 number: the indexed equality behind caller ID."""
        rows = await self._db.fetchall(
            "SELECT contact_id FROM contact_phones WHERE e164 = ? ORDER BY contact_id", (e164,)
        )
        return [r[0] for r in rows]

    async def search(
        self,
        *,
        q: str | None = None,
        phone: str | None = None,
        tag: str | None = None,
        owner_id: int | None = None,
        limit: int | None = None,
        cursor: str | None = None,
        include_unowned: bool = False,
    ) -> Page:
        """Contacts matching every filter given, by id, one page at a time (`include_unowned`: the
        owner's and those nobody owns)."""
        limit = check_limit(limit)
        where: list[str] = []
        params: list[Any] = []
        if phone is not None and phone.strip():
            e164 = normalize_phone(phone, self.region, field="phone").e164
            where.append("c.id IN (SELECT contact_id FROM contact_phones WHERE e164 = ?)")
            params.append(e164)
        if tag:
            where.append("c.id IN (SELECT contact_id FROM contact_tags WHERE tag = ?)")
            params.append(tag.strip())
        if q and q.strip():
            words = q.strip().split()
            for word in words[:4]:
                like = word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
                where.append(
                    "(c.first_name LIKE ? ESCAPE '\\' OR c.last_name LIKE ? ESCAPE '\\' OR c.email LIKE ? ESCAPE '\\')"
                )
                params += [like, like, like]
        if owner_id is not None:
            where.append("(c.owner_id = ? OR c.owner_id IS NULL)" if include_unowned else "c.owner_id = ?")
            params.append(owner_id)
        if cursor:
            (last_id,) = decode_cursor(cursor, int)
            where.append("c.id > ?")
            params.append(last_id)
        sql = _CONTACT_SELECT + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY c.id LIMIT ?"
        rows = await self._db.fetchall(sql, [*params, limit + 1])
        items = await self._hydrate(rows[:limit])
        next_cursor = encode_cursor(items[-1].id) if len(rows) > limit else None
        return Page(items, next_cursor)

    async def bulk_insert(self, rows: Sequence[ContactFields]) -> int:
        """Insert many new contacts in one transaction (loading, benchmarks); returns the count."""
        owners = {u: i for u, i in await self._owner_ids()}
        async with self._db.transaction() as tx:
            await self.insert_many_in(tx, rows, owners)
        return len(rows)

    async def _owner_ids(self) -> list[tuple[str, int]]:
        return [(r[0], r[1]) for r in await self._db.fetchall("SELECT username, id FROM users")]

    async def insert_many_in(
        self, tx: Any, rows: Sequence[ContactFields], owner_ids: dict[str, int]
    ) -> list[int]:
        """Insert new contacts inside an open transaction with three statements; their ids, in order."""
        if not rows:
            return []
        now = to_db_time(self._db.now())
        async with tx.execute("SELECT COALESCE(MAX(id), 0) FROM contacts") as cur:
            first = int((await cur.fetchone())[0]) + 1
        ids = list(range(first, first + len(rows)))
        params = []
        for cid, f in zip(ids, rows, strict=True):
            if f.owner is not None and f.owner not in owner_ids:
                raise ValidationError("owner", f"no user named {f.owner!r}")
            tz = f.time_zone or guess_time_zone(f.phones, self.default_time_zone)
            params.append(
                (
                    cid,
                    f.external_id,
                    f.first_name,
                    f.last_name,
                    f.email,
                    owner_ids.get(f.owner) if f.owner else None,
                    tz,
                    json.dumps(f.attributes),
                    int(f.do_not_call),
                    int(f.sms_opt_out),
                    int(f.email_opt_out),
                    *self._consent_values(f.sms_consent),
                    now,
                    now,
                )
            )
        await tx.executemany(
            "INSERT INTO contacts (id, external_id, first_name, last_name, email, owner_id, time_zone, attributes,"
            " do_not_call, sms_opt_out, email_opt_out, sms_consent_at, sms_consent_source, sms_consent_by,"
            " created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            params,
        )
        await tx.executemany(
            "INSERT INTO contact_phones (contact_id, raw, e164, valid, kind, position, extension)"
            " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (contact_id, e164) DO NOTHING",
            [
                (cid, p.raw, p.e164, int(p.valid), p.kind, n, p.extension)
                for cid, f in zip(ids, rows, strict=True)
                for n, p in enumerate(f.phones)
            ],
        )
        await tx.executemany(
            "INSERT INTO contact_tags (tag, contact_id) VALUES (?, ?) ON CONFLICT DO NOTHING",
            [(t, cid) for cid, f in zip(ids, rows, strict=True) for t in f.tags],
        )
        return ids

    async def match_many_in(
        self, tx: Any, rows: Sequence[ContactFields]
    ) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
        """Existing contacts for a batch: by external id, by E.164 and by lower-case email."""
        ext = list({f.external_id for f in rows if f.external_id})
        phones = list({p.e164 for f in rows for p in f.phones})
        emails = list({f.email.lower() for f in rows if f.email})
        by_ext: dict[str, int] = {}
        by_phone: dict[str, int] = {}
        by_email: dict[str, int] = {}
        for values, sql, target in (
            (ext, "SELECT external_id, id FROM contacts WHERE external_id IN ({})", by_ext),
            (
                phones,
                "SELECT e164, MIN(contact_id) FROM contact_phones WHERE e164 IN ({}) GROUP BY e164",
                by_phone,
            ),
            (
                emails,
                "SELECT lower(email), MIN(id) FROM contacts WHERE lower(email) IN ({}) GROUP BY lower(email)",
                by_email,
            ),
        ):
            for start in range(0, len(values), 500):
                chunk = values[start : start + 500]
                async with tx.execute(sql.format(",".join("?" * len(chunk))), chunk) as cur:
                    target.update((r[0], r[1]) for r in await cur.fetchall())
        return by_ext, by_phone, by_email

    async def count(self) -> int:
        row = await self._db.fetchone("SELECT count(*) FROM contacts")
        return int(row[0]) if row else 0

    async def _hydrate(self, rows: Sequence[Any]) -> list[Contact]:
        return [
            Contact(
                id=r["id"],
                external_id=r["external_id"],
                first_name=r["first_name"],
                last_name=r["last_name"],
                email=r["email"],
                owner_id=r["owner_id"],
                owner_username=r["owner_username"],
                owner_name=r["owner_name"],
                time_zone=r["time_zone"],
                attributes=json.loads(r["attributes"]),
                do_not_call=bool(r["do_not_call"]),
                sms_opt_out=bool(r["sms_opt_out"]),
                email_opt_out=bool(r["email_opt_out"]),
                created_at=from_db_time(r["created_at"]),  # type: ignore[arg-type]
                updated_at=from_db_time(r["updated_at"]),  # type: ignore[arg-type]
                phones=[
                    ContactPhone(p[0], p[1], bool(p[2]), p[3], p[4]) for p in json.loads(r["phones_json"])
                ],
                tags=json.loads(r["tags_json"]),
                sms_consent_at=from_db_time(r["sms_consent_at"]),
                sms_consent_source=r["sms_consent_source"],
                sms_consent_by=r["sms_consent_by_username"],
            )
            for r in rows
        ]
