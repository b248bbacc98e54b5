"""Kannel's HTTP interface: `sendsms` out, delivery reports and inbound messages back by GET."""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from datetime import UTC, datetime

import aiohttp

from campaigns.sms.channel import (
    ChannelConnectionError,
    ChannelError,
    ChannelSink,
    DeliveryReport,
    DeliveryStatus,
    InboundSms,
    OutboundSms,
    SendResult,
)
from campaigns.sms.gsm7 import MessageTooLong, analyze
from crm_link.models import parse_id

# Kannel DLR types (the `%d` escape): 1 delivered, 2 failed, 4 buffered, 8 accepted by SMSC, 16 rejected by SMSC
DLR_TYPES: dict[int, DeliveryStatus] = {1: "delivered", 2: "failed", 4: "sent", 8: "sent", 16: "failed"}
DLR_MASK = 1 | 2 | 4 | 8 | 16


def secret_ok(given: str | None, expected: str) -> bool:
    """Constant-time check of a webhook's per-channel secret."""
    return bool(given) and hmac.compare_digest(given.encode(), expected.encode())  # type: ignore[union-attr]


def parse_kannel_dlr(query: Mapping[str, str], channel: str) -> DeliveryReport:
    """A DLR GET (`id`, `type`, `answer`, `ts`) as a DeliveryReport; ValueError naming a bad field."""
    message_id = query.get("id", "").strip()
    if not message_id:
        raise ValueError("id: missing")
    parse_id(message_id, "id")  # ours, from dlr_url_for: a row id; ValidationError is a ValueError
    raw = query.get("type", "").strip()
    if not (raw.isascii() and raw.isdigit()) or int(raw) not in DLR_TYPES:
        raise ValueError(f"type: {raw!r} is not a Kannel DLR type (1, 2, 4, 8 or 16)")
    at = None
    ts = query.get("ts", "").strip()
    if ts.isascii() and ts.isdigit() and len(ts) <= 11:
        at = datetime.fromtimestamp(int(ts), UTC)
    status = DLR_TYPES[int(raw)]
    answer = query.get("answer") or None
    return DeliveryReport(
        channel=channel,
        status=status,
        message_id=message_id,
        error_code=raw if status == "failed" else None,
        error_text=answer if status == "failed" else None,
        at=at,
    )


def parse_kannel_inbound(query: Mapping[str, str], channel: str) -> InboundSms:
    """An sms-service get-url request (`from`, `to`, `text`, optional `id`) as an InboundSms."""
    sender = query.get("from", "").strip()
    if not sender:
        raise ValueError("from: missing")
    if "text" not in query:
        raise ValueError("text: missing")
    return InboundSms(
        channel=channel,
        from_number=sender,
        to_number=query.get("to") or None,
        text=query["text"],
        provider_id=query.get("id") or None,
    )


class KannelChannel:
    """Sends through Kannel's sendsms; Kannel reports back to our dlr-url with our message id."""

    def __init__(
        self,
        name: str,
        sendsms_url: str,
        username: str,
        password: str,
        *,
        sender: str | None,
        dlr_url: str,
        secret: str,
        timeout: float = 10.0,
        max_parts: int = 10,
        connections: int = 32,
    ) -> None:
        self.name = name
        self.sendsms_url = sendsms_url
        self.username, self._password = username, password
        self.sender = sender
        self.dlr_url = dlr_url
        self.secret = secret
        self.timeout = timeout
        self.max_parts = max_parts
        self.connections = connections  # HTTP connections to Kannel, kept alive: requests in flight
        self._session: aiohttp.ClientSession | None = None

    async def start(self, sink: ChannelSink) -> None:
        self.sink = sink
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            connector=aiohttp.TCPConnector(limit=self.connections, keepalive_timeout=30),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def dlr_url_for(self, message_id: str) -> str:
        from urllib.parse import urlencode

        query = urlencode({"channel": self.name, "secret": self.secret, "id": message_id})
        return f"{self.dlr_url}?{query}&type=%d&answer=%A&ts=%T"

    async def send(self, message: OutboundSms) -> SendResult:
        if self._session is None:
            raise ChannelConnectionError("channel not started")
        try:
            info = analyze(message.text, self.max_parts)
        except MessageTooLong as exc:
            raise ChannelError(str(exc), retryable=False, code="too_long") from None
        params = {
            "username": self.username,
            "password": self._password,
            "to": message.to,
            "text": message.text,
            "dlr-mask": str(DLR_MASK),
            "dlr-url": self.dlr_url_for(message.message_id),
            "max-messages": str(self.max_parts),
        }
        if message.sender or self.sender:
            params["from"] = message.sender or self.sender or ""
        if info.encoding == "ucs2":
            params |= {"coding": "2", "charset": "UTF-8"}
        try:
            async with self._session.get(self.sendsms_url, params=params) as resp:
                body = (await resp.text()).strip()
                status = resp.status
        except TimeoutError:
            # Kannel may have taken it: report it as in doubt, never resend blindly
            raise ChannelError("Kannel did not answer in time", retryable=False, code="ambiguous") from None
        except aiohttp.ClientError as exc:
            raise ChannelConnectionError(f"cannot reach Kannel at {self.sendsms_url}: {exc}") from None
        if status == 202 or (status == 200 and body.startswith(("0:", "3:"))):
            return SendResult(provider_id=None, segments=info.segments, status="sent")
        if status >= 500:
            raise ChannelError(f"Kannel answered {status}: {body}", retryable=True, code=str(status))
        raise ChannelError(
            f"Kannel refused the message ({status}): {body}", retryable=False, code=str(status)
        )
