"""Admin's user pages (edit, reset a password, deactivate) and everyone's own account page."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from aiohttp import web

from crm_link.errors import Conflict, ValidationError
from switchboard.keys import STORE
from switchboard.web.auth import require
from switchboard.web.errors import path_int
from switchboard.web.render import render

# audit actions in words (anything else is shown as recorded)
ACTIONS = {
    "login": "signed in",
    "login.failed": "failed to sign in",
    "user.add": "added user",
    "user.edit": "changed user",
    "user.password": "reset the password of",
    "user.own_password": "changed their own password",
    "user.disable": "deactivated",
    "user.enable": "reactivated",
    "contact.view_on_call": "opened, during a call,",
    "sms_template.add": "saved SMS text",
    "sms_template.edit": "changed SMS text",
    "sms_template.delete": "deleted SMS text",
}


def audit_rows(entries: list[dict[str, Any]], users: dict[int, str]) -> list[dict[str, Any]]:
    """Audit entries as sentences: who (linked), did what, to whom or what (linked where there is a page)."""
    out = []
    for a in entries:
        kind, oid = a["object_type"], a["object_id"]
        href = None
        label = f"{kind} {oid}".strip()
        if kind == "user" and str(oid).isdigit():
            href, label = f"/admin/users/{oid}", users.get(int(oid), f"user {oid}")
        elif kind == "contact" and str(oid).isdigit():
            href, label = f"/contacts/{oid}", f"contact #{oid}"
        who = a["user"] or a["detail"].get("username") or "someone"
        out.append(
            {
                "at": a["at"],
                "who": who,
                "who_href": f"/admin/users/{a['user_id']}" if a.get("user_id") else None,
                "what": ACTIONS.get(a["action"], a["action"].replace(".", " ").replace("_", " ")),
                "object": label if kind or oid else "",
                "object_href": href,
            }
        )
    return out


def _back(target: str, error: str | None = None, done: str | None = None) -> web.HTTPSeeOther:
    if error:
        return web.HTTPSeeOther(f"{target}?error={quote(error)}")
    return web.HTTPSeeOther(f"{target}?done={quote(done or '')}" if done else target)


async def user_page(request: web.Request) -> web.Response:
    require(request, "admin")
    store = request.app[STORE]
    user = await store.users.get(path_int(request))
    # who may be their manager: the active managers and admins other than themselves
    managers = [
        u for u in await store.users.list() if u.active and u.role in ("manager", "admin") and u.id != user.id
    ]
    return render(
        request,
        "admin_user.html",
        {
            "user": user,
            "managers": managers,
            "error": request.query.get("error"),
            "done": request.query.get("done"),
        },
    )


async def user_edit(request: web.Request) -> web.StreamResponse:
    admin = require(request, "admin")
    store = request.app[STORE]
    user_id = path_int(request)
    form = await request.post()
    target = f"/admin/users/{user_id}"
    manager = str(form.get("manager", "")).strip() or None
    try:
        if "manager" in form:  # checked before anything changes
            await store.users.check_manager(manager, user_id)
        await store.users.update(
            user_id,
            display_name=str(form.get("display_name", "")).strip(),
            role=str(form.get("role", "")),
            extension=str(form.get("extension", "")).strip() or None,
            email=str(form.get("email", "")).strip() or None,
            time_zone=str(form.get("time_zone", "")).strip() or None,
        )
        if "manager" in form:
            await store.users.set_manager(user_id, manager)
    except (ValidationError, Conflict) as exc:
        raise _back(target, f"{exc.field}: {exc.reason}") from None
    await store.audit.write("user.edit", user_id=admin.id, object_type="user", object_id=user_id)
    raise _back(target, done="Saved.")


async def user_password(request: web.Request) -> web.StreamResponse:
    admin = require(request, "admin")
    store = request.app[STORE]
    user_id = path_int(request)
    form = await request.post()
    target = f"/admin/users/{user_id}"
    try:
        await store.users.set_password(user_id, str(form.get("password", "")))
    except ValidationError as exc:
        raise _back(target, f"{exc.field}: {exc.reason}") from None
    await store.audit.write("user.password", user_id=admin.id, object_type="user", object_id=user_id)
    raise _back(target, done="Password reset; their sessions ended. Tell them the new one.")


async def user_active(request: web.Request) -> web.StreamResponse:
    admin = require(request, "admin")
    store = request.app[STORE]
    user_id = path_int(request)
    form = await request.post()
    active = form.get("active") == "1"
    target = f"/admin/users/{user_id}"
    if user_id == admin.id and not active:
        raise _back(target, "You cannot deactivate yourself; ask another admin.")
    await store.users.set_active(user_id, active)
    await store.audit.write(
        "user.enable" if active else "user.disable", user_id=admin.id, object_type="user", object_id=user_id
    )
    raise _back(target, done="Reactivated." if active else "Deactivated: signed out and API tokens revoked.")


async def account_page(request: web.Request) -> web.Response:
    require(request)
    return render(
        request, "account.html", {"error": request.query.get("error"), "done": request.query.get("done")}
    )


async def account_password(request: web.Request) -> web.StreamResponse:
    """A user changes their own password (knowing the current one); other sessions end, this one stays."""
    from switchboard.web.pages import COOKIE, SESSION_LIFETIME, _cookie_secure

    user = require(request)
    store = request.app[STORE]
    form = await request.post()
    if not await store.users.verify_password(user.id, str(form.get("current", ""))):
        raise _back("/account", "current: that is not your current password")
    new = str(form.get("password", ""))
    if new != str(form.get("confirm", "")):
        raise _back("/account", "confirm: the two new passwords differ")
    try:
        await store.users.set_password(user.id, new)
    except ValidationError as exc:
        raise _back("/account", f"{exc.field}: {exc.reason}") from None
    await store.audit.write("user.own_password", user_id=user.id, object_type="user", object_id=user.id)
    sid, _csrf = await store.users.create_session(user.id, SESSION_LIFETIME)
    resp = _back("/account", done="Password changed; your other sessions were signed out.")
    resp.set_cookie(
        COOKIE,
        sid,
        httponly=True,
        samesite="Lax",
        secure=_cookie_secure(request),
        max_age=int(SESSION_LIFETIME.total_seconds()),
        path="/",
    )
    raise resp


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/admin/users/{id}", user_page)
    r.add_post("/admin/users/{id}", user_edit)
    r.add_post("/admin/users/{id}/password", user_password)
    r.add_post("/admin/users/{id}/active", user_active)
    r.add_get("/account", account_page)
    r.add_post("/account/password", account_password)
