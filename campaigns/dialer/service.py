"""The dialer: hands entries to agents (preview) or dials for them (progressive), within calling hours.

Every entry is claimed with a lease before anything happens to it, and every dial is an attempt row
written before the phone system is asked; the call's end (a CallEnded from the call service, which
also writes the call's touch) closes the attempt. A crash leaves leases that expire and attempts
that are settled from the touches or marked `unknown`, so an entry is never dialed twice at once and
never lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from campaigns.dialer import DISPOSITIONS, SURVEY_DONE
from campaigns.dialer.backends import AgentUnavailable, DialBackend, DialFailed
from campaigns.dialer.hours import CallingHours, in_window, zone
from campaigns.dialer.routing import others_due_by
from campaigns.ratelimit import TokenBucket
from crm_link.call_lists import Attempt, CallList, Entry, outcome_of_touch
from crm_link.clock import system_clock
from crm_link.errors import Conflict, NotFound, ValidationError
from crm_link.models import Contact, User
from crm_link.store import Store

log = logging.getLogger("campaigns.dialer")


class EndedCall(Protocol):
    """What the dialer reads of a call's end (cti's CallEnded, a frozen dataclass: read-only here)."""

    @property
    def call_id(self) -> str: ...
    @property
    def answered(self) -> bool: ...
    @property
    def hangup_cause(self) -> int | None: ...


# (store, call, matching contacts, viewer) -> the screen_pop message (cti's build_pop)
PopBuilder = Callable[[Store, dict[str, Any], list[Contact], User], Awaitable[dict[str, Any]]]


@dataclass(slots=True)
class _InFlight:
    attempt_id: int
    entry_id: int
    agent_id: int
    list_id: int
    task: asyncio.Task[None] | None = None
    call_id: str | None = None
    named: str | None = None  # the id asked of the phone system before dialing, when it takes one


class OutsideCallingHours(ValidationError):
    def __init__(self, local: datetime, opens: datetime, zone_name: str) -> None:
        super().__init__(
            "entry_id",
            f"outside calling hours: it is {local:%a %H:%M} for this customer ({zone_name});"
            f" calls open {opens:%a %H:%M} their time",
            code="outside_calling_hours",
        )


class Dialer:
    """One per process (two are safe too: the leases keep them apart)."""

    def __init__(
        self,
        store: Store,
        hub: Any,
        backend: DialBackend | None,
        *,
        hours: CallingHours,
        pop_builder: PopBuilder,
        clock: Callable[[], datetime] = system_clock,
        max_concurrent: int = 10,
        calls_per_second: float = 1.0,
        lease: timedelta = timedelta(seconds=120),
        preview_lease: timedelta = timedelta(minutes=15),
        wrap_up: timedelta = timedelta(seconds=30),
        dial_timeout_s: int = 30,
        tick_seconds: float = 1.0,
        dispositions: tuple[str, ...] = (),
        owner: str | None = None,
        busy_agents: Callable[[], set[int]] | None = None,
        owner_wait: timedelta = timedelta(0),
        may_dial: Callable[[], str | None] | None = None,
    ) -> None:
        # progressive dialing here only while this says nothing; else it says why not (e.g. another
        # instance holds the phone system's connection) and this dialer leaves the lists to that one
        self.may_dial = may_dial
        # a preview dial placed by another instance (the one holding the phone system's connection):
        # the attempt's dict with its call id, or None when this instance places it itself
        self.hand_off: Callable[[User, int], Awaitable[dict[str, Any] | None]] | None = None
        # told of each agent whose wrap-up a disposition made here ended
        self.on_wrapped_up: Callable[[int], None] | None = None
        # told of each agent joining (list id) or leaving (None) a progressive list here
        self.on_ready: Callable[[int, int | None], None] | None = None
        self.owner_wait = owner_wait  # progressive: an owned customer waits this long for its owner
        self.pop_builder = pop_builder
        self.busy_agents = busy_agents  # agents on (or rung for) another call, e.g. an inbound one
        self.store = store
        self.hub = hub
        self.backend = backend
        self.hours = hours
        self.clock = clock
        self.max_concurrent = max_concurrent
        self.bucket = TokenBucket(calls_per_second, burst=1.0, clock=time.monotonic)
        self.lease = lease
        self.preview_lease = preview_lease
        self.wrap_up = wrap_up
        self.dial_timeout_s = dial_timeout_s
        self.tick_seconds = tick_seconds
        self.owner = owner or f"dialer-{secrets.token_hex(4)}"
        self.ready: dict[int, int] = {}  # agent id -> progressive list id
        self.in_flight: dict[int, _InFlight] = {}  # attempt id ->
        self.wrap_until: dict[int, datetime] = {}
        self._ended: dict[str, tuple[EndedCall, int | None]] = {}  # ends seen before their dial returned
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.dispositions = dispositions or DISPOSITIONS

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self, *, run: bool = True) -> None:
        """Settle what a previous run left, then (unless `run` is False: the caller runs `run()`
        itself, e.g. under a supervisor) start the dialing loop."""
        await self.sweep()
        if run:
            self._task = asyncio.create_task(self.run(), name=f"dialer-{self.owner}")

    async def close(self) -> None:
        """Stop dialing. Calls in flight go on at the phone system; their leases expire and the next
        start settles them from their touches."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        tasks = [f.task for f in self.in_flight.values() if f.task is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """The dialing loop: a tick on every wake-up or every `tick_seconds`."""
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("event=dialer_tick_failed")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.tick_seconds)

    # -- rules ---------------------------------------------------------------------------------

    def hours_of(self, cl: CallList) -> CallingHours:
        if cl.calling_start and cl.calling_end:
            return CallingHours.of(
                cl.calling_start, cl.calling_end, [d.isoformat() for d in self.hours.holidays]
            )
        return self.hours

    def list_open(self, cl: CallList, now: datetime) -> bool:
        return cl.state == "running" and in_window(
            now.astimezone(zone(self.store.time_zone)).date(), cl.window_start, cl.window_end
        )

    async def open_zones(self, cl: CallList, now: datetime) -> list[str]:
        return self.hours_of(cl).open_zones(await self.store.call_lists.zones(cl.id), now)

    def agent_free(self, agent_id: int, now: datetime) -> bool:
        if any(f.agent_id == agent_id for f in self.in_flight.values()):
            return False
        if self.busy_agents is not None and agent_id in self.busy_agents():
            return False
        return self.wrap_until.get(agent_id, now) <= now

    @staticmethod
    def may_work(cl: CallList, user: User) -> bool:
        if user.role in ("manager", "admin"):
            return True
        return user.role == "rep" and (not cl.agent_ids or user.id in cl.agent_ids)

    # -- the progressive loop ------------------------------------------------------------------

    async def sweep(self) -> list[Attempt]:
        """Expire leases (entries of a crashed dialer or an agent who walked away)."""
        settled = await self.store.call_lists.expire_leases(self.clock())
        for a in settled:
            log.info("event=attempt_settled_after_lease attempt=%d state=%s", a.id, a.state)
        return settled

    async def _forget_closed_elsewhere(self) -> None:
        """Calls of ours that the store says are over though their end never came here (a Twilio
        webhook the balancer sent to another instance, which closed the attempt): they stop
        counting, their agent free after the wrap-up."""
        still = {a.id for a in await self.store.call_lists.open_attempts()}
        for attempt_id, flight in list(self.in_flight.items()):
            if flight.call_id is None or attempt_id in still:
                continue
            self.in_flight.pop(attempt_id, None)
            attempt = await self.store.call_lists.attempt(attempt_id)
            if attempt.state == "answered" and attempt.ended_at is not None and attempt.disposition is None:
                self.wrap_until[flight.agent_id] = attempt.ended_at + self.wrap_up
            log.info("event=attempt_closed_elsewhere attempt=%d state=%s", attempt_id, attempt.state)

    def idle_reason(self) -> str | None:
        """Why this dialer places no progressive calls now (None: it does)."""
        return None if self.may_dial is None else self.may_dial()

    async def tick(self) -> int:
        """One pass: renew our leases, expire others', dial for free agents. Returns calls started."""
        now = self.clock()
        if any(f.call_id is not None for f in self.in_flight.values()):
            await self._forget_closed_elsewhere()
        mine = [f.entry_id for f in self.in_flight.values()]
        await self.store.call_lists.renew(self.owner, mine, now + self.lease)
        await self.sweep()
        started = 0
        idle = self.idle_reason() is not None
        for cl in await self.store.call_lists.all(states=("running",)):
            if cl.mode != "progressive":
                await self.store.call_lists.finish_if_empty(cl.id, now)
                continue
            if idle:
                continue
            if not self.list_open(cl, now):
                continue
            agents = [a for a, lid in self.ready.items() if lid == cl.id and self.agent_free(a, now)]
            for agent_id in agents:
                if len(self.in_flight) >= self.max_concurrent:
                    break
                zones = await self.open_zones(cl, now)
                entry = await self.store.call_lists.claim(
                    cl.id,
                    zones=zones,
                    now=now,
                    owner=self.owner,
                    lease=self.lease,
                    agent_id=agent_id,
                    others_due_by=others_due_by(now, self.owner_wait),
                )
                if entry is None:
                    # nothing for this agent now (the rest may be other reps' customers, waiting
                    # for their owners): the next free agent may still have customers of their own
                    continue
                wait = self.bucket.take()
                if wait > 0:  # calls per second of the trunk
                    await asyncio.sleep(wait)
                agent = await self.store.users.get(agent_id)
                if await self._dial(entry, agent, self.owner) is not None:
                    started += 1
            if not any(f.list_id == cl.id for f in self.in_flight.values()):
                if await self.store.call_lists.finish_if_empty(cl.id, now):
                    log.info("event=call_list_done list=%d", cl.id)
        return started

    # -- dialing -------------------------------------------------------------------------------

    async def _dial(self, entry: Entry, agent: User, owner: str) -> Attempt | None:
        """Write the attempt and start placing the call; None if the customer went on the
        do-not-call list since the list was built (the entry is skipped)."""
        if self.backend is None:
            await self.store.call_lists.release(entry.id, owner, self.clock())
            raise DialFailed("no phone system is enabled ([asterisk] or [twilio])")
        assert entry.number is not None
        attempt = await self.store.call_lists.start_attempt(
            entry.id,
            owner=owner,
            agent_id=agent.id,
            source=self.backend.source,
            now=self.clock(),
            lease=self.lease if owner == self.owner else self.preview_lease,
        )
        if attempt is None:
            log.info("event=dial_skipped_do_not_call entry=%d", entry.id)
            return None
        call_id = self.backend.name_call(attempt.id)
        if call_id is not None:
            # known to every instance before the phone rings (the agent's calls are listed from the
            # store), and a crash before the dial returns still finds the call's touch by it
            await self.store.call_lists.set_call_id(attempt.id, call_id)
        flight = _InFlight(attempt.id, entry.id, agent.id, entry.list_id, named=call_id)
        self.in_flight[attempt.id] = flight
        await self._pop(agent, entry, attempt, call_id)
        flight.task = asyncio.create_task(
            self._place(flight, entry, agent, call_id), name=f"dial-{attempt.id}"
        )
        return attempt

    async def _place(self, flight: _InFlight, entry: Entry, agent: User, named: str | None = None) -> None:
        assert self.backend is not None and entry.number is not None
        contact = None
        if entry.contact_id is not None:
            with contextlib.suppress(NotFound):
                contact = await self.store.contacts.get(entry.contact_id)
        try:
            call_id = await self.backend.dial(
                agent=agent,
                number=entry.number,
                caller_name=contact.name if contact else entry.number,
                attempt_id=flight.attempt_id,
                timeout_s=self.dial_timeout_s,
                call_id=named,
            )
        except AgentUnavailable as exc:
            await self.store.call_lists.cancel_attempt(flight.attempt_id, str(exc), self.clock())
            self.in_flight.pop(flight.attempt_id, None)
            if self.unready(agent.id):
                await self.hub.publish(
                    agent.id, {"type": "dialer", "state": "not_ready", "reason": f"{exc}; you are paused"}
                )
            log.info(
                "event=dial_agent_unavailable attempt=%d agent=%s reason=%s",
                flight.attempt_id,
                agent.username,
                exc,
            )
            self.wake()
            return
        except DialFailed as exc:
            await self.store.call_lists.finish_attempt(
                flight.attempt_id, "failed", now=self.clock(), error=str(exc)
            )
            self.in_flight.pop(flight.attempt_id, None)
            await self.hub.publish(agent.id, {"type": "dialer", "state": "failed", "reason": str(exc)})
            log.warning("event=dial_failed attempt=%d reason=%s", flight.attempt_id, exc)
            self.wake()
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            # the call may exist (a timeout after the request went out): leave the attempt `dialing`,
            # its lease expires and the sweep marks it unknown: never redialed blindly
            log.exception("event=dial_outcome_unknown attempt=%d", flight.attempt_id)
            self.in_flight.pop(flight.attempt_id, None)
            return
        # stored before it counts as known: after a crash the call's touch is found by this id
        await self.store.call_lists.set_call_id(flight.attempt_id, call_id)
        flight.call_id = call_id
        early = self._ended.pop(call_id, None)
        if early is not None:
            await self.call_ended(*early)

    async def _pop(
        self, agent: User, entry: Entry, attempt: Attempt, call_id: str | None = None
    ) -> dict[str, Any]:
        """The agent's pop while their phone rings; it has the call's id when that is known already,
        so the call service's pop for the same call updates it instead of adding a second one."""
        matches = []
        if entry.contact_id is not None:
            with contextlib.suppress(NotFound):
                matches = [await self.store.contacts.get(entry.contact_id)]
        call = {
            "id": call_id or f"attempt-{attempt.id}",
            "attempt_id": attempt.id,
            "entry_id": entry.id,
            "list_id": entry.list_id,
            "direction": "outbound",
            "state": "dialing",
            "number": entry.number,
            "from": None,
            "to": entry.number,
        }
        pop = await self.pop_builder(self.store, call, matches, agent)
        await self.hub.publish(agent.id, pop)
        return pop

    async def call_ended(self, ev: EndedCall, touch_id: int | None) -> None:
        """The call service's end-of-call hook: close the attempt the call belongs to."""
        attempt = await self.store.call_lists.attempt_by_call(ev.call_id)
        if attempt is None:
            if any(f.call_id is None for f in self.in_flight.values()):
                self._ended[ev.call_id] = (ev, touch_id)  # its dial has not returned yet
                if len(self._ended) > 1000:
                    self._ended.pop(next(iter(self._ended)))
            return
        now = self.clock()
        outcome = outcome_of_touch("answered" if ev.answered else "missed", {"hangup_cause": ev.hangup_cause})
        done = await self.store.call_lists.finish_attempt(attempt.id, outcome, now=now, touch_id=touch_id)
        if done is not None and done.disposition:
            await self._note_on_touch(done)  # the agent chose a disposition while talking
        flight = self.in_flight.pop(attempt.id, None)
        if attempt.agent_id is not None and flight is not None and outcome == "answered":
            self.wrap_until[attempt.agent_id] = now + self.wrap_up
        if attempt.agent_id is not None:
            await self.hub.publish(
                attempt.agent_id,
                {
                    "type": "dialer",
                    "state": "ended",
                    "attempt_id": attempt.id,
                    "outcome": outcome,
                    "touch_id": touch_id,
                    "call_id": ev.call_id,
                },
            )
        log.info("event=attempt_ended attempt=%d outcome=%s call=%s", attempt.id, outcome, ev.call_id)
        self.wake()

    # -- agents --------------------------------------------------------------------------------

    async def set_ready(self, user: User, list_id: int | None) -> dict[str, Any]:
        """Join a progressive list as a free agent (list_id), or stop taking calls (None)."""
        if list_id is None:
            self.unready(user.id)
            return {"ready": False, "list_id": None}
        cl = await self.store.call_lists.get(list_id)
        if cl.mode != "progressive":
            raise ValidationError("list_id", "this list is dialed in preview mode: use next-call")
        if not self.may_work(cl, user):
            raise Conflict("list_id", "you are not an agent of this list")
        if not user.extension and not user.interfaces and self.backend and self.backend.source == "asterisk":
            raise ValidationError("list_id", "you have no extension to ring")
        self.apply_ready(user.id, list_id)
        if self.on_ready is not None:
            self.on_ready(user.id, list_id)
        return {"ready": True, "list_id": list_id}

    def unready(self, agent_id: int) -> bool:
        """The agent takes no more progressive calls (those in flight finish); False if they did not."""
        if self.ready.pop(agent_id, None) is None:
            return False
        if self.on_ready is not None:
            self.on_ready(agent_id, None)
        return True

    def apply_ready(self, agent_id: int, list_id: int | None) -> None:
        """Set an agent's progressive list (None: not ready) as decided already, here or elsewhere."""
        if list_id is None:
            self.ready.pop(agent_id, None)
            return
        self.ready[agent_id] = list_id
        self.wrap_until.pop(agent_id, None)
        self.wake()

    async def next_call(self, user: User, list_id: int | None = None) -> dict[str, Any] | None:
        """Preview: the entry this agent holds, else the next due one of a running preview list they
        may work, leased to them, with its screen-pop. None when nothing is due.

        An agent holds one entry at a time on every instance sharing the store. Asking for another
        list gives back the entry they hold there unless it is being dialed."""
        owner = f"agent:{user.id}"
        now = self.clock()
        held = await self.store.call_lists.held_by(owner)
        entry = held[0] if held else None
        if entry is not None and list_id not in (None, entry.list_id):
            await self._give_back(entry, owner, now)
            entry = None
        if entry is None:
            lists = [
                cl
                for cl in await self.store.call_lists.all(states=("running",))
                if cl.mode == "preview" and list_id in (None, cl.id) and self.may_work(cl, user)
            ]
            if list_id is not None and not lists:
                cl = await self.store.call_lists.get(list_id)
                raise Conflict("list_id", f"list {cl.name!r} is not a running preview list you work")
            for cl in lists:
                if not self.list_open(cl, now):
                    continue
                entry = await self.store.call_lists.claim(
                    cl.id,
                    zones=await self.open_zones(cl, now),
                    now=now,
                    owner=owner,
                    lease=self.preview_lease,
                    agent_id=user.id,
                    sole=True,
                )
                if entry is not None:
                    break
                await self.store.call_lists.finish_if_empty(cl.id, now)
        if entry is None:
            return None
        if list_id not in (None, entry.list_id):
            # a request for this agent on another instance leased them an entry of another list
            raise Conflict("list_id", f"you hold entry {entry.id} of another list: dial or skip it first")
        cl = await self.store.call_lists.get(entry.list_id)
        matches = []
        if entry.contact_id is not None:
            with contextlib.suppress(NotFound):
                matches = [await self.store.contacts.get(entry.contact_id)]
        call = {
            "id": f"entry-{entry.id}",
            "direction": "outbound",
            "state": "preview",
            "to": entry.number,
            "list_id": entry.list_id,
        }
        pop = await self.pop_builder(self.store, call, matches, user)
        local = now.astimezone(zone(entry.time_zone))
        return {
            "entry": entry.to_dict(),
            "list": {"id": cl.id, "name": cl.name, "mode": cl.mode},
            "local_time": local.strftime("%H:%M"),
            "attempts": [a.to_dict() for a in await self.store.call_lists.attempts_of(entry_id=entry.id)],
            "lease_until": entry.lease_until.isoformat().replace("+00:00", "Z")
            if entry.lease_until
            else None,
            "pop": pop,
        }

    async def _give_back(self, entry: Entry, owner: str, now: datetime) -> None:
        """The agent moves to another list: the entry they hold goes back to the queue in its place,
        refused while it is being dialed."""
        if any(a.state == "dialing" for a in await self.store.call_lists.attempts_of(entry_id=entry.id)):
            raise Conflict(
                "list_id", f"you are on a call for entry {entry.id} of another list: finish it first"
            )
        await self.store.call_lists.release(entry.id, owner, now, next_at=entry.next_at)

    async def preview_dial(self, user: User, entry_id: int) -> dict[str, Any]:
        """Preview: the agent dials the entry they hold, here or on the instance `hand_off` gives it
        to; the attempt as a dict, with the call's id when it is known before the phone rings."""
        if self.hand_off is not None:
            await self._preview_entry(user, entry_id)  # refused here, not after a round trip
            out = await self.hand_off(user, entry_id)
            if out is not None:
                return out
        attempt = await self.dial_entry(user, entry_id)
        flight = self.in_flight.get(attempt.id)
        return attempt.to_dict() | {"call_id": attempt.call_id or (flight.named if flight else None)}

    async def dial_entry(self, user: User, entry_id: int) -> Attempt:
        """Preview: the agent dials the entry they hold (calling hours are checked again now)."""
        entry = await self._preview_entry(user, entry_id)
        if self.backend is None:
            raise DialFailed("no phone system is enabled ([asterisk] or [twilio])")
        attempt = await self._dial(entry, user, f"agent:{user.id}")
        if attempt is None:
            raise Conflict("entry_id", "this customer is now on the do-not-call list; the entry was skipped")
        return attempt

    async def _preview_entry(self, user: User, entry_id: int) -> Entry:
        """The entry the agent may dial now: theirs, its list running, the customer's hours open."""
        entry = await self.store.call_lists.entry(entry_id)
        owner = f"agent:{user.id}"
        if entry.state != "in_progress" or entry.lease_owner != owner:
            raise Conflict("entry_id", "take this entry with next-call first (or its lease expired)")
        cl = await self.store.call_lists.get(entry.list_id)
        now = self.clock()
        if cl.state != "running":
            raise Conflict("entry_id", f"the list is {cl.state}")
        hours = self.hours_of(cl)
        if not hours.is_open(entry.time_zone, now):
            tz = zone(entry.time_zone)
            raise OutsideCallingHours(
                now.astimezone(tz), hours.next_open(entry.time_zone, now).astimezone(tz), entry.time_zone
            )
        return entry

    async def skip_entry(self, user: User, entry_id: int, reason: str, *, later: bool = False) -> Entry:
        """Preview: pass on an entry: for good (skipped with the reason) or `later` (back in the queue
        after the list's retry delay, without counting an attempt)."""
        if not isinstance(reason, str) or not reason.strip():
            raise ValidationError("reason", "say why the entry is skipped")
        owner = f"agent:{user.id}"
        now = self.clock()
        entry = await self.store.call_lists.entry(entry_id)
        if entry.lease_owner != owner or entry.state != "in_progress":
            raise Conflict("entry_id", "this entry is not held by you")
        if later:
            cl = await self.store.call_lists.get(entry.list_id)
            await self.store.call_lists.release(
                entry_id, owner, now, next_at=now + timedelta(minutes=cl.retry_minutes)
            )
        else:
            await self.store.call_lists.skip(entry_id, owner, reason.strip()[:200], now)
        await self.store.audit.write(
            "call_list.entry_later" if later else "call_list.entry_skip",
            user_id=user.id,
            object_type="call_list_entry",
            object_id=entry_id,
            reason=reason.strip(),
        )
        return await self.store.call_lists.entry(entry_id)

    async def disposition(
        self,
        user: User,
        attempt_id: int,
        disposition: str,
        *,
        note: str = "",
        callback_at: datetime | None = None,
        survey: bool = False,
    ) -> Attempt:
        """The agent's disposition closes the attempt: the entry is done, retried or called back;
        "do not call" sets the contact's flag; "call back" puts a callback on the agent's My Day; the
        note and disposition land on the call's touch (now, or when the call ends)."""
        if disposition not in self.dispositions and not (survey and disposition == SURVEY_DONE):
            raise ValidationError("disposition", f"must be one of: {', '.join(self.dispositions)}")
        if disposition == "call back" and callback_at is None:
            raise ValidationError("callback_at", "a call back needs a time")
        now = self.clock()
        if callback_at is not None and callback_at <= now:
            raise ValidationError("callback_at", "must be in the future")
        attempt = await self.store.call_lists.attempt(attempt_id)
        if user.role == "rep" and attempt.agent_id not in (None, user.id):
            raise Conflict("attempt_id", "this call was made by another agent")
        if attempt.state == "cancelled":
            raise Conflict("attempt_id", "this attempt never reached the customer")
        updated = await self.store.call_lists.set_disposition(
            attempt_id, disposition, note=note, callback_at=callback_at, agent_id=user.id, now=now
        )
        await self._disposition_effects(updated, user, callback_at)
        self.wrapped_up(user.id)
        return updated

    def wrapped_up(self, agent_id: int) -> None:
        """The agent's disposition ends their wrap-up: free for the next call (also on the instance
        that dials, told through `on_wrapped_up`)."""
        self.wrap_until.pop(agent_id, None)
        if self.on_wrapped_up is not None:
            self.on_wrapped_up(agent_id)
        self.wake()

    async def _note_on_touch(self, attempt: Attempt) -> None:
        """The disposition and note on the call's touch (once the call has one)."""
        if attempt.touch_id is not None and attempt.disposition is not None:
            if attempt.disposition == SURVEY_DONE:  # answered before the call ended: link the two
                await self.store.surveys.link_attempt_touch(attempt.id, attempt.touch_id)
            touch = await self.store.touches.get(attempt.touch_id)
            await self.store.touches.set_note(
                attempt.touch_id, attempt.note.strip() or touch.summary, disposition=attempt.disposition
            )

    async def _disposition_effects(self, attempt: Attempt, user: User, callback_at: datetime | None) -> None:
        await self._note_on_touch(attempt)
        if attempt.contact_id is None:
            return
        if attempt.disposition == "do not call":
            # (its other pending entries were skipped with the disposition; any left are at dial time)
            await self.store.contacts.set_flags(attempt.contact_id, do_not_call=True)
        if attempt.disposition == "call back" and callback_at is not None:
            await self.store.touches.add_followup(
                attempt.contact_id,
                callback_at,
                kind="callback",
                note=attempt.note.strip() or "Call back (call list)",
                assignee_id=user.id,
            )
        await self.store.audit.write(
            "call.disposition",
            user_id=user.id,
            object_type="call_attempt",
            object_id=attempt.id,
            disposition=attempt.disposition,
        )

    async def on_touch_disposition(
        self, touch_id: int, disposition: str, note: str, callback_at: datetime | None
    ) -> None:
        """A disposition set on the call itself (POST /api/v1/calls/{id}/disposition, which already
        updated the touch, flags and follow-ups): carry it to the list attempt and its entry."""
        attempt = await self.store.call_lists.attempt_by_touch(touch_id)
        if attempt is not None and attempt.disposition != disposition:
            await self.store.call_lists.set_disposition(
                attempt.id, disposition, note=note, callback_at=callback_at, now=self.clock()
            )
            if attempt.agent_id is not None:
                self.wrapped_up(attempt.agent_id)
            self.wake()
