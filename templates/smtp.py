"""Sending over SMTP with aiosmtplib: a pool of reused connections, rate limits, retry on 4xx, fail on 5xx."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiosmtplib

from templates.email_message import Outgoing

log = logging.getLogger("templates.smtp")


class EmailError(Exception):
    """Root of email sending errors."""


class MaybeDelivered(EmailError):
    """The connection broke (or timed out) once the message's data had begun: the server may have
    it. Never sent again from here; the caller records the message as in doubt."""


class _Smtp(aiosmtplib.SMTP):
    """aiosmtplib's client, remembering whether the current message's DATA has begun."""

    data_started = False

    async def data(self, *args: Any, **kwargs: Any) -> aiosmtplib.SMTPResponse:
        self.data_started = True
        return await super().data(*args, **kwargs)


@dataclass(frozen=True, slots=True)
class SendOutcome:
    status: str  # sent | retry_later | failed | not_sent
    code: int | None = None
    reason: str | None = None


class _Connection:
    """One pooled SMTP connection (opened on first use, reopened when the server drops it)."""

    __slots__ = ("next_slot", "sent", "smtp")

    def __init__(self) -> None:
        self.smtp: _Smtp | None = None
        self.sent = 0
        self.next_slot = 0.0

    def abort(self) -> None:
        """Drop the connection without QUIT (its state is unknown)."""
        if self.smtp is not None:
            self.smtp.close()
            self.smtp = None


class SmtpSender:
    """A pool of `connections` SMTP connections, each kept open across messages.

    `send` takes an idle connection (waiting for one when all are busy), so up to `connections`
    messages are in flight at once. Rates: `rate_per_second` over the whole pool and
    `rate_per_connection` on each connection (0 = unlimited).
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        username: str = "",
        password: str = "",
        starttls: str = "auto",
        use_tls: bool = False,
        timeout: float = 30.0,
        rate_per_second: float = 20.0,
        rate_per_connection: float = 0.0,
        connections: int = 1,
        reconnect_every: int = 500,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if connections < 1:
            raise ValueError("connections must be at least 1")
        self.host, self.port = host, port
        self.username, self._password = username, password
        self.starttls, self.use_tls, self.timeout = starttls, use_tls, timeout
        self.interval = 1.0 / rate_per_second if rate_per_second > 0 else 0.0
        self.connection_interval = 1.0 / rate_per_connection if rate_per_connection > 0 else 0.0
        self.size = connections
        self.reconnect_every = reconnect_every
        self._epoch = 0  # bumped when the pool is closed or aborted under sends in flight
        self.clock, self.sleep = clock, sleep
        self._pool = [_Connection() for _ in range(connections)]
        self._idle: asyncio.Queue[_Connection] = asyncio.Queue()
        for conn in self._pool:
            self._idle.put_nowait(conn)
        self._next_slot = 0.0
        self.connections = 0  # connections opened so far

    async def _connect(self, conn: _Connection) -> _Smtp:
        start_tls: bool | None = {"auto": None, "always": True, "never": False}[self.starttls]
        smtp = _Smtp(
            hostname=self.host,
            port=self.port,
            use_tls=self.use_tls,
            start_tls=start_tls,
            timeout=self.timeout,
        )
        await smtp.connect()
        if self.username:
            await smtp.login(self.username, self._password)
        self.connections += 1
        conn.sent = 0
        return smtp

    async def _close(self, conn: _Connection) -> None:
        if conn.smtp is not None:
            smtp, conn.smtp = conn.smtp, None
            try:
                await smtp.quit()
            except (aiosmtplib.SMTPException, OSError):
                smtp.close()

    async def close(self) -> None:
        """Say QUIT on every open connection of the pool."""
        self._epoch += 1  # a send broken by this is not tried again
        await asyncio.gather(*(self._close(conn) for conn in self._pool))

    def abort(self) -> None:
        """Drop every connection at once, without QUIT (as a killed process would)."""
        self._epoch += 1
        for conn in self._pool:
            conn.abort()

    async def _wait_for_slot(self, conn: _Connection) -> None:
        now = self.clock()
        slot = max(now, self._next_slot)
        self._next_slot = slot + self.interval
        if self.connection_interval:
            slot = max(slot, conn.next_slot)
            conn.next_slot = slot + self.connection_interval
        if slot > now:
            await self.sleep(slot - now)

    async def send(self, message: Outgoing, *, go: Callable[[], bool] | None = None) -> SendOutcome:
        """Send one message (its bytes as they are, with its envelope): `sent`, `retry_later` (4xx, connection trouble) or `failed` (5xx).

        `go`, when given, is asked once a connection is free and the rate allows: False means
        "not any more" and the message is not sent (`status` "not_sent")."""
        conn = await self._idle.get()
        try:
            await self._wait_for_slot(conn)
            if go is not None and not go():
                return SendOutcome("not_sent")
            return await self._send_on(conn, message)
        except BaseException:
            conn.abort()  # cancelled or broken mid-exchange: never reuse a connection in that state
            raise
        finally:
            self._idle.put_nowait(conn)

    async def _send_on(self, conn: _Connection, message: Outgoing) -> SendOutcome:
        epoch = self._epoch
        for attempt in (1, 2):
            try:
                if conn.smtp is None or not conn.smtp.is_connected or conn.sent >= self.reconnect_every:
                    await self._close(conn)
                    conn.smtp = await self._connect(conn)
                conn.smtp.data_started = False
                await conn.smtp.sendmail(message.sender, [message.recipient], message.data)
                conn.sent += 1
                return SendOutcome("sent")
            except aiosmtplib.SMTPRecipientsRefused as exc:
                err = next(iter(exc.recipients), None)
                return self._classify(err.code if err else 550, err.message if err else str(exc))
            except aiosmtplib.SMTPResponseException as exc:
                if exc.code in (421,):  # the server is closing the connection: reconnect once
                    await self._close(conn)
                    if attempt == 1:
                        continue
                return self._classify(exc.code, exc.message)
            except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPConnectError, OSError) as exc:
                data_started = conn.smtp is not None and conn.smtp.data_started
                if data_started and (isinstance(exc, TimeoutError) or epoch != self._epoch):
                    # no answer to the message's data in time (a slow server that may well have
                    # queued it), or our own pool closed under it: sending it again could deliver
                    # it twice
                    conn.abort()
                    raise MaybeDelivered(f"no answer to the message's data: {exc!r}") from exc
                if epoch != self._epoch:  # the pool was closed or aborted meanwhile: not again
                    conn.abort()
                    return SendOutcome("retry_later", None, f"the connection pool closed: {exc}")
                # mostly a pooled connection the server closed while it sat idle (or a server
                # hanging up mid-message, which did not take it): reopen once
                await self._close(conn)
                if attempt == 1:
                    continue
                return SendOutcome("retry_later", None, f"cannot reach the mail server: {exc}")
        return SendOutcome("retry_later", None, "mail server unavailable")

    @staticmethod
    def _classify(code: int, message: str) -> SendOutcome:
        if 400 <= code < 500:
            return SendOutcome("retry_later", code, message)
        return SendOutcome("failed", code, message)
