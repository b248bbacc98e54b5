"""Per-call lanes: each call's work runs in order in a chain of its own, calls beside each other."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("cti.lanes")


class CallLanes:
    """One ordered chain of tasks per call id.

    `submit(call_id, work)` returns at once: `work` starts when the call's previous work has
    finished (whether it succeeded or failed), so one call's effects keep their order, while a
    call whose writes wait on the store holds up neither the caller (the AMI event reader) nor any
    other call. An error is logged and ends only that piece of work. `drain()` waits until every
    lane is empty (shutdown, and before a resync compares the store with the PBX).

    Each piece of work may carry a `kind` (e.g. the event's type): `pending(call_id)` tells which
    kinds of work a call still has queued or running, so the submitter can tell whether something
    new may start beside them (a ring's pop beside the call's recording row being written).
    """

    def __init__(self, name: str = "call") -> None:
        self.name = name
        self._tails: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._kinds: dict[str, list[str]] = {}  # per call: the kinds of its work not yet finished

    def __len__(self) -> int:
        """How many pieces of work are queued or running."""
        return len(self._tasks)

    def pending(self, call_id: str) -> set[str]:
        """The kinds of this call's work queued or running now (empty: its lane is idle)."""
        return set(self._kinds.get(call_id, ()))

    def submit(
        self, call_id: str, work: Callable[[], Awaitable[None]], *, kind: str = ""
    ) -> asyncio.Task[None]:
        before = self._tails.get(call_id)

        async def run() -> None:
            if before is not None and not before.done():
                await asyncio.wait([before])  # its outcome is its own: logged there, not raised here
            try:
                await work()
            except Exception:
                log.exception("event=call_lane_failed lane=%s call=%s", self.name, call_id)

        task = asyncio.create_task(run(), name=f"{self.name}-{call_id}")
        self._tails[call_id] = task
        self._tasks.add(task)
        self._kinds.setdefault(call_id, []).append(kind)
        task.add_done_callback(lambda t: self._finished(call_id, t, kind))
        return task

    def _finished(self, call_id: str, task: asyncio.Task[None], kind: str) -> None:
        self._tasks.discard(task)
        if self._tails.get(call_id) is task:
            del self._tails[call_id]
        kinds = self._kinds.get(call_id)
        if kinds is not None:
            kinds.remove(kind)
            if not kinds:
                del self._kinds[call_id]

    async def drain(self) -> None:
        """Wait until every queued piece of work has finished (including work queued meanwhile)."""
        while self._tasks:
            await asyncio.wait(list(self._tasks))
