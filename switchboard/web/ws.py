"""The agent WebSocket (/ws/agent): screen-pops and call updates, one JSON object per message."""

from __future__ import annotations

import json

from aiohttp import WSMsgType, web

from switchboard.keys import HUB
from switchboard.web.auth import require


async def agent_socket(request: web.Request) -> web.WebSocketResponse:
    """Subscribe this tab to its user's pops; replay the calls still ringing for them."""
    user = require(request)
    ws = web.WebSocketResponse(heartbeat=30)
    await ws.prepare(request)
    hub = request.app[HUB]
    live = hub.subscribe(user.id, ws)
    try:
        await ws.send_str(json.dumps({"type": "hello", "user": user.username, "extension": user.extension}))
        for message in live:
            await ws.send_str(json.dumps(message, default=str))
        async for msg in ws:
            if msg.type == WSMsgType.TEXT and msg.data == "ping":
                await ws.send_str('{"type":"pong"}')
            elif msg.type == WSMsgType.ERROR:
                break
    finally:
        hub.unsubscribe(user.id, ws)
    return ws


def setup(app: web.Application) -> None:
    app.router.add_get("/ws/agent", agent_socket)
