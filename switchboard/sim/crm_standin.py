"""A small local CRM on a real loopback socket that keeps what it receives: the webhook receiver a
dealership would write (signature and replay window checked, deduplicated by event id) and the two
REST resources the generic adapter's sample mapping writes to (customers by their id, activities).

It can be told to fail (`fail_status` answers that status to everything until cleared) so tests and
the demo can show retries, back-off and dead letters.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from switchboard.webhooks.signing import EVENT_ID_HEADER, SIGNATURE_HEADER, SignatureError, verify


@dataclass
class CrmStandIn:
    """Start with `await standin.start()`; `url` is its base URL."""

    secret: str
    window_s: int = 300
    now: Callable[[], float] = time.time
    fail_status: int | None = None
    delay_s: float = 0.0  # how long each request takes (a slow CRM)
    events: dict[str, dict[str, Any]] = field(default_factory=dict)  # event id -> the event (first copy)
    order: list[str] = field(default_factory=list)  # event ids in arrival order (first copies)
    duplicates: int = 0
    duplicate_ids: list[str] = field(default_factory=list)  # event ids that came again
    arrivals: list[str] = field(default_factory=list)  # every signed event id accepted, repeats too
    refused: list[str] = field(default_factory=list)  # why requests were refused (bad signatures)
    requests: int = 0
    customers: dict[str, dict[str, Any]] = field(default_factory=dict)
    activities: dict[str, dict[str, Any]] = field(default_factory=dict)
    url: str = ""
    _runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/hooks/switchboard", self._hook)
        app.router.add_put("/api/customers/{id}", self._customer)
        app.router.add_post("/api/activities", self._activity)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> CrmStandIn:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        sockets = site._server.sockets  # type: ignore[union-attr]
        self.url = f"http://{host}:{sockets[0].getsockname()[1]}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _checked(self, request: web.Request) -> tuple[str, bytes] | web.Response:
        self.requests += 1
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.fail_status is not None:
            return web.Response(status=self.fail_status, text="CRM unavailable")
        body = await request.read()
        try:
            verify(
                self.secret,
                request.headers.get(SIGNATURE_HEADER, ""),
                body,
                now=self.now(),
                window_s=self.window_s,
            )
        except SignatureError as exc:
            self.refused.append(str(exc))
            return web.Response(status=401, text=str(exc))
        event_id = request.headers.get(EVENT_ID_HEADER, "")
        if not event_id:
            return web.Response(status=400, text="no event id")
        self.arrivals.append(event_id)
        if event_id in self.events:
            self.duplicates += 1
            self.duplicate_ids.append(event_id)
            return web.Response(status=200, text="duplicate")
        return event_id, body

    async def _hook(self, request: web.Request) -> web.Response:
        got = await self._checked(request)
        if isinstance(got, web.Response):
            return got
        event_id, body = got
        self.events[event_id] = json.loads(body)
        self.order.append(event_id)
        return web.Response(status=204)

    async def _customer(self, request: web.Request) -> web.Response:
        got = await self._checked(request)
        if isinstance(got, web.Response):
            return got
        event_id, body = got
        self.events[event_id] = {"type": "customer", "id": request.match_info["id"]}
        self.order.append(event_id)
        self.customers[request.match_info["id"]] = json.loads(body)
        return web.json_response({"ok": True})

    async def _activity(self, request: web.Request) -> web.Response:
        got = await self._checked(request)
        if isinstance(got, web.Response):
            return got
        event_id, body = got
        self.events[event_id] = {"type": "activity"}
        self.order.append(event_id)
        self.activities[event_id] = json.loads(body)
        return web.json_response({"ok": True}, status=201)

    def of_type(self, prefix: str) -> list[dict[str, Any]]:
        """The events received whose type starts with `prefix`, in arrival order."""
        return [self.events[i] for i in self.order if str(self.events[i].get("type", "")).startswith(prefix)]
