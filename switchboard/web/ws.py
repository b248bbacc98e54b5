"""The agent WebSocket (/ws/agent): screen-pops and call updates, one JSON object per message."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

from aiohttp import WSMsgType, web

from switchboard.keys import BOARD, HUB, SETTINGS
from switchboard.web.auth import auth_of, require
from switchboard.web.errors import ApiError

DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def _origin_key(url: str) -> tuple[str, str, int | None] | None:
    """(scheme, host, port) of an origin or URL, default ports spelled out; None if it has no host."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname or parts.scheme not in DEFAULT_PORTS:
        return None
    return parts.scheme, parts.hostname.lower(), port or DEFAULT_PORTS[parts.scheme]


def origin_allowed(request: web.Request) -> bool:
    """Whether the page that opens this socket is ours: server.public_url's origin, or this request's host.

    The request's own host also counts when public_url is set (staff may reach the service by an
    internal name): a page of another site or port has an Origin that differs from the Host it
    connects to, and a rebound name that makes them equal does not carry our session cookie.
    """
    origin = _origin_key(request.headers.get("Origin", ""))
    if origin is None:
        return False
    public_url = request.app[SETTINGS].server.public_url
    if public_url and origin == _origin_key(public_url):
        return True
    own = _origin_key(f"{origin[0]}://{request.host}")
    return own is not None and origin[1:] == own[1:]


async def agent_socket(request: web.Request) -> web.WebSocketResponse:
    """Subscribe this tab to its user's pops; replay the calls still ringing for them."""
    user = require(request)
    # a browser sends the cookie whatever page opens the socket: only our own pages may use it
    if auth_of(request).via == "session" and not origin_allowed(request):
        raise ApiError(403, "bad_origin", "this socket only opens from this site's pages", "Origin")
    # no permessage-deflate: pops and board updates are a few KB on a LAN, and a compressor per
    # tab is ~256 KB of zlib state and a deflate on the loop before every message
    ws = web.WebSocketResponse(heartbeat=30, compress=False)
    await ws.prepare(request)
    hub = request.app[HUB]
    board = request.app.get(BOARD)
    live = hub.subscribe(user.id, ws)
    watch = request.query.get("board") == "1" and user.role in ("manager", "admin") and board is not None
    try:
        await ws.send_str(json.dumps({"type": "hello", "user": user.username, "extension": user.extension}))
        for message in live:
            await ws.send_str(json.dumps(message, default=str))
        if board is not None and hub.tabs(user.id) == 1:
            await board.presence(user, True)
        if board is not None and "self" in request.query:
            hub.subscribe_topic(f"self:{user.id}", ws)
        if watch:
            assert board is not None
            hub.subscribe_topic("board", ws)
            await ws.send_str(json.dumps({"type": "board"} | board.snapshot(), default=str))
        async for msg in ws:
            if msg.type == WSMsgType.TEXT and msg.data == "ping":
                await ws.send_str('{"type":"pong"}')
            elif msg.type == WSMsgType.ERROR:
                break
    finally:
        hub.unsubscribe(user.id, ws)
        hub.unsubscribe_topic("board", ws)
        hub.unsubscribe_topic(f"self:{user.id}", ws)
        if board is not None and hub.tabs(user.id) == 0:
            await board.presence(user, False)
    return ws


def setup(app: web.Application) -> None:
    app.router.add_get("/ws/agent", agent_socket)
