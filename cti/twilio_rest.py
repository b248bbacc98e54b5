"""Twilio's REST API through the twilio library's async http client, pointable at a local stand-in."""

from __future__ import annotations

import base64
import re
from typing import Any

from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client
from yarl import URL

TWILIO_API = "https://api.twilio.com"
# api.twilio.com and the regional hosts: api.<region>.twilio.com, api.<edge>.<region>.twilio.com
_TWILIO_API_HOST = re.compile(r"api(\.[a-z0-9-]+){0,2}\.twilio\.com")


def twilio_api_url(url: str, api_base: str = "") -> str | None:
    """Where to send a request carrying the account's credentials for `url`, or None if it is not Twilio's.

    Only Twilio's API hosts over https (and, when set, the configured `api_base`, a stand-in on
    loopback in tests, to which api.twilio.com is redirected) may see the account's credentials.
    """
    try:
        u = URL(url)
    except ValueError:
        return None
    if not u.is_absolute() or u.user is not None or u.password is not None:
        return None
    if api_base:
        base = URL(api_base.rstrip("/"))
        if u.origin() == base.origin():
            return url
    host = (u.host or "").lower()
    if u.scheme != "https" or u.port != 443 or not _TWILIO_API_HOST.fullmatch(host):
        return None
    if api_base and host == "api.twilio.com":
        return api_base.rstrip("/") + str(u.relative())
    return url


class _HttpClient(AsyncTwilioHttpClient):
    """The library's async client, with two changes: what it addresses to api.twilio.com can go to
    `api_base` (a stand-in on loopback), and basic auth is sent as a header (aiohttp deprecates the
    BasicAuth object the library would build).
    """

    def __init__(self, api_base: str, **kw: Any) -> None:
        super().__init__(**kw)
        self.api_base = api_base.rstrip("/")

    async def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        if self.api_base and url.startswith(TWILIO_API):
            url = self.api_base + url[len(TWILIO_API) :]
        headers = dict(headers or {})
        if auth is not None:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        return await super().request(
            method,
            url,
            params=params,
            data=data,
            headers=headers,
            auth=None,
            timeout=timeout,
            allow_redirects=allow_redirects,
        )


def twilio_client(account_sid: str, auth_token: str, api_base: str = "", timeout: float = 10.0) -> Client:
    """A Client on the async http client; no automatic retries (creating a call is not idempotent)."""
    http = _HttpClient(api_base, timeout=timeout)
    return Client(account_sid, auth_token, http_client=http)


async def close_client(client: Client) -> None:
    """Close the client's aiohttp session (on shutdown)."""
    http = client.http_client
    session = getattr(http, "session", None)
    if session is not None:
        await session.close()
