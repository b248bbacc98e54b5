"""Asterisk as a call source: AMI events → tracker → call service, with resync on every (re)connect."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from crm_link.clock import Clock, system_clock
from cti.ami.client import RESYNC, AmiClient, AmiError
from cti.ami.protocol import Event
from cti.directory import InterfaceDirectory
from cti.events import CallEvent, CallRinging
from cti.lanes import CallLanes
from cti.service import CallService
from cti.tracker import CallTracker

log = logging.getLogger("cti.asterisk")

# a call's queued work that a ring's pop may start beside (it changes nothing the pop shows)
POP_MAY_OVERTAKE = frozenset({"RecordingReady", "CallRinging"})


class AsteriskSource:
    """Reads the AMI event queue, keeps the tracker in step with the PBX, feeds the call service.

    The reader folds every AMI event into the tracker in order and hands each domain event to its
    call's lane (`CallLanes`): one call's events are applied in order, but a call whose touch is
    being written never delays another call's pop, nor the reading of the next event.
    """

    def __init__(
        self,
        client: AmiClient,
        service: CallService,
        directory: InterfaceDirectory,
        *,
        clock: Clock = system_clock,
        region: str = "US",
    ) -> None:
        self.client = client
        self.service = service
        self.directory = directory
        self.tracker = CallTracker(directory.is_agent, clock, region=region)
        self.events_seen = 0
        self.resyncs = 0
        self._task: asyncio.Task[None] | None = None
        self._originations: set[asyncio.Task[Any]] = set()
        self.lanes = CallLanes("asterisk")
        # where a click-to-call goes while this source is not connected (several instances share
        # one PBX and another holds the connection): given the call's arguments, it returns the id
        # or raises AmiError
        self.forward: Callable[[dict[str, Any]], Awaitable[str]] | None = None

    async def start(self, *, run: bool = True) -> None:
        """Load the directory; unless `run` is False (the caller runs `client.run()` and `run()`
        itself, e.g. under a supervisor), start the AMI client and the event consumer."""
        await self.directory.reload()
        if run:
            await self.client.start()
            self._task = asyncio.create_task(self.run(), name="asterisk-events")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.lanes.drain()  # the calls' queued writes land before we stop
        for task in list(self._originations):
            task.cancel()
        await asyncio.gather(*self._originations, return_exceptions=True)
        await self.client.close()

    async def run(self) -> None:
        """Consume AMI events: keep the tracker in step and feed the call service."""
        while True:
            ev = await self.client.events.get()
            self.events_seen += 1
            try:
                if ev.name in ("FullyBooted", RESYNC):
                    await self.resync()
                    continue
                await self.directory.ensure_fresh()
                self._prefetch(ev)
                popped = False
                for domain_event in self.tracker.feed(ev):
                    popped = self._dispatch(domain_event) or popped
                if popped:
                    # let the pop just started run before the events queued behind its ring (the
                    # rest of the PBX's burst: dial states, the other legs): one turn of the loop
                    await asyncio.sleep(0)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("event=asterisk_event_failed name=%s", ev.name)

    def _dispatch(self, event: CallEvent) -> bool:
        """Apply a domain event in its call's lane, after that call's earlier events.

        A ring's pop does not wait for the call's earlier writes that do not change what it shows
        (the recording's row, an earlier ring's touch): it starts at once, and the ring's own write
        keeps its place in the lane. Behind an answer or an end of the call, it waits its turn.
        True when a pop was started here.
        """
        popped = False
        if isinstance(event, CallRinging) and self.lanes.pending(event.call_id) <= POP_MAY_OVERTAKE:
            self.service.pop_now(event)
            popped = True
        self.lanes.submit(event.call_id, lambda: self.service.handle(event), kind=type(event).__name__)
        return popped

    def _prefetch(self, ev: Event) -> None:
        if ev.name == "NewCallerid" and ev.get("Uniqueid") == ev.get("Linkedid"):
            self.service.prefetch(ev.get("Linkedid") or "", ev.get("CallerIDNum"))

    async def resync(self) -> None:
        """Forget channel state, list the PBX's live channels, end the calls that vanished."""
        self.resyncs += 1
        # the store must hold every event applied so far before it is compared with the PBX
        await self.lanes.drain()
        await self.directory.reload()
        self.tracker.reset_channels()
        try:
            _, channels = await self.client.send_list_action("CoreShowChannels")
        except AmiError as exc:
            log.warning("event=asterisk_resync_failed error=%r", exc)
            return
        known = set(self.tracker.calls)
        lost_at, self.client.lost_at = self.client.lost_at, None
        for domain_event in self.tracker.resync(channels, lost_at=lost_at):
            await self.service.handle(domain_event)
        # calls that began while we were away: MixMonitor announced their files before we listened
        for ch in channels:
            linkedid, name = ch.get("Linkedid") or "", ch.get("Channel") or ""
            if linkedid in known or linkedid not in self.tracker.calls or not name:
                continue
            try:
                resp = await self.client.send_action(
                    "Getvar", {"Channel": name, "Variable": "MIXMONITOR_FILENAME"}, check=False
                )
            except AmiError as exc:
                log.warning("event=asterisk_getvar_failed channel=%s error=%r", name, exc)
                continue
            if resp.status == "Success":
                for domain_event in self.tracker.recording(linkedid, resp.get("Value")):
                    await self.service.handle(domain_event)
        # calls the store still has ringing or answered (e.g. from before a restart) that the PBX
        # no longer has: their end happened while nobody listened
        await self.service.close_vanished(
            set(self.tracker.calls),
            now=self.tracker.clock(),
            reason="the PBX no longer had this call when Switchboard reconnected",
        )
        log.info(
            "event=asterisk_resynced live_channels=%d live_calls=%d", len(channels), len(self.tracker.calls)
        )

    async def click_to_call(
        self,
        *,
        interface: str,
        number: str,
        context: str,
        caller_id: str | None,
        variables: dict[str, str],
        timeout_s: int,
        action_id: str | None = None,
    ) -> str:
        """Originate the agent's leg, which then dials the customer; returns the call's id at once.

        The id is given to Asterisk as the agent leg's ChannelId, so it is the call's Linkedid: the
        same id names the pop, the touch and `/api/v1/calls/{id}/disposition`. The OriginateResponse
        is awaited by an owned task that logs a failure (agent did not answer, interface
        unreachable); the call itself is followed through the event stream. While not connected, the
        call goes to `forward` when set; `action_id` is then the id it was forwarded with.
        """
        if self.client.state != "up" and self.forward is not None and action_id is None:
            return await self.forward(
                {
                    "interface": interface,
                    "number": number,
                    "context": context,
                    "caller_id": caller_id,
                    "variables": variables,
                    "timeout_s": timeout_s,
                    "action_id": f"c2c-{uuid.uuid4().hex}",
                }
            )
        action_id = action_id or f"c2c-{uuid.uuid4().hex}"

        async def run() -> None:
            try:
                resp = await self.client.originate(
                    interface,
                    context=context,
                    exten=number,
                    caller_id=caller_id,
                    timeout_ms=timeout_s * 1000,
                    variables=variables,
                    action_id=action_id,
                    wait=timeout_s + 30,
                    channel_id=action_id,
                )
                if resp.get("Response") != "Success":
                    log.warning(
                        "event=originate_failed id=%s interface=%s reason=%s",
                        action_id,
                        interface,
                        resp.get("Reason"),
                    )
            except AmiError as exc:
                log.warning("event=originate_failed id=%s interface=%s error=%r", action_id, interface, exc)

        if self.client.state != "up":
            raise AmiError("the PBX is not connected")
        task = asyncio.create_task(run(), name=f"originate-{action_id}")
        self._originations.add(task)
        task.add_done_callback(self._originations.discard)
        return action_id
