"""Twilio voice: webhook parameters folded into the same call events Asterisk produces (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

from crm_link.clock import Clock, system_clock
from cti.events import CallAnswered, CallEnded, CallEvent, CallRinging, Direction

FINAL_STATUSES = frozenset({"completed", "busy", "no-answer", "failed", "canceled"})
CLIENT_PREFIX = "client:"


class TwilioParamError(ValueError):
    """A webhook lacks a parameter Twilio always sends; `field` names it."""

    def __init__(self, field: str, reason: str = "is missing") -> None:
        super().__init__(f"{field} {reason}")
        self.field = field


def _required(params: Mapping[str, str], name: str) -> str:
    value = params.get(name, "")
    if not value:
        raise TwilioParamError(name)
    return value


def _timestamp(params: Mapping[str, str], fallback: datetime) -> datetime:
    raw = params.get("Timestamp")
    if raw:
        try:
            return parsedate_to_datetime(raw).astimezone(UTC)
        except (TypeError, ValueError):
            pass
    return fallback


@dataclass(slots=True)
class _TwilioCall:
    sid: str
    direction: Direction
    from_number: str | None
    to_number: str | None
    started_at: datetime
    queue: str | None = None
    rung: set[str] = field(default_factory=set)
    answered_by: str | None = None
    answered_at: datetime | None = None
    ended: bool = False
    customer_status: str | None = None  # an outbound call's <Dial> result (DialCallStatus)
    ring_result: str | None = None  # an inbound call's <Dial> result: how ringing the agents ended


def twilio_direction(value: str) -> Direction:
    """Twilio's `Direction` (inbound, outbound-api, outbound-dial) as ours."""
    return "inbound" if value == "inbound" else "outbound"


class TwilioCallFolder:
    """Folds incoming, dial-leg and status webhooks of each call (by parent CallSid) into events."""

    def __init__(self, clock: Clock = system_clock, remember_ended: int = 10_000) -> None:
        self.calls: dict[str, _TwilioCall] = {}
        # Twilio retries status callbacks: a final status seen again must not end the call twice
        self._ended: dict[str, None] = {}
        self._remember_ended = remember_ended
        self._now = clock

    def now(self) -> datetime:
        return self._now()

    def incoming(self, params: Mapping[str, str], ring: list[str], queue: str | None) -> list[CallEvent]:
        """A call arrived and we are ringing these interfaces (client:NAME)."""
        sid = _required(params, "CallSid")
        call = self.calls.get(sid)
        if call is None:
            call = _TwilioCall(
                sid=sid,
                direction=twilio_direction(params.get("Direction", "inbound")),
                from_number=params.get("From") or None,
                to_number=params.get("To") or None,
                started_at=_timestamp(params, self.now()),
                queue=queue,
            )
            self.calls[sid] = call
        events: list[CallEvent] = []
        for iface in ring:
            if iface not in call.rung:
                call.rung.add(iface)
                events.append(
                    CallRinging(
                        sid, call.direction, call.from_number, call.to_number, iface, call.queue, self.now()
                    )
                )
        return events

    def outbound_started(self, sid: str, agent_interface: str, customer: str, caller_id: str | None) -> None:
        """A click-to-call we created: the agent leg rings first, then the customer."""
        self.calls.setdefault(
            sid,
            _TwilioCall(
                sid=sid,
                direction="outbound",
                from_number=caller_id,
                to_number=customer,
                started_at=self.now(),
                rung={agent_interface},
            ),
        )

    def dial_result(self, params: Mapping[str, str]) -> None:
        """The <Dial> of an outbound call ended: how the customer's leg went (completed, busy,
        no-answer, failed, canceled)."""
        sid = _required(params, "CallSid")
        call = self.calls.get(sid)
        if call is not None and call.direction == "outbound":
            call.customer_status = params.get("DialCallStatus") or None
        elif call is not None:
            call.ring_result = params.get("DialCallStatus") or None

    def leg_status(self, params: Mapping[str, str]) -> list[CallEvent]:
        """Status of a dialled leg (<Client statusCallback>): who answered."""
        parent = params.get("ParentCallSid") or _required(params, "CallSid")
        call = self.calls.get(parent)
        status = _required(params, "CallStatus")
        if call is None or call.answered_by is not None or status != "in-progress":
            return []
        to = params.get("To", "")
        iface = to if to.startswith(CLIENT_PREFIX) else (params.get("Called") or to)
        call.answered_by = iface
        call.answered_at = _timestamp(params, self.now())
        return [CallAnswered(parent, iface, call.answered_at)]

    def call_status(self, params: Mapping[str, str]) -> list[CallEvent]:
        """Status callback of the call itself; a final status ends it, exactly once."""
        sid = _required(params, "CallSid")
        status = _required(params, "CallStatus")
        if sid in self._ended:
            return []
        call = self.calls.get(sid)
        now = _timestamp(params, self.now())
        if call is None:
            # a status for a call we never saw start (e.g. after a restart): still one touch
            call = _TwilioCall(
                sid=sid,
                direction=twilio_direction(params.get("Direction", "inbound")),
                from_number=params.get("From") or None,
                to_number=params.get("To") or None,
                started_at=now,
            )
            self.calls[sid] = call
        events: list[CallEvent] = []
        if status == "in-progress" and call.direction == "outbound" and call.answered_by is None:
            call.answered_by = next(iter(call.rung), None)
            call.answered_at = now
            events.append(CallAnswered(sid, call.answered_by, now))
        if status not in FINAL_STATUSES or call.ended:
            return events
        call.ended = True
        try:
            duration = float(params.get("CallDuration") or 0)
        except ValueError:
            raise TwilioParamError("CallDuration", "is not a number") from None
        answered = call.answered_by is not None and status == "completed"
        cause, cause_text = None, status
        if call.customer_status is not None:
            # the agent answered, but did the customer? (busy and no-answer as Q.850 causes 17 and 19)
            answered = answered and call.customer_status in ("completed", "answered")
            cause = {"busy": 17, "no-answer": 19, "failed": 34}.get(call.customer_status)
            cause_text = call.customer_status
        ended_at = max(now, call.started_at + timedelta(seconds=duration))
        talk = (ended_at - call.answered_at).total_seconds() if answered and call.answered_at else None
        events.append(
            CallEnded(
                call_id=sid,
                direction=call.direction,
                from_number=call.from_number,
                to_number=call.to_number,
                answered=answered,
                answered_by=call.answered_by if answered else None,
                queue=call.queue,
                started_at=call.started_at,
                answered_at=call.answered_at if answered else None,
                ended_at=ended_at,
                duration_s=duration,
                talk_s=talk,
                hangup_cause=cause,
                hangup_cause_text=cause_text,
                transferred_to=None,
                # the caller left before ringing the agents ran out (no-answer, busy, failed)
                abandoned=call.direction == "inbound"
                and not answered
                and call.ring_result not in ("no-answer", "busy", "failed"),
            )
        )
        del self.calls[sid]
        self._ended[sid] = None
        if len(self._ended) > self._remember_ended:
            del self._ended[next(iter(self._ended))]
        return events
