"""A virtual clock and an in-process SMS channel for testing the blast engine's own logic.

The real transports (Kannel, Twilio's API, a modem on a pseudo-terminal) have end-to-end tests of
their own; these test what the engine decides: when, how fast, how often, and what it records.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from campaigns.sms.channel import ChannelError, ChannelSink, OutboundSms, SendResult


class VirtualClock:
    """Wall time that moves only when someone sleeps (or the test says so)."""

    def __init__(self, start: datetime) -> None:
        self.t = start

    def now(self) -> datetime:
        return self.t

    def monotonic(self) -> float:
        return self.t.timestamp()

    def advance(self, seconds: float) -> None:
        self.t += timedelta(seconds=seconds)

    async def sleep(self, seconds: float) -> None:
        self.advance(seconds)
        await asyncio.sleep(0)


class RecordingChannel:
    """An SmsChannel that accepts everything and remembers what it sent and when (virtual time)."""

    def __init__(self, name: str, clock: VirtualClock) -> None:
        self.name = name
        self.clock = clock
        self.sent: list[tuple[datetime, OutboundSms]] = []
        self.fail_numbers: dict[str, ChannelError] = {}
        self.hang_after: int | None = None
        self.hung = asyncio.Event()
        self._ids = itertools.count(1)

    async def start(self, sink: ChannelSink) -> None:
        self.sink = sink

    async def send(self, message: OutboundSms) -> SendResult:
        if message.to in self.fail_numbers:
            raise self.fail_numbers[message.to]
        if self.hang_after is not None and len(self.sent) >= self.hang_after:
            self.hung.set()
            await asyncio.Event().wait()  # the gateway never answers
        self.sent.append((self.clock.now(), message))
        return SendResult(provider_id=f"P{next(self._ids)}", segments=1)

    async def close(self) -> None:
        pass


T0 = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)  # 09:00 in Chicago, 07:00 in Los Angeles


async def blast_when(
    api: Any, blast_id: int, done: Callable[[dict[str, Any]], bool], timeout: float = 10
) -> dict[str, Any]:
    """Poll a blast over the API until `done(body)`; the body."""
    async with asyncio.timeout(timeout):
        while True:
            body: dict[str, Any] = await (await api.get(f"/api/v1/sms/blasts/{blast_id}")).json()
            if done(body):
                return body
            await asyncio.sleep(0.02)


def reported(body: dict[str, Any]) -> int:
    """Messages of a blast with a final delivery report."""
    return int(body["counts"]["delivered"] + body["counts"]["failed"])
