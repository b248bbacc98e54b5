"""Manager reports (calls, messaging) as JSON, CSV and a page with SVG charts; the live agent board."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import date
from functools import partial
from typing import Any

from aiohttp import web

from crm_link.errors import ValidationError
from reports import svg
from reports.board import AgentBoard
from reports.calls import COLUMNS as CALL_COLUMNS
from reports.calls import DEFAULT_CALLBACK_MIN, call_report
from reports.calls import DEFINITIONS as CALL_DEFINITIONS
from reports.compare import change
from reports.csvout import to_csv
from reports.followups import COLUMNS as FU_COLUMNS
from reports.followups import DEFINITIONS as FU_DEFINITIONS
from reports.followups import followup_report
from reports.messaging import COLUMNS as MSG_COLUMNS
from reports.messaging import DEFINITIONS as MSG_DEFINITIONS
from reports.messaging import messaging_report
from reports.periods import Period, parse_period
from switchboard.cluster import sync_board
from switchboard.keys import BOARD, CLOCK, HUB, SETTINGS, STORE, SUPERVISOR
from switchboard.web.auth import require
from switchboard.web.errors import json_body
from switchboard.web.render import render

MANAGERS = ("manager", "admin")
# (tab label, route) of report pages beyond /reports, shown as tabs when the route is registered
OTHER_REPORTS = (("Surveys", "/reports/surveys"),)
WRAP_UP_TICK_S = 1.0


def _today(request: web.Request) -> date:
    from zoneinfo import ZoneInfo

    return request.app[CLOCK]().astimezone(ZoneInfo(request.app[SETTINGS].server.time_zone)).date()


def _period(request: web.Request) -> Period:
    return parse_period(
        request.query.get("from"),
        request.query.get("to"),
        today=_today(request),
        zone=request.app[SETTINGS].server.time_zone,
    )


def _callback_min(request: web.Request) -> int:
    raw = request.query.get("callback_within", str(DEFAULT_CALLBACK_MIN))
    if not raw.isdigit() or not 1 <= int(raw) <= 10_080:
        raise ValidationError("callback_within", "must be whole minutes from 1 to 10080")
    return int(raw)


def _format(request: web.Request) -> str:
    fmt = request.query.get("format", "json")
    if fmt not in ("json", "csv"):
        raise ValidationError("format", "must be json or csv")
    return fmt


def _answer(report: dict[str, Any], columns: tuple[str, ...], fmt: str, name: str) -> web.Response:
    if fmt == "csv":
        filename = f"{name}-{report['group']}-{report['from']}-{report['to']}.csv"
        return web.Response(
            text=to_csv(report, columns),
            content_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )
    return web.json_response(report)


async def calls_api(request: web.Request) -> web.Response:
    """GET /api/v1/reports/calls?from=&to=&group=agent|day|hour|line|queue|weekday_hour&callback_within=&format="""
    fmt = _format(request)
    group = request.query.get("group", "day")
    report = await call_report(
        request.app[STORE],
        _period(request),
        group,
        callback_within_min=_callback_min(request),
        line_names=request.app[SETTINGS].lines,
    )
    columns = (*CALL_COLUMNS, "name") if group == "line" else CALL_COLUMNS  # a new column goes last
    return _answer(report, columns, fmt, "calls")


async def messaging_api(request: web.Request) -> web.Response:
    """GET /api/v1/reports/messaging?from=&to=&group=blast|template|month&format="""
    fmt = _format(request)
    report = await messaging_report(request.app[STORE], _period(request), request.query.get("group", "month"))
    return _answer(report, MSG_COLUMNS, fmt, "messaging")


async def followups_api(request: web.Request) -> web.Response:
    """GET /api/v1/reports/followups?from=&to=&group=assignee|rule|list&format="""
    fmt = _format(request)
    report = await followup_report(
        request.app[STORE],
        _period(request),
        request.query.get("group", "assignee"),
        now=request.app[CLOCK](),
    )
    return _answer(report, FU_COLUMNS, fmt, "followups")


async def reports_page(request: web.Request) -> web.Response:
    """/reports: calls (tables per agent, queue, line, day, hour; three charts) and messaging."""
    store = request.app[STORE]
    period = _period(request)
    callback = _callback_min(request)
    by = {
        g: await call_report(
            store, period, g, callback_within_min=callback, line_names=request.app[SETTINGS].lines
        )
        for g in ("agent", "queue", "line", "day", "hour", "weekday_hour")
    }
    msg = {g: await messaging_report(store, period, g) for g in ("blast", "template", "month")}
    now = request.app[CLOCK]()
    fus = {g: await followup_report(store, period, g, now=now) for g in ("assignee", "rule", "list")}
    hours = by["hour"]["rows"]
    days = by["day"]["rows"]
    wh = by["weekday_hour"]["rows"]
    charts = {
        "per_hour": svg.bars(
            [r["key"] for r in hours], [r["inbound"] + r["outbound"] for r in hours], "Calls per hour of day"
        ),
        "answer_rate": svg.line(
            [r["key"] for r in days], [r["answer_rate"] for r in days], "Answer rate per day"
        ),
        "heatmap": svg.heatmap(
            ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"],
            [f"{h:02d}" for h in range(24)],
            [
                [wh[d * 24 + h]["inbound"] + wh[d * 24 + h]["outbound"] for h in range(24)]
                for d in (1, 2, 3, 4, 5, 6, 0)
            ],
            "Calls by weekday and hour",
        ),
    }
    query = f"from={period.first.isoformat()}&to={period.last.isoformat()}&callback_within={callback}"
    tabs = [("Calls", "#calls"), ("Messaging", "#messaging"), ("Follow-ups", "#followups")]
    # other reports have pages of their own: linked once their route exists
    routes = {r.canonical for r in request.app.router.resources()}
    tabs += [(label, f"{path}?{query}") for label, path in OTHER_REPORTS if path in routes]
    return render(
        request,
        "reports.html",
        {
            "period": period,
            "callback": callback,
            "query": query,
            "calls": by,
            "messaging": msg,
            "followups": fus,
            "fu_columns": FU_COLUMNS[1:],
            "fu_definitions": FU_DEFINITIONS,
            "charts": charts,
            "tabs": tabs,
            "change": change,
            "period_days": (period.last - period.first).days + 1,
            "call_columns": CALL_COLUMNS[1:],
            "msg_columns": MSG_COLUMNS[1:],
            "call_definitions": CALL_DEFINITIONS,
            "msg_definitions": MSG_DEFINITIONS,
        },
    )


async def agents_api(request: web.Request) -> web.Response:
    """GET /api/v1/agents: the live board (reps see only themselves)."""
    user = require(request)
    board = request.app[BOARD]
    board.load([user])  # a user added since the start is an agent too
    snap = board.snapshot()
    if user.role not in MANAGERS:
        snap["items"] = [a for a in snap["items"] if a["user"] == user.username]
    return web.json_response(snap)


async def set_my_state(request: web.Request) -> web.Response:
    """POST /api/v1/agents/me/state {state: ready|paused}: a rep pauses or gets ready themselves."""
    user = require(request)
    body = await json_body(request)
    state = body.get("state")
    if not isinstance(state, str):
        raise ValidationError("state", "must be ready or paused")
    request.app[BOARD].load([user])
    return web.json_response(await request.app[BOARD].set_state(user, state))


async def agents_page(request: web.Request) -> web.Response:
    """/agents: managers watch every agent live; a rep sees and sets their own state."""
    user = require(request)
    request.app[BOARD].load([user])
    snap = request.app[BOARD].snapshot()
    mine = next((a for a in snap["items"] if a["user"] == user.username), None)
    if user.role not in MANAGERS:
        snap["items"] = [mine] if mine else []
    return render(request, "agents.html", {"board": snap, "mine": mine, "watch": user.role in MANAGERS})


async def _wrap_up_ticker(board: AgentBoard) -> None:
    while True:
        await board.tick()
        await asyncio.sleep(WRAP_UP_TICK_S)


async def board_ctx(app: web.Application) -> AsyncIterator[None]:
    """The agent board (before telephony, which feeds it) and the call facts' one-time backfill."""
    store, hub, settings = app[STORE], app[HUB], app[SETTINGS]
    await store.reports.backfill()

    async def publish(message: dict[str, Any], user_id: int | None) -> None:
        await hub.publish_topic("board", message)
        if user_id is not None:  # the agent's own /agents tabs follow their state too
            await hub.publish_topic(f"self:{user_id}", message)

    board = AgentBoard(
        app[CLOCK],
        publish,
        time_zone=settings.server.time_zone,
    )
    users = await store.users.list()
    today = board.today()
    counts = await call_report(store, Period(today, today, settings.server.time_zone), "agent")
    by_name = {r["key"].lower(): r for r in counts["rows"]}
    board.load(
        users,
        {
            u.id: {
                "answered": by_name[u.username.lower()]["answered"],
                "outbound": by_name[u.username.lower()]["outbound"],
                "talk_s": by_name[u.username.lower()]["talk_s"],
            }
            for u in users
            if u.username.lower() in by_name
        },
    )
    app[BOARD] = board
    app[SUPERVISOR].start("agent-board-wrap-up", partial(_wrap_up_ticker, board))
    sync_board(app, board)  # several instances on PostgreSQL: every board takes every input
    yield
    await app[SUPERVISOR].stop("agent-board-wrap-up", "cluster-board")


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/api/v1/reports/calls", calls_api)
    r.add_get("/api/v1/reports/messaging", messaging_api)
    r.add_get("/api/v1/reports/followups", followups_api)
    r.add_get("/api/v1/agents", agents_api)
    r.add_post("/api/v1/agents/me/state", set_my_state)
    r.add_get("/reports", reports_page)
    r.add_get("/agents", agents_page)
