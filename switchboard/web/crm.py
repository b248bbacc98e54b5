"""CRM write-back over HTTP: deliveries (list, re-drive, the admin page) and the CRM's side door
(contact upsert by external id, merge)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from crm_link.crm_events import DELIVERY_STATES
from crm_link.errors import ValidationError
from switchboard.keys import SETTINGS, STORE
from switchboard.web.auth import require
from switchboard.web.errors import json_body, path_int, query_int, query_limit
from switchboard.web.render import render
from switchboard.webhooks.ctx import CRM_WORKER


def _state(request: web.Request) -> str | None:
    state = request.query.get("state") or None
    if state is not None and state not in DELIVERY_STATES:
        raise ValidationError("state", f"must be one of {', '.join(DELIVERY_STATES)}")
    return state


def _subscriber(request: web.Request, value: Any, field: str = "subscriber") -> str | None:
    if value in (None, ""):
        return None
    names = [w.name for w in request.app[SETTINGS].crm.webhooks]
    if value not in names:
        raise ValidationError(field, f"no webhook named {value!r} (configured: {', '.join(names) or 'none'})")
    return str(value)


async def list_deliveries(request: web.Request) -> web.Response:
    """`GET /api/v1/crm/deliveries?state=&subscriber=&contact_id=&limit=&cursor=`, newest first."""
    require(request, "admin")
    page = await request.app[STORE].crm_events.deliveries(
        state=_state(request),
        subscriber=_subscriber(request, request.query.get("subscriber")),
        contact_id=query_int(request, "contact_id"),
        limit=query_limit(request),
        cursor=request.query.get("cursor") or None,
    )
    return web.json_response({"items": [d.to_dict() for d in page.items], "next_cursor": page.next_cursor})


async def summary(request: web.Request) -> web.Response:
    """`GET /api/v1/crm/deliveries/summary`: counts by subscriber and state, the backlog."""
    require(request, "admin")
    counts = await request.app[STORE].crm_events.counts()
    return web.json_response(counts | {"worker": request.app[CRM_WORKER].health()["subscribers"]})


async def get_delivery(request: web.Request) -> web.Response:
    require(request, "admin")
    return web.json_response((await request.app[STORE].crm_events.delivery(path_int(request))).to_dict())


async def redrive_one(request: web.Request) -> web.Response:
    """`POST /api/v1/crm/deliveries/{id}/redrive`: a dead delivery queued again."""
    admin = require(request, "admin")
    store = request.app[STORE]
    d = await store.crm_events.delivery(path_int(request))
    if d.state != "dead":
        raise ValidationError(
            "id", f"delivery {d.id} is {d.state}, only dead ones are re-driven", code="conflict"
        )
    n = await store.crm_events.redrive([d.id])
    await store.audit.write("crm.redrive", user_id=admin.id, object_type="delivery", object_id=d.id, count=n)
    request.app[CRM_WORKER].poke()
    return web.json_response({"redriven": n})


async def redrive_all(request: web.Request) -> web.Response:
    """`POST /api/v1/crm/deliveries/redrive` `{subscriber?, ids?}`: dead deliveries queued again."""
    admin = require(request, "admin")
    body = await json_body(request, allowed=("subscriber", "ids"))
    sub = _subscriber(request, body.get("subscriber"))
    ids = body.get("ids")
    if ids is not None and (not isinstance(ids, list) or not all(isinstance(i, int) for i in ids)):
        raise ValidationError("ids", "must be a list of delivery ids")
    store = request.app[STORE]
    n = await store.crm_events.redrive(ids, subscriber=sub)
    await store.audit.write("crm.redrive", user_id=admin.id, object_type="delivery", subscriber=sub, count=n)
    request.app[CRM_WORKER].poke()
    return web.json_response({"redriven": n})


async def upsert_contacts(request: web.Request) -> web.Response:
    """`POST /api/v1/crm/contacts` `{contacts: [{external_id, ...}]}`: per-row results."""
    require(request, "admin")
    body = await json_body(request, allowed=("contacts",))
    rows = body.get("contacts")
    if not isinstance(rows, list) or not rows:
        raise ValidationError("contacts", "must be a non-empty list of contacts")
    results = await request.app[STORE].contact_sync.upsert(rows)
    counts = {
        s: sum(1 for r in results if r.status == s) for s in ("created", "updated", "unchanged", "error")
    }
    status = 200 if counts["error"] < len(results) else 400
    return web.json_response({"results": [r.to_dict() for r in results], "counts": counts}, status=status)


async def merge_contacts(request: web.Request) -> web.Response:
    """`POST /api/v1/contacts/{id}/merge` `{from: id}`: the other contact folded into this one."""
    user = require(request, "admin", "manager")
    body = await json_body(request, allowed=("from",))
    other = body.get("from")
    if not isinstance(other, int) or isinstance(other, bool) or other <= 0:
        raise ValidationError("from", "must be the id of the contact to merge into this one")
    result = await request.app[STORE].contact_sync.merge(path_int(request), other, user_id=user.id)
    contact = await request.app[STORE].contacts.get(result["id"])
    return web.json_response(result | {"contact": contact.to_dict()})


async def page(request: web.Request) -> web.Response:
    """`/admin/crm`: subscribers, backlog, dead letters with their reasons, re-drive."""
    require(request, "admin")
    store = request.app[STORE]
    state = _state(request) or "dead"
    deliveries = await store.crm_events.deliveries(state=state, limit=query_limit(request, default=100))
    return render(
        request,
        "admin_crm.html",
        {
            "counts": await store.crm_events.counts(),
            "worker": request.app[CRM_WORKER].health(),
            "webhooks": request.app[SETTINGS].crm.webhooks,
            "deliveries": deliveries.items,
            "state": state,
            "states": DELIVERY_STATES,
            "notice": request.query.get("notice"),
        },
    )


async def page_redrive(request: web.Request) -> web.StreamResponse:
    """The page's re-drive button (one delivery, or every dead one)."""
    admin = require(request, "admin")
    form = await request.post()
    store = request.app[STORE]
    raw = str(form.get("delivery_id", "")).strip()
    if raw:
        if not raw.isdigit():
            raise ValidationError("delivery_id", "must be a delivery id")
        n = await store.crm_events.redrive([int(raw)])
    else:
        n = await store.crm_events.redrive(None)
    await store.audit.write("crm.redrive", user_id=admin.id, object_type="delivery", object_id=raw, count=n)
    request.app[CRM_WORKER].poke()
    raise web.HTTPSeeOther(f"/admin/crm?notice=Re-driven:+{n}")


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/api/v1/crm/deliveries", list_deliveries)
    r.add_get("/api/v1/crm/deliveries/summary", summary)
    r.add_post("/api/v1/crm/deliveries/redrive", redrive_all)
    r.add_get("/api/v1/crm/deliveries/{id}", get_delivery)
    r.add_post("/api/v1/crm/deliveries/{id}/redrive", redrive_one)
    r.add_post("/api/v1/crm/contacts", upsert_contacts)
    r.add_post("/api/v1/contacts/{id}/merge", merge_contacts)
    r.add_get("/admin/crm", page)
    r.add_post("/admin/crm/redrive", page_redrive)
