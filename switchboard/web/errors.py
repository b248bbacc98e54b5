"""The JSON error shape every API and webhook answers with, and the middleware that makes it."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from crm_link.errors import Conflict, NotFound, ValidationError

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


def _wants_json(request: web.Request) -> bool:
    return not request.path.startswith(("/login", "/logout")) and (
        request.path.startswith(("/api/", "/twilio/", "/sms/", "/email/", "/healthz", "/readyz", "/ws/"))
        or "application/json" in request.headers.get("Accept", "")
    )


@web.middleware
async def error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Turn store and API errors into 4xx JSON; never leak a traceback to the client."""
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message, exc.field)
    except ValidationError as exc:
        return error_response(409 if exc.code == "conflict" else 400, exc.code, exc.reason, exc.field)
    except Conflict as exc:
        return error_response(409, "conflict", exc.reason, exc.field)
    except NotFound as exc:
        return error_response(404, "not_found", str(exc))
    except web.HTTPException as exc:
        if exc.status >= 400 and _wants_json(request) and exc.content_type != "application/json":
            return error_response(exc.status, exc.reason.lower().replace(" ", "_"), exc.text or exc.reason)
        raise
    except Exception:
        log.exception("event=unhandled_error method=%s path=%s", request.method, request.path)
        return error_response(500, "internal", "internal error; see the server log")


async def json_body(request: web.Request, *, allowed: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The request's JSON object, or a 400 naming what is wrong with it."""
    if request.content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "send JSON with Content-Type: application/json", "body")
    try:
        data = json.loads(await request.text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "malformed_json", f"body is not valid JSON: {exc}", "body") from None
    if not isinstance(data, dict):
        raise ApiError(400, "invalid", "body must be a JSON object", "body")
    if allowed is not None:
        for key in data:
            if key not in allowed:
                raise ApiError(400, "unknown_field", f"unknown field {key!r}", key)
    return data


def query_int(request: web.Request, name: str) -> int | None:
    """An integer query parameter, or a 400 naming it."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise ApiError(400, "invalid", f"{name} must be an integer", name) from None


def path_int(request: web.Request, name: str = "id") -> int:
    raw = request.match_info[name]
    try:
        return int(raw)
    except ValueError:
        raise ApiError(404, "not_found", f"no such {name}: {raw}") from None
