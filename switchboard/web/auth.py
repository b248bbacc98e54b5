"""Who is asking: session cookies (pages, with CSRF on forms), bearer tokens (API), roles."""

from __future__ import annotations

import hmac
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from aiohttp import web

from crm_link.models import User
from switchboard.web.errors import ApiError

COOKIE = "sb_session"
SESSION_LIFETIME = timedelta(hours=12)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# paths with their own authentication (provider signature or channel secret) or none at all
PUBLIC_PREFIXES = (
    "/login",
    "/healthz",
    "/readyz",
    "/static/",
    "/twilio/",
    "/sms/kannel/",
    "/email/unsubscribe/",
)


@dataclass(slots=True)
class Auth:
    """What the auth middleware learned about a request."""

    user: User | None
    via: str  # "session" | "token" | "none"
    csrf: str | None = None
    session_id: str | None = None


class LoginLimiter:
    """At most N login attempts per minute per client address and per username."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self.clock = clock
        self._hits: dict[str, deque[float]] = {}

    def allow(self, *keys: str) -> bool:
        now = self.clock()
        ok = True
        for key in keys:
            hits = self._hits.setdefault(key, deque())
            while hits and hits[0] <= now - 60:
                hits.popleft()
            if len(hits) >= self.per_minute:
                ok = False
        if ok:
            for key in keys:
                self._hits[key].append(now)
        if len(self._hits) > 10_000:
            self._hits = {k: v for k, v in self._hits.items() if v and v[-1] > now - 60}
        return ok


AUTH = web.RequestKey("auth", Auth)


def auth_of(request: web.Request) -> Auth:
    return request[AUTH]


def current_user(request: web.Request) -> User:
    """The signed-in user, or 401."""
    user = auth_of(request).user
    if user is None:
        raise ApiError(401, "unauthenticated", "sign in or send Authorization: Bearer <token>")
    return user


def require(request: web.Request, *roles: str) -> User:
    """The signed-in user if their role is one of `roles` (any role when none given), else 401/403."""
    user = current_user(request)
    if roles and user.role not in roles:
        raise ApiError(403, "forbidden", f"this needs the role {' or '.join(roles)}; you are {user.role}")
    return user


def make_auth_middleware(
    store_of: Callable[[web.Request], Any],
) -> Callable[
    [web.Request, Callable[[web.Request], Awaitable[web.StreamResponse]]], Awaitable[web.StreamResponse]
]:
    """Middleware resolving the user and enforcing CSRF on cookie-authenticated writes."""

    @web.middleware
    async def auth_middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        store = store_of(request)
        auth = Auth(user=None, via="none")
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            user = await store.users.user_for_token(header[7:].strip())
            if user is None:
                raise ApiError(401, "unauthenticated", "the API token is unknown or revoked")
            auth = Auth(user=user, via="token")
        elif request.path.startswith("/ws/") and "token" in request.query:
            user = await store.users.user_for_token(request.query["token"])
            if user is None:
                raise ApiError(401, "unauthenticated", "the API token is unknown or revoked")
            auth = Auth(user=user, via="token")
        elif sid := request.cookies.get(COOKIE):
            found = await store.users.session(sid)
            if found is not None:
                auth = Auth(user=found[0], via="session", csrf=found[1], session_id=sid)
        request[AUTH] = auth
        # /login carries its own pre-login token; every other cookie-authenticated write needs the CSRF token
        if auth.via == "session" and request.method not in SAFE_METHODS and request.path != "/login":
            sent = request.headers.get("X-CSRF-Token")
            if sent is None and request.content_type in (
                "application/x-www-form-urlencoded",
                "multipart/form-data",
            ):
                sent = (await request.post()).get("csrf_token")  # type: ignore[assignment]
            if not isinstance(sent, str) or not hmac.compare_digest(sent, auth.csrf or ""):
                raise ApiError(403, "csrf", "missing or wrong CSRF token; reload the page", "csrf_token")
        if (
            auth.user is None
            and not request.path.startswith(PUBLIC_PREFIXES)
            and request.path != "/favicon.ico"
        ):
            if request.path.startswith(("/api/", "/ws/")):
                raise ApiError(401, "unauthenticated", "sign in or send Authorization: Bearer <token>")
            raise web.HTTPSeeOther(f"/login?next={request.path_qs}" if request.path != "/" else "/login")
        return await handler(request)

    return auth_middleware
