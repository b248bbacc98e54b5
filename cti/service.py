"""The call service: domain events in; screen-pops, call updates, touches and follow-ups out."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from crm_link.contacts import CallerFile
from crm_link.models import Contact, Touch, User, iso
from crm_link.reports import CallFigures
from crm_link.store import Store
from crm_link.touches import TouchInput
from cti.directory import InterfaceDirectory
from cti.events import CallAnswered, CallEnded, CallEvent, CallRinging, RecordingReady
from cti.screenpop import build_pop, lookup_caller

log = logging.getLogger("cti.service")


BUSY_CAUSES = (17,)  # Q.850 user busy


def call_status(ev: CallEnded) -> str:
    """A call touch's status: `answered`; an inbound call not answered is `missed`; an outbound one
    is `busy` (DialStatus BUSY or cause 17) or `no answer`."""
    if ev.answered:
        return "answered"
    if ev.direction != "outbound":
        return "missed"
    if ev.dial_status == "BUSY" or ev.hangup_cause in BUSY_CAUSES:
        return "busy"
    return "no answer"


class PopPublisher(Protocol):
    """Where pops go: the hub that fans out to each user's browser tabs."""

    def set_live(self, user_id: int, call_id: str, message: dict[str, Any]) -> None: ...

    def update_live(self, call_id: str, **call_fields: Any) -> None: ...

    def clear_live(self, call_id: str) -> list[int]: ...

    async def publish(self, user_id: int, message: dict[str, Any]) -> int: ...


class CallObserver(Protocol):
    """Something that follows calls as they happen (the live agent board): each event with the
    user it concerns (the rung or answering agent; on an end, who had the call), after the service."""

    async def call_event(self, event: CallEvent, user: User | None) -> None: ...


def call_figures(ev: CallEnded) -> CallFigures:
    """A finished call's report figures: its outcome, queue, wait (inbound: arrival to answer, or to
    the caller's hang-up when nobody answered) and talk time."""
    status = call_status(ev)
    if ev.answered:
        outcome = "answered"
    elif ev.direction == "inbound":
        outcome = "abandoned" if ev.abandoned else "missed"
    else:
        outcome = "busy" if status == "busy" else "no_answer"
    wait = None
    if ev.direction == "inbound" and not (ev.answered and ev.answered_at is None):
        wait = max(0.0, ((ev.answered_at or ev.ended_at) - ev.started_at).total_seconds())
    line = ev.to_number if ev.direction == "inbound" else None  # the number the customer dialled
    return CallFigures(outcome, ev.queue, ev.answered_at, wait, ev.talk_s, line)


class RecordingSink(Protocol):
    """Where recording facts go (the recordings package implements it)."""

    async def announce(self, call_id: str, pbx_path: str, *, source: str = "asterisk") -> None: ...

    async def call_finished(self, call_id: str, **facts: Any) -> None: ...


@dataclass(slots=True)
class LiveCall:
    call_id: str
    direction: str
    from_number: str | None
    to_number: str | None
    started_at: datetime
    queue: str | None
    lookup: asyncio.Task[CallerFile]  # the caller's contacts, and what the pop shows of each
    popped: dict[int, User] = field(default_factory=dict)
    answered_by: User | None = None
    touch_id: int | None = None
    transferred_to: User | None = None  # who an attended transfer put the customer through to

    @property
    def customer_number(self) -> str | None:
        return self.to_number if self.direction == "outbound" else self.from_number

    def placed_by(self, user: User | None) -> None:
        """An outbound call is from the rep who placed it: their extension, not the caller ID their
        phone was shown (click-to-call shows the rep the customer's number)."""
        if self.direction != "outbound":
            return
        if user is not None and user.extension:
            self.from_number = user.extension
        elif self.from_number == self.to_number:
            self.from_number = None


class CallService:
    """Folds one source's call events into the CRM and the agents' browsers.

    The caller lookup starts the moment a call is first seen and runs beside the event stream, so
    the pop is ready when the agent's phone rings; every call becomes exactly one touch, keyed
    `<source>:<call id>`, written when it first rings and completed when it ends.
    """

    def __init__(
        self,
        store: Store,
        hub: PopPublisher,
        directory: InterfaceDirectory,
        *,
        source: str,
        recordings: RecordingSink | None = None,
        missed_followup_after: timedelta = timedelta(minutes=0),
        on_ended: Callable[[CallEnded, int | None], Awaitable[None]] | None = None,
        observers: Collection[CallObserver] = (),
        unknown_caller: Callable[[TouchInput], Awaitable[Touch]] | None = None,
        lines: Mapping[str, str] | None = None,
    ) -> None:
        self.store = store
        self.lines = dict(lines or {})  # the number dialled (E.164) -> the line's name ([lines])
        self.hub = hub
        self.directory = directory
        self.source = source
        self.recordings = recordings
        self.missed_followup_after = missed_followup_after
        self.on_ended = on_ended
        self.observers = list(observers)
        # records each missed inbound call from a number no contact has, in place of
        # `touches.record` (the follow-up loop makes a prospect for the number in the same
        # transaction and puts the call on the unowned pool's day)
        self.unknown_caller = unknown_caller
        self.calls: dict[str, LiveCall] = {}
        self._prefetched: dict[str, tuple[str, asyncio.Task[CallerFile]]] = {}
        # pops started ahead of their ring's turn (pop_now), by id of the CallRinging
        self._early_pops: dict[
            int, tuple[CallRinging, asyncio.Task[tuple[LiveCall, list[Contact]] | None]]
        ] = {}
        self.pops_sent = 0
        self.touches_written = 0

    def prefetch(self, call_id: str, number: str | None) -> None:
        """Start the caller lookup as soon as a call appears, before any phone rings."""
        if number and call_id not in self._prefetched:
            if len(self._prefetched) > 10_000:  # calls that never ended: drop the oldest lookups
                for _, task in self._prefetched.values():
                    task.cancel()
                self._prefetched.clear()
            self._prefetched[call_id] = (number, asyncio.create_task(lookup_caller(self.store, number)))

    def agents_on_calls(self) -> set[int]:
        """Users whose phone is ringing for, or talking on, a live call of this source."""
        busy: set[int] = set()
        for call in self.calls.values():
            if call.answered_by is not None:
                busy.add(call.answered_by.id)
            else:
                busy.update(call.popped)
        return busy

    def is_on_call(self, user_id: int, call_id: str) -> bool:
        """Whether this user's phone rings for this live call, or they answered it."""
        call = self.calls.get(call_id)
        if call is None:
            return False
        if call.answered_by is not None:
            return call.answered_by.id == user_id
        return user_id in call.popped

    def live_call_with(self, user_id: int, contact_id: int) -> str | None:
        """The id of a live call this user is on (ringing or answered) whose caller is this contact."""
        for call in self.calls.values():
            if not self.is_on_call(user_id, call.call_id) or not call.lookup.done():
                continue
            if call.lookup.cancelled() or call.lookup.exception() is not None:
                continue
            if any(c.id == contact_id for c in call.lookup.result().contacts):
                return call.call_id
        return None

    def source_key(self, call_id: str) -> str:
        return f"{self.source}:{call_id}"

    def _call(self, event: CallRinging | CallEnded) -> LiveCall:
        call = self.calls.get(event.call_id)
        if call is None:
            number = event.to_number if event.direction == "outbound" else event.from_number
            started = (event.started_at or event.at) if isinstance(event, CallRinging) else event.started_at
            lookup = None
            prefetched = self._prefetched.pop(event.call_id, None)
            if prefetched is not None:
                if prefetched[0] == number:
                    lookup = prefetched[1]
                else:
                    prefetched[1].cancel()  # it looked up the agent's side of an outbound call
            call = LiveCall(
                call_id=event.call_id,
                direction=event.direction,
                from_number=event.from_number,
                to_number=event.to_number,
                started_at=started,
                queue=event.queue,
                lookup=lookup
                or asyncio.create_task(lookup_caller(self.store, number), name=f"lookup-{event.call_id}"),
            )
            self.calls[event.call_id] = call
        return call

    async def handle(self, event: CallEvent) -> None:
        """Apply one event; errors are logged, never raised into the event reader."""
        try:
            if isinstance(event, CallRinging):
                await self._ringing(event)
            elif isinstance(event, CallAnswered):
                await self._answered(event)
            elif isinstance(event, CallEnded):
                await self._ended(event)
            elif isinstance(event, RecordingReady) and self.recordings is not None:
                await self.recordings.announce(event.call_id, event.path, source=self.source)
        except Exception:
            log.exception("event=call_event_failed source=%s type=%s", self.source, type(event).__name__)

    async def _observe(self, event: CallEvent, user: User | None) -> None:
        for observer in self.observers:
            try:
                await observer.call_event(event, user)
            except Exception:
                log.exception(
                    "event=call_observer_failed source=%s type=%s", self.source, type(event).__name__
                )

    def _call_json(self, call: LiveCall, state: str, user: User | None) -> dict[str, Any]:
        return {
            "id": call.call_id,
            "direction": call.direction,
            "from": call.from_number,
            "to": call.to_number,
            "extension": user.extension if user else None,
            "queue": call.queue,
            "line": self.lines.get(call.to_number or "") if call.direction == "inbound" else None,
            "state": state,
            "started_at": iso(call.started_at),
        }

    def pop_now(self, ev: CallRinging) -> None:
        """Start this ring's pop at once, beside the call's earlier work still in progress (its
        recording's row or an earlier ring's touch being written); `handle(ev)` then waits for the
        pop and writes the ringing touch. For a caller that applies a call's events in order but
        knows that nothing still pending before this ring changes what its pop shows (no answer, no
        end of this call)."""
        if id(ev) not in self._early_pops:
            task = asyncio.create_task(self._pop(ev), name=f"pop-{ev.call_id}")
            self._early_pops[id(ev)] = (ev, task)

    async def _ringing(self, ev: CallRinging) -> None:
        early = self._early_pops.pop(id(ev), None)
        if early is not None and early[0] is ev:
            rung = await early[1]
        else:
            rung = await self._pop(ev)
        if rung is None:
            return
        call, matches = rung
        if call.touch_id is None:
            call.touch_id = -1  # claimed: concurrent ringing of other agents does not write it again
            touch = await self.store.touches.record(
                TouchInput(
                    source_key=self.source_key(call.call_id),
                    kind="call",
                    direction=call.direction,
                    started_at=call.started_at,
                    contact_id=matches[0].id if len(matches) == 1 else None,
                    channel=self.source,
                    status="ringing",
                    number=call.customer_number,
                    payload={"queue": call.queue} if call.queue else {},
                )
            )
            call.touch_id = touch.id

    async def _pop(self, ev: CallRinging) -> tuple[LiveCall, list[Contact]] | None:
        """The rung agent's screen-pop (once per agent and call); the call and its caller's matches,
        or None when there is no customer call to record (an unmapped interface, an internal call)."""
        call = self._call(ev)
        # a lookup still running when the phone rings reads the caller's history as of now; one
        # that finished before (the caller waited in a queue, another agent rang first) is old
        fresh = not call.lookup.done()
        user = await self.directory.user_for(ev.interface)
        if user is None:
            log.info("event=ringing_unmapped call=%s interface=%s", ev.call_id, ev.interface)
            return None
        await self._observe(ev, user)
        if call.direction == "internal":
            return None  # a colleague calling: no customer to pop
        call.placed_by(user)
        found = await call.lookup
        matches = found.contacts
        if user.id not in call.popped:
            # the pop goes out first; writing the ringing touch must not delay it
            call.popped[user.id] = user
            history = found.history.get(matches[0].id) if fresh and len(matches) == 1 else None
            pop = await build_pop(
                self.store, self._call_json(call, "ringing", user), matches, user, history=history
            )
            self.hub.set_live(user.id, call.call_id, pop)
            self.pops_sent += await self.hub.publish(user.id, pop)
        return call, matches

    async def _answered(self, ev: CallAnswered) -> None:
        call = self.calls.get(ev.call_id)
        if call is None:
            return
        user = await self.directory.user_for(ev.interface)
        if ev.transfer:
            # the customer is now with the colleague the agent consulted: their pop is answered;
            # the call stays on the agent who answered it
            call.transferred_to = user
            if user is not None and user.id in call.popped:
                await self.hub.publish(
                    user.id,
                    {
                        "type": "call_update",
                        "call": self._call_json(call, "answered", user)
                        | {
                            "answered_by": user.username,
                            "answered_at": iso(ev.at),
                            "transferred_from": call.answered_by.username if call.answered_by else None,
                        },
                    },
                )
            return
        if user is not None:
            call.answered_by = user
        await self._observe(ev, user)
        self.hub.update_live(call.call_id, state="answered")
        for uid, viewer in call.popped.items():
            update = {
                "type": "call_update",
                "call": self._call_json(call, "answered", viewer)
                | {"answered_by": user.username if user else None, "answered_at": iso(ev.at)},
            }
            await self.hub.publish(uid, update)

    async def _ended(self, ev: CallEnded) -> None:
        done = await self.store.touches.by_source_key(self.source_key(ev.call_id))
        if done is not None and done.ended_at is not None:
            # a replayed end (provider retry, resync after a restart): the touch is final already
            log.info("event=call_end_replayed call=%s", ev.call_id)
            await self._observe(ev, None)
            self.hub.clear_live(ev.call_id)
            live = self.calls.pop(ev.call_id, None)
            if live is not None:
                live.lookup.cancel()
            return
        if ev.direction == "outbound" and not ev.answered and not (ev.to_number or ev.from_number):
            # only the agent's own leg rang (their phone did not answer): no customer, no touch
            log.info("event=call_agent_leg_unanswered call=%s interface=%s", ev.call_id, ev.placed_by)
            if self.recordings is not None:
                await self.recordings.call_finished(ev.call_id, source=self.source, direction=ev.direction)
            self.hub.clear_live(ev.call_id)
            live = self.calls.pop(ev.call_id, None)
            if live is not None:
                live.lookup.cancel()
            if self.on_ended is not None:
                await self.on_ended(ev, None)
            await self._observe(ev, await self.directory.user_for(ev.placed_by))
            return
        call = self._call(ev)
        if ev.direction == "inbound" and ev.to_number:
            call.to_number = ev.to_number  # the DID may be known only after the first ring
        try:
            matches = (await call.lookup).contacts
            user = (
                call.answered_by
                or await self.directory.user_for(ev.answered_by)
                or await self.directory.user_for(ev.placed_by)
            )
            call.placed_by(user)
            touch_id = contact_id = None
            if ev.direction != "internal":
                touch = await self._write_touch(
                    ev, call, matches, user, keep_summary=bool(done and done.summary)
                )
                # the touch's contact: the caller's, or a prospect created from the pop meanwhile
                touch_id, contact_id = touch.id, touch.contact_id
            state = "ended" if ev.answered else "missed"
            for uid, viewer in call.popped.items():
                await self.hub.publish(
                    uid,
                    {
                        "type": "call_update",
                        "call": self._call_json(call, state, viewer)
                        | {
                            "duration_s": round(ev.duration_s, 1),
                            "touch_id": touch_id,
                            "hangup_cause": ev.hangup_cause,
                        },
                    },
                )
            if self.recordings is not None:  # also without a touch: its recording is final now
                await self.recordings.call_finished(
                    ev.call_id,
                    source=self.source,
                    touch_id=touch_id,
                    contact_id=contact_id,
                    extension=user.extension if user else None,
                    agent_user_id=user.id if user else None,
                    direction=ev.direction,
                    from_number=call.from_number,
                    to_number=call.to_number,
                    started_at=ev.started_at,
                    duration_s=ev.duration_s,
                )
            if self.on_ended is not None:
                await self.on_ended(ev, touch_id)
        finally:
            await self._observe(ev, call.answered_by)
            self.hub.clear_live(ev.call_id)
            self.calls.pop(ev.call_id, None)

    async def _write_touch(
        self, ev: CallEnded, call: LiveCall, matches: list[Contact], user: User | None, *, keep_summary: bool
    ) -> Touch:
        contact = matches[0] if len(matches) == 1 else None
        payload: dict[str, Any] = {
            "queue": ev.queue,
            "to": call.to_number,  # inbound: the number the customer dialled (the DID)
            "answered_by": user.username if user else None,
            "extension": user.extension if user else None,
            "hangup_cause": ev.hangup_cause,
            "hangup_cause_text": ev.hangup_cause_text,
            "dial_status": ev.dial_status,
            "transferred_to": ev.transferred_to,
            "transferred_to_user": call.transferred_to.username if call.transferred_to else None,
            "answered_at": iso(ev.answered_at),
            "talk_s": ev.talk_s,
            "recording_files": list(ev.recording_files),
            "candidates": [c.id for c in matches] if len(matches) > 1 else None,
            "closed_reason": ev.closed_reason,
            "abandoned": True if ev.abandoned else None,
        }
        item = TouchInput(
            source_key=self.source_key(ev.call_id),
            kind="call",
            direction=ev.direction,
            started_at=ev.started_at,
            contact_id=contact.id if contact else None,
            user_id=user.id if user else None,
            channel=self.source,
            status=call_status(ev),
            number=call.customer_number,
            ended_at=ev.ended_at,
            duration_s=round(ev.duration_s, 3),
            summary="" if keep_summary else self._summary(ev, user, call.transferred_to),  # a rep's note wins
            payload={k: v for k, v in payload.items() if v is not None},
            call=call_figures(ev),
        )
        if not ev.answered and ev.direction == "inbound" and not matches and self.unknown_caller is not None:
            # a prospect for the number comes in the touch's own transaction: nobody ever reads
            # (nor is sent) this missed call without its contact
            touch = await self.unknown_caller(item)
        elif not ev.answered and ev.direction == "inbound" and contact is not None:
            # the call-back lands on the owner's day in the missed call's own transaction
            touch, _ = await self.store.touches.record_with_followup(
                item,
                ev.ended_at + self.missed_followup_after,
                kind="missed_call",
                note=f"Missed call from {call.customer_number}"
                + (f" (queue {ev.queue})" if ev.queue else ""),
            )
        else:
            touch = await self.store.touches.record(item)
        self.touches_written += 1
        return touch

    @staticmethod
    def _summary(ev: CallEnded, user: User | None, transferred_to: User | None = None) -> str:
        why = f" ({ev.closed_reason})" if ev.closed_reason else ""
        status = call_status(ev)
        if status in ("busy", "no answer"):
            return (
                ("Busy" if status == "busy" else "No answer")
                + (f", called by {user.name}" if user else "")
                + why
            )
        if not ev.answered:
            return "Missed call" + (f" in queue {ev.queue}" if ev.queue else "") + why
        who = f" by {user.name}" if user else ""
        talk = f", talked {ev.talk_s:.0f} s" if ev.talk_s else ""
        moved = f", transferred to {ev.transferred_to}" if ev.transferred_to else ""
        if transferred_to is not None:
            moved = f", transferred to {transferred_to.name}" + (
                f" ({ev.transferred_to})" if ev.transferred_to else ""
            )
        return f"Answered{who}{talk}{moved}{why}"

    async def close_vanished(
        self, live: Collection[str], *, now: datetime, reason: str, started_before: datetime | None = None
    ) -> int:
        """End the calls the store still has ringing or answered that the source no longer reports
        (`live`: the call ids it does report), e.g. after a restart mid-ring: each gets its
        CallEnded now, missed unless it was answered, with `reason`. Returns how many."""
        closed = 0
        for touch in await self.store.touches.open_calls(self.source, started_before=started_before):
            call_id = touch.source_key.removeprefix(f"{self.source}:")
            if call_id in live or call_id in self.calls or touch.direction not in ("inbound", "outbound"):
                continue
            inbound = touch.direction == "inbound"
            await self.handle(
                CallEnded(
                    call_id=call_id,
                    direction="inbound" if inbound else "outbound",
                    from_number=touch.number if inbound else None,
                    to_number=None if inbound else touch.number,
                    answered=touch.status == "answered",
                    answered_by=None,
                    queue=touch.payload.get("queue"),
                    started_at=touch.started_at,
                    answered_at=None,
                    ended_at=now,
                    duration_s=max(0.0, (now - touch.started_at).total_seconds()),
                    talk_s=None,
                    hangup_cause=None,
                    hangup_cause_text=None,
                    transferred_to=None,
                    closed_reason=reason,
                )
            )
            closed += 1
        if closed:
            log.warning(
                "event=calls_closed_without_end source=%s calls=%d reason=%r", self.source, closed, reason
            )
        return closed

    async def close(self) -> None:
        """Cancel pending lookups (calls in flight are resynced on the next start)."""
        tasks: list[asyncio.Task[Any]] = [c.lookup for c in self.calls.values()]
        tasks += [t for _, t in self._prefetched.values()] + [t for _, t in self._early_pops.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.calls.clear()
        self._prefetched.clear()
        self._early_pops.clear()
