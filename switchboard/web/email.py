"""Email over HTTP: templates (CRUD, preview against a customer), sends, jobs, one-click unsubscribe."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from crm_link.errors import NotFound, ValidationError
from switchboard.keys import EMAIL, STORE
from switchboard.web.api import can_see_contact, parse_time
from switchboard.web.auth import auth_of, require
from switchboard.web.errors import ApiError, json_body, path_int
from switchboard.web.render import render
from templates.email_message import verify_unsubscribe_token
from templates.email_service import EmailService
from templates.render import TemplateTooCostly, render_in_thread

WRITERS = ("rep", "manager", "marketing", "admin")
TEMPLATE_FIELDS = ("name", "subject", "html", "text")


def service(request: web.Request) -> EmailService:
    return request.app[EMAIL]


async def _save(request: web.Request, template_id: int | None) -> web.Response:
    user = require(request, *WRITERS)
    data = await json_body(request, allowed=TEMPLATE_FIELDS)
    svc = service(request)
    try:
        codes = await render_in_thread(
            svc.validate, data.get("name"), data.get("subject"), data.get("html"), data.get("text")
        )
    except TemplateTooCostly as exc:  # the wait ran out
        raise ValidationError("html", str(exc), code="template_too_costly") from None
    # a misspelt merge code is saved (the editor asks first) and named in `warnings`
    _, warnings = await render_in_thread(
        svc.draft_problems, data["subject"], data["html"], data.get("text") or ""
    )
    saved = await request.app[STORE].email.save_template(
        template_id=template_id,
        name=data["name"].strip(),
        subject=data["subject"],
        html=data["html"],
        text=data.get("text") or "",
        merge_codes=codes,
        user_id=user.id,
    )
    return web.json_response(saved | {"warnings": warnings}, status=201 if template_id is None else 200)


async def create_template(request: web.Request) -> web.Response:
    return await _save(request, None)


async def update_template(request: web.Request) -> web.Response:
    user = require(request, *WRITERS)
    template = await request.app[STORE].email.template(path_int(request))
    if user.role == "rep" and template["created_by"] != user.id:
        raise ApiError(403, "forbidden", "a rep can only edit the templates they wrote")
    return await _save(request, path_int(request))


async def delete_template(request: web.Request) -> web.Response:
    user = require(request, "manager", "marketing", "admin")
    await request.app[STORE].email.delete_template(path_int(request))
    await request.app[STORE].audit.write(
        "email.template.delete", user_id=user.id, object_type="template", object_id=path_int(request)
    )
    return web.Response(status=204)


async def get_template(request: web.Request) -> web.Response:
    require(request, *WRITERS)
    return web.json_response(await request.app[STORE].email.template(path_int(request)))


async def list_templates(request: web.Request) -> web.Response:
    require(request, *WRITERS)
    return web.json_response({"items": await request.app[STORE].email.templates(), "next_cursor": None})


async def _contact(request: web.Request, user: Any, value: Any, field: str = "contact_id") -> Any:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(field, "must be a contact id")
    contact = await request.app[STORE].contacts.get(value)
    if not can_see_contact(user, contact):
        raise ApiError(403, "forbidden", f"contact {value} belongs to another salesperson", field)
    return contact


async def _render(svc: EmailService, template: dict[str, Any], contact: Any, user: Any) -> dict[str, Any]:
    """A template rendered for one customer off the event loop (see EmailService.render)."""
    try:
        return await render_in_thread(svc.render, template, contact, user)
    except TemplateTooCostly as exc:  # the wait ran out
        raise ValidationError("html", str(exc), code="template_too_costly") from None


async def preview(request: web.Request) -> web.Response:
    """The template rendered for one customer, or which merge codes that customer lacks."""
    user = require(request, *WRITERS)
    data = await json_body(request, allowed=("contact_id",))
    template = await request.app[STORE].email.template(path_int(request))
    contact = await _contact(request, user, data.get("contact_id"))
    out = await _render(service(request), template, contact, user)
    return web.json_response(out | {"to": contact.email, "email_opt_out": contact.email_opt_out})


def _edited(data: dict[str, Any]) -> tuple[str, str] | None:
    """The subject and text a sender rewrote after the preview, checked; None when not given."""
    if "subject" not in data and "text" not in data:
        return None
    subject, text = data.get("subject"), data.get("text")
    if not isinstance(subject, str) or not subject.strip():
        raise ValidationError("subject", "is empty")
    if len(subject) > 300 or any(ch in subject for ch in "\r\n"):
        raise ValidationError("subject", "must be one line of at most 300 characters")
    if not isinstance(text, str) or not text.strip():
        raise ValidationError("text", "is empty")
    if len(text) > 100_000:
        raise ValidationError("text", "is longer than 100,000 characters")
    return subject.strip(), text


async def send(request: web.Request) -> web.Response:
    """Send a template to one or many customers now or at `send_at`; a job with progress."""
    user = require(request, *WRITERS)
    data = await json_body(
        request,
        allowed=(
            "template_id",
            "contact_ids",
            "tag",
            "send_at",
            "next_followup_at",
            "followup_id",
            "subject",
            "text",
        ),
    )
    edited = _edited(data)
    template_id = data.get("template_id")
    if isinstance(template_id, bool) or not isinstance(template_id, int):
        raise ValidationError("template_id", "must be a template id")
    await request.app[STORE].email.template(template_id)
    ids = data.get("contact_ids")
    if data.get("tag") is not None:
        if ids is not None or not isinstance(data["tag"], str) or not data["tag"].strip():
            raise ValidationError("tag", "give a tag name, or contact_ids, not both")
        ids = await request.app[STORE].contacts.ids_with_tag(data["tag"].strip())
        if not ids:
            raise ValidationError("tag", f"no contact is tagged {data['tag']!r}")
    if not isinstance(ids, list) or not ids:
        raise ValidationError("contact_ids", "must be a non-empty list of contact ids")
    contacts = [await _contact(request, user, cid, "contact_ids") for cid in dict.fromkeys(ids)]
    send_at = parse_time(data["send_at"], "send_at") if data.get("send_at") else None
    nxt = data.get("next_followup_at")
    if nxt not in (None, "none", "cadence"):
        nxt = parse_time(nxt, "next_followup_at").isoformat()
    if len(contacts) == 1:
        template = await request.app[STORE].email.template(template_id)
        out = await _render(service(request), template, contacts[0], user)
        if out["missing"]:
            raise ValidationError(
                "template_id",
                "this customer has no value for: " + ", ".join(out["missing"]),
                code="missing_merge_code",
            )
        if not contacts[0].email:
            raise ValidationError("contact_ids", "this customer has no email address")
        if contacts[0].email_opt_out:
            raise ApiError(409, "unsubscribed", "this customer unsubscribed from email", "contact_ids")
    followup_id = data.get("followup_id")
    if followup_id is not None:
        if isinstance(followup_id, bool) or not isinstance(followup_id, int) or len(contacts) != 1:
            raise ValidationError("followup_id", "must be the id of a follow-up of the one customer emailed")
        try:
            served = await request.app[STORE].followups.get(followup_id)
        except NotFound:
            raise ValidationError("followup_id", f"no follow-up {followup_id}") from None
        if served.contact_id != contacts[0].id or served.status != "open":
            raise ValidationError("followup_id", "must be an open follow-up of this customer")
    if edited is not None and len(contacts) != 1:
        raise ValidationError("subject", "an edited message goes to one customer (one contact id)")
    job_id = await service(request).send(
        template_id,
        contacts,
        user,
        send_at=send_at,
        next_followup=nxt,
        followup_id=followup_id,
        edited=edited,
    )
    await request.app[STORE].audit.write(
        "email.send", user_id=user.id, object_type="email_job", object_id=job_id, recipients=len(contacts)
    )
    return web.json_response(await request.app[STORE].email.job(job_id), status=202)


async def get_job(request: web.Request) -> web.Response:
    user = require(request, *WRITERS)
    job = await request.app[STORE].email.job(path_int(request))
    if user.role == "rep" and job["created_by"] != user.id:
        raise ApiError(403, "forbidden", "a rep can only follow the send jobs they started")
    return web.json_response(job)


RESENDERS = ("manager", "marketing", "admin")  # and the rep who created the job


async def resend_unknown(request: web.Request) -> web.Response:
    """An operator decides the job's emails in doubt (`unknown`, a crash mid-send) were not sent: queue them again."""
    user = require(request, *WRITERS)
    store = request.app[STORE]
    job_id = path_int(request)
    job = await store.email.job(job_id)
    if user.role not in RESENDERS and job["created_by"] != user.id:
        raise ApiError(403, "forbidden", "only a manager, marketing or the sender of this job may resend it")
    if job["state"] == "cancelled":
        raise ApiError(409, "conflict", "the job was cancelled", "state")
    n = await store.email.requeue_unknown(job_id)
    if n:
        service(request).wake()
    await store.audit.write(
        "email.job.resend_unknown", user_id=user.id, object_type="email_job", object_id=job_id, rows=n
    )
    return web.json_response({"requeued": n} | await store.email.job(job_id))


async def unsubscribe(request: web.Request) -> web.Response:
    """GET shows a confirmation; POST (RFC 8058 one-click, or the button) sets the email opt-out."""
    store = request.app[STORE]
    contact_id = verify_unsubscribe_token(
        await store.email.secret("unsubscribe"), request.match_info["token"]
    )
    if contact_id is None:
        return web.Response(status=404, text="This unsubscribe link is not valid.")
    if request.method == "POST":
        await store.contacts.set_flags(contact_id, email_opt_out=True)
        await store.audit.write(
            "email.unsubscribe", user_id=None, object_type="contact", object_id=contact_id
        )
        if request.content_type == "application/x-www-form-urlencoded" and "List-Unsubscribe" in (
            str((await request.post()).get("List-Unsubscribe", ""))
        ):
            return web.Response(text="unsubscribed")
    auth = auth_of(request)
    return render(
        request,
        "unsubscribe.html",
        {
            "done": request.method == "POST",
            "token": request.match_info["token"],
            "csrf": auth.csrf if auth else None,
        },
    )


async def draft_preview(request: web.Request) -> web.Response:
    """A template as it stands in the editor (not yet saved), rendered for one customer; what is
    wrong with each part is named by field in `problems` instead of rendering."""
    user = require(request, *WRITERS)
    data = await json_body(request, allowed=("subject", "html", "text", "contact_id"))
    parts: dict[str, str] = {}
    for field in ("subject", "html", "text"):
        value = data.get(field) or ""
        if not isinstance(value, str):
            raise ValidationError(field, "must be text")
        parts[field] = value
    svc = service(request)
    try:
        problems, misspelt = await render_in_thread(
            svc.draft_problems, parts["subject"], parts["html"], parts["text"]
        )
    except TemplateTooCostly as exc:
        raise ValidationError("html", str(exc), code="template_too_costly") from None
    empty: dict[str, Any] = {
        "subject": None,
        "html": None,
        "text": None,
        "missing": [],
        "unknown_codes": misspelt,
    }
    if data.get("contact_id") in (None, ""):
        return web.json_response(empty | {"problems": problems, "to": None, "email_opt_out": False})
    contact = await _contact(request, user, data.get("contact_id"))
    meta = {"to": contact.email, "email_opt_out": contact.email_opt_out, "contact_name": contact.name}
    if problems:
        return web.json_response(empty | {"problems": problems} | meta)
    try:
        out = await _render(svc, parts | {"text": parts["text"] or None}, contact, user)
    except ValidationError as exc:
        return web.json_response(empty | {"problems": {exc.field or "html": exc.reason}} | meta)
    return web.json_response(out | {"problems": {}, "unknown_codes": {}} | meta)


async def templates_page(request: web.Request) -> web.Response:
    require(request, *WRITERS)
    return render(request, "email_templates.html", {"templates": await request.app[STORE].email.templates()})


def setup(app: web.Application) -> None:
    r = app.router
    r.add_post("/api/v1/email/templates", create_template)
    r.add_get("/api/v1/email/templates", list_templates)
    r.add_get("/api/v1/email/templates/{id}", get_template)
    r.add_put("/api/v1/email/templates/{id}", update_template)
    r.add_delete("/api/v1/email/templates/{id}", delete_template)
    r.add_post("/api/v1/email/templates/{id}/preview", preview)
    r.add_post("/api/v1/email/preview", draft_preview)
    r.add_post("/api/v1/email/send", send)
    r.add_get("/api/v1/email/jobs/{id}", get_job)
    r.add_post("/api/v1/email/jobs/{id}/resend-unknown", resend_unknown)
    r.add_get("/email/unsubscribe/{token}", unsubscribe)
    r.add_post("/email/unsubscribe/{token}", unsubscribe)
    r.add_get("/email/templates", templates_page)
