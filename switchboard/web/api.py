"""The JSON API under /api/v1: contacts, their history, My Day, users."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web

from crm_link.contacts import ContactFields, validate_contact
from crm_link.errors import Conflict, ValidationError
from crm_link.models import Contact, User
from crm_link.store import Store
from crm_link.touches import NextFollowup, TouchInput
from followups.service import UNKNOWN_NUMBER_TAG
from switchboard.keys import CALL_SERVICES, CLOCK, FOLLOWUPS, MY_DAY_EXTRAS, STORE
from switchboard.web.auth import require
from switchboard.web.errors import ApiError, json_body, path_int, query_limit

ALL_STAFF = ("rep", "manager", "marketing", "admin")


def store_of(request: web.Request) -> Store:
    return request.app[STORE]


def parse_time(value: Any, field: str) -> datetime:
    """An ISO-8601 time with a zone (Z or +hh:mm), or a 400 naming the field."""
    if not isinstance(value, str):
        raise ValidationError(field, "must be an ISO-8601 time such as 2026-11-23T15:00:00Z")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValidationError(
            field, f"{value!r} is not an ISO-8601 time such as 2026-11-23T15:00:00Z"
        ) from None
    if parsed.tzinfo is None:
        raise ValidationError(field, "must include a time zone offset (Z or +hh:mm)")
    return parsed


# who records or withdraws a customer's consent to texts (reps: for customers they may see)
CONSENT_EDITORS = ("rep", "manager", "admin")


def _consent_by(user: User, fields: ContactFields) -> None:
    """Check who records a consent to texts, and sign it with their id."""
    if "sms_consent" not in fields.present:
        return
    if user.role not in CONSENT_EDITORS:
        raise ApiError(403, "forbidden", "only reps and managers record consent to texts", "sms_consent")
    if fields.sms_consent is not None:
        fields.sms_consent.by_user_id = user.id


def can_see_contact(user: User, contact: Contact) -> bool:
    """Reps work their own customers (and unowned ones); other roles see everyone."""
    return user.role != "rep" or contact.owner_id in (None, user.id)


# how long after a call ends its agent may still open the caller's record (notes, disposition)
AFTER_CALL_ACCESS = timedelta(minutes=15)


async def call_with(request: web.Request, user: User, contact_id: int, now: datetime) -> str | None:
    """The call (source key) that lets this user open this contact: live, or ended within the grace."""
    for source, key in CALL_SERVICES.items():
        calls = request.app.get(key)
        if calls is not None and (call_id := calls.live_call_with(user.id, contact_id)) is not None:
            return f"{source}:{call_id}"
    touch = await store_of(request).touches.call_ended_since(user.id, contact_id, now - AFTER_CALL_ACCESS)
    return touch.source_key if touch is not None else None


async def visible_contact(request: web.Request, user: User, contact_id: int) -> Contact:
    """The contact if this user may see it: their own, unowned, or one they are on a call with (audited)."""
    store = store_of(request)
    contact = await store.contacts.get(contact_id)
    if can_see_contact(user, contact):
        return contact
    via = await call_with(request, user, contact.id, request.app[CLOCK]())
    if via is None:
        raise ApiError(403, "forbidden", f"contact {contact_id} belongs to another salesperson")
    await store.audit.write(
        "contact.open_on_call",
        user_id=user.id,
        object_type="contact",
        object_id=contact.id,
        call=via,
        request=f"{request.method} {request.path}",
    )
    return contact


async def call_to_attach(request: web.Request, user: User, call_id: Any) -> str:
    """The source key of the call a new prospect is created from (`call_id` of the pop), checked:
    a call with no customer yet that this user took, rang for, or nobody took; managers any."""
    if not isinstance(call_id, str) or not call_id or len(call_id) > 200:
        raise ValidationError("call_id", "must be the id of a call")
    if user.role not in ("rep", "manager", "admin"):
        raise ApiError(403, "forbidden", "only reps and managers attach calls", "call_id")
    store = store_of(request)
    for source in ("asterisk", "twilio"):
        touch = await store.touches.by_source_key(f"{source}:{call_id}")
        if touch is not None and touch.kind == "call":
            break
    else:
        raise ApiError(404, "not_found", f"no call {call_id}", "call_id")
    if touch.contact_id is not None:
        raise ApiError(409, "conflict", "this call already belongs to a customer", "call_id")
    if user.role == "rep" and touch.user_id not in (None, user.id):
        calls = request.app.get(CALL_SERVICES[source])
        if calls is None or not calls.is_on_call(user.id, call_id):
            raise ApiError(403, "forbidden", "this call was another salesperson's", "call_id")
    return touch.source_key


async def create_contact(request: web.Request) -> web.Response:
    user = require(request, *ALL_STAFF)
    store = store_of(request)
    data = await json_body(request)
    call_id = data.pop("call_id", None)
    fields = validate_contact(data, region=store.region)
    _consent_by(user, fields)
    if user.role == "rep":
        if fields.owner is not None and fields.owner.strip().lower() != user.username:
            raise ApiError(403, "forbidden", "a rep can only create their own customers", "owner")
        fields.owner, fields.present = user.username, fields.present | {"owner"}
    if call_id is not None:
        contact = await prospect_for_call(request, user, fields, call_id)
    else:
        contact = await store.contacts.create(fields)
    await store.audit.write(
        "contact.create",
        user_id=user.id,
        object_type="contact",
        object_id=contact.id,
        **({"call_id": call_id} if call_id is not None else {}),
    )
    if fields.attributes:
        await request.app[FOLLOWUPS].apply_to([contact.id])
    return web.json_response(contact.to_dict(), status=201)


async def prospect_for_call(request: web.Request, user: User, fields: ContactFields, call_id: Any) -> Contact:
    """A new customer from an unknown caller's pop, and that call now theirs; when the follow-up
    loop already made a prospect for the call's number (the call was missed first), that one is
    filled in instead."""
    made = await _unknown_number_prospect(request, call_id)
    if made is not None:
        return await fill_in_prospect(request, user, made, fields)
    try:
        call_key = await call_to_attach(request, user, call_id)
        return await store_of(request).create_contact_for_call(fields, call_key)
    except (ApiError, Conflict) as exc:
        # the call ended missed between the two reads: the follow-up loop's prospect, committed
        # with the call's end, is the one to fill in (else the call really is someone else's)
        if isinstance(exc, ApiError) and exc.status != 409:
            raise
        made = await _unknown_number_prospect(request, call_id)
        if made is None:
            raise
        return await fill_in_prospect(request, user, made, fields)


async def _unknown_number_prospect(request: web.Request, call_id: Any) -> Contact | None:
    """The prospect the follow-up loop already made for this call's unknown number (it was missed
    before the rep saved "New prospect"), if that is whom the call belongs to."""
    if not isinstance(call_id, str) or not call_id:
        return None
    store = store_of(request)
    for source in ("asterisk", "twilio"):
        touch = await store.touches.by_source_key(f"{source}:{call_id}")
        if touch is not None and touch.kind == "call" and touch.contact_id is not None:
            contact = await store.contacts.get(touch.contact_id)
            if UNKNOWN_NUMBER_TAG in contact.tags and contact.owner_id is None:
                return contact
    return None


async def fill_in_prospect(
    request: web.Request, user: User, contact: Contact, fields: ContactFields
) -> Contact:
    """The rep's "New prospect" for a call whose unknown number already got one: that prospect takes
    what the rep typed (no second contact for the number); its owner takes its open follow-ups."""
    store = store_of(request)
    fields.tags = [t for t in (fields.tags or contact.tags) if t != UNKNOWN_NUMBER_TAG]
    fields.present = fields.present | {"tags"}
    fields.phones = [p for p in fields.phones if p.e164 not in {q.e164 for q in contact.phones}]
    if not fields.phones:
        fields.present = fields.present - {"phones"}
    updated = await store.contacts.update(contact.id, fields)
    await store.audit.write(
        "contact.prospect_filled_in", user_id=user.id, object_type="contact", object_id=contact.id
    )
    if updated.owner_id is not None:
        await request.app[FOLLOWUPS].reassign_owner(contact.id, None, updated.owner_id, user)
    if fields.attributes:
        await request.app[FOLLOWUPS].apply_to([contact.id])
    return await store.contacts.get(contact.id)


async def update_contact(request: web.Request) -> web.Response:
    user = require(request, *ALL_STAFF)
    store = store_of(request)
    contact = await visible_contact(request, user, path_int(request))
    fields = validate_contact(await json_body(request), region=store.region, partial=True)
    if user.role == "rep" and "owner" in fields.present and fields.owner != user.username:
        raise ApiError(403, "forbidden", "a rep cannot give a contact to someone else", "owner")
    _consent_by(user, fields)
    updated = await store.contacts.update(contact.id, fields)
    consent = (
        {"sms_consent": fields.sms_consent.source if fields.sms_consent else "withdrawn"}
        if "sms_consent" in fields.present
        else {}
    )
    await store.audit.write(
        "contact.update",
        user_id=user.id,
        object_type="contact",
        object_id=contact.id,
        fields=sorted(fields.present),
        **consent,
    )
    loop = request.app[FOLLOWUPS]
    moved = 0
    if "owner" in fields.present and updated.owner_id != contact.owner_id:
        moved = await loop.reassign_owner(contact.id, contact.owner_id, updated.owner_id, user)
    if "attributes" in fields.present:
        await loop.apply_to([contact.id])  # a new or corrected date makes or moves its follow-ups
    return web.json_response(updated.to_dict() | {"followups_moved": moved})


async def list_contacts(request: web.Request) -> web.Response:
    user = require(request, *ALL_STAFF)
    store = store_of(request)
    for key in request.query:
        if key not in ("phone", "q", "tag", "limit", "cursor", "owner"):
            raise ApiError(400, "unknown_field", f"unknown query parameter {key!r}", key)
    owner_id = user.id if user.role == "rep" else None
    if (owner := request.query.get("owner")) and user.role != "rep":
        found = await store.users.by_username(owner)
        if found is None:
            raise ApiError(400, "invalid", f"no user named {owner!r}", "owner")
        owner_id = found.id
    page = await store.contacts.search(
        q=request.query.get("q"),
        phone=request.query.get("phone"),
        tag=request.query.get("tag"),
        owner_id=owner_id,
        limit=query_limit(request),
        cursor=request.query.get("cursor"),
    )
    return web.json_response({"items": [c.to_dict() for c in page.items], "next_cursor": page.next_cursor})


async def get_contact(request: web.Request) -> web.Response:
    user = require(request, *ALL_STAFF)
    contact = await visible_contact(request, user, path_int(request))
    followups = await store_of(request).touches.open_followups(contact.id)
    body = contact.to_dict() | {"open_followups": [f.to_dict() for f in followups]}
    return web.json_response(body)


async def contact_touches(request: web.Request) -> web.Response:
    user = require(request, *ALL_STAFF)
    contact = await visible_contact(request, user, path_int(request))
    page = await store_of(request).touches.history(
        contact.id, limit=query_limit(request), cursor=request.query.get("cursor")
    )
    return web.json_response({"items": [t.to_dict() for t in page.items], "next_cursor": page.next_cursor})


TOUCH_FIELDS = ("kind", "direction", "summary", "next_followup_at", "close_followup", "idempotency_key", "at")


def future_time(value: Any, field: str, now: datetime) -> datetime:
    """An ISO time that is not in the past, or a 400 naming the field."""
    when = parse_time(value, field)
    if when <= now:
        raise ValidationError(field, "is in the past; give a time from now on")
    return when


def next_followup_of(data: dict[str, Any], now: datetime) -> NextFollowup:
    """`next_followup_at`: a time from now on; absent, null or "none" → none (the cadences plan the rest)."""
    value = data.get("next_followup_at")
    if value is None or value == "none":
        return None
    return future_time(value, "next_followup_at", now)


async def add_touch(request: web.Request) -> web.Response:
    """Log a note or a manual touch; it closes today's follow-up and sets the next one."""
    user = require(request, "rep", "manager", "admin")
    store = store_of(request)
    contact = await visible_contact(request, user, path_int(request))
    data = await json_body(request, allowed=TOUCH_FIELDS)
    kind = data.get("kind", "note")
    if kind not in ("note", "call", "email", "sms"):
        raise ValidationError("kind", "must be note, call, email or sms")
    direction = data.get("direction", "none" if kind == "note" else "outbound")
    summary = data.get("summary", "")
    if not isinstance(summary, str) or not summary.strip():
        raise ValidationError("summary", "write what happened")
    close = data.get("close_followup", True)
    if not isinstance(close, bool):
        raise ValidationError("close_followup", "must be true or false")
    key = data.get("idempotency_key") or request.headers.get("Idempotency-Key")
    if key is not None and (not isinstance(key, str) or not 1 <= len(key) <= 100):
        raise ValidationError("idempotency_key", "must be a string of 1-100 characters")
    at = parse_time(data["at"], "at") if "at" in data else request.app[CLOCK]()
    touch = await store.touches.record(
        TouchInput(
            source_key=f"manual:{user.id}:{key}" if key else f"manual:{uuid.uuid4()}",
            kind=kind,
            direction=direction,
            started_at=at,
            contact_id=contact.id,
            user_id=user.id,
            channel="manual",
            status="logged",
            summary=summary.strip(),
            close_followups=close,
            next_followup=next_followup_of(data, request.app[CLOCK]()),
            followup_assignee_id=contact.owner_id or user.id,
        )
    )
    return web.json_response(touch.to_dict(), status=201 if touch.created else 200)


async def my_day(request: web.Request) -> web.Response:
    """Due follow-ups, callbacks, missed calls and replies for the signed-in user."""
    user = require(request, *ALL_STAFF)
    store = store_of(request)
    zone = user.time_zone or store.time_zone
    due = await request.app[FOLLOWUPS].my_day(user)
    groups: dict[str, list[dict[str, Any]]] = {
        "followups": [],
        "callbacks": [],
        "missed_calls": [],
        "replies": [],
    }
    names = {"callback": "callbacks", "missed_call": "missed_calls", "sms_reply": "replies"}
    for f in due:
        groups[names.get(f.kind, "followups")].append(f.to_dict())
    extra = request.app[MY_DAY_EXTRAS]
    body: dict[str, Any] = {"user": user.username, "time_zone": zone, **groups}
    for fn in extra:
        body.update(await fn(request, user))
    return web.json_response(body)


USER_FIELDS = (
    "username",
    "role",
    "password",
    "display_name",
    "email",
    "extension",
    "interfaces",
    "time_zone",
    "manager",
)


async def add_user(request: web.Request) -> web.Response:
    admin = require(request, "admin")
    store = store_of(request)
    data = await json_body(request, allowed=USER_FIELDS)
    for name in ("username", "role", "password"):
        if name not in data:
            raise ValidationError(name, "is required")
    interfaces = data.get("interfaces", [])
    if not isinstance(interfaces, list) or not all(isinstance(i, str) and i for i in interfaces):
        raise ValidationError("interfaces", "must be a list of interface names such as PJSIP/1001")
    for name in ("display_name", "email", "extension", "time_zone", "manager"):
        if name in data and data[name] is not None and not isinstance(data[name], str):
            raise ValidationError(name, "must be a string")
    await store.users.check_manager(data.get("manager"))
    user = await store.users.add(
        data["username"],
        role=data["role"],
        password=data["password"],
        display_name=data.get("display_name") or "",
        email=data.get("email"),
        extension=data.get("extension"),
        interfaces=interfaces,
        time_zone=data.get("time_zone"),
    )
    if data.get("manager"):
        user = await store.users.set_manager(user.id, data["manager"])
    await store.audit.write(
        "user.add", user_id=admin.id, object_type="user", object_id=user.id, role=user.role
    )
    return web.json_response(user.to_dict(), status=201)


async def update_user(request: web.Request) -> web.Response:
    """An admin changes a user: name, role, extension, email, zone, manager (null: none)."""
    admin = require(request, "admin")
    store = store_of(request)
    user = await store.users.get(path_int(request))
    data = await json_body(
        request, allowed=("display_name", "role", "email", "extension", "time_zone", "manager")
    )
    for name in data:
        if data[name] is not None and not isinstance(data[name], str):
            raise ValidationError(name, "must be a string or null")
    if "role" in data and data["role"] is None:
        raise ValidationError("role", "is required")
    if "manager" in data:  # checked first: nothing is half-changed when it is wrong
        await store.users.check_manager(data["manager"], user.id)
    user = await store.users.update(
        user.id,
        display_name=data.get("display_name", user.display_name) or "",
        role=data.get("role", user.role),
        extension=data.get("extension", user.extension) or None,
        email=data.get("email", user.email) or None,
        time_zone=data.get("time_zone", user.time_zone) or None,
    )
    if "manager" in data:
        user = await store.users.set_manager(user.id, data["manager"])
    await store.audit.write(
        "user.edit", user_id=admin.id, object_type="user", object_id=user.id, fields=sorted(data)
    )
    return web.json_response(user.to_dict())


async def list_users(request: web.Request) -> web.Response:
    require(request, "admin", "manager")
    users = await store_of(request).users.list()
    return web.json_response({"items": [u.to_dict() for u in users], "next_cursor": None})


async def me(request: web.Request) -> web.Response:
    user = require(request)
    return web.json_response(user.to_dict())


def setup(app: web.Application) -> None:
    r = app.router
    r.add_post("/api/v1/contacts", create_contact)
    r.add_get("/api/v1/contacts", list_contacts)
    r.add_get("/api/v1/contacts/{id}", get_contact)
    r.add_patch("/api/v1/contacts/{id}", update_contact)
    r.add_get("/api/v1/contacts/{id}/touches", contact_touches)
    r.add_post("/api/v1/contacts/{id}/touches", add_touch)
    r.add_get("/api/v1/me", me)
    r.add_get("/api/v1/me/day", my_day)
    r.add_post("/api/v1/users", add_user)
    r.add_get("/api/v1/users", list_users)
    r.add_patch("/api/v1/users/{id}", update_user)
