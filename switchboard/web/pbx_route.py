"""`GET /asterisk/owner`: the dialplan's owner-first lookup (see cti/owner_first.py and the README).

Answered in plain text for `${CURL(...)}`: `PJSIP/1002,20` or an empty body (also for an empty
`number`, a caller who withholds their number). Authenticated by `[asterisk] route_secret` in the
query, like Kannel's callbacks, since Asterisk has no session. Errors are the usual 4xx JSON: the
dialplan sets `CURLOPT(failurecodes)` so that Asterisk reads them as empty and queues the caller.
"""

from __future__ import annotations

import hmac

from aiohttp import web

from cti.owner_first import owner_dial
from switchboard.keys import ASTERISK, ASTERISK_CALLS, SETTINGS, STORE
from switchboard.web.errors import ApiError


async def owner_route(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    secret = settings.asterisk.route_secret.reveal()
    source = request.app.get(ASTERISK)
    if not secret or source is None:
        raise ApiError(404, "not_found", "owner-first routing is off ([asterisk] route_secret)", "secret")
    given = request.query.get("secret", "")
    if not hmac.compare_digest(given.encode(), secret.encode()):
        raise ApiError(403, "bad_secret", "the route secret is missing or wrong", "secret")
    if "number" not in request.query:
        raise ApiError(400, "invalid", "number is missing", "number")
    number = request.query["number"].strip()
    if not number:  # a withheld caller ID (the dialplan's `number=` is empty): the queue, at once
        return web.Response(text="", content_type="text/plain")
    store = request.app[STORE]
    matches = await store.contacts.find_by_phone(number)
    owner = None
    if len(matches) == 1 and matches[0].owner_id is not None:
        owner = await store.users.get(matches[0].owner_id)
    calls = request.app.get(ASTERISK_CALLS)
    busy = owner is not None and calls is not None and owner.id in calls.agents_on_calls()
    interface = source.directory.dial_interface_of(owner) if owner is not None else None
    body = owner_dial(matches, owner, interface, busy=busy, seconds=settings.followups.owner_first_seconds)
    return web.Response(text=body, content_type="text/plain")


def setup(app: web.Application) -> None:
    app.router.add_get("/asterisk/owner", owner_route)
