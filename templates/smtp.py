"""Sending over SMTP with aiosmtplib: one reused connection, a rate, retry on 4xx, fail on 5xx."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.message import Message

import aiosmtplib

log = logging.getLogger("templates.smtp")


class EmailError(Exception):
    """Root of email sending errors."""


@dataclass(frozen=True, slots=True)
class SendOutcome:
    status: str  # sent | retry_later | failed
    code: int | None = None
    reason: str | None = None


class SmtpSender:
    """Keeps one SMTP connection open across messages (reconnecting when the server drops it)."""

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
        reconnect_every: int = 500,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.host, self.port = host, port
        self.username, self._password = username, password
        self.starttls, self.use_tls, self.timeout = starttls, use_tls, timeout
        self.interval = 1.0 / rate_per_second if rate_per_second > 0 else 0.0
        self.reconnect_every = reconnect_every
        self.clock, self.sleep = clock, sleep
        self._smtp: aiosmtplib.SMTP | None = None
        self._sent_on_connection = 0
        self._next_slot = 0.0
        self._lock = asyncio.Lock()
        self.connections = 0

    async def _connect(self) -> aiosmtplib.SMTP:
        start_tls: bool | None = {"auto": None, "always": True, "never": False}[self.starttls]
        smtp = aiosmtplib.SMTP(
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
        self._sent_on_connection = 0
        return smtp

    async def close(self) -> None:
        if self._smtp is not None:
            try:
                await self._smtp.quit()
            except (aiosmtplib.SMTPException, OSError):
                self._smtp.close()
            self._smtp = None

    async def send(self, message: Message) -> SendOutcome:
        """Send one message: `sent`, `retry_later` (4xx, connection trouble) or `failed` (5xx)."""
        async with self._lock:
            now = self.clock()
            if self._next_slot > now:
                await self.sleep(self._next_slot - now)
            self._next_slot = max(now, self._next_slot) + self.interval
            for attempt in (1, 2):
                try:
                    if (
                        self._smtp is None
                        or not self._smtp.is_connected
                        or self._sent_on_connection >= self.reconnect_every
                    ):
                        await self.close()
                        self._smtp = await self._connect()
                    await self._smtp.send_message(message)
                    self._sent_on_connection += 1
                    return SendOutcome("sent")
                except aiosmtplib.SMTPRecipientsRefused as exc:
                    err = next(iter(exc.recipients), None)
                    return self._classify(err.code if err else 550, err.message if err else str(exc))
                except aiosmtplib.SMTPResponseException as exc:
                    if exc.code in (421,):  # the server is closing the connection: reconnect once
                        await self.close()
                        if attempt == 1:
                            continue
                    return self._classify(exc.code, exc.message)
                except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPConnectError, OSError) as exc:
                    await self.close()
                    if attempt == 1:
                        continue
                    return SendOutcome("retry_later", None, f"cannot reach the mail server: {exc}")
            return SendOutcome("retry_later", None, "mail server unavailable")

    @staticmethod
    def _classify(code: int, message: str) -> SendOutcome:
        if 400 <= code < 500:
            return SendOutcome("retry_later", code, message)
        return SendOutcome("failed", code, message)
