"""Security headers on every response: a Content-Security-Policy, no framing, no sniffing, no referrer leaks."""

from __future__ import annotations

from aiohttp import web
from aiohttp.web_urldispatcher import SystemRoute

# The pages load scripts and styles only from /static/ (no inline script, no inline style attribute);
# the agent socket and the API are same-origin.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; media-src 'self'; font-src 'self'; object-src 'none'; "
    "frame-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
# Pages that preview an email: the preview is a sandboxed srcdoc frame, which inherits the page's
# policy, and emails are styled inline and may show the dealer's remote images. Scripts stay blocked
# (the frame is sandboxed without allow-scripts and script-src is still 'self').
EMAIL_PREVIEW_CSP = CSP.replace("style-src 'self'", "style-src 'self' 'unsafe-inline'").replace(
    "img-src 'self' data:", "img-src 'self' data: https:"
)
EMAIL_PREVIEW_PAGES = frozenset({"/contacts/{id}", "/email/templates"})

HEADERS = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def policy_for(request: web.Request) -> str:
    """The Content-Security-Policy of this request's response."""
    route = request.match_info.route if request.match_info is not None else None
    if route is not None and not isinstance(route, SystemRoute) and route.resource is not None:
        if route.resource.canonical in EMAIL_PREVIEW_PAGES:
            return EMAIL_PREVIEW_CSP
    return CSP


async def set_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: add the headers to every response (pages, API, static files, errors)."""
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    response.headers.setdefault("Content-Security-Policy", policy_for(request))


def setup(app: web.Application) -> None:
    app.on_response_prepare.append(set_security_headers)
