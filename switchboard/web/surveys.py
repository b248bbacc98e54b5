"""Surveys over HTTP: definitions (versions), responses (once per call, the call's disposition),
a manager's correction and resolution, and the manager's survey builder page."""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web

from campaigns.dialer import SURVEY_DONE
from crm_link.errors import NotFound, ValidationError
from crm_link.models import FollowUp, User
from followups.survey_service import SurveyService
from reports import svg
from reports.csvout import to_csv
from reports.periods import parse_period
from reports.surveys import COLUMNS, survey_report
from switchboard.keys import CLOCK, DIALER, FOLLOWUPS, SETTINGS, STORE, SURVEYS
from switchboard.web.api import visible_contact
from switchboard.web.auth import require
from switchboard.web.errors import ApiError, json_body, path_int
from switchboard.web.render import render

MANAGERS = ("manager", "admin")
AGENTS = ("rep", "manager", "admin")


def service(request: web.Request) -> SurveyService:
    return request.app[SURVEYS]


def _id(data: dict[str, Any], name: str) -> int | None:
    v = data.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValidationError(name, "must be an id")
    return v


def _text(data: dict[str, Any], name: str, max_len: int = 2000) -> str:
    v = data.get(name)
    if not isinstance(v, str) or not v.strip() or len(v) > max_len:
        raise ValidationError(name, f"is required (text of at most {max_len} characters)")
    return v.strip()


async def list_surveys(request: web.Request) -> web.Response:
    require(request)
    rows = await request.app[STORE].surveys.all()
    return web.json_response({"items": [r.to_dict() for r in rows], "next_cursor": None})


async def create_survey(request: web.Request) -> web.Response:
    user = require(request, *MANAGERS)
    row = await service(request).save(None, await json_body(request), user)
    return web.json_response(row.to_dict(), status=201)


async def get_survey(request: web.Request) -> web.Response:
    require(request)
    version = request.query.get("version")
    if version is not None and not version.isdigit():
        raise ValidationError("version", "must be a version number")
    row = await request.app[STORE].surveys.get(path_int(request), int(version) if version else None)
    return web.json_response(row.to_dict())


async def update_survey(request: web.Request) -> web.Response:
    user = require(request, *MANAGERS)
    sid = path_int(request)
    await request.app[STORE].surveys.get(sid)
    row = await service(request).save(sid, await json_body(request), user)
    return web.json_response(row.to_dict())


async def submit_response(request: web.Request) -> web.Response:
    """POST /api/v1/surveys/{id}/responses {contact_id, call_id?, attempt_id?, answers} -> 201; the
    answers are locked, and on a call list's call they are its disposition (completed survey)."""
    user = require(request, *AGENTS)
    sid = path_int(request)
    store = request.app[STORE]
    await store.surveys.get(sid)
    data = await json_body(request, allowed=("contact_id", "call_id", "attempt_id", "answers"))
    contact_id = _id(data, "contact_id")
    if contact_id is None:
        raise ValidationError("contact_id", "is required")
    try:
        await visible_contact(request, user, contact_id)
    except NotFound:
        raise ValidationError("contact_id", f"no contact {contact_id}") from None
    call_id = data.get("call_id")
    if call_id is not None and (not isinstance(call_id, str) or not call_id or len(call_id) > 200):
        raise ValidationError("call_id", "must be the id of a call")
    attempt_id = _id(data, "attempt_id")
    if "answers" not in data:
        raise ValidationError("answers", "is required")
    loop = request.app[FOLLOWUPS]
    # the follow-up this call serves, found before the answers can add an escalation of their own
    served = await loop.served(contact_id, user)
    if attempt_id is not None:
        attempt = await store.call_lists.attempt(attempt_id)
        if user.role == "rep" and attempt.agent_id not in (None, user.id):
            raise ApiError(403, "forbidden", "this call was made by another agent", "attempt_id")
        if attempt.state == "cancelled":
            raise ValidationError("attempt_id", "this attempt never reached the customer")
    response = await service(request).submit(
        sid, contact_id, data["answers"], by=user, call_id=call_id, attempt_id=attempt_id
    )
    await _disposition(request, user, served, response.attempt_id, response.touch_id)
    return web.json_response(response.to_dict(), status=201)


async def _disposition(
    request: web.Request, user: User, served: FollowUp | None, attempt_id: int | None, touch_id: int | None
) -> None:
    """A submitted survey is the call's disposition: the list entry is done, the follow-up the call
    served is closed, the call's touch says so."""
    store = request.app[STORE]
    loop = request.app[FOLLOWUPS]
    dialer = request.app.get(DIALER)
    if attempt_id is not None and dialer is not None:
        attempt = await dialer.disposition(user, attempt_id, SURVEY_DONE, survey=True)
        touch_id = attempt.touch_id
    elif touch_id is not None:
        touch = await store.touches.get(touch_id)
        await store.touches.set_note(touch_id, touch.summary, disposition=SURVEY_DONE)
    if served is not None:
        await loop.done(served, SURVEY_DONE, by=user, touch_id=touch_id)


async def get_response(request: web.Request) -> web.Response:
    user = require(request)
    r = await request.app[STORE].surveys.response(path_int(request), with_versions=True)
    if user.role == "rep" and r.contact_id is not None:
        await visible_contact(request, user, r.contact_id)
    return web.json_response(r.to_dict())


async def correct_response(request: web.Request) -> web.Response:
    """PUT /api/v1/survey-responses/{id} {answers, reason}: managers only; a new version."""
    user = require(request, *MANAGERS)
    rid = path_int(request)
    await request.app[STORE].surveys.response(rid)
    data = await json_body(request, allowed=("answers", "reason"))
    reason = _text(data, "reason", 500)
    if "answers" not in data:
        raise ValidationError("answers", "is required")
    updated = await service(request).correct(rid, data["answers"], reason, by=user)
    return web.json_response(updated.to_dict())


async def resolve_response(request: web.Request) -> web.Response:
    """POST /api/v1/survey-responses/{id}/resolution {text, satisfied}: managers, or the one the
    escalation follow-up is assigned to."""
    user = require(request, *AGENTS)
    store = request.app[STORE]
    r = await store.surveys.response(path_int(request))
    if user.role == "rep":
        f = await store.followups.get(r.followup_id) if r.followup_id else None
        if f is None or f.assignee_id != user.id:
            raise ApiError(403, "forbidden", "the complaint follow-up is not yours")
    data = await json_body(request, allowed=("text", "satisfied"))
    text = _text(data, "text")
    satisfied = data.get("satisfied")
    if not isinstance(satisfied, bool):
        raise ValidationError("satisfied", "must be true or false: is the customer satisfied now?")
    resolved = await service(request).resolve(r.id, text, satisfied, by=user)
    return web.json_response(resolved.to_dict())


async def contact_responses(request: web.Request) -> web.Response:
    user = require(request)
    cid = path_int(request)
    await visible_contact(request, user, cid)
    items = await request.app[STORE].surveys.responses(contact_id=cid)
    return web.json_response({"items": [r.to_dict() for r in items], "next_cursor": None})


async def set_list_survey(request: web.Request) -> web.Response:
    """PUT /api/v1/call-lists/{id}/survey {survey_id | null}: attach a survey to a list (its next
    calls ask it) or detach it; answers already given keep their list."""
    user = require(request, *MANAGERS)
    store = request.app[STORE]
    cl = await store.call_lists.get(path_int(request))
    data = await json_body(request, allowed=("survey_id",))
    if "survey_id" not in data:
        raise ValidationError("survey_id", "is required: a survey id, or null to detach the survey")
    survey_id = data["survey_id"]
    if survey_id is not None:
        if isinstance(survey_id, bool) or not isinstance(survey_id, int) or survey_id < 1:
            raise ValidationError("survey_id", "must be a survey id or null")
        if not await store.surveys.exists(survey_id):
            raise ValidationError("survey_id", f"no survey {survey_id}")
    await store.surveys.set_list_survey(cl.id, survey_id)
    await store.audit.write(
        "call_list.survey", user_id=user.id, object_type="call_list", object_id=cl.id, survey_id=survey_id
    )
    name = (await store.surveys.get(survey_id)).name if survey_id is not None else None
    return web.json_response({"id": cl.id, "name": cl.name, "survey_id": survey_id, "survey_name": name})


async def surveys_page(request: web.Request) -> web.Response:
    require(request, *MANAGERS)
    store = request.app[STORE]
    rows = await store.surveys.all()
    return render(request, "surveys.html", {"surveys": rows})


async def reports_tab(request: web.Request) -> web.Response:
    """The Surveys tab of /reports: the report of the newest active survey for the same period
    (the survey page lists the others), or the survey page when there is none yet."""
    require(request, *MANAGERS)
    active = [r for r in await request.app[STORE].surveys.all() if r.active]
    if not active:
        raise web.HTTPFound("/surveys")
    newest = max(active, key=lambda r: r.id)
    query = f"?{request.query_string}" if request.query_string else ""
    raise web.HTTPFound(f"/surveys/{newest.id}/report{query}")


async def _report(request: web.Request) -> dict[str, Any]:
    zone = request.app[SETTINGS].server.time_zone
    today = request.app[CLOCK]().astimezone(ZoneInfo(zone)).date()
    q = request.query
    period = parse_period(q.get("from"), q.get("to"), today=today, zone=zone)
    return await survey_report(request.app[STORE], path_int(request), period, q.get("group", "month"))


async def report_api(request: web.Request) -> web.Response:
    """GET /api/v1/reports/surveys/{id}?from=&to=&group=agent|list|month&format=json|csv"""
    require(request, *MANAGERS)
    fmt = request.query.get("format", "json")
    if fmt not in ("json", "csv"):
        raise ValidationError("format", "must be json or csv")
    report = await _report(request)
    if fmt == "csv":
        name = f"survey-{report['survey']['id']}-{report['group']}-{report['from']}-{report['to']}.csv"
        return web.Response(
            text=to_csv(report, COLUMNS),
            content_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )
    return web.json_response(report)


async def report_page(request: web.Request) -> web.Response:
    """A printable page: the figures, the reasons as a Pareto bar chart, the rate over months."""
    require(request, *MANAGERS)
    report = await _report(request)
    reasons = report["reasons"][:12]
    all_reasons = sum(r["count"] for r in report["reasons"])
    by_month = report if report["group"] == "month" else None
    if by_month is None:
        by_month = await survey_report(
            request.app[STORE],
            report["survey"]["id"],
            parse_period(
                report["from"],
                report["to"],
                today=request.app[CLOCK]().astimezone(ZoneInfo(report["time_zone"])).date(),
                zone=report["time_zone"],
            ),
            "month",
        )
    charts = {
        "reasons": svg.pareto(
            [r["reason"] for r in reasons],
            [r["count"] for r in reasons],
            "Reasons for dissatisfaction",
            total=all_reasons,
        )
        if reasons
        else "",
        "rate": svg.line(
            [r["key"] for r in by_month["rows"]],
            [r["satisfaction_rate"] for r in by_month["rows"]],
            "Satisfaction rate by month",
            ticks=[_month_name(r["key"]) for r in by_month["rows"]],
            show_values=len(by_month["rows"]) <= 13,
        ),
    }
    running = 0
    ranked = []
    for r in report["reasons"]:
        running += r["count"]
        ranked.append(r | {"share": r["count"] / all_reasons, "cumulative": running / all_reasons})
    return render(
        request,
        "survey_report.html",
        {
            "report": report,
            "charts": charts,
            "ranked": ranked,
            "shown_reasons": len(reasons),
            "printed_at": request.app[CLOCK]().astimezone(ZoneInfo(report["time_zone"])),
        },
    )


def _month_name(key: str) -> str:
    """2026-04 -> "Apr 2026"."""
    from datetime import date

    return date.fromisoformat(key + "-01").strftime("%b %Y")


def setup(app: web.Application) -> None:
    app.router.add_get("/api/v1/surveys", list_surveys)
    app.router.add_post("/api/v1/surveys", create_survey)
    app.router.add_get("/api/v1/surveys/{id}", get_survey)
    app.router.add_put("/api/v1/surveys/{id}", update_survey)
    app.router.add_post("/api/v1/surveys/{id}/responses", submit_response)
    app.router.add_get("/api/v1/survey-responses/{id}", get_response)
    app.router.add_put("/api/v1/survey-responses/{id}", correct_response)
    app.router.add_post("/api/v1/survey-responses/{id}/resolution", resolve_response)
    app.router.add_get("/api/v1/contacts/{id}/survey-responses", contact_responses)
    app.router.add_put("/api/v1/call-lists/{id}/survey", set_list_survey)
    app.router.add_get("/surveys", surveys_page)
    app.router.add_get("/api/v1/reports/surveys/{id}", report_api)
    app.router.add_get("/surveys/{id}/report", report_page)
    app.router.add_get("/reports/surveys", reports_tab)
