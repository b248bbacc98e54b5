"""Who is asking: session cookies (pages, with CSRF on forms), bearer tokens (API), roles."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import quote

from aiohttp import web
from aiohttp.typedefs import Middleware
from aiohttp.web_urldispatcher import SystemRoute

from crm_link.logins import ADDRESS_WINDOW, LoginAttempts
from crm_link.models import User
from crm_link.store import Store
from switchboard.web.access import ROLES, rule_for
from switchboard.web.errors import ApiError

COOKIE = "sb_session"
SESSION_LIFETIME = timedelta(hours=12)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(slots=True)
class Auth:
    """What the auth middleware learned about a request."""

    user: User | None
    via: str  # "session" | "token" | "none"
    csrf: str | None = None
    session_id: str | None = None


class LoginLimiter:
    """Limits guessing, never the people who know their password.

    Only failed attempts count; a success clears its account's count. The counts live in the store
    (crm_link.logins), so every instance sharing it refuses a guesser alike.
    - Per client address: at most `ip_failures_per_minute` failures in any minute; beyond that the
      address is refused (429) until the oldest of those failures is a minute old.
    - Per account: the first `account_free_failures` failures cost nothing; after that each attempt
      must wait `base_delay * 2**(extra failures - 1)` seconds (at most `max_delay`) after the last
      failure, so guessing one password slows to a crawl while its owner waits minutes at worst
      and is never locked out for good. An address this account signed in from before is spared
      the account delay (someone else's guessing cannot keep the owner out of their own desk).
      An account's failures count for a day (the store's account window).
    """

    def __init__(
        self,
        attempts: Callable[[], LoginAttempts],
        ip_failures_per_minute: int,
        *,
        account_free_failures: int = 5,
        base_delay: float = 1.0,
        max_delay: float = 300.0,
    ) -> None:
        self._attempts = attempts
        self.ip_failures_per_minute = ip_failures_per_minute
        self.account_free_failures = account_free_failures
        self.base_delay = base_delay
        self.max_delay = max_delay

    def account_delay(self, failures: int) -> float:
        """Seconds an account with this many failures waits after the last one."""
        extra = failures - self.account_free_failures
        if extra <= 0:
            return 0.0
        return float(min(self.max_delay, self.base_delay * 2 ** min(extra - 1, 62)))

    async def retry_after(self, ip: str, account: str) -> float:
        """0 when this attempt may be checked now, else the seconds to wait."""
        limit = self.ip_failures_per_minute
        standing = await self._attempts().standing(ip, account, address_limit=limit)
        now = standing.now
        wait = 0.0
        if len(standing.address_failures) >= limit:
            # free again once the limit-th newest failure is a minute old
            wait = (standing.address_failures[limit - 1] + ADDRESS_WINDOW - now).total_seconds()
        if standing.account_last is not None and not standing.known_address:
            since = (now - standing.account_last).total_seconds()
            wait = max(wait, self.account_delay(standing.account_failures) - since)
        return max(wait, 0.0)

    async def failed(self, ip: str, account: str) -> None:
        """Count a wrong password (or unknown account) from this address."""
        await self._attempts().failed(ip, account)

    async def succeeded(self, ip: str, account: str) -> None:
        """A right password: the account starts afresh and this address is known for it."""
        await self._attempts().succeeded(ip, account)


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


def _route_of(request: web.Request) -> str | None:
    """The route the request matched, as registered (None when no route matched: a 404 or 405)."""
    route = request.match_info.route
    if isinstance(route, SystemRoute):
        return None
    return route.resource.canonical if route.resource is not None else None


def check_access(request: web.Request, user: User | None) -> None:
    """Apply the route's rule from the access table: sign-in, then role (401/redirect, 403)."""
    route = _route_of(request)
    rule = rule_for(request.method, route) if route is not None else None
    if rule is not None and rule.is_public:
        return
    if route is None and (user is not None or request.path == "/favicon.ico"):
        return  # no such route: the router answers 404/405
    if user is None:
        if request.path.startswith(("/api/", "/ws/")):
            raise ApiError(401, "unauthenticated", "sign in or send Authorization: Bearer <token>")
        raise web.HTTPSeeOther(f"/login?next={quote(request.path_qs)}" if request.path != "/" else "/login")
    if rule is None:
        raise ApiError(403, "forbidden", f"{request.method} {route} has no access rule")
    if user.role not in rule.roles:
        allowed = " or ".join(r for r in ROLES if r in rule.roles)
        raise ApiError(403, "forbidden", f"this needs the role {allowed}; you are {user.role}")


def make_auth_middleware(store_of: Callable[[web.Request], Store]) -> Middleware:
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
                posted = (await request.post()).get("csrf_token")
                sent = posted if isinstance(posted, str) else None
            if not isinstance(sent, str) or not hmac.compare_digest(sent, auth.csrf or ""):
                raise ApiError(403, "csrf", "missing or wrong CSRF token; reload the page", "csrf_token")
        check_access(request, auth.user)
        return await handler(request)

    return auth_middleware
