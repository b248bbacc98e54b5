"""Server-rendered pages: one jinja2 environment per app, with the page context every page needs."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jinja2
import phonenumbers
from aiohttp import web

from switchboard.keys import SETTINGS
from switchboard.web.auth import AUTH

PAGES = web.AppKey("pages", jinja2.Environment)
TEMPLATE_DIR = Path(__file__).parent / "templates_html"
# the one way a time reads on every page (static/common.js formats the same way in the browser)
TIME_FORMAT = "%a %d %b %Y %H:%M"


def when(value: datetime | str | None, zone: str) -> str:
    """A stored UTC time as people read it on every page, in `zone`."""
    if value is None or value == "":
        return ""
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return value
        value = parsed
    if value.tzinfo is None:
        value = value.replace(tzinfo=ZoneInfo("UTC"))
    return value.astimezone(ZoneInfo(zone)).strftime(TIME_FORMAT)


def phone_display(e164: str | None, region: str) -> str:
    """A number in national format when it is in the dealership's country, else international."""
    if not e164:
        return ""
    try:
        num = phonenumbers.parse(e164, region)
    except phonenumbers.NumberParseException:
        return e164
    same = phonenumbers.region_code_for_number(num) == region
    fmt = phonenumbers.PhoneNumberFormat.NATIONAL if same else phonenumbers.PhoneNumberFormat.INTERNATIONAL
    return phonenumbers.format_number(num, fmt)


@jinja2.pass_context
def _when_filter(ctx: jinja2.runtime.Context, value: datetime | str | None) -> str:
    return when(value, ctx.get("zone") or "UTC")


@jinja2.pass_context
def _phone_filter(ctx: jinja2.runtime.Context, value: str | None) -> str:
    return phone_display(value, ctx.get("region") or "US")


def user_zone(request: web.Request) -> str:
    """The signed-in user's time zone, else the dealership's."""
    auth = request.get(AUTH)
    user = auth.user if auth else None
    return (user.time_zone if user else None) or request.app[SETTINGS].server.time_zone


def setup_pages(app: web.Application, extra_dirs: tuple[Path, ...] = ()) -> None:
    """Create the page environment (autoescaped, strict about undefined names)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader([str(TEMPLATE_DIR), *map(str, extra_dirs)]),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
        enable_async=False,
    )
    env.filters["when"] = _when_filter
    env.filters["phone"] = _phone_filter
    app[PAGES] = env


def call_mode(request: web.Request, user: Any) -> str:
    """How this user calls a customer from a page: "click" (POST /api/v1/calls rings their desk phone),
    "tel" (a tel: link, when there is no desk phone to ring) or "" (a role that does not call)."""
    from switchboard.keys import ASTERISK, TWILIO_VOICE

    if user is None or user.role not in ("rep", "manager", "admin"):
        return ""
    if request.app.get(ASTERISK) is not None and user.extension:
        return "click"
    if request.app.get(ASTERISK) is None and request.app.get(TWILIO_VOICE) is not None:
        return "click"
    return "tel"


def render(request: web.Request, name: str, context: dict[str, Any], *, status: int = 200) -> web.Response:
    """Render a page with the signed-in user, CSRF token, dealer, time zone and region in its context."""
    auth = request.get(AUTH)
    settings = request.app[SETTINGS]
    base = {
        "me": auth.user if auth else None,
        "csrf_token": auth.csrf if auth else None,
        "dealer": settings.dealer,
        "path": request.path,
        "zone": user_zone(request),
        "region": settings.store.default_region,
    }
    base["call_mode"] = call_mode(request, base["me"])
    html = request.app[PAGES].get_template(name).render(base | context)
    return web.Response(text=html, content_type="text/html", status=status)
