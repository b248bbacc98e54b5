"""Twilio Messages: send through the REST API (an injected twilio Client), reports and replies by webhook."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

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

# Twilio's MessageStatus values (docs: "Message resource", status callback parameters)
STATUSES: dict[str, DeliveryStatus] = {
    "accepted": "sent",
    "queued": "sent",
    "sending": "sent",
    "sent": "sent",
    "delivered": "delivered",
    "undelivered": "undelivered",
    "failed": "failed",
    "read": "delivered",
}


def parse_twilio_status(params: Mapping[str, str], channel: str, message_id: str | None) -> DeliveryReport:
    """A status callback (MessageSid, MessageStatus, ErrorCode) as a DeliveryReport; ValueError naming a field."""
    sid = params.get("MessageSid") or params.get("SmsSid")
    if not sid:
        raise ValueError("MessageSid: missing")
    raw = params.get("MessageStatus") or params.get("SmsStatus") or ""
    if raw not in STATUSES:
        raise ValueError(f"MessageStatus: {raw!r} is not a Twilio message status")
    return DeliveryReport(
        channel=channel,
        status=STATUSES[raw],
        message_id=message_id,
        provider_id=sid,
        error_code=params.get("ErrorCode") or None,
        error_text=params.get("ErrorMessage") or None,
    )


def parse_twilio_inbound(params: Mapping[str, str], channel: str) -> InboundSms:
    """An incoming-message webhook (From, To, Body, MessageSid) as an InboundSms."""
    for name in ("From", "MessageSid"):
        if not params.get(name):
            raise ValueError(f"{name}: missing")
    return InboundSms(
        channel=channel,
        from_number=params["From"],
        to_number=params.get("To") or None,
        text=params.get("Body", ""),
        provider_id=params["MessageSid"],
    )


class TwilioSmsChannel:
    """A Twilio number (or Messaging Service) as an SMS channel."""

    def __init__(
        self,
        name: str,
        client: Any,
        *,
        from_number: str | None,
        messaging_service_sid: str | None,
        status_callback_url: str,
    ) -> None:
        if not from_number and not messaging_service_sid:
            raise ValueError("from: a Twilio number or a messaging_service_sid is required")
        self.name = name
        self.client = client
        self.from_number = from_number
        self.messaging_service_sid = messaging_service_sid
        self.status_callback_url = status_callback_url

    async def start(self, sink: ChannelSink) -> None:
        self.sink = sink

    async def close(self) -> None:
        pass  # the client's session is closed by whoever made the client

    def callback_for(self, message_id: str) -> str:
        return f"{self.status_callback_url}?{urlencode({'channel': self.name, 'mid': message_id})}"

    async def send(self, message: OutboundSms) -> SendResult:
        from twilio.base.exceptions import TwilioRestException

        kw: dict[str, Any] = {
            "to": message.to,
            "body": message.text,
            "status_callback": self.callback_for(message.message_id),
        }
        if self.messaging_service_sid:
            kw["messaging_service_sid"] = self.messaging_service_sid
        else:
            kw["from_"] = message.sender or self.from_number
        try:
            created = await self.client.messages.create_async(**kw)
        except TwilioRestException as exc:
            retryable = exc.status >= 500 or exc.status == 429
            raise ChannelError(
                f"Twilio: {exc.msg}", retryable=retryable, code=str(exc.code or exc.status)
            ) from None
        except TimeoutError:
            # the message may exist: in doubt, never sent again blindly
            raise ChannelError("Twilio did not answer in time", retryable=False, code="ambiguous") from None
        except OSError as exc:
            raise ChannelConnectionError(f"cannot reach Twilio: {exc}") from None
        return SendResult(provider_id=created.sid, segments=int(created.num_segments or 1), status="sent")

    async def reconcile(self, to: str, text: str, since: datetime) -> str | None:
        """Whether Twilio has a message we may have created (a crash or a timeout left it in doubt):
        its SID, or None when Twilio has no such message (it is safe to send). Raises if Twilio
        cannot be asked."""
        from twilio.base.exceptions import TwilioRestException

        try:
            found = await self.client.messages.list_async(to=to, limit=200)
        except TwilioRestException as exc:
            raise ChannelError(
                f"Twilio: {exc.msg}", retryable=True, code=str(exc.code or exc.status)
            ) from None
        margin = since - timedelta(minutes=5)
        for m in found:
            created = m.date_created
            if m.body == text and (created is None or created >= margin):
                return str(m.sid)
        return None
