"""A loop-lag probe: how long the event loop went without running a task that only wants to tick.

Used by tests (a generous bound on the longest stall while a big job runs) and by bench scripts
(which print the figure). It measures the loop, not the job: a task sleeps `interval` over and over
and records by how much each wake-up came late (`max_stall`, wall time: on a loaded machine this also
counts the time the OS gave the core to other processes) and how much CPU the loop's own thread spent
between two wake-ups (`max_busy`: the time the loop was really held by work, whatever the load).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from types import TracebackType


class LoopLag:
    """Run as `async with LoopLag() as lag: ...`; then `lag.max_stall` is the longest stall in seconds."""

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self.max_stall = 0.0
        self.max_busy = 0.0
        self.ticks = 0
        self._task: asyncio.Task[None] | None = None
        self._ticked = asyncio.Event()

    async def _run(self) -> None:
        last, last_cpu = time.perf_counter(), time.thread_time()
        while True:
            await asyncio.sleep(self.interval)
            now, cpu = time.perf_counter(), time.thread_time()
            self.max_stall = max(self.max_stall, now - last - self.interval)
            self.max_busy = max(self.max_busy, cpu - last_cpu)
            self.ticks += 1
            self._ticked.set()
            last, last_cpu = now, cpu

    async def __aenter__(self) -> LoopLag:
        self._task = asyncio.create_task(self._run(), name="loop-lag-probe")
        await self._ticked.wait()  # measuring from a first tick, not from the task's creation
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    @property
    def max_stall_ms(self) -> float:
        return self.max_stall * 1000

    @property
    def max_busy_ms(self) -> float:
        return self.max_busy * 1000
