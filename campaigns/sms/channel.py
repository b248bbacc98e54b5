"""The one interface every SMS channel (Twilio, Kannel, GSM modem) implements."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol

DeliveryStatus = Literal["sent", "delivered", "failed", "undelivered", "unknown"]


class ChannelError(Exception):
    """A channel could not take a message; `retryable` says whether trying again later can help."""

    def __init__(self, reason: str, *, retryable: bool, code: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.code = code


class ChannelConnectionError(ChannelError, ConnectionError):
    """The gateway or modem could not be reached at all."""

    def __init__(self, reason: str, *, code: str | None = None) -> None:
        super().__init__(reason, retryable=True, code=code)


@dataclass(frozen=True, slots=True)
class OutboundSms:
    """One message to send: our id (the outbox row), E.164 destination, the final text."""

    message_id: str
    to: str
    text: str
    sender: str | None = None


@dataclass(frozen=True, slots=True)
class SendResult:
    """What the channel said when it accepted a message."""

    provider_id: str | None
    segments: int
    status: DeliveryStatus = "sent"


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    """A delivery report matched back to our message id (or, failing that, the provider's id)."""

    channel: str
    status: DeliveryStatus
    message_id: str | None = None
    provider_id: str | None = None
    error_code: str | None = None
    error_text: str | None = None
    at: datetime | None = None


@dataclass(frozen=True, slots=True)
class InboundSms:
    """A message a customer sent us."""

    channel: str
    from_number: str
    to_number: str | None
    text: str
    provider_id: str | None = None
    at: datetime | None = None
    extra: dict[str, str] = field(default_factory=dict)


class ChannelSink(Protocol):
    """Where a channel hands delivery reports and inbound messages."""

    async def on_delivery(self, report: DeliveryReport) -> None: ...

    async def on_inbound(self, message: InboundSms) -> None: ...


class SmsChannel(Protocol):
    """A configured SMS channel; started and closed by the app lifecycle. A channel that can take
    only one message at a time says so with a true `one_at_a_time` attribute."""

    name: str

    async def start(self, sink: ChannelSink) -> None: ...

    async def send(self, message: OutboundSms) -> SendResult: ...

    async def close(self) -> None: ...
