"""SMS and email cadence steps: when one comes due, its message goes out through the outbox of its
channel (handed in by the composition root), once; the send closes the step's follow-up.

A step that cannot go (opted out, no number or address, a template gone, a merge code missing)
stays open on its assignee's day as a call to make, with the reason. `StepSender.send_step` is the
one place a step's message is made: a survey step hooks in there.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from crm_link.clock import Clock
from crm_link.errors import NotFound
from crm_link.models import FollowUp
from crm_link.store import Store
from followups.rules import Step
from followups.service import to_rule

log = logging.getLogger("followups.steps")

# queue the step's message for the follow-up's contact (closing the follow-up once it is sent);
# None when it is queued, else why it cannot go
StepChannel = Callable[[FollowUp, Step], Awaitable[str | None]]


@dataclass(slots=True)
class StepOutcome:
    followup_id: int
    channel: str
    queued: bool
    reason: str | None = None


class StepSender:
    """Sends due SMS/email steps. The outbox row a step writes is keyed by its follow-up, so a
    step is queued at most once, across restarts; the sender's own loop then delivers it."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        channels: Mapping[str, StepChannel],
        *,
        poll_seconds: float = 30.0,
        batch: int = 200,
    ) -> None:
        self.store = store
        self.clock = clock
        self.channels = dict(channels)
        self.poll_seconds = poll_seconds
        self.batch = batch
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()  # one pass at a time: a step is looked up and queued in one go
        self.queued = 0
        self.passes = 0  # finished passes of the worker (tests await one after a restart)

    def wake(self) -> None:
        self._wake.set()

    async def send_step(self, f: FollowUp) -> StepOutcome:
        """Queue one due step's message; a step that cannot go becomes a call with the reason."""
        reason: str | None
        try:
            rule = to_rule(await self.store.followups.cadence(f.cadence_id or 0))
        except NotFound:
            rule = None
        send = self.channels.get(f.channel)
        if rule is None or f.step is None or f.step >= len(rule.steps):
            reason = f"{f.channel.upper()} not sent (its cadence step is gone)"
        elif send is None:
            reason = f"{f.channel.upper()} not sent (no {f.channel} channel is configured)"
        else:
            reason = await send(f, rule.steps[f.step])
        if reason is None:
            self.queued += 1
            return StepOutcome(f.id, f.channel, True)
        await self.store.followups.step_not_sent(f.id, reason)
        log.info("event=followup_step_not_sent followup=%d channel=%s reason=%r", f.id, f.channel, reason)
        return StepOutcome(f.id, f.channel, False, reason)

    async def send_due(self) -> list[StepOutcome]:
        """Queue every step due now; what happened to each."""
        async with self._lock:
            return await self._send_due()

    async def _send_due(self) -> list[StepOutcome]:
        out: list[StepOutcome] = []
        seen: set[int] = set()
        while True:
            due = [
                f for f in await self.store.followups.due_steps(self.clock(), self.batch) if f.id not in seen
            ]
            if not due:
                return out
            for f in due:
                seen.add(f.id)
                out.append(await self.send_step(f))

    async def run(self) -> None:
        """The step worker (under the supervisor): sends what is due, then waits for the next poll
        or a wake (a sweep made new steps)."""
        while True:
            self._wake.clear()
            outcomes = await self.send_due()
            self.passes += 1
            if outcomes:
                log.info(
                    "event=followup_steps queued=%d not_sent=%d",
                    sum(o.queued for o in outcomes),
                    sum(not o.queued for o in outcomes),
                )
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.poll_seconds)
            except TimeoutError:
                pass
