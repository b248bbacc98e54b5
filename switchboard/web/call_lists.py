"""Call lists over HTTP: segments, lists (build, control, progress), the agent's preview and
progressive dialing, dispositions; and the list page."""

from __future__ import annotations

from datetime import date
from typing import Any

from aiohttp import web

from campaigns.dialer.backends import DialFailed
from campaigns.dialer.hours import CallingHours
from campaigns.dialer.service import Dialer
from crm_link.call_lists import ListSpec
from crm_link.errors import ValidationError
from crm_link.models import decode_cursor, encode_cursor
from crm_link.phones import phones_from_csv
from switchboard.keys import DIALER, FOLLOWUPS, STORE
from switchboard.web.api import parse_time
from switchboard.web.auth import require
from switchboard.web.errors import ApiError, json_body, path_int, query_limit
from switchboard.web.render import render

MANAGERS = ("manager", "admin")
AGENTS = ("rep", "manager", "admin")
LIST_FIELDS = (
    "name",
    "mode",
    "contact_ids",
    "tag",
    "segment",
    "csv",
    "priority",
    "max_attempts",
    "retry_minutes",
    "busy_retry_minutes",
    "calling_hours",
    "window",
    "agents",
    "start",
    "survey_id",
)


def dialer_of(request: web.Request) -> Dialer:
    dialer = request.app.get(DIALER)
    if dialer is None:
        raise ApiError(503, "dialer_unavailable", "the dialer is not running")
    return dialer


def _int(data: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = data.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValidationError(name, f"must be a whole number from {low} to {high}")
    return value


# -- segments ------------------------------------------------------------------------------------


async def list_segments(request: web.Request) -> web.Response:
    require(request, "manager", "admin", "marketing")
    items = [s.to_dict() for s in await request.app[STORE].segments.list()]
    return web.json_response({"items": items, "next_cursor": None})


async def create_segment(request: web.Request) -> web.Response:
    user = require(request, "manager", "admin", "marketing")
    data = await json_body(request, allowed=("name", "description", "filter"))
    if "filter" not in data:
        raise ValidationError("filter", "is required")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise ValidationError("description", "must be text")
    seg = await request.app[STORE].segments.create(
        data.get("name", ""), data["filter"], description=description, user_id=user.id
    )
    preview = await request.app[STORE].segments.preview(seg.filter)
    return web.json_response(seg.to_dict() | {"count": preview["count"]}, status=201)


async def update_segment(request: web.Request) -> web.Response:
    """Save a segment again (from the builder): its name, filter and optionally its description."""
    require(request, "manager", "admin", "marketing")
    data = await json_body(request, allowed=("name", "description", "filter"))
    if "filter" not in data:
        raise ValidationError("filter", "is required")
    description = data.get("description")
    if description is not None and not isinstance(description, str):
        raise ValidationError("description", "must be text")
    store = request.app[STORE]
    seg = await store.segments.update(
        path_int(request), data.get("name", ""), data["filter"], description=description
    )
    preview = await store.segments.preview(seg.filter)
    return web.json_response(seg.to_dict() | {"count": preview["count"]})


async def preview_segment(request: web.Request) -> web.Response:
    require(request, "manager", "admin", "marketing")
    data = await json_body(request, allowed=("filter", "segment"))
    store = request.app[STORE]
    f = data["filter"] if "filter" in data else (await store.segments.get(data.get("segment", ""))).filter
    return web.json_response(await store.segments.preview(f))


async def delete_segment(request: web.Request) -> web.Response:
    require(request, "manager", "admin", "marketing")
    await request.app[STORE].segments.delete(path_int(request))
    return web.Response(status=204)


# -- lists ---------------------------------------------------------------------------------------


async def _audience(
    request: web.Request, data: dict[str, Any]
) -> tuple[list[int], list[tuple[str, int | None]], dict[str, Any]]:
    """Contact ids and bare numbers of a list from exactly one of contact_ids, tag, segment, csv."""
    store = request.app[STORE]
    given = [k for k in ("contact_ids", "tag", "segment", "csv") if k in data]
    if len(given) != 1:
        raise ValidationError("contact_ids", "give exactly one of contact_ids, tag, segment, csv")
    kind = given[0]
    value = data[kind]
    if kind == "contact_ids":
        if not isinstance(value, list) or not all(
            isinstance(i, int) and not isinstance(i, bool) for i in value
        ):
            raise ValidationError("contact_ids", "must be a list of contact ids")
        if len(value) > 200_000:
            raise ValidationError("contact_ids", "at most 200,000 per request")
        return value, [], {"contact_ids": len(value)}
    if kind == "tag":
        if not isinstance(value, str) or not value.strip():
            raise ValidationError("tag", "must be a tag name")
        return await store.contacts.ids_with_tag(value.strip()), [], {"tag": value.strip()}
    if kind == "segment":
        f = await store.segments.resolve(value)
        ids = await store.segments.ids(f)
        label = value if not isinstance(value, dict) else "inline"
        return ids, [], {"segment": label, "filter": f}
    numbers: list[tuple[str, int | None]] = []
    for e164 in phones_from_csv(value, store.region, field="csv"):
        ids = await store.contacts.ids_by_phone(e164)
        numbers.append((e164, ids[0] if ids else None))
    return [], numbers, {"csv": len(numbers)}


async def _list_json(request: web.Request, list_id: int) -> dict[str, Any]:
    store = request.app[STORE]
    cl = await store.call_lists.get(list_id)
    stats = await store.call_lists.stats(list_id)
    dialer = request.app.get(DIALER)
    ready = []
    if dialer is not None:
        for uid, lid in dialer.ready.items():
            if lid == list_id:
                u = await store.users.get(uid)
                ready.append(
                    {"user_id": uid, "username": u.username, "free": dialer.agent_free(uid, dialer.clock())}
                )
    return cl.to_dict() | stats | {"ready_agents": ready}


def _visible(user: Any, cl: Any) -> bool:
    return user.role in MANAGERS or (user.role == "rep" and (not cl.agent_ids or user.id in cl.agent_ids))


async def create_list(request: web.Request) -> web.Response:
    user = require(request, *MANAGERS)
    store = request.app[STORE]
    data = await json_body(request, allowed=LIST_FIELDS)
    name = data.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        raise ValidationError("name", "is required (at most 200 characters)")
    mode = data.get("mode", "preview")
    if mode not in ("preview", "progressive"):
        raise ValidationError("mode", "must be preview or progressive")
    spec = ListSpec(
        name=name.strip(),
        mode=mode,
        priority=_int(data, "priority", 0, -100, 100),
        max_attempts=_int(data, "max_attempts", 3, 1, 20),
        retry_minutes=_int(data, "retry_minutes", 60, 1, 60 * 24 * 30),
        busy_retry_minutes=_int(data, "busy_retry_minutes", 240, 1, 60 * 24 * 30),
    )
    survey_id = data.get("survey_id")
    if survey_id is not None:
        if isinstance(survey_id, bool) or not isinstance(survey_id, int) or survey_id < 1:
            raise ValidationError("survey_id", "must be a survey id")
        if not await store.surveys.exists(survey_id):
            raise ValidationError("survey_id", f"no survey {survey_id}")
        spec.survey_id = survey_id
    hours = data.get("calling_hours")
    if hours is not None:
        if not isinstance(hours, dict) or set(hours) != {"start", "end"}:
            raise ValidationError("calling_hours", 'must be {"start": "HH:MM", "end": "HH:MM"}')
        CallingHours.of(hours["start"], hours["end"])  # validates
        spec.calling_start, spec.calling_end = hours["start"], hours["end"]
    window = data.get("window")
    if window is not None:
        if not isinstance(window, dict) or set(window) - {"start", "end"}:
            raise ValidationError("window", 'must be {"start": "YYYY-MM-DD", "end": "YYYY-MM-DD"}')
        for key in ("start", "end"):
            if window.get(key) is not None:
                try:
                    date.fromisoformat(window[key])
                except (TypeError, ValueError):
                    raise ValidationError(f"window.{key}", "must be a date YYYY-MM-DD") from None
        if window.get("start") and window.get("end") and window["start"] > window["end"]:
            raise ValidationError("window.end", "must not be before the start")
        spec.window_start, spec.window_end = window.get("start"), window.get("end")
    agent_ids = []
    agents = data.get("agents", [])
    if not isinstance(agents, list) or not all(isinstance(a, str) for a in agents):
        raise ValidationError("agents", "must be a list of usernames")
    for username in agents:
        agent = await store.users.by_username(username)
        if agent is None or agent.role not in ("rep", "manager"):
            raise ValidationError("agents", f"{username!r} is not a rep or manager")
        agent_ids.append(agent.id)
    contact_ids, numbers, source = await _audience(request, data)
    spec.source = source
    if not contact_ids and not numbers:
        raise ValidationError("contact_ids", "the audience is empty: nobody to call")
    dialer = dialer_of(request)
    cl, summary = await store.call_lists.create(
        spec,
        contact_ids=contact_ids,
        numbers=numbers,
        agent_ids=agent_ids,
        created_by=user.id,
        now=dialer.clock(),
    )
    if data.get("start"):
        await store.call_lists.set_state(cl.id, "running", dialer.clock())
        dialer.wake()
    await store.audit.write(
        "call_list.create", user_id=user.id, object_type="call_list", object_id=cl.id, added=summary["added"]
    )
    return web.json_response(await _list_json(request, cl.id) | {"build": summary}, status=201)


async def get_list(request: web.Request) -> web.Response:
    user = require(request, *AGENTS)
    cl = await request.app[STORE].call_lists.get(path_int(request))
    if not _visible(user, cl):
        raise ApiError(403, "forbidden", "you are not an agent of this list")
    return web.json_response(await _list_json(request, cl.id))


async def list_lists(request: web.Request) -> web.Response:
    user = require(request, *AGENTS)
    items = [
        await _list_json(request, cl.id)
        for cl in await request.app[STORE].call_lists.all()
        if _visible(user, cl)
    ]
    return web.json_response({"items": items, "next_cursor": None})


async def control_list(request: web.Request) -> web.Response:
    user = require(request, *MANAGERS)
    store = request.app[STORE]
    dialer = dialer_of(request)
    list_id = path_int(request)
    cl = await store.call_lists.get(list_id)
    action = request.match_info["action"]
    allowed = {
        "start": (("draft", "paused"), "running"),
        "resume": (("paused",), "running"),
        "pause": (("running",), "paused"),
        "stop": (("draft", "running", "paused"), "stopped"),
    }
    if action not in allowed:
        raise ApiError(404, "not_found", f"no action {action}")
    states, target = allowed[action]
    if cl.state not in states:
        raise ApiError(409, "conflict", f"cannot {action} a list that is {cl.state}", "state")
    await store.call_lists.set_state(list_id, target, dialer.clock())
    if target != "running":
        for uid, lid in list(dialer.ready.items()):
            if lid == list_id:
                dialer.unready(uid)  # calls in flight finish; nothing new is dialed
    dialer.wake()
    await store.audit.write(
        f"call_list.{action}", user_id=user.id, object_type="call_list", object_id=list_id
    )
    return web.json_response(await _list_json(request, list_id))


async def add_entries(request: web.Request) -> web.Response:
    user = require(request, *MANAGERS)
    store = request.app[STORE]
    list_id = path_int(request)
    await store.call_lists.get(list_id)
    data = await json_body(request, allowed=("contact_ids", "tag", "segment", "csv"))
    contact_ids, numbers, _ = await _audience(request, data)
    summary = await store.call_lists.add_entries(
        list_id, contact_ids=contact_ids, numbers=numbers, now=dialer_of(request).clock()
    )
    await store.audit.write(
        "call_list.add", user_id=user.id, object_type="call_list", object_id=list_id, added=summary["added"]
    )
    return web.json_response(await _list_json(request, list_id) | {"build": summary})


async def list_entries(request: web.Request) -> web.Response:
    user = require(request, *AGENTS)
    store = request.app[STORE]
    cl = await store.call_lists.get(path_int(request))
    if not _visible(user, cl):
        raise ApiError(403, "forbidden", "you are not an agent of this list")
    limit = query_limit(request, default=100)
    cursor = request.query.get("cursor")
    (after,) = decode_cursor(cursor, int) if cursor else (0,)  # the last entry id of the previous page
    entries = await store.call_lists.entries(
        cl.id, state=request.query.get("state") or None, limit=limit + 1, after_id=after
    )
    items = [e.to_dict() for e in entries[:limit]]
    nxt = encode_cursor(entries[limit - 1].id) if len(entries) > limit else None
    return web.json_response({"items": items, "next_cursor": nxt})


# -- the agent -----------------------------------------------------------------------------------


async def next_call(request: web.Request) -> web.Response:
    user = require(request, "rep", "manager")
    data = await json_body(request, allowed=("list_id",)) if request.can_read_body else {}
    list_id = data.get("list_id")
    if list_id is not None and (isinstance(list_id, bool) or not isinstance(list_id, int)):
        raise ValidationError("list_id", "must be a list id")
    item = await dialer_of(request).next_call(user, list_id)
    if item is None:
        return web.json_response({"entry": None, "message": "nothing is due now in your lists"})
    return web.json_response(item)


async def dial_entry(request: web.Request) -> web.Response:
    user = require(request, "rep", "manager")
    try:
        attempt = await dialer_of(request).preview_dial(user, path_int(request))
    except DialFailed as exc:
        raise ApiError(503, "no_phone_system", str(exc)) from None
    return web.json_response(attempt, status=202)


async def skip_entry(request: web.Request) -> web.Response:
    user = require(request, "rep", "manager")
    data = await json_body(request, allowed=("reason", "later"))
    entry = await dialer_of(request).skip_entry(
        user, path_int(request), data.get("reason", ""), later=bool(data.get("later"))
    )
    return web.json_response(entry.to_dict())


async def set_ready(request: web.Request) -> web.Response:
    user = require(request, "rep", "manager")
    data = await json_body(request, allowed=("list_id", "ready"))
    list_id = data.get("list_id") if data.get("ready", True) else None
    if list_id is not None and (isinstance(list_id, bool) or not isinstance(list_id, int)):
        raise ValidationError("list_id", "must be a list id")
    return web.json_response(await dialer_of(request).set_ready(user, list_id))


async def agent_state(request: web.Request) -> web.Response:
    user = require(request, "rep", "manager")
    dialer = dialer_of(request)
    # from the store: a call placed by another instance (the one holding the PBX) is listed too
    flights = []
    for a in await request.app[STORE].call_lists.open_attempts(agent_id=user.id):
        here = dialer.in_flight.get(a.id)
        call_id = a.call_id or (here.call_id or here.named if here is not None else None)
        flights.append({"attempt_id": a.id, "entry_id": a.entry_id, "list_id": a.list_id, "call_id": call_id})
    return web.json_response({"ready_list_id": dialer.ready.get(user.id), "calls": flights})


async def attempt_disposition(request: web.Request) -> web.Response:
    user = require(request, "rep", "manager", "admin")
    data = await json_body(request, allowed=("disposition", "note", "callback_at"))
    note = data.get("note", "")
    if not isinstance(note, str):
        raise ValidationError("note", "must be text")
    disposition = data.get("disposition")
    if not isinstance(disposition, str):
        raise ValidationError("disposition", "is required")
    callback_at = parse_time(data["callback_at"], "callback_at") if data.get("callback_at") else None
    attempt_id = path_int(request)
    loop = request.app[FOLLOWUPS]
    before = await request.app[STORE].call_lists.attempt(attempt_id)
    # the follow-up this call served, found before the disposition adds its own call-back
    served = await loop.served(before.contact_id, user) if before.contact_id is not None else None
    attempt = await dialer_of(request).disposition(
        user, attempt_id, disposition, note=note.strip(), callback_at=callback_at
    )
    if served is not None:
        # closed with the call's result (no answer / busy: retried, then escalated)
        await loop.done(served, disposition, note=note.strip(), by=user, touch_id=attempt.touch_id)
    return web.json_response(attempt.to_dict())


async def list_page(request: web.Request) -> web.Response:
    require(request, *AGENTS)
    dialer = request.app.get(DIALER)
    return render(request, "call_lists.html", {"dispositions": list(dialer.dispositions if dialer else ())})


def setup(app: web.Application) -> None:
    app.router.add_get("/api/v1/segments", list_segments)
    app.router.add_post("/api/v1/segments", create_segment)
    app.router.add_post("/api/v1/segments/preview", preview_segment)
    app.router.add_delete("/api/v1/segments/{id}", delete_segment)
    app.router.add_put("/api/v1/segments/{id}", update_segment)
    app.router.add_get("/api/v1/call-lists", list_lists)
    app.router.add_post("/api/v1/call-lists", create_list)
    app.router.add_get("/api/v1/call-lists/{id}", get_list)
    app.router.add_get("/api/v1/call-lists/{id}/entries", list_entries)
    app.router.add_post("/api/v1/call-lists/{id}/entries", add_entries)
    app.router.add_post("/api/v1/call-lists/{id}/{action}", control_list)
    app.router.add_post("/api/v1/agent/next-call", next_call)
    app.router.add_post("/api/v1/agent/ready", set_ready)
    app.router.add_get("/api/v1/agent/dialer", agent_state)
    app.router.add_post("/api/v1/agent/entries/{id}/dial", dial_entry)
    app.router.add_post("/api/v1/agent/entries/{id}/skip", skip_entry)
    app.router.add_post("/api/v1/call-attempts/{id}/disposition", attempt_disposition)
    app.router.add_get("/call-lists", list_page)
