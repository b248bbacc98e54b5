"""Click-to-call: `POST /api/v1/calls` rings the rep's phone, then dials the customer."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from crm_link.errors import ValidationError
from crm_link.models import Touch, User
from crm_link.phones import normalize_phone
from cti.ami.client import AmiError
from switchboard.keys import (
    ASTERISK,
    CALL_SERVICES,
    CLOCK,
    DIALER,
    FOLLOWUPS,
    SETTINGS,
    STORE,
    TWILIO_CLIENT,
    TWILIO_VOICE,
)
from switchboard.web.api import can_see_contact
from switchboard.web.auth import require
from switchboard.web.errors import ApiError, json_body


async def click_to_call(request: web.Request) -> web.Response:
    user = require(request, "rep", "manager", "admin")
    store = request.app[STORE]
    settings = request.app[SETTINGS]
    data = await json_body(request, allowed=("contact_id", "number", "from_extension"))
    contact = None
    if data.get("contact_id") is not None:
        cid = data["contact_id"]
        if isinstance(cid, bool) or not isinstance(cid, int):
            raise ValidationError("contact_id", "must be a contact id")
        contact = await store.contacts.get(cid)
        if not can_see_contact(user, contact):
            raise ApiError(403, "forbidden", "this customer belongs to another salesperson")
        if contact.do_not_call:
            raise ApiError(409, "do_not_call", "this customer is on the do-not-call list", "contact_id")
        raw = data.get("number") or (contact.phones[0].e164 if contact.phones else None)
        if raw is None:
            raise ValidationError("contact_id", "this customer has no phone number")
    elif data.get("number"):
        raw = data["number"]
    else:
        raise ValidationError("number", "give contact_id or number")
    if not isinstance(raw, str):
        raise ValidationError("number", "must be a phone number")
    number = normalize_phone(raw, store.region, field="number").e164
    extension = data.get("from_extension") or user.extension
    if request.app.get(ASTERISK) is None and request.app.get(TWILIO_VOICE) is not None:
        return await _twilio_click_to_call(request, user, contact, number)
    if not extension or not isinstance(extension, str):
        raise ValidationError("from_extension", "you have no extension; give from_extension")
    if user.role == "rep" and extension != user.extension:
        raise ApiError(403, "forbidden", "a rep can only call from their own extension", "from_extension")
    source = request.app.get(ASTERISK)
    if source is None:
        raise ApiError(
            503, "no_phone_system", "click-to-call needs the Asterisk connector ([asterisk] enabled)"
        )
    directory = source.directory
    owner = user if extension == user.extension else await directory.user_for(extension)
    interface = directory.dial_interface_of(owner) or directory.dial_interface_of(None, extension)
    if interface is None:
        raise ValidationError("from_extension", "no interface to ring: see [asterisk] agent_dial")
    caller_name = (contact.name if contact else number).replace('"', "")
    try:
        originate_id = await source.click_to_call(
            interface=interface,
            number=number,
            context=settings.asterisk.originate_context,
            caller_id=f'"{caller_name}" <{number}>',
            variables={
                "SWITCHBOARD_USER": user.username,
                "SWITCHBOARD_CONTACT": str(contact.id if contact else ""),
            },
            timeout_s=settings.asterisk.originate_timeout_s,
        )
    except AmiError as exc:
        raise ApiError(503, "pbx_unavailable", str(exc)) from None
    await store.audit.write(
        "call.originate",
        user_id=user.id,
        object_type="contact",
        object_id=contact.id if contact else "",
        number=number,
        interface=interface,
    )
    return web.json_response(
        {
            "id": originate_id,
            "state": "originating",
            "interface": interface,
            "number": number,
            "contact_id": contact.id if contact else None,
        },
        status=202,
    )


async def _twilio_click_to_call(request: web.Request, user: Any, contact: Any, number: str) -> web.Response:
    from twilio.base.exceptions import TwilioRestException

    settings = request.app[SETTINGS]
    hooks = request.app[TWILIO_VOICE]
    if not settings.twilio.caller_id:
        raise ApiError(503, "no_caller_id", "set twilio.caller_id (the number customers see)")
    try:
        sid = await hooks.click_to_call(
            request.app[TWILIO_CLIENT],
            username=user.username,
            number=number,
            caller_id=settings.twilio.caller_id,
        )
    except TwilioRestException as exc:
        raise ApiError(502, "twilio_error", f"Twilio refused the call: {exc.msg} (code {exc.code})") from None
    except TimeoutError:
        # the call may exist; creating it again could ring the customer twice
        raise ApiError(
            504, "ambiguous", "Twilio did not answer in time; check the call list before retrying"
        ) from None
    await request.app[STORE].audit.write(
        "call.originate",
        user_id=user.id,
        object_type="contact",
        object_id=contact.id if contact else "",
        number=number,
        call_sid=sid,
    )
    return web.json_response(
        {
            "id": sid,
            "state": "originating",
            "interface": f"client:{user.username}",
            "number": number,
            "contact_id": contact.id if contact else None,
        },
        status=202,
    )


async def _rep_may_dispose(request: web.Request, user: User, source: str, call_id: str, touch: Touch) -> bool:
    """A rep: a call they are on or took, or an unanswered one of a customer they may see."""
    if touch.user_id == user.id:
        return True
    calls = request.app.get(CALL_SERVICES[source])
    if calls is not None and calls.is_on_call(user.id, call_id):
        return True
    if touch.user_id is not None or touch.contact_id is None:
        return False
    return can_see_contact(user, await request.app[STORE].contacts.get(touch.contact_id))


async def disposition(request: web.Request) -> web.Response:
    """The rep's note and disposition on a call (during or after it), and the next follow-up."""
    from switchboard.web.api import parse_time

    user = require(request, "rep", "manager", "admin")
    store = request.app[STORE]
    call_id = request.match_info["call_id"]
    data = await json_body(
        request, allowed=("disposition", "note", "summary", "next_followup_at", "followup_id")
    )
    touch = None
    for source in ("asterisk", "twilio"):
        touch = await store.touches.by_source_key(f"{source}:{call_id}")
        if touch is not None:
            break
    if touch is None:
        raise ApiError(404, "not_found", f"no call {call_id}")
    if user.role == "rep" and not await _rep_may_dispose(request, user, source, call_id, touch):
        raise ApiError(403, "forbidden", "this call was not yours and its customer belongs to someone else")
    disp = data.get("disposition")
    dialer = request.app.get(DIALER)
    allowed = request.app[SETTINGS].dialer.dispositions
    if disp is not None and disp not in allowed:
        raise ValidationError("disposition", f"must be one of: {', '.join(allowed)}")
    note = data.get("note", data.get("summary", ""))
    if not isinstance(note, str):
        raise ValidationError("note", "must be text")
    due = parse_time(data["next_followup_at"], "next_followup_at") if data.get("next_followup_at") else None
    if disp == "call back" and due is None:
        raise ValidationError("next_followup_at", "a call back needs a time")
    if due is not None and due <= request.app[CLOCK]():
        raise ValidationError("next_followup_at", "is in the past; give a time from now on")
    followup_id = data.get("followup_id")
    if followup_id is not None and (isinstance(followup_id, bool) or not isinstance(followup_id, int)):
        raise ValidationError("followup_id", "must be a follow-up id")
    updated = await store.touches.set_note(touch.id, note.strip() or touch.summary, disposition=disp)
    if touch.contact_id is not None:
        if disp == "do not call":
            await store.contacts.set_flags(touch.contact_id, do_not_call=True)
        if disp is not None:
            # the call closes the follow-up it served (no answer / busy: retried, then escalated)
            await request.app[FOLLOWUPS].call_result(
                touch.contact_id, user, disp, note=note.strip(), touch_id=touch.id, followup_id=followup_id
            )
        if due is not None:
            # one follow-up per call: saving the note again moves it, never adds a second
            f, made = await store.followups.create(
                touch.contact_id,
                due,
                kind="callback" if disp == "call back" else "followup",
                note=note.strip() or (disp or ""),
                assignee_id=user.id,
                source_key=f"call-next:{touch.id}",
                created_by_touch_id=touch.id,
            )
            if not made and f.status == "open":
                await store.followups.reschedule(f.id, due)
    if dialer is not None and disp is not None:
        # a call of a call list: its entry is closed, retried or called back as well
        await dialer.on_touch_disposition(touch.id, disp, note.strip(), due)
    await store.audit.write(
        "call.disposition",
        user_id=user.id,
        object_type="touch",
        object_id=touch.id,
        disposition=disp,
        at=str(request.app[CLOCK]()),
    )
    return web.json_response(updated.to_dict())


def setup(app: web.Application) -> None:
    app.router.add_post("/api/v1/calls", click_to_call)
    app.router.add_post("/api/v1/calls/{call_id}/disposition", disposition)
