"""Server-rendered pages: one jinja2 environment per app, with the page context every page needs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web

from switchboard.keys import SETTINGS
from switchboard.web.auth import AUTH

PAGES = web.AppKey("pages", jinja2.Environment)
TEMPLATE_DIR = Path(__file__).parent / "templates_html"


def setup_pages(app: web.Application, extra_dirs: tuple[Path, ...] = ()) -> None:
    """Create the page environment (autoescaped, strict about undefined names)."""
    app[PAGES] = jinja2.Environment(
        loader=jinja2.FileSystemLoader([str(TEMPLATE_DIR), *map(str, extra_dirs)]),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
        enable_async=False,
    )


def render(request: web.Request, name: str, context: dict[str, Any], *, status: int = 200) -> web.Response:
    """Render a page with the signed-in user, CSRF token and dealer in its context."""
    auth = request.get(AUTH)
    base = {
        "me": auth.user if auth else None,
        "csrf_token": auth.csrf if auth else None,
        "dealer": request.app[SETTINGS].dealer,
        "path": request.path,
    }
    html = request.app[PAGES].get_template(name).render(base | context)
    return web.Response(text=html, content_type="text/html", status=status)
