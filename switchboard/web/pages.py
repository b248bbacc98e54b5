"""Server-rendered pages: login, My Day, contacts, a contact's history, admin."""

from __future__ import annotations

import hmac
import math
import secrets
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from aiohttp import web

from crm_link.contacts import validate_contact
from crm_link.errors import Conflict, NotFound, ValidationError
from crm_link.models import Contact, User
from crm_link.touches import NextFollowup, TouchInput
from switchboard.keys import CLOCK, LIMITER, PROXY_TRUST, SETTINGS, SMS, STORE, SURVEYS
from switchboard.web.api import prospect_for_call, visible_contact
from switchboard.web.auth import COOKIE, SESSION_LIFETIME, auth_of, require
from switchboard.web.client_address import UNKNOWN, parse_address
from switchboard.web.errors import ApiError, path_int
from switchboard.web.render import render

PRELOGIN = "sb_prelogin"


def _safe_next(target: str | None) -> str:
    """A path on this site to go to after login, else "/".

    Judged as a browser would read it (WHATWG URL parsing): tabs and newlines removed, leading and
    trailing spaces and control characters dropped, backslashes taken as slashes; what is left must
    be a path that starts with one slash, with neither scheme nor host.
    """
    if not target:
        return "/"
    cleaned = "".join(ch for ch in target if ch not in "\t\n\r").strip("".join(map(chr, range(0x21))))
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in cleaned):
        return "/"
    path = cleaned.replace("\\", "/")
    if not path.startswith("/") or path.startswith("//"):
        return "/"
    parts = urlsplit(path)
    if parts.scheme or parts.netloc:
        return "/"
    return path


def _cookie_secure(request: web.Request) -> bool:
    server = request.app[SETTINGS].server
    if server.cookie_secure is not None:
        return server.cookie_secure
    return server.public_url.startswith("https://")


async def login_form(request: web.Request, error: str | None = None, status: int = 200) -> web.Response:
    token = secrets.token_urlsafe(16)
    resp = render(
        request,
        "login.html",
        {"error": error, "login_token": token, "next": _safe_next(request.query.get("next"))},
        status=status,
    )
    resp.set_cookie(
        PRELOGIN, token, httponly=True, samesite="Strict", secure=_cookie_secure(request), max_age=3600
    )
    return resp


def _addresses(request: web.Request, client: str) -> dict[str, str]:
    """What the audit log records of where a request came from: the client's address, and the
    proxy's when a trusted one passed it on."""
    peer = str(parse_address(request.remote or "") or UNKNOWN)
    return {"remote": client} if client == peer else {"remote": client, "proxy": peer}


async def login_submit(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    username = str(form.get("username", "")).strip().lower()
    password = str(form.get("password", ""))
    sent = str(form.get("login_token", ""))
    if not sent or not hmac.compare_digest(sent, request.cookies.get(PRELOGIN, "")):
        return await login_form(request, "Your login form expired; please try again.", 403)
    peer = request.app[PROXY_TRUST].client_of(request)
    limiter = request.app[LIMITER]
    wait = await limiter.retry_after(peer, username)
    if wait > 0:
        seconds = math.ceil(wait)
        resp = await login_form(
            request, f"Too many failed attempts. Try again in {seconds} second{'s' * (seconds != 1)}.", 429
        )
        resp.headers["Retry-After"] = str(seconds)
        return resp
    store = request.app[STORE]
    user = await store.users.authenticate(username, password) if username and password else None
    if user is None:
        await limiter.failed(peer, username)
        await store.audit.write("login.failed", user_id=None, username=username, **_addresses(request, peer))
        return await login_form(request, "Wrong username or password.", 401)
    await limiter.succeeded(peer, username)
    sid, _csrf = await store.users.create_session(user.id, SESSION_LIFETIME)
    await store.audit.write("login", user_id=user.id, **_addresses(request, peer))
    resp = web.HTTPSeeOther(_safe_next(str(form.get("next", "/"))))
    resp.set_cookie(
        COOKIE,
        sid,
        httponly=True,
        samesite="Lax",
        secure=_cookie_secure(request),
        max_age=int(SESSION_LIFETIME.total_seconds()),
        path="/",
    )
    resp.del_cookie(PRELOGIN)
    raise resp


async def logout(request: web.Request) -> web.StreamResponse:
    auth = auth_of(request)
    if auth.session_id:
        await request.app[STORE].users.end_session(auth.session_id)
    resp = web.HTTPSeeOther("/login")
    resp.del_cookie(COOKIE, path="/")
    raise resp


def _local(dt: datetime | None, zone: str) -> str:
    if dt is None:
        return ""
    return dt.astimezone(ZoneInfo(zone)).strftime("%a %d %b %Y %H:%M")


def _zone(request: web.Request) -> str:
    user = auth_of(request).user
    return (user.time_zone if user else None) or request.app[SETTINGS].server.time_zone


async def my_day_page(request: web.Request) -> web.Response:
    user = require(request)
    store = request.app[STORE]
    zone = _zone(request)
    from switchboard.dialer_ctx import lists_for
    from switchboard.keys import DIALER, FOLLOWUPS

    loop = request.app[FOLLOWUPS]
    due = await loop.my_day(user)

    dialer = request.app.get(DIALER)
    call_lists = await lists_for(store, dialer, user) if dialer is not None else []
    # each due customer's first number, for the Call button beside them
    phones = {
        c.id: (c.phones[0].e164, c.do_not_call)
        for c in await store.contacts.get_many(sorted({f.contact_id for f in due}))
        if c.phones
    }
    return render(
        request,
        "my_day.html",
        {
            "due": due,
            "zone": zone,
            "local": lambda d: _local(d, zone),
            "now": request.app[CLOCK](),
            "call_lists": call_lists,
            "phones": phones,
            "me_id": user.id,
            "pools": loop.pools_of(user),
            "dispositions": list(request.app[SETTINGS].dialer.dispositions),
        },
    )


async def contacts_page(request: web.Request) -> web.Response:
    user = require(request)
    store = request.app[STORE]
    q = request.query.get("q", "").strip()
    error = None
    page = None
    phone = None
    if q:
        # a query that reads as a phone number searches by number, otherwise by name/email
        digits = sum(ch.isdigit() for ch in q)
        phone = q if digits >= 7 and digits >= len(q.replace(" ", "")) - 4 else None
        try:
            page = await store.contacts.search(
                q=None if phone else q,
                phone=phone,
                owner_id=user.id if user.role == "rep" else None,
                limit=50,
                cursor=request.query.get("cursor") or None,
            )
        except ValidationError as exc:
            error = f"{exc.field}: {exc.reason}"
    elif request.query.get("tag"):
        page = await store.contacts.search(
            tag=request.query["tag"], owner_id=user.id if user.role == "rep" else None, limit=50
        )
    return render(request, "contacts.html", {"q": q, "page": page, "error": error, "phone": phone})


async def _visible(request: web.Request, user: User) -> Contact:
    """The contact of the page if this user may open it (see api.visible_contact), else 403."""
    try:
        return await visible_contact(request, user, path_int(request))
    except ApiError as exc:
        if exc.status != 403:
            raise
        raise web.HTTPForbidden(text="This customer belongs to another salesperson.") from None


CONSENT_SOURCES = {
    "in_person": "in person",
    "web_form": "web form",
    "reply_start": "replied START",
    "import": "imported",
}


async def _call_surveys(
    request: web.Request, contact_id: int, history: list[Any]
) -> dict[int, dict[str, Any]]:
    """The survey answered on each call of this history, by the call's touch id (its name, the
    current answers as `Question answer` lines, dissatisfied, corrected), and the survey lines those
    calls carry are dropped from `history`: a call's answers are shown inside its own entry."""
    from followups.surveys import summary_lines

    calls = {t.id for t in history if t.kind == "call"}
    linked = {
        t.payload["survey_response_id"]: t
        for t in history
        if t.source_key.startswith("survey:")
        and t.payload.get("call_touch_id") in calls
        and t.payload.get("survey_response_id") is not None
    }
    if not linked:
        return {}
    out: dict[int, dict[str, Any]] = {}
    for r in await request.app[STORE].surveys.responses(contact_id=contact_id, limit=500):
        note = linked.get(r.id)
        if note is None:
            continue
        try:
            row, spec = await request.app[SURVEYS].definition(r.survey_id, r.survey_version)
        except NotFound:
            continue
        out[note.payload["call_touch_id"]] = {
            "name": row.name,
            "version": row.version,
            "lines": summary_lines(spec, r.answers) or ["no answers"],
            "dissatisfied": r.dissatisfied,
            "corrected": r.answers_version > 1,
            "response_id": r.id,
        }
        history.remove(note)
    return out


async def contact_page(request: web.Request) -> web.Response:
    user = require(request)
    store = request.app[STORE]
    contact = await _visible(request, user)
    zone = _zone(request)
    history = await store.touches.history(contact.id, limit=100)
    timeline = list(history.items)
    surveys = await _call_surveys(request, contact.id, timeline)
    followups = await store.touches.open_followups(contact.id)
    from crm_link.recordings import RecordingFilter

    # recordings of this customer's calls, by the call's touch (reps: only their own calls)
    recs = await store.recordings.search(
        RecordingFilter(contact_id=contact.id, only_user_id=user.id if user.role == "rep" else None),
        limit=100,
    )
    by_touch: dict[int, list[dict[str, Any]]] = {}
    for r in recs.items:
        if r["touch_id"] is not None:
            by_touch.setdefault(r["touch_id"], []).append(r)
    staff = user.role in ("rep", "manager", "admin")
    require_consent = request.app[SETTINGS].sms.require_consent
    return render(
        request,
        "contact.html",
        {
            "contact": contact,
            "history": timeline,
            "call_surveys": surveys,
            "followups": followups,
            "zone": zone,
            "local": lambda d: _local(d, zone),
            "error": request.query.get("error"),
            "email_templates": await store.email.templates(),
            "sms_templates": await store.sms_templates.list(),
            "recordings": by_touch,
            "can_call": staff,
            # managers and admins edit the customer and give them to another salesperson here
            "owners": [u for u in await store.users.list() if u.role in ("rep", "manager") and u.active]
            if user.role in ("manager", "admin")
            else [],
            "can_text": staff and request.app.get(SMS) is not None,
            # reps (for customers they may see), managers and admins record consent to texts
            "can_edit_consent": staff,
            "require_consent": require_consent,
            "texting_ok": not contact.sms_opt_out and (contact.sms_consent or not require_consent),
            "consent_sources": CONSENT_SOURCES,
        },
    )


async def contact_note_submit(request: web.Request) -> web.StreamResponse:
    """The contact page's "log a touch" form."""
    user = require(request, "rep", "manager", "admin")
    store = request.app[STORE]
    contact = await _visible(request, user)
    form = await request.post()
    summary = str(form.get("summary", "")).strip()
    kind = str(form.get("kind", "note"))
    if kind not in ("note", "call", "email", "sms") or not summary:
        raise web.HTTPSeeOther(f"/contacts/{contact.id}?error=Write+what+happened")
    when = str(form.get("next_followup_at", "")).strip()
    nxt: NextFollowup = None
    if form.get("no_followup"):
        nxt = "none"
    elif when:
        try:
            nxt = datetime.fromisoformat(when).replace(tzinfo=ZoneInfo(_zone(request)))
        except ValueError:
            raise web.HTTPSeeOther(f"/contacts/{contact.id}?error=Next+follow-up+is+not+a+date") from None
        if nxt <= request.app[CLOCK]():
            raise web.HTTPSeeOther(f"/contacts/{contact.id}?error=Next+follow-up+is+in+the+past")
    await store.touches.record(
        TouchInput(
            source_key=f"manual:{user.id}:{str(form.get('idempotency_key', '')) or secrets.token_hex(8)}",
            kind=kind,
            direction="none" if kind == "note" else "outbound",
            started_at=request.app[CLOCK](),
            contact_id=contact.id,
            user_id=user.id,
            channel="manual",
            status="logged",
            summary=summary,
            close_followups=True,
            next_followup=nxt,
            followup_note=str(form.get("followup_note", "")).strip(),
            followup_assignee_id=contact.owner_id or user.id,
        )
    )
    raise web.HTTPSeeOther(f"/contacts/{contact.id}")


async def contact_new_page(request: web.Request) -> web.Response:
    require(request, "rep", "manager", "admin", "marketing")
    return render(
        request,
        "contact_new.html",
        {
            "phone": request.query.get("phone", ""),
            "call_id": request.query.get("call_id", ""),
            "error": None,
            "form": {},
        },
    )


async def contact_new_submit(request: web.Request) -> web.StreamResponse:
    user = require(request, "rep", "manager", "admin", "marketing")
    store = request.app[STORE]
    form = await request.post()
    data: dict[str, Any] = {k: str(form.get(k, "")).strip() for k in ("first_name", "last_name", "email")}
    if not data["email"]:
        data.pop("email")
    if phone := str(form.get("phone", "")).strip():
        data["phones"] = [phone]
    if user.role == "rep":
        data["owner"] = user.username
    call_id = str(form.get("call_id", "")).strip()
    try:
        fields = validate_contact(data, region=store.region)
        if call_id:  # from an unknown caller's pop: that call becomes the new customer's
            contact = await prospect_for_call(request, user, fields, call_id)
        else:
            contact = await store.contacts.create(fields)
    except (ValidationError, Conflict) as exc:
        error = f"{exc.field}: {exc.reason}"
    except NotFound:
        error = f"call_id: no call {call_id}"
    except ApiError as exc:
        error = f"{exc.field}: {exc.message}" if exc.field else exc.message
    else:
        raise web.HTTPSeeOther(f"/contacts/{contact.id}")
    return render(
        request,
        "contact_new.html",
        {"phone": phone, "call_id": call_id, "error": error, "form": data},
        status=400,
    )


async def admin_page(request: web.Request) -> web.Response:
    require(request, "admin")
    from switchboard.web.admin_pages import audit_rows

    users = await request.app[STORE].users.list()
    audit = audit_rows(await request.app[STORE].audit.recent(30), {u.id: u.username for u in users})
    return render(
        request, "admin.html", {"users": users, "error": request.query.get("error"), "audit": audit}
    )


async def admin_add_user(request: web.Request) -> web.StreamResponse:
    admin = require(request, "admin")
    store = request.app[STORE]
    form = await request.post()
    try:
        user = await store.users.add(
            str(form.get("username", "")).strip().lower(),
            role=str(form.get("role", "")),
            password=str(form.get("password", "")),
            display_name=str(form.get("display_name", "")).strip(),
            extension=str(form.get("extension", "")).strip() or None,
            interfaces=[i.strip() for i in str(form.get("interfaces", "")).split(",") if i.strip()],
        )
    except (ValidationError, Conflict) as exc:
        from urllib.parse import quote

        raise web.HTTPSeeOther(f"/admin?error={quote(f'{exc.field}: {exc.reason}')}") from None
    await store.audit.write(
        "user.add", user_id=admin.id, object_type="user", object_id=user.id, role=user.role
    )
    raise web.HTTPSeeOther("/admin")


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/login", login_form)
    r.add_post("/login", login_submit)
    r.add_post("/logout", logout)
    r.add_get("/", my_day_page)
    r.add_get("/contacts", contacts_page)
    r.add_get("/contacts/new", contact_new_page)
    r.add_post("/contacts/new", contact_new_submit)
    r.add_get("/contacts/{id:\\d+}", contact_page)
    r.add_post("/contacts/{id:\\d+}/touches", contact_note_submit)
    r.add_get("/admin", admin_page)
    r.add_post("/admin/users", admin_add_user)
