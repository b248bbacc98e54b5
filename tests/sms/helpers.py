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

from campaigns.sms.blasts import BlastService
from campaigns.sms.channel import ChannelError, ChannelSink, OutboundSms, SendResult
from campaigns.sms.sender import ChannelWorker
from crm_link.store import Store


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


def render(text: str, contact: Any) -> str:
    """A blast's renderer that knows one merge code, `{{ contact.first_name }}` (ValueError when the
    customer has no first name, as the real one says of a missing value)."""
    if "{{ contact.first_name }}" in text and not contact.first_name:
        raise ValueError("merge code contact.first_name has no value for this customer")
    return text.replace("{{ contact.first_name }}", contact.first_name)


def analyze(text: str) -> dict[str, Any]:
    """A blast's text analysis: GSM-7, 160 characters a segment, 153 each when concatenated."""
    if len(text) > 1530:
        raise ValueError("too long")
    return {"encoding": "gsm7", "segments": 1 if len(text) <= 160 else -(-len(text) // 153), "warnings": []}


def blast_service(store: Store, clock: VirtualClock, **options: Any) -> BlastService:
    """The blast engine on channel `main` with `render` and `analyze`, quiet hours 21:00-08:00, on
    the virtual clock; `options` add to or replace these."""
    args: dict[str, Any] = {
        "channels": lambda: ["main"],
        "render": render,
        "analyze": analyze,
        "quiet_start": "21:00",
        "quiet_end": "08:00",
        "clock": clock.now,
    }
    return BlastService(store, **(args | options))


def channel_worker(
    store: Store, channel: RecordingChannel, clock: VirtualClock, **options: Any
) -> ChannelWorker:
    """The sender of channel `main` at 50 segments a second, quiet hours 21:00-08:00, on the virtual
    clock (its sleeps move it); `options` add to or replace these."""
    args: dict[str, Any] = {
        "name": "main",
        "rate_per_second": 50.0,
        "quiet_start": "21:00",
        "quiet_end": "08:00",
        "clock": clock.now,
        "monotonic": clock.monotonic,
        "sleep": clock.sleep,
    }
    return ChannelWorker(store, channel, **(args | options))


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
