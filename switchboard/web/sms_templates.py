"""Saved SMS texts over the API: list (everyone who texts), create, change and delete (managers, marketing, admins)."""

from __future__ import annotations

from aiohttp import web

from switchboard.keys import STORE
from switchboard.web.auth import require
from switchboard.web.errors import json_body, path_int

EDITORS = ("manager", "marketing", "admin")


async def list_templates(request: web.Request) -> web.Response:
    require(request)
    items = await request.app[STORE].sms_templates.list()
    return web.json_response({"items": [t.to_dict() for t in items]})


async def create_template(request: web.Request) -> web.Response:
    user = require(request, *EDITORS)
    data = await json_body(request, allowed=("name", "text"))
    store = request.app[STORE]
    t = await store.sms_templates.save(data.get("name"), data.get("text"), user_id=user.id)
    await store.audit.write("sms_template.add", user_id=user.id, object_type="sms_template", object_id=t.id)
    return web.json_response(t.to_dict(), status=201)


async def update_template(request: web.Request) -> web.Response:
    user = require(request, *EDITORS)
    data = await json_body(request, allowed=("name", "text"))
    store = request.app[STORE]
    t = await store.sms_templates.save(
        data.get("name"), data.get("text"), user_id=user.id, template_id=path_int(request)
    )
    await store.audit.write("sms_template.edit", user_id=user.id, object_type="sms_template", object_id=t.id)
    return web.json_response(t.to_dict())


async def delete_template(request: web.Request) -> web.Response:
    user = require(request, *EDITORS)
    store = request.app[STORE]
    template_id = path_int(request)
    await store.sms_templates.delete(template_id)
    await store.audit.write(
        "sms_template.delete", user_id=user.id, object_type="sms_template", object_id=template_id
    )
    return web.json_response({"deleted": template_id})


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/api/v1/sms/templates", list_templates)
    r.add_post("/api/v1/sms/templates", create_template)
    r.add_put("/api/v1/sms/templates/{id}", update_template)
    r.add_delete("/api/v1/sms/templates/{id}", delete_template)
