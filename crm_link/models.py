"""Rows of the CRM store as typed records, and how they look in the JSON API."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from crm_link.errors import ValidationError

ROLES = ("rep", "manager", "marketing", "admin")
TOUCH_KINDS = ("call", "sms", "email", "note")
DIRECTIONS = ("inbound", "outbound", "internal", "none")
# how a customer agreed to receive texts
SMS_CONSENT_SOURCES = ("web_form", "in_person", "reply_start", "import")


def iso(value: datetime | None) -> str | None:
    """A datetime as ISO-8601 UTC with a Z, for JSON."""
    if value is None:
        return None
    return value.isoformat().replace("+00:00", "Z")


@dataclass(slots=True)
class User:
    id: int
    username: str
    display_name: str
    email: str | None
    role: str
    extension: str | None
    active: bool
    time_zone: str | None
    interfaces: list[str] = field(default_factory=list)
    manager_id: int | None = None  # the user's manager (`owner_manager` escalations go to them)
    manager: str | None = None  # the manager's username

    @property
    def name(self) -> str:
        return self.display_name or self.username

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "username": self.username,
            "name": self.name,
            "email": self.email,
            "role": self.role,
            "extension": self.extension,
            "active": self.active,
            "time_zone": self.time_zone,
            "interfaces": self.interfaces,
            "manager": self.manager,
        }


@dataclass(frozen=True, slots=True)
class ContactPhone:
    raw: str
    e164: str
    valid: bool
    kind: str
    extension: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "raw": self.raw,
            "e164": self.e164,
            "valid": self.valid,
            "kind": self.kind,
            "extension": self.extension,
        }


@dataclass(slots=True)
class Contact:
    id: int
    external_id: str | None
    first_name: str
    last_name: str
    email: str | None
    owner_id: int | None
    owner_username: str | None
    owner_name: str | None
    time_zone: str | None
    attributes: dict[str, Any]
    do_not_call: bool
    sms_opt_out: bool
    email_opt_out: bool
    created_at: datetime
    updated_at: datetime
    phones: list[ContactPhone] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    sms_consent_at: datetime | None = None  # when the customer agreed to texts; None: no consent
    sms_consent_source: str | None = None  # one of SMS_CONSENT_SOURCES
    sms_consent_by: str | None = None  # the username who recorded it, if a person did

    @property
    def sms_consent(self) -> bool:
        """True when the customer has agreed to receive texts (and has not taken it back)."""
        return self.sms_consent_at is not None

    @property
    def name(self) -> str:
        return f"{self.first_name} {self.last_name}".strip() or (self.phones[0].e164 if self.phones else "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "external_id": self.external_id,
            "first_name": self.first_name,
            "last_name": self.last_name,
            "name": self.name,
            "email": self.email,
            "owner": self.owner_username,
            "owner_name": self.owner_name,
            "time_zone": self.time_zone,
            "phones": [p.to_dict() for p in self.phones],
            "tags": self.tags,
            "attributes": self.attributes,
            "do_not_call": self.do_not_call,
            "sms_opt_out": self.sms_opt_out,
            "email_opt_out": self.email_opt_out,
            "sms_consent": (
                {"at": iso(self.sms_consent_at), "source": self.sms_consent_source, "by": self.sms_consent_by}
                if self.sms_consent_at is not None
                else None
            ),
            "url": f"/contacts/{self.id}",
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
        }


@dataclass(slots=True)
class Touch:
    id: int
    source_key: str
    contact_id: int | None
    user_id: int | None
    username: str | None
    kind: str
    direction: str
    channel: str
    status: str
    number: str | None
    started_at: datetime
    ended_at: datetime | None
    duration_s: float | None
    summary: str
    payload: dict[str, Any]
    created: bool = False  # set by record_touch: True when this call added the row

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "source_key": self.source_key,
            "contact_id": self.contact_id,
            "user": self.username,
            "kind": self.kind,
            "direction": self.direction,
            "channel": self.channel,
            "status": self.status,
            "number": self.number,
            "at": iso(self.started_at),
            "started_at": iso(self.started_at),
            "ended_at": iso(self.ended_at),
            "duration_s": self.duration_s,
            "summary": self.summary,
            "payload": self.payload,
        }


@dataclass(slots=True)
class FollowUp:
    id: int
    contact_id: int
    contact_name: str
    assignee_id: int | None
    assignee_username: str | None
    kind: str
    due_at: datetime
    note: str
    status: str
    created_by_touch_id: int | None
    closed_by_touch_id: int | None
    pool: str | None = None
    cadence_id: int | None = None
    cadence_name: str | None = None
    step: int | None = None
    channel: str = "call"
    result: str | None = None
    attempts: int = 0
    escalated_reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "contact_id": self.contact_id,
            "contact_name": self.contact_name,
            "assignee": self.assignee_username,
            "pool": self.pool,
            "kind": self.kind,
            "due_at": iso(self.due_at),
            "reason": self.note,
            "note": self.note,
            "rule": self.cadence_name,
            "rule_id": self.cadence_id,
            "step": self.step,
            "channel": self.channel,
            "state": self.status,
            "status": self.status,
            "result": self.result,
            "attempts": self.attempts,
            "escalated_reason": self.escalated_reason,
            "created_by_touch_id": self.created_by_touch_id,
            "closed_by_touch_id": self.closed_by_touch_id,
        }


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a list and the cursor of the next (None at the end)."""

    items: list[Any]
    next_cursor: str | None


def encode_cursor(*values: Any) -> str:
    """An opaque cursor holding the sort key of the last row seen."""
    return (
        base64.urlsafe_b64encode(json.dumps(list(values), separators=(",", ":")).encode())
        .decode()
        .rstrip("=")
    )


MAX_INT64 = 2**63 - 1  # SQLite's integers are signed 64-bit
MIN_INT64 = -(2**63)
MAX_ID = MAX_INT64
MAX_CURSOR_CHARS = 1000
_BAD_CURSOR = "is not a cursor this server issued"


def fits_int64(value: Any) -> bool:
    """True for an int (not a bool) that SQLite can store; floats and the rest are not its business."""
    return not isinstance(value, int) or isinstance(value, bool) or MIN_INT64 <= value <= MAX_INT64


def parse_id(raw: str, field: str = "id") -> int:
    """A row id written in decimal (1 to 2^63-1, ASCII digits only), or ValidationError naming `field`."""
    if not (0 < len(raw) <= 19 and raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_ID:
        raise ValidationError(field, f"{raw[:40]!r} is not an id (a whole number from 1 to {MAX_ID})")
    return int(raw)


def decode_cursor(cursor: str, *types: type) -> list[Any]:
    """The sort key back out of a cursor, one value of each of `types` (str or int, an int in SQLite's
    range); ValidationError naming `cursor` on anything not made by encode_cursor."""
    if len(cursor) > MAX_CURSOR_CHARS:
        raise ValidationError("cursor", _BAD_CURSOR)
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        values = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError, RecursionError):
        raise ValidationError("cursor", _BAD_CURSOR) from None
    if not isinstance(values, list) or len(values) != len(types):
        raise ValidationError("cursor", _BAD_CURSOR)
    for value, kind in zip(values, types, strict=True):
        if type(value) is not kind or (kind is int and not fits_int64(value)):
            raise ValidationError("cursor", _BAD_CURSOR)
    return values


def check_limit(limit: int | None, default: int = 50, maximum: int = 500) -> int:
    """A page size within bounds, or ValidationError naming `limit`."""
    if limit is None:
        return default
    if not 1 <= limit <= maximum:
        raise ValidationError("limit", f"must be between 1 and {maximum}")
    return limit
