"""The event hub: fans screen-pops and call updates out to each user's open browser tabs."""

from __future__ import annotations

import json
import logging
import weakref
from collections.abc import Callable
from typing import Any

from aiohttp import WSCloseCode, web

log = logging.getLogger("switchboard.hub")


# one hub message handed to the other instances: {"k": kind, ...} (see Hub.apply)
Relay = Callable[[dict[str, Any]], None]


class Hub:
    """WebSocket subscribers by user id, and the pops still live for each (replayed on reconnect).

    With several instances on one PostgreSQL store, `relay` (set by switchboard.cluster) is told of
    every user message and live-pop change made here, and the other instances' are given to
    `apply`: each instance delivers to its own tabs. Topics (the agent board) stay local.
    """

    def __init__(self) -> None:
        self.relay: Relay | None = None
        self._subs: dict[int, set[web.WebSocketResponse]] = {}
        self._all: weakref.WeakSet[web.WebSocketResponse] = weakref.WeakSet()
        self._live: dict[int, dict[str, dict[str, Any]]] = {}
        self._topics: dict[str, set[web.WebSocketResponse]] = {}
        self.sent = 0
        self.dropped = 0

    @property
    def connections(self) -> int:
        return len(self._all)

    def online_user_ids(self) -> list[int]:
        """Users with at least one open tab (the agents who can take a call now)."""
        return [uid for uid, subs in self._subs.items() if any(not ws.closed for ws in subs)]

    def subscribe(self, user_id: int, ws: web.WebSocketResponse) -> list[dict[str, Any]]:
        """Register a tab; returns the live pops it should show at once."""
        self._subs.setdefault(user_id, set()).add(ws)
        self._all.add(ws)
        return list(self._live.get(user_id, {}).values())

    def tabs(self, user_id: int) -> int:
        """How many open tabs a user has."""
        return sum(1 for ws in self._subs.get(user_id, ()) if not ws.closed)

    def subscribe_topic(self, topic: str, ws: web.WebSocketResponse) -> None:
        """Also send this tab what is published on `topic` (e.g. the agent board)."""
        self._topics.setdefault(topic, set()).add(ws)
        self._all.add(ws)

    def unsubscribe_topic(self, topic: str, ws: web.WebSocketResponse) -> None:
        subs = self._topics.get(topic)
        if subs is not None:
            subs.discard(ws)

    async def publish_topic(self, topic: str, message: dict[str, Any]) -> int:
        """Send one message to every tab subscribed to `topic`; returns how many got it."""
        return await self._send(self._topics.get(topic), message)

    def unsubscribe(self, user_id: int, ws: web.WebSocketResponse) -> None:
        subs = self._subs.get(user_id)
        if subs is not None:
            subs.discard(ws)
            if not subs:
                del self._subs[user_id]

    def set_live(self, user_id: int, call_id: str, message: dict[str, Any]) -> None:
        """Remember a ringing pop so a tab that (re)connects during the call gets it."""
        self._live.setdefault(user_id, {})[call_id] = message
        if self.relay is not None:
            self.relay({"k": "live", "u": user_id, "c": call_id, "m": message})

    def update_live(self, call_id: str, **call_fields: Any) -> None:
        """Change the call part of a call's remembered pops (e.g. its state once answered)."""
        self._update_live(call_id, call_fields)
        if self.relay is not None:
            self.relay({"k": "live_update", "c": call_id, "f": call_fields})

    def _update_live(self, call_id: str, call_fields: dict[str, Any]) -> None:
        for calls in self._live.values():
            if call_id in calls:
                calls[call_id]["call"].update(call_fields)

    def clear_live(self, call_id: str) -> list[int]:
        """Forget a call's pops; returns the users that had it."""
        if self.relay is not None:
            self.relay({"k": "live_clear", "c": call_id})
        return self._clear_live(call_id)

    def _clear_live(self, call_id: str) -> list[int]:
        users = []
        for user_id, calls in list(self._live.items()):
            if calls.pop(call_id, None) is not None:
                users.append(user_id)
            if not calls:
                del self._live[user_id]
        return users

    async def publish(self, user_id: int, message: dict[str, Any]) -> int:
        """Send one message to every tab of a user (here, and through `relay` on the other
        instances); returns how many tabs of this instance got it."""
        if self.relay is not None:
            self.relay({"k": "user", "u": user_id, "m": message})
        return await self._send(self._subs.get(user_id), message)

    async def apply(self, item: dict[str, Any]) -> int:
        """Carry out here what another instance's hub did (an item its `relay` was given); returns
        how many tabs got a message. Unknown kinds are ignored (a newer instance's)."""
        kind = item.get("k")
        if kind == "user":
            return await self._send(self._subs.get(int(item["u"])), item["m"])
        if kind == "live":
            self._live.setdefault(int(item["u"]), {})[str(item["c"])] = item["m"]
        elif kind == "live_update":
            self._update_live(str(item["c"]), dict(item["f"]))
        elif kind == "live_clear":
            self._clear_live(str(item["c"]))
        return 0

    async def _send(self, subs: set[web.WebSocketResponse] | None, message: dict[str, Any]) -> int:
        """One message to these sockets; closed or failing ones leave the set."""
        if not subs:
            return 0
        text = json.dumps(message, separators=(",", ":"), default=str)
        delivered = 0
        for ws in list(subs):
            if ws.closed:
                subs.discard(ws)
                continue
            try:
                await ws.send_str(text)
                delivered += 1
            except (ConnectionError, RuntimeError):
                self.dropped += 1
                subs.discard(ws)
        self.sent += delivered
        return delivered

    async def close_all(self) -> None:
        """Close every socket with GOING_AWAY (graceful shutdown)."""
        for ws in list(self._all):
            await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")
        self._subs.clear()
        self._topics.clear()
