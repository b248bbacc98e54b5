"""Worker lanes: several copies of one loop running side by side, stopped together."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any


async def run_lanes(
    count: int,
    lane: Callable[[], Coroutine[Any, Any, None]],
    *,
    name: str,
    beside: Mapping[str, Callable[[], Coroutine[Any, Any, None]]] | None = None,
) -> None:
    """Run `count` tasks of `lane()` (named `<name>-lane<i>`), and one task of each of `beside`
    (named `<name>-<key>`, e.g. the keeper renewing the lanes' leases), until all have returned.

    When this is cancelled, each lane is cancelled once and awaited: a lane that is already
    cleaning up (giving back the rows it claimed, recording what a server accepted) is not
    cancelled a second time, which would cut that cleanup short. A lane that fails ends the run
    with its error once the others have stopped."""
    lanes: list[asyncio.Task[None]] = [
        asyncio.create_task(lane(), name=f"{name}-lane{i}") for i in range(max(1, count))
    ]
    lanes += [asyncio.create_task(fn(), name=f"{name}-{key}") for key, fn in (beside or {}).items()]
    try:
        await asyncio.gather(*lanes)
    finally:
        # a cancelled (or failed) gather leaves the lanes cancelled once at most; never twice
        for task in lanes:
            if not task.done() and not task.cancelling():
                task.cancel()
        await asyncio.gather(*lanes, return_exceptions=True)


async def every(
    seconds: float,
    work: Callable[[], Awaitable[object]],
    *,
    stopped: asyncio.Event,
    log: logging.Logger,
    event: str,
) -> None:
    """Run `work()` every `seconds` until `stopped` is set (checked before each run, and a stop
    ends the wait at once); a failing run is logged as `event` and the next one comes as usual."""
    while not stopped.is_set():
        try:
            await asyncio.wait_for(stopped.wait(), seconds)
        except TimeoutError:
            pass
        if stopped.is_set():
            return
        try:
            await work()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("event=%s", event)
