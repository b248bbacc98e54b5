"""A stand-in for Kannel's HTTP interface on loopback: the same sendsms requests, answers and DLR GETs.

The real Kannel (Debian's package, with its fake SMSC) only ever reports success; this stand-in
also plays the failure paths: refused credentials, a 503, failed or rejected DLRs, late, duplicate
and out-of-order DLRs, and messages from customers sent to an sms-service URL. The demo uses it as
its SMS gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import aiohttp
from aiohttp import web

from crm_link.clock import Clock, system_clock


class KannelStandIn:
    def __init__(
        self,
        username: str = "tester",
        password: str = "secret",
        *,
        dlr_delay: float = 0.01,
        clock: Clock = system_clock,
    ) -> None:
        self.username, self.password = username, password
        self.dlr_delay = dlr_delay
        self.clock = clock  # Kannel's own clock, which stamps a report's %T
        self.received: list[dict[str, str]] = []
        self.fail_auth = False
        self.status_next: int | None = None
        self.dlr_type: dict[str, int] = {}  # recipient -> DLR type (default 1, delivered)
        self.duplicate_dlrs = False
        self.out_of_order = False
        self.reply_stop_to: set[str] = set()  # recipients who answer STOP (the demo's odd opt-out)
        self.inbound_url: str | None = None
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.sendsms_url = ""

    async def __aenter__(self) -> KannelStandIn:
        app = web.Application()
        app.router.add_get("/cgi-bin/sendsms", self._sendsms)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.sendsms_url = f"http://127.0.0.1:{port}/cgi-bin/sendsms"
        self._session = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _sendsms(self, request: web.Request) -> web.Response:
        q = dict(request.query)
        self.received.append(q)
        if self.status_next is not None:
            status, self.status_next = self.status_next, None
            return web.Response(status=status, text="Service temporarily unavailable")
        if self.fail_auth or q.get("username") != self.username or q.get("password") != self.password:
            return web.Response(status=403, text="Authorization failed for sendsms")
        if not q.get("to"):
            return web.Response(status=400, text="Missing receiver number for sendsms")
        if "text" not in q:
            return web.Response(status=400, text="Missing text")
        if q.get("dlr-url"):
            self._spawn(self._dlrs(q))
        if q["to"] in self.reply_stop_to and self.inbound_url:
            self._spawn(self.inject_inbound(self.inbound_url, q["to"], q.get("from", ""), "STOP"))
        return web.Response(status=202, text="0: Accepted for delivery")

    async def _get(self, url: str) -> None:
        assert self._session is not None
        with contextlib.suppress(aiohttp.ClientError):
            async with self._session.get(url) as resp:
                await resp.read()

    def _dlr(self, template: str, dlr_type: int, answer: str) -> str:
        from urllib.parse import quote

        return (
            template.replace("%d", str(dlr_type))
            .replace("%A", quote(answer))
            .replace("%T", str(int(self.clock().timestamp())))
        )

    async def _dlrs(self, q: dict[str, str]) -> None:
        await asyncio.sleep(self.dlr_delay)
        final = self.dlr_type.get(q["to"], 1)
        answer = {1: "ACK/", 2: "NACK/0x00000001/Undeliverable", 16: "NACK/0x0000000b/Invalid destination"}
        sequence = [8, final] if not self.out_of_order else [final, 8]
        if self.duplicate_dlrs:
            sequence.append(final)
        for dlr_type in sequence:
            await self._get(self._dlr(q["dlr-url"], dlr_type, answer.get(dlr_type, "ACK/")))

    async def inject_inbound(
        self, get_url: str, sender: str, to: str, text: str, msg_id: str | None = None
    ) -> None:
        """Send a customer's message to an sms-service URL the way Kannel's get-url does."""
        from urllib.parse import urlencode

        params = {"from": sender, "to": to, "text": text} | ({"id": msg_id} if msg_id else {})
        sep = "&" if "?" in get_url else "?"
        await self._get(f"{get_url}{sep}{urlencode(params)}")
