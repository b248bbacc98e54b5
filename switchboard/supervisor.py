"""One owner for every long-lived background worker: restarts a crashed one with backoff, logs why,
and tells `/healthz` each worker's real state."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

log = logging.getLogger("switchboard.supervisor")

WorkerFactory = Callable[[], Awaitable[None]]


@dataclass
class WorkerState:
    """What `/healthz` shows of one worker."""

    name: str
    state: str = "running"  # running | restarting | stopped
    restarts: int = 0
    last_error: str | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)
    stopping: bool = False

    def as_dict(self) -> dict[str, object]:
        return {"state": self.state, "restarts": self.restarts, "last_error": self.last_error}


class Supervisor:
    """`start(name, factory)` runs `await factory()` in a task it owns; when it raises, the error is
    logged and the worker is started again after a jittered, doubling delay (reset once a run has
    lasted longer than the longest delay). A worker that returns is `stopped`. `stop(names)` stops
    restarting, waits up to `timeout` for the worker to finish on its own, then cancels it."""

    def __init__(self, *, backoff_min: float = 0.5, backoff_max: float = 30.0) -> None:
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self.workers: dict[str, WorkerState] = {}

    def start(self, name: str, factory: WorkerFactory) -> None:
        """Run a worker under supervision (a name is used once at a time)."""
        current = self.workers.get(name)
        if current is not None and current.task is not None and not current.task.done():
            raise RuntimeError(f"worker {name} is already running")
        worker = WorkerState(name)
        self.workers[name] = worker
        worker.task = asyncio.create_task(self._supervise(worker, factory), name=name)

    async def _supervise(self, worker: WorkerState, factory: WorkerFactory) -> None:
        loop = asyncio.get_running_loop()
        delay = self.backoff_min
        while True:
            worker.state = "running"
            began = loop.time()
            try:
                await factory()
            except asyncio.CancelledError:
                worker.state = "stopped"
                raise
            except Exception as exc:
                worker.last_error = f"{type(exc).__name__}: {exc}"
                if worker.stopping:
                    worker.state = "stopped"
                    log.exception("event=worker_failed_while_stopping worker=%s", worker.name)
                    return
                if loop.time() - began > self.backoff_max:
                    delay = self.backoff_min
                wait = delay * (0.5 + random.random() / 2)
                worker.state = "restarting"
                worker.restarts += 1
                log.exception(
                    "event=worker_crashed worker=%s restarts=%d retry_in=%.1fs",
                    worker.name,
                    worker.restarts,
                    wait,
                )
                await asyncio.sleep(wait)
                delay = min(self.backoff_max, delay * 2)
                continue
            worker.state = "stopped"
            if not worker.stopping:
                log.warning("event=worker_exited worker=%s", worker.name)
            return

    def states(self) -> dict[str, dict[str, object]]:
        """Each worker's state, restarts and last error."""
        return {name: w.as_dict() for name, w in self.workers.items()}

    def healthy(self) -> bool:
        return all(w.state == "running" for w in self.workers.values())

    def expect_stop(self, *names: str) -> None:
        """These workers are about to finish on their own (their owner is closing them): a return
        or an error from now on is not restarted."""
        for n in names:
            if n in self.workers:
                self.workers[n].stopping = True

    async def stop(self, *names: str, timeout: float = 0.0) -> None:
        """Stop the named workers: let each finish for up to `timeout` seconds (after the caller
        told it to stop), then cancel it."""
        chosen = [self.workers[n] for n in names if n in self.workers]
        for w in chosen:
            w.stopping = True
        tasks = [w.task for w in chosen if w.task is not None and not w.task.done()]
        if not tasks:
            return
        if timeout > 0:
            await asyncio.wait(tasks, timeout=timeout)
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        for w in chosen:
            w.state = "stopped"
