"""The JSON error shape every API and webhook answers with, and the middleware that makes it."""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from crm_link.errors import Conflict, NotFound, StoreUnavailable, ValidationError
from crm_link.models import check_limit, fits_int64, parse_id

log = logging.getLogger("switchboard.web")


class ApiError(Exception):
    """An HTTP error with a code, a message and the field it is about."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field


def error_response(status: int, code: str, message: str, field: str | None = None) -> web.Response:
    body = {"error": {"code": code, "message": message, "field": field}}
    return web.json_response(body, status=status)


JSON_PREFIXES = ("/api/", "/twilio/", "/sms/kannel/", "/asterisk/", "/healthz", "/readyz", "/ws/")


def _wants_json(request: web.Request) -> bool:
    """An API, webhook or script asking (JSON errors), rather than a person's browser (error pages)."""
    if request.path.startswith(JSON_PREFIXES) or "Authorization" in request.headers:
        return True
    accept = request.headers.get("Accept", "")
    return "application/json" in accept and "text/html" not in accept


_TITLES = {
    400: "That request was not understood",
    401: "Please sign in",
    403: "Not yours to open",
    404: "Page not found",
    405: "Not something this page does",
    413: "That was too big",
    429: "Slow down a little",
    503: "The database is not answering",
}
_HINTS = {
    403: "Your role or this record's owner does not allow it. Ask a manager if you need access.",
    404: "The address may be mistyped, or the record was removed. Search for the customer instead.",
    500: "Something went wrong on our side. It has been logged; try again, or tell your admin the time it happened.",
    503: "Nothing you sent was saved. Reload in a few seconds; Switchboard reconnects when the database is back.",
}


def _error_page(request: web.Request, status: int, message: str) -> web.StreamResponse:
    """The app's own error page for a person's browser (falls back to plain text if rendering fails)."""
    from switchboard.web.render import render  # render -> auth -> errors: imported late

    title = _TITLES.get(status, "Something went wrong" if status >= 500 else "That did not work")
    try:
        return render(
            request,
            "error.html",
            {"status": status, "title": title, "message": message, "hint": _HINTS.get(status, "")},
            status=status,
        )
    except Exception:
        log.exception("event=error_page_failed status=%s path=%s", status, request.path)
        return web.Response(text=f"{status} {title}", status=status)


def _answer(
    request: web.Request, status: int, code: str, message: str, field: str | None = None
) -> web.StreamResponse:
    if _wants_json(request):
        return error_response(status, code, message, field)
    return _error_page(request, status, message)


@web.middleware
async def error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Turn store and API errors into 4xx JSON (APIs) or the app's error page (browsers); never leak
    a traceback to the client."""
    try:
        return await handler(request)
    except StoreUnavailable as exc:
        # the database went away (PostgreSQL restarting, the network): nothing was acknowledged, the
        # same request may be sent again; the pool reconnects when the database answers
        log.warning(
            "event=store_unavailable method=%s path=%s error=%r", request.method, request.path, str(exc)
        )
        response = _answer(request, 503, "store_unavailable", f"{exc}; try again shortly")
        response.headers["Retry-After"] = "2"
        return response
    except ApiError as exc:
        return _answer(request, exc.status, exc.code, exc.message, exc.field)
    except ValidationError as exc:
        return _answer(request, 409 if exc.code == "conflict" else 400, exc.code, exc.reason, exc.field)
    except Conflict as exc:
        return _answer(request, 409, "conflict", exc.reason, exc.field)
    except NotFound as exc:
        return _answer(request, 404, "not_found", str(exc))
    except web.HTTPException as exc:
        if exc.status >= 400 and exc.content_type != "application/json":
            text = exc.text or exc.reason
            if text == f"{exc.status}: {exc.reason}":
                text = ""  # aiohttp's default body says nothing a person can use
            if _wants_json(request):
                return error_response(exc.status, exc.reason.lower().replace(" ", "_"), text or exc.reason)
            return _error_page(request, exc.status, text)
        raise
    except Exception:
        log.exception("event=unhandled_error method=%s path=%s", request.method, request.path)
        return _answer(request, 500, "internal", "internal error; see the server log")


MAX_JSON_BYTES = 8 * 1024**2
_INTEGER = re.compile(r"[+-]?[0-9]{1,19}")
MAX_JSON_DEPTH = 64


def _child(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path or 'body'}[{key}]"
    return f"{path}.{key}" if path else key


def _refuse_constant(name: str) -> Any:
    raise ValidationError("body", f"{name} is not a JSON number")


def loads_bounded(text: str | bytes, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """JSON nested at most `max_depth` deep whose numbers the store can hold (integers in SQLite's
    signed 64 bits, finite floats); ValidationError naming the field (or `body`) otherwise."""
    try:
        data = json.loads(text, parse_constant=_refuse_constant)
    except ValidationError:
        raise
    except RecursionError:
        raise ValidationError("body", f"JSON nested more than {max_depth} deep", code="too_deep") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValidationError("body", f"body is not valid JSON: {exc}", code="malformed_json") from None
    stack: list[tuple[Any, str, int]] = [(data, "", 0)]
    while stack:  # iterative: a value nested deep must not recurse here either
        value, path, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth >= max_depth:
                raise ValidationError("body", f"JSON nested more than {max_depth} deep", code="too_deep")
            pairs = value.items() if isinstance(value, dict) else enumerate(value)
            stack.extend((v, _child(path, k), depth + 1) for k, v in pairs)
        elif isinstance(value, int) and not fits_int64(value):
            raise ValidationError(path or "body", "is out of range (a whole number of at most 19 digits)")
        elif isinstance(value, float) and not math.isfinite(value):
            raise ValidationError(path or "body", "is out of range")
    return data


async def json_body(request: web.Request, *, allowed: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The request's JSON object (bounded in size, depth and numbers), or a 4xx naming what is wrong."""
    if request.content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "send JSON with Content-Type: application/json", "body")
    too_big = ApiError(413, "too_large", f"a JSON body is at most {MAX_JSON_BYTES} bytes", "body")
    if (request.content_length or 0) > MAX_JSON_BYTES:
        raise too_big
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise too_big from None
    if len(raw) > MAX_JSON_BYTES:
        raise too_big
    try:
        data = loads_bounded(raw)
    except ValidationError as exc:
        raise ApiError(400, exc.code, exc.reason, exc.field) from None
    if not isinstance(data, dict):
        raise ApiError(400, "invalid", "body must be a JSON object", "body")
    if allowed is not None:
        for key in data:
            if key not in allowed:
                raise ApiError(400, "unknown_field", f"unknown field {key!r}", key)
    return data


def query_int(request: web.Request, name: str) -> int | None:
    """An integer query parameter (within SQLite's 64 bits), or a 400 naming it."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    if _INTEGER.fullmatch(raw) is None:
        raise ApiError(400, "invalid", f"{name} must be a whole number of at most 19 digits", name)
    value = int(raw)
    if not fits_int64(value):
        raise ApiError(400, "invalid", f"{name} is out of range", name)
    return value


def query_limit(request: web.Request, *, default: int = 50, maximum: int = 500) -> int:
    """The page size `?limit=`: 1 to `maximum` (absent: `default`), or a 400 naming `limit`."""
    return check_limit(query_int(request, "limit"), default=default, maximum=maximum)


@web.middleware
async def path_id_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every route's `{id}` is a row id: a malformed one is a 400 before any handler runs (a route
    whose key is text names it otherwise, e.g. `{call_id}`)."""
    raw = request.match_info.get("id")
    if raw is not None:
        parse_id(raw, "id")
    return await handler(request)


def path_int(request: web.Request, name: str = "id") -> int:
    """A row id in the URL path (1 to 2^63-1), or a 400 naming it."""
    return parse_id(request.match_info[name], name)
