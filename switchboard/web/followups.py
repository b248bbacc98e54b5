"""Follow-ups and cadences over HTTP: list/create, done/reschedule/no-answer/hand-off/claim, cadence
rules, the team's figures, and the manager's page."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web

from crm_link.errors import NotFound, ValidationError
from crm_link.followups import end_of_day
from crm_link.models import FollowUp, User, parse_id
from followups.service import FollowupService
from switchboard.keys import CLOCK, FOLLOWUPS, SETTINGS, STORE, SURVEYS
from switchboard.web.api import ALL_STAFF, parse_time, visible_contact
from switchboard.web.auth import require
from switchboard.web.errors import ApiError, json_body, path_int, query_limit
from switchboard.web.render import render

WORKERS = ("rep", "manager", "admin")
RULE_ADMINS = ("manager", "admin")


def service(request: web.Request) -> FollowupService:
    return request.app[FOLLOWUPS]


def _text(data: dict[str, Any], name: str, *, required: bool = False, max_len: int = 2000) -> str:
    value = data.get(name, "")
    if value is None:
        value = ""
    if not isinstance(value, str) or len(value) > max_len:
        raise ValidationError(name, f"must be text of at most {max_len} characters")
    if required and not value.strip():
        raise ValidationError(name, "is required")
    return value.strip()


async def _followup_for(request: web.Request, user: User, *, claiming: bool = False) -> FollowUp:
    """The follow-up in the path if this user may act on it: theirs, or unclaimed in their pool (or
    unassigned on a customer they may see); managers and admins any."""
    f = await request.app[STORE].followups.get(path_int(request))
    if user.role in ("manager", "admin") or f.assignee_id == user.id:
        return f
    if f.assignee_id is None and (f.pool in service(request).pools_of(user)):
        return f
    if f.assignee_id is None and f.pool is None and not claiming:
        await visible_contact(request, user, f.contact_id)
        return f
    raise ApiError(403, "forbidden", f"follow-up {f.id} is not yours")


async def list_followups(request: web.Request) -> web.Response:
    user = require(request, *ALL_STAFF)
    store = request.app[STORE]
    allowed = (
        "assignee",
        "pool",
        "state",
        "due_before",
        "due_after",
        "contact_id",
        "rule",
        "limit",
        "cursor",
    )
    for key in request.query:
        if key not in allowed:
            raise ApiError(400, "unknown_field", f"unknown query parameter {key!r}", key)
    q = request.query
    svc = service(request)
    assignee_id = None
    mine = None
    if q.get("assignee"):
        found = await store.users.by_username(q["assignee"])
        if found is None:
            raise ValidationError("assignee", f"no user named {q['assignee']!r}")
        if user.role == "rep" and found.id != user.id:
            raise ApiError(403, "forbidden", "a rep sees their own follow-ups", "assignee")
        assignee_id = found.id
    pool = q.get("pool") or None
    if pool is not None:
        await svc.check_target(f"pool:{pool}", "pool")
        if user.role == "rep" and pool not in svc.pools_of(user):
            raise ApiError(403, "forbidden", f"you are not in the pool {pool!r}", "pool")
    if user.role == "rep" and assignee_id is None and pool is None:
        mine = (user.id, svc.pools_of(user))
    contact_id = parse_id(q["contact_id"], "contact_id") if q.get("contact_id") else None
    if contact_id is not None and user.role == "rep":
        await visible_contact(request, user, contact_id)
        mine = None
    cadence_id = None
    if q.get("rule"):
        rules = {r.name: r.id for r in await store.followups.cadences()}
        if q["rule"] in rules:
            cadence_id = rules[q["rule"]]
        elif q["rule"].isdigit() and int(q["rule"]) in rules.values():
            cadence_id = int(q["rule"])
        else:
            raise ValidationError("rule", f"no cadence {q['rule']!r}")
    page = await store.followups.search(
        assignee_id=assignee_id,
        pool=pool,
        mine=mine,
        state=q.get("state", "open"),
        due_before=parse_time(q["due_before"], "due_before") if q.get("due_before") else None,
        due_after=parse_time(q["due_after"], "due_after") if q.get("due_after") else None,
        contact_id=contact_id,
        cadence_id=cadence_id,
        limit=query_limit(request),
        cursor=q.get("cursor"),
    )
    return web.json_response({"items": [f.to_dict() for f in page.items], "next_cursor": page.next_cursor})


async def create_followup(request: web.Request) -> web.Response:
    user = require(request, *WORKERS)
    data = await json_body(request, allowed=("contact_id", "due_at", "reason", "assignee", "pool"))
    cid = data.get("contact_id")
    if isinstance(cid, bool) or not isinstance(cid, int):
        raise ValidationError("contact_id", "must be a contact id")
    try:
        contact = await visible_contact(request, user, cid)
    except NotFound:
        raise ValidationError("contact_id", f"no contact {cid}") from None
    if "due_at" not in data:
        raise ValidationError("due_at", "is required")
    due = parse_time(data["due_at"], "due_at")
    reason = _text(data, "reason", required=True)
    if data.get("assignee") and data.get("pool"):
        raise ValidationError("pool", "give an assignee or a pool, not both")
    target = None
    if data.get("assignee"):
        target = f"user:{_text(data, 'assignee')}"
    elif data.get("pool"):
        target = f"pool:{_text(data, 'pool')}"
    field = "pool" if data.get("pool") else "assignee"
    try:
        f = await service(request).create(contact.id, due, reason, assignee=target, by=user)
    except ValidationError as exc:
        if exc.field == "assignee":
            raise ValidationError(field, exc.reason) from None
        raise
    return web.json_response(f.to_dict(), status=201)


async def followup_done(request: web.Request) -> web.Response:
    user = require(request, *WORKERS)
    f = await _followup_for(request, user)
    data = await json_body(request, allowed=("result", "note"))
    result = _text(data, "result", required=True, max_len=100)
    updated = await service(request).done(f, result, note=_text(data, "note"), by=user)
    return web.json_response(updated.to_dict())


async def followup_no_answer(request: web.Request) -> web.Response:
    user = require(request, *WORKERS)
    f = await _followup_for(request, user)
    data = await json_body(request, allowed=("note",))
    updated = await service(request).no_answer(f, note=_text(data, "note"), by=user)
    return web.json_response(updated.to_dict())


async def followup_reschedule(request: web.Request) -> web.Response:
    user = require(request, *WORKERS)
    f = await _followup_for(request, user)
    data = await json_body(request, allowed=("due_at", "note"))
    if "due_at" not in data:
        raise ValidationError("due_at", "is required")
    updated = await service(request).reschedule(f, parse_time(data["due_at"], "due_at"), _text(data, "note"))
    return web.json_response(updated.to_dict())


async def followup_handoff(request: web.Request) -> web.Response:
    user = require(request, *WORKERS)
    f = await _followup_for(request, user)
    data = await json_body(request, allowed=("to", "note"))
    to = _text(data, "to", required=True, max_len=200)
    updated = await service(request).handoff(f, to, _text(data, "note"), by=user)
    return web.json_response(updated.to_dict())


async def followup_claim(request: web.Request) -> web.Response:
    user = require(request, *WORKERS)
    f = await _followup_for(request, user, claiming=True)
    await json_body(request, allowed=()) if request.can_read_body else None
    updated = await service(request).claim(f, by=user)
    return web.json_response(updated.to_dict())


# cadences -----------------------------------------------------------------------------------


async def list_cadences(request: web.Request) -> web.Response:
    require(request, *ALL_STAFF)
    rows = await request.app[STORE].followups.cadences()
    return web.json_response(
        {"items": [r.to_dict() for r in rows], "date_fields": await service(request).date_fields()}
    )


async def _check_sms_surveys(request: web.Request, data: Any) -> None:
    """An SMS step that carries a survey must be askable in one text (named by its step)."""
    steps = data.get("steps") if isinstance(data, dict) else None
    for i, s in enumerate(steps if isinstance(steps, list) else []):
        if isinstance(s, dict) and s.get("channel") == "sms" and isinstance(s.get("survey_id"), int):
            await request.app[SURVEYS].sms_text(s["survey_id"], f"steps[{i}].survey_id")


async def create_cadence(request: web.Request) -> web.Response:
    user = require(request, *RULE_ADMINS)
    data = await json_body(request)
    await _check_sms_surveys(request, data)
    row = await service(request).save_rule(None, data)
    await request.app[STORE].audit.write(
        "cadence.create", user_id=user.id, object_type="cadence", object_id=row.id
    )
    return web.json_response(row.to_dict(), status=201)


async def update_cadence(request: web.Request) -> web.Response:
    user = require(request, *RULE_ADMINS)
    cid = path_int(request)
    await request.app[STORE].followups.cadence(cid)
    data = await json_body(request)
    await _check_sms_surveys(request, data)
    row = await service(request).save_rule(cid, data)
    await request.app[STORE].audit.write(
        "cadence.update", user_id=user.id, object_type="cadence", object_id=cid
    )
    return web.json_response(row.to_dict())


async def delete_cadence(request: web.Request) -> web.Response:
    user = require(request, *RULE_ADMINS)
    cid = path_int(request)
    cancelled = await request.app[STORE].followups.delete_cadence(cid)
    await request.app[STORE].audit.write(
        "cadence.delete", user_id=user.id, object_type="cadence", object_id=cid, cancelled=cancelled
    )
    return web.json_response({"deleted": cid, "cancelled_followups": cancelled})


# the team ---------------------------------------------------------------------------------


async def _team(request: web.Request) -> dict[str, Any]:
    zone = request.app[SETTINGS].server.time_zone
    now = request.app[CLOCK]()
    day_end = end_of_day(now, zone)
    day_start = day_end - timedelta(days=1)
    local = now.astimezone(ZoneInfo(zone)).date()
    week_start = datetime.combine(
        local - timedelta(days=local.weekday()), datetime.min.time(), ZoneInfo(zone)
    )
    rows = await request.app[STORE].followups.figures_by_assignee(
        day_start=day_start, day_end=day_end, week_start=week_start, now=now
    )
    return {"rows": rows, "week_start": week_start.date().isoformat()}


async def team_figures(request: web.Request) -> web.Response:
    require(request, *RULE_ADMINS)
    return web.json_response(await _team(request))


async def team_page(request: web.Request) -> web.Response:
    require(request, *RULE_ADMINS)
    store = request.app[STORE]
    chosen = request.query.get("assignee", "")
    items: list[FollowUp] = []
    if chosen:
        found = await store.users.by_username(chosen)
        if found is not None:
            items = (await store.followups.search(assignee_id=found.id, limit=200)).items
    escalated = [
        f
        for f in (await store.followups.search(pool="managers", limit=200)).items
        if f.escalated_reason is not None
    ]
    return render(
        request,
        "followups_team.html",
        {
            **await _team(request),
            "chosen": chosen,
            "items": items,
            "escalated": escalated,
            "now": request.app[CLOCK](),
        },
    )


def setup(app: web.Application) -> None:
    app.router.add_get("/api/v1/followups", list_followups)
    app.router.add_post("/api/v1/followups", create_followup)
    app.router.add_get("/api/v1/followups/team", team_figures)
    app.router.add_post("/api/v1/followups/{id}/done", followup_done)
    app.router.add_post("/api/v1/followups/{id}/no-answer", followup_no_answer)
    app.router.add_post("/api/v1/followups/{id}/reschedule", followup_reschedule)
    app.router.add_post("/api/v1/followups/{id}/handoff", followup_handoff)
    app.router.add_post("/api/v1/followups/{id}/claim", followup_claim)
    app.router.add_get("/api/v1/cadences", list_cadences)
    app.router.add_post("/api/v1/cadences", create_cadence)
    app.router.add_put("/api/v1/cadences/{id}", update_cadence)
    app.router.add_delete("/api/v1/cadences/{id}", delete_cadence)
    app.router.add_get("/followups/team", team_page)
