"""What customers send back: delivery reports, STOP/START/HELP keywords, and replies."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from campaigns.sms.channel import DeliveryReport, InboundSms
from crm_link.clock import system_clock
from crm_link.contacts import SmsConsent
from crm_link.models import Contact, Touch, parse_id
from crm_link.sms import OutboxMessage, OutboxRow, ReportUpdate
from crm_link.store import Store
from crm_link.touches import TouchInput

log = logging.getLogger("campaigns.sms.inbound")

STOP_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"})
START_WORDS = frozenset({"START", "UNSTOP", "YES"})
HELP_WORDS = frozenset({"HELP", "INFO"})

# told of each reply that is not a keyword, per contact with the number (None: nobody has it) and
# its touch; True when it handled the reply (it answered the follow-up a text served, a survey
# took the answer), False to put it on the owner's day as a reply follow-up
ReplyHandler = Callable[[Contact | None, Touch, InboundSms], Awaitable[bool]]
# records the touch of a text from a number no contact has, together with a prospect for the number
# and its follow-up on the unowned pool, in one transaction; returns the touch
UnknownSender = Callable[[TouchInput], Awaitable[Touch]]


def keyword(text: str) -> str | None:
    """The opt-out/opt-in/help keyword a message consists of, if any (case and punctuation ignored)."""
    word = "".join(ch for ch in text.strip().upper() if ch.isalnum())
    if word in STOP_WORDS:
        return "stop"
    if word in START_WORDS:
        return "start"
    if word in HELP_WORDS:
        return "help"
    return None


class SmsEvents:
    """The ChannelSink every channel reports to; writes touches, flags and replies."""

    # (text, its touches) -> True when the text answered a survey texted to the customer (set by
    # the root to SurveyService.take_sms_reply); a text it does not take goes on as a reply
    survey_reply: Callable[[str, list[Touch]], Awaitable[bool]] | None = None
    # told of the follow-ups whose text the network could not deliver (they are calls again), so
    # their assignees' open pages refresh (set by the root to the follow-up loop)
    on_followups_to_call: Callable[[list[int]], Awaitable[None]] | None = None

    def __init__(
        self,
        store: Store,
        *,
        help_text: str,
        stop_reply: str = "You are unsubscribed and will receive no more messages. Reply START to resubscribe.",
        start_reply: str = "You are subscribed again. Reply STOP to unsubscribe.",
        clock: Callable[[], datetime] = system_clock,
        on_queued: Callable[[str], None] | None = None,
        on_reply: ReplyHandler | None = None,
        unknown_sender: UnknownSender | None = None,
    ) -> None:
        self.store = store
        self.help_text = help_text
        self.stop_reply = stop_reply
        self.start_reply = start_reply
        self.clock = clock
        self.on_queued = on_queued
        self.on_reply = on_reply
        self.unknown_sender = unknown_sender
        self.reports = 0
        self.unmatched_reports = 0
        self.max_batch = 500
        self._pending: list[tuple[ReportUpdate, asyncio.Future[OutboxMessage | None]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def on_delivery(self, report: DeliveryReport) -> None:
        """Apply a delivery report; returns once it is committed. Reports that arrive while a batch
        is being written are written together in the next one (group commit: a busy gateway's
        reports cost one transaction per batch, not one each)."""
        message_id = None
        if report.message_id is not None:
            try:
                message_id = parse_id(report.message_id)
            except ValueError:
                message_id = None
        update = ReportUpdate(
            report.channel,
            message_id,
            report.provider_id,
            report.status,
            report.error_code,
            report.error_text,
        )
        fut: asyncio.Future[OutboxMessage | None] = asyncio.get_running_loop().create_future()
        self._pending.append((update, fut))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_reports(), name="sms-report-batch")
        updated = await fut
        self.reports += 1
        if (
            updated is not None
            and updated.state == "failed"
            and updated.followup_id is not None
            and self.on_followups_to_call is not None
        ):
            try:
                await self.on_followups_to_call([updated.followup_id])
            except Exception:  # telling a page is not worth failing the gateway's webhook over
                log.exception("event=sms_followup_notify_error followup=%s", updated.followup_id)
        if updated is None:
            self.unmatched_reports += 1
            log.info(
                "event=sms_report_ignored channel=%s id=%s provider_id=%s status=%s",
                report.channel,
                report.message_id,
                report.provider_id,
                report.status,
            )

    async def _flush_reports(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
            try:
                results = await self.store.sms.apply_reports([u for u, _ in batch])
            except Exception:
                # one report that cannot be written must not sink its neighbours: each on its own
                results = []
                for update, fut in batch:
                    try:
                        (one,) = await self.store.sms.apply_reports([update])
                    except Exception as exc:
                        if not fut.done():
                            fut.set_exception(exc)
                        results.append(None)
                    else:
                        results.append(one)
            for (_, fut), result in zip(batch, results, strict=True):
                if not fut.done():
                    fut.set_result(result)

    async def close(self) -> None:
        """Finish writing the reports already received."""
        if self._flusher is not None:
            await self._flusher

    def _inbound_key(self, msg: InboundSms) -> str:
        if msg.provider_id:
            return f"sms-in:{msg.channel}:{msg.provider_id}"
        at = (msg.at or self.clock()).isoformat(timespec="minutes")
        digest = hashlib.sha256(f"{msg.from_number}|{msg.text}|{at}".encode()).hexdigest()[:24]
        return f"sms-in:{msg.channel}:{digest}"

    async def on_inbound(self, msg: InboundSms) -> None:
        contacts = await self.store.contacts.find_by_phone(msg.from_number)
        key = self._inbound_key(msg)
        word = keyword(msg.text)
        at = msg.at or self.clock()
        # one touch per contact with this number, or one without a contact when none has it
        targets: list[Contact | None] = [*contacts] if contacts else [None]
        items = [
            TouchInput(
                source_key=key if contact is None or contact is contacts[0] else f"{key}:{contact.id}",
                kind="sms",
                direction="inbound",
                started_at=at,
                contact_id=contact.id if contact else None,
                channel=msg.channel,
                status="received",
                number=msg.from_number,
                summary=msg.text[:1000],
                payload={"provider_id": msg.provider_id, "keyword": word},
            )
            for contact in targets
        ]
        if not contacts and word is None and self.unknown_sender is not None:
            # a text from a new number (not a keyword): its prospect comes with its touch, so
            # nothing sees the text without its contact; a redelivery finds the touch theirs
            touches = [await self.unknown_sender(items[0])]
        else:
            touches = [await self.store.touches.record(item) for item in items]
        touch = touches[-1]
        if not touch.created:
            return  # a redelivered webhook: already handled
        if word is None and self.survey_reply is not None and await self.survey_reply(msg.text, touches):
            return
        if word == "stop":
            for c in contacts:
                await self.store.contacts.set_flags(c.id, sms_opt_out=True)  # also withdraws consent
            await self._reply(msg, self.stop_reply, contacts, key)
        elif word == "start":
            for c in contacts:  # opted in again, with consent given by this reply
                await self.store.contacts.set_sms_consent(c.id, SmsConsent("reply_start"))
            await self._reply(msg, self.start_reply, contacts, key)
        elif word == "help":
            await self._reply(msg, self.help_text, contacts, key)
        else:
            for contact, t in zip(targets, touches, strict=True):
                await self.reply(contact, t, msg)

    async def reply(self, contact: Contact | None, touch: Touch, msg: InboundSms) -> None:
        """A customer's text that is not a keyword: the reply handler's, else a reply follow-up
        on the owner's day (the unowned pool's when nobody owns them)."""
        if contact is None and touch.contact_id is not None:
            return  # a new number's text: its prospect's follow-up came with its touch
        if self.on_reply is not None and await self.on_reply(contact, touch, msg):
            return
        if contact is not None:
            await self.store.touches.add_followup(
                contact.id,
                touch.started_at,
                kind="sms_reply",
                note=f"SMS reply: {msg.text[:200]}",
                created_by_touch_id=touch.id,
            )

    async def _reply(self, msg: InboundSms, text: str, contacts: list, key: str) -> None:
        """Queue exactly one reply per inbound message (the dedupe key is the inbound's)."""
        queued = await self.store.sms.enqueue(
            OutboxRow(
                to_e164=msg.from_number,
                text=text,
                channel=msg.channel,
                not_before=self.clock() - timedelta(seconds=1),
                contact_id=contacts[0].id if contacts else None,
                dedupe_key=f"reply:{key}",
            )
        )
        if queued is not None and self.on_queued is not None:
            self.on_queued(msg.channel)
