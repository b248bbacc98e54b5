"""Folds the AMI event stream of a real Asterisk into calls keyed by Linkedid (pure, no I/O).

Feed events with `feed()`; it returns domain events: CallRinging when an agent's interface rings,
CallAnswered when an agent (or, on an outbound call, the customer) answers, RecordingReady when
MixMonitor's file is announced, and exactly one CallEnded when the last channel of a call hangs up.
Which interfaces are agents is asked of `is_agent` (built from settings and users), never guessed
from channel-name patterns. Unknown events and events with missing keys are skipped.

The number an inbound caller dialled (the DID: a dealership's sales or service line) is the channel
variable `SB_DID` when the dialplan sets it (`Set(__SB_DID=${EXTEN})` on the trunk's context; it is
read from `ChanVariable` headers, with manager.conf `channelvars = SB_DID`, or from its VarSet), in
E.164; without it, the extension the caller's channel was created for.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from crm_link.clock import system_clock
from crm_link.phones import try_e164
from cti.ami.protocol import Event
from cti.events import CallAnswered, CallEnded, CallEvent, CallRinging, Direction, RecordingReady
from cti.interfaces import normalize_interface

log = logging.getLogger("cti.tracker")

UNKNOWN = ("", "<unknown>", "unknown", None)
# app_queue's QUEUESTATUS when the queue let go of a caller who had not hung up
QUEUE_GAVE_UP = frozenset(
    ("TIMEOUT", "FULL", "JOINEMPTY", "LEAVEEMPTY", "JOINUNAVAIL", "LEAVEUNAVAIL", "WITHDRAW")
)
DID_VARIABLE = "SB_DID"  # set by the dialplan on the inbound context: the number the caller dialled


def _ts(ev: Event, fallback: datetime) -> datetime:
    raw = ev.get("Timestamp")
    if raw:
        try:
            return datetime.fromtimestamp(float(raw), UTC)
        except (ValueError, OverflowError):
            pass
    return fallback


@dataclass(slots=True)
class _Channel:
    uniqueid: str
    name: str
    interface: str | None
    caller: str | None = None
    exten: str | None = None
    dialed: str | None = None  # the extension it was created for (what an inbound caller dialled)
    up: bool = False
    hung: bool = False


@dataclass(slots=True)
class _Call:
    linkedid: str
    started_at: datetime
    channels: dict[str, _Channel] = field(default_factory=dict)
    first: str | None = None  # uniqueid of the channel that started the call
    direction: Direction | None = None
    from_number: str | None = None
    to_number: str | None = None
    queue: str | None = None
    rung: set[str] = field(default_factory=set)
    answered_by: str | None = None
    answered_at: datetime | None = None
    abandoned: bool = False
    customer: str | None = None  # uniqueid of the customer's channel, once known
    party: str | None = None  # uniqueid of the channel bridged to the agent when answered
    exten_at_answer: str | None = None
    hangup_cause: int | None = None
    hangup_cause_text: str | None = None
    dial_status: str | None = None  # DialEnd's DialStatus for the customer's leg
    recordings: list[str] = field(default_factory=list)
    did: str | None = None  # SB_DID: the number the customer dialled, in E.164 when it is a number
    last_seen: datetime | None = None
    consulted: str | None = None  # an agent who answered a consultation call (attended transfer)
    transferred_to: str | None = None

    def live(self) -> bool:
        return any(not c.hung for c in self.channels.values())


class CallTracker:
    """Calls in progress, built from events; see the module docstring."""

    def __init__(
        self,
        is_agent: Callable[[str | None], bool],
        clock: Callable[[], datetime] | None = None,
        *,
        region: str = "US",
    ) -> None:
        self.is_agent = is_agent
        self.clock = clock or system_clock
        self.region = region  # for a DID given without its country code
        self.calls: dict[str, _Call] = {}
        self._chan_call: dict[str, str] = {}  # uniqueid -> linkedid
        self._by_name: dict[str, str] = {}  # channel name -> uniqueid
        self.skipped = 0

    # -- helpers -----------------------------------------------------------------------------

    def _agent(self, channel_name: str | None) -> str | None:
        iface = normalize_interface(channel_name)
        return iface if iface and self.is_agent(iface) else None

    def _call_of(self, ev: Event) -> _Call | None:
        linkedid = ev.get("Linkedid")
        if linkedid:
            return self.calls.get(linkedid)
        uid = ev.get("Uniqueid") or ev.get("DestUniqueid")
        if uid and uid in self._chan_call:
            return self.calls.get(self._chan_call[uid])
        return None

    def _number(self, value: str | None) -> str | None:
        return None if value in UNKNOWN else value

    # -- the fold ----------------------------------------------------------------------------

    def feed(self, ev: Event) -> list[CallEvent]:
        """Apply one event; the domain events it causes (usually none)."""
        handler = getattr(self, "_on_" + ev.name, None)
        if handler is None:
            return []
        at = _ts(ev, self.clock())
        seen = self._call_of(ev)
        if seen is not None:
            seen.last_seen = at
        try:
            out: list[CallEvent] = handler(ev, at)
            if "ChanVariable" in ev.headers and ev.name != "Newchannel":
                call = self._call_of(ev)
                if call is not None:
                    self._did(call, _chanvar(ev, DID_VARIABLE))
            return out
        except (KeyError, ValueError, TypeError) as exc:
            self.skipped += 1
            log.warning("event=ami_event_skipped name=%s reason=%r", ev.name, exc)
            return []

    def _on_Newchannel(self, ev: Event, at: datetime) -> list[CallEvent]:
        uid, linkedid, name = ev.headers["Uniqueid"], ev.headers["Linkedid"], ev.headers["Channel"]
        call = self.calls.get(linkedid)
        if call is None:
            call = _Call(linkedid=linkedid, started_at=at)
            self.calls[linkedid] = call
        if call.first is None or uid == linkedid:
            call.first = uid
        exten = ev.get("Exten")
        call.channels[uid] = _Channel(
            uid, name, normalize_interface(name), self._number(ev.get("CallerIDNum")), exten, exten
        )
        call.last_seen = at
        self._chan_call[uid] = linkedid
        self._by_name[name] = uid
        self._did(call, _chanvar(ev, DID_VARIABLE))
        return []

    def _did(self, call: _Call, value: str | None) -> None:
        """The dialplan's SB_DID: the inbound call's `to` (first value wins; a later leg inherits it)."""
        if not value or value in UNKNOWN or call.did is not None:
            return
        call.did = try_e164(value, self.region) or value
        if call.direction == "inbound":
            call.to_number = call.did

    def _channel(self, ev: Event) -> tuple[_Call, _Channel] | None:
        call = self._call_of(ev)
        uid = ev.get("Uniqueid")
        if call is None or uid is None or uid not in call.channels:
            return None
        return call, call.channels[uid]

    def _on_NewCallerid(self, ev: Event, at: datetime) -> list[CallEvent]:
        found = self._channel(ev)
        if found:
            number = self._number(ev.get("CallerIDNum"))
            if number:
                found[1].caller = number
        return []

    def _on_Newexten(self, ev: Event, at: datetime) -> list[CallEvent]:
        found = self._channel(ev)
        if found and ev.get("Exten"):
            found[1].exten = ev.get("Exten")
        return []

    def _on_Newstate(self, ev: Event, at: datetime) -> list[CallEvent]:
        found = self._channel(ev)
        if found:
            found[1].up = ev.get("ChannelStateDesc") == "Up"
            if ev.get("Exten"):
                found[1].exten = ev.get("Exten")
        return []

    def _on_VarSet(self, ev: Event, at: datetime) -> list[CallEvent]:
        variable = (ev.get("Variable") or "").lstrip("_")  # `__SB_DID` is inherited by every leg
        if variable == DID_VARIABLE:
            call = self._call_of(ev)
            if call is not None:
                self._did(call, ev.get("Value"))
            return []
        if variable == "QUEUESTATUS" and ev.get("Value") in QUEUE_GAVE_UP:
            # Asterisk sends QueueCallerAbandon also when the queue gives up on a caller still on
            # the line (app_queue's EXITWITHTIMEOUT / EXITEMPTY): that call is missed, not abandoned
            call = self._call_of(ev)
            if call is not None and not self._agent(ev.get("Channel")):
                call.abandoned = False
            return []
        if variable != "MIXMONITOR_FILENAME":
            return []
        call = self._call_of(ev)
        return self.recording(call.linkedid, ev.get("Value")) if call is not None else []

    def recording(self, linkedid: str, path: str | None) -> list[CallEvent]:
        """A MixMonitor file of a live call (from VarSet, or asked with Getvar after adopting it)."""
        call = self.calls.get(linkedid)
        if call is None or not path or path in call.recordings:
            return []
        call.recordings.append(path)
        return [RecordingReady(call.linkedid, path)]

    def _on_QueueCallerJoin(self, ev: Event, at: datetime) -> list[CallEvent]:
        call = self._call_of(ev)
        if call is not None:
            call.queue = ev.get("Queue")
        return []

    def _on_QueueCallerAbandon(self, ev: Event, at: datetime) -> list[CallEvent]:
        call = self._call_of(ev) or self.calls.get(self._chan_call.get(ev.get("Uniqueid") or "", ""))
        if call is not None:
            call.abandoned = True
            call.queue = call.queue or ev.get("Queue")
        return []

    def _decide_direction(self, call: _Call) -> None:
        if call.direction is not None:
            return
        first = call.channels.get(call.first or "")
        starter = first.interface if first else None
        if starter and self.is_agent(starter):
            call.direction = "outbound"
        else:
            call.direction = "inbound"
            if first is not None:
                call.customer = first.uniqueid
                call.from_number = call.from_number or first.caller
                call.to_number = call.did or call.to_number or first.dialed

    def _ring(self, call: _Call, iface: str, at: datetime) -> list[CallEvent]:
        self._decide_direction(call)
        if call.direction == "inbound":
            first = call.channels.get(call.first or "")
            if first is not None and first.caller:
                call.from_number = first.caller
        if iface in call.rung:
            return []
        call.rung.add(iface)
        assert call.direction is not None
        return [
            CallRinging(
                call.linkedid,
                call.direction,
                call.from_number,
                call.to_number,
                iface,
                call.queue,
                at,
                call.started_at,
            )
        ]

    def _on_AgentCalled(self, ev: Event, at: datetime) -> list[CallEvent]:
        call = self._call_of(ev)
        iface = normalize_interface(ev.get("Interface"))
        if call is None or not iface or not self.is_agent(iface):
            return []
        call.queue = call.queue or ev.get("Queue")
        return self._ring(call, iface, at)

    def _on_DialBegin(self, ev: Event, at: datetime) -> list[CallEvent]:
        call = self.calls.get(ev.get("DestLinkedid") or "") or self._call_of(ev)
        if call is None:
            return []
        dest_agent = self._agent(ev.get("DestChannel"))
        src_agent = self._agent(ev.get("Channel"))
        if dest_agent and ev.get("Channel"):
            if src_agent and call.direction is None:
                call.direction = "internal"
                call.from_number = call.channels.get(
                    ev.get("Uniqueid") or "", _Channel("", "", None)
                ).caller or (self._number(ev.get("CallerIDNum")))
                call.to_number = ev.get("DestExten") or dest_agent
            return self._ring(call, dest_agent, at)
        if src_agent and not dest_agent:
            # an agent dialling out: the customer is the destination
            self._decide_direction(call)
            if call.direction == "outbound":
                number = self._number(ev.get("DestCallerIDNum")) or self._number(ev.get("DestExten"))
                call.to_number = number
                call.customer = ev.get("DestUniqueid")
                src = call.channels.get(ev.get("Uniqueid") or "")
                call.from_number = call.from_number or (src.caller if src else None)
                return self._ring(call, src_agent, at)
        return []

    def _answer(self, call: _Call, iface: str, at: datetime, party: str | None) -> list[CallEvent]:
        if call.answered_by is not None:
            return []
        call.answered_by = iface
        call.answered_at = at
        call.party = party if party in call.channels else call.customer
        bridged = call.channels.get(call.party or "")
        call.exten_at_answer = bridged.exten if bridged else None
        return [CallAnswered(call.linkedid, iface, at)]

    def _on_DialEnd(self, ev: Event, at: datetime) -> list[CallEvent]:
        call = self.calls.get(ev.get("DestLinkedid") or "") or self._call_of(ev)
        if call is None:
            return []
        if call.customer is not None and ev.get("DestUniqueid") == call.customer:
            call.dial_status = ev.get("DialStatus")
        if ev.get("DialStatus") != "ANSWER":
            return []
        dest_agent = self._agent(ev.get("DestChannel"))
        src_agent = self._agent(ev.get("Channel"))
        if dest_agent and call.answered_by is not None and dest_agent != call.answered_by:
            # the agent on the call consults a colleague (attended transfer); the consult call
            # shares the Linkedid (its channel was requested by the transferer's)
            call.consulted = dest_agent
        if dest_agent and ev.get("Channel") and call.direction in ("inbound", "internal"):
            return self._answer(call, dest_agent, at, ev.get("Uniqueid"))
        if src_agent and not dest_agent and call.direction == "outbound":
            return self._answer(call, src_agent, at, ev.get("DestUniqueid"))
        return []

    def _on_AgentConnect(self, ev: Event, at: datetime) -> list[CallEvent]:
        call = self._call_of(ev)
        iface = normalize_interface(ev.get("Interface"))
        if call is None or not iface or not self.is_agent(iface):
            return []
        return self._answer(call, iface, at, ev.get("Uniqueid"))

    def _on_AttendedTransfer(self, ev: Event, at: datetime) -> list[CallEvent]:
        """The transferer put the customer through to the party they consulted."""
        if ev.get("Result") != "Success":
            return []
        call = None
        for prefix in ("Transferee", "OrigTransferer", "SecondTransferer", "TransferTarget"):
            call = self.calls.get(ev.get(prefix + "Linkedid") or "")
            if call is not None:
                break
        if call is None:
            return []
        target = self._agent(ev.get("TransferTargetChannel")) or call.consulted
        exten = ev.get("TransferTargetExten")
        call.transferred_to = exten if _dialable(exten) else target or exten
        if target is None or target == call.answered_by:
            return []
        call.consulted = target
        return [CallAnswered(call.linkedid, target, at, transfer=True)]

    def _on_Hangup(self, ev: Event, at: datetime) -> list[CallEvent]:
        uid = ev.headers["Uniqueid"]
        linkedid = ev.get("Linkedid") or self._chan_call.get(uid)
        call = self.calls.get(linkedid or "")
        if call is None:
            return []
        chan = call.channels.get(uid)
        if chan is not None:
            chan.hung = True
            chan.exten = ev.get("Exten") or chan.exten
        cause = ev.get("Cause")
        # the cause that counts is the customer's leg's (the caller's, on an inbound call); on an
        # outbound call the agent's leg hangs up after it and must not overwrite it
        own = uid == (call.customer or call.first)
        if cause and cause.isdigit() and (own or call.hangup_cause is None):
            call.hangup_cause = int(cause)
            call.hangup_cause_text = ev.get("Cause-txt")
        self._by_name.pop(ev.get("Channel") or "", None)
        if call.live():
            return []
        return self._end(call, at)

    def _end(self, call: _Call, at: datetime) -> list[CallEvent]:
        self._decide_direction(call)
        assert call.direction is not None
        for uid in call.channels:
            self._chan_call.pop(uid, None)
        del self.calls[call.linkedid]
        answered = call.answered_by is not None and not (call.abandoned and call.direction == "inbound")
        party = call.channels.get(call.party or "")
        moved = None
        if answered and party is not None and call.exten_at_answer and party.exten != call.exten_at_answer:
            moved = party.exten
        if call.direction == "inbound" and not call.from_number:
            first = call.channels.get(call.first or "")
            call.from_number = first.caller if first else None
        first = call.channels.get(call.first or "")
        duration = max(0.0, (at - call.started_at).total_seconds())
        talk = (at - call.answered_at).total_seconds() if answered and call.answered_at else None
        return [
            CallEnded(
                call_id=call.linkedid,
                direction=call.direction,
                from_number=call.from_number,
                to_number=call.to_number,
                answered=answered,
                answered_by=call.answered_by if answered else None,
                queue=call.queue,
                started_at=call.started_at,
                answered_at=call.answered_at if answered else None,
                ended_at=at,
                duration_s=round(duration, 3),
                talk_s=round(talk, 3) if talk is not None else None,
                hangup_cause=call.hangup_cause,
                hangup_cause_text=call.hangup_cause_text,
                transferred_to=call.transferred_to or moved,
                recording_files=tuple(call.recordings),
                placed_by=first.interface if call.direction == "outbound" and first else None,
                dial_status=call.dial_status,
                abandoned=call.abandoned and call.direction == "inbound",
            )
        ]

    # -- reconnects --------------------------------------------------------------------------

    def reset_channels(self) -> None:
        """FullyBooted: channel state may be stale; keep what we know of calls, forget channels."""
        self._by_name.clear()

    def resync(
        self, channels: Iterable[Event], at: datetime | None = None, *, lost_at: datetime | None = None
    ) -> list[CallEvent]:
        """Reconcile with a CoreShowChannels listing taken after a (re)connect.

        Calls we knew that have no channel left ended while we were away: each gets its CallEnded,
        dated by the last event Asterisk sent for it (its Timestamp) or, for a call we have no
        event of, the moment the connection was lost (`lost_at`), else now. Channels we knew that are gone are marked hung; unknown live calls are adopted so
        their end is recorded too.
        """
        at = at or self.clock()
        present: dict[str, list[Event]] = {}
        for ev in channels:
            linkedid = ev.get("Linkedid")
            if linkedid and ev.get("Uniqueid"):
                present.setdefault(linkedid, []).append(ev)
        out: list[CallEvent] = []
        for linkedid, ongoing in list(self.calls.items()):
            live = {ev.headers["Uniqueid"] for ev in present.get(linkedid, [])}
            for uid, listed in ongoing.channels.items():
                if uid not in live:
                    listed.hung = True
            if not live:
                lost = lost_at if lost_at is not None and lost_at >= ongoing.started_at else None
                out += self._end(ongoing, ongoing.last_seen or lost or at)
        for linkedid, evs in present.items():
            call = self.calls.get(linkedid)
            adopted = call is None
            if call is None:
                started = at
                for ev in evs:
                    secs = _hms(ev.get("Duration") or "")
                    if secs is not None:
                        started = min(started, datetime.fromtimestamp(at.timestamp() - secs, UTC))
                call = _Call(linkedid=linkedid, started_at=started)
                self.calls[linkedid] = call
            # every channel of the call is settled first: the listing's order is not the calls' order
            for ev in evs:
                uid, name = ev.headers["Uniqueid"], ev.get("Channel") or ""
                chan = call.channels.get(uid)
                if chan is None:
                    chan = _Channel(
                        uid,
                        name,
                        normalize_interface(name),
                        self._number(ev.get("CallerIDNum")),
                        ev.get("Exten"),
                    )
                    call.channels[uid] = chan
                    self._chan_call[uid] = linkedid
                chan.hung = False
                chan.up = ev.get("ChannelStateDesc") == "Up"
                chan.exten = ev.get("Exten") or chan.exten
                self._by_name[name] = uid
                self._did(call, _chanvar(ev, DID_VARIABLE))
            if adopted:
                out += self._adopt(call, evs, at)
            elif call.answered_by is None:
                self._decide_direction(call)
                for ev in evs:
                    agent = self._bridged_agent(call, ev)
                    if agent is not None:
                        call.answered_by, call.answered_at = agent, at
                        break
        return out

    def _bridged_agent(self, call: _Call, ev: Event) -> str | None:
        """The agent interface of a listed channel that is up in a bridge (not the outbound starter)."""
        chan = call.channels.get(ev.get("Uniqueid") or "")
        if chan is None or not chan.up or not ev.get("BridgeId") or not self._agent(chan.name):
            return None
        if chan.uniqueid == call.first and call.direction == "outbound":
            return None
        return chan.interface

    def _adopt(self, call: _Call, evs: list[Event], at: datetime) -> list[CallEvent]:
        """A call that was live before we connected: its direction, parties and answer, from the listing."""
        call.first = call.linkedid if call.linkedid in call.channels else min(call.channels, key=_uid_order)
        by_uid = {ev.headers["Uniqueid"]: ev for ev in evs}
        queue_exten = None
        for ev in evs:
            if (ev.get("Application") or "") == "Queue" and ev.get("ApplicationData"):
                call.queue = call.queue or (ev.get("ApplicationData") or "").split(",")[0] or None
                queue_exten = queue_exten or ev.get("Exten")
        first = call.channels[call.first]
        ordered = sorted(call.channels.values(), key=lambda c: _uid_order(c.uniqueid))
        others = [c for c in ordered if not self._agent(c.name)]
        if self._agent(first.name):
            call.direction = "outbound" if others else "internal"
            customer = others[0] if others else None
            call.from_number = first.caller
            if customer is not None:
                call.customer = customer.uniqueid
                call.to_number = customer.exten if _dialable(customer.exten) else customer.caller
        else:
            call.direction = "inbound"
            call.customer = first.uniqueid
            call.from_number = first.caller
            call.to_number = call.did or next((x for x in (first.exten, queue_exten) if _dialable(x)), None)
        agent: str | None = None
        if call.direction == "outbound":
            customer_ev = by_uid.get(call.customer or "")
            if (
                customer_ev is not None
                and customer_ev.get("ChannelStateDesc") == "Up"
                and (customer_ev.get("BridgeId"))
            ):
                agent = first.interface
            call.party = call.customer
        else:
            for ev in sorted(evs, key=lambda e: _uid_order(e.headers["Uniqueid"])):
                agent = self._bridged_agent(call, ev)
                if agent is not None:
                    break
            call.party = call.customer
        out: list[CallEvent] = []
        ringing = agent or (first.interface if call.direction == "outbound" else None)
        if ringing is not None:
            out += self._ring(call, ringing, at)
        elif call.direction == "inbound":
            for chan in ordered:
                iface = self._agent(chan.name)
                if iface is not None and chan.uniqueid != call.first:
                    out += self._ring(call, iface, at)
        if agent is not None:
            out += self._answer(call, agent, at, call.customer)
        return out


def _chanvar(ev: Event, name: str, prefix: str = "") -> str | None:
    """A channel variable from an event's `ChanVariable` headers (manager.conf `channelvars`);
    Asterisk sends one header per variable, `NAME=value` (the parser joins repeats with newlines)."""
    for line in (ev.get(prefix + "ChanVariable") or "").split("\n"):
        key, sep, value = line.partition("=")
        if sep and key.strip().lstrip("_") == name:
            return value.strip()
    return None


def _uid_order(uid: str) -> tuple[int, ...]:
    """Asterisk's Uniqueids (`epoch.sequence`) in the order the channels were made."""
    return tuple(int(p) if p.isdigit() else 0 for p in uid.split("."))


def _dialable(exten: str | None) -> bool:
    """An extension that is a number (a DID or a customer's number), not a dialplan label like `s`."""
    return exten is not None and exten.lstrip("+").isdigit()


def _hms(text: str) -> int | None:
    parts = text.split(":")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        return None
    h, m, s = (int(p) for p in parts)
    return h * 3600 + m * 60 + s
