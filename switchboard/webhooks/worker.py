"""The delivery worker: fans new events out to subscribers, sends them signed (bounded concurrency per
subscriber, one event of a contact at a time, in order), retries with backoff and dead-letters."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import socket
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import aiohttp

from crm_link.clock import Clock
from crm_link.crm_events import Delivery, Outcome, backoff
from crm_link.store import Store
from switchboard.settings import CrmSettings, WebhookSettings
from switchboard.webhooks.mapping import Mapping, MappingError, apply, load_mapping
from switchboard.webhooks.signing import EVENT_ID_HEADER, EVENT_TYPE_HEADER, SIGNATURE_HEADER, sign

log = logging.getLogger("switchboard.webhooks")

RETRYABLE_STATUS = frozenset({408, 425, 429})
USER_AGENT = "Switchboard-Webhooks/1"
IDLE_MAX_S = 10.0
# /healthz's backlog figures are refreshed every second, each count stopping at STATS_CAP (a figure
# equal to it reads "10,000 or more"): an exact count of a 1M-event outbox took 13-110 ms of a core
# that screen-pops share, a capped one walks at most 10,000 index entries whatever the outbox holds
# (on the store's background reader, not the one screen-pops read through)
STATS_EVERY_S = 1.0
STATS_CAP = 10_000
# how long completions may gather before the worker records them and claims more (see _gather)
GATHER_S = 0.02
# the loop's lag (one pass over the other ready callbacks) above which delivery halves its in-flight
# requests, and below half of which it adds one back: screen-pops and calls share this loop
LAG_HIGH_S = 0.01


def next_limit(limit: int, lag_s: float, connections: int) -> int:
    """How many requests a subscriber may have in flight after a turn whose loop lag was `lag_s`:
    halved while the loop lags, one more at a time (up to `connections`) once it keeps up."""
    if lag_s > LAG_HIGH_S:
        return max(1, limit // 2)
    if lag_s < LAG_HIGH_S / 2:
        return min(connections, limit + 1)
    return min(connections, limit)


@dataclass
class Subscriber:
    """One configured webhook and what the worker knows of it right now."""

    cfg: WebhookSettings
    mapping: Mapping | None
    inflight: set[asyncio.Task[Outcome]] = field(default_factory=set)
    session: aiohttp.ClientSession | None = None
    # no claim before this time unless poked (new events while the subscriber is healthy)
    idle_until: datetime | None = None
    failing: bool = False
    last_error: str | None = None
    last_ok_at: datetime | None = None
    delivered: int = 0
    limit: int = 0  # in-flight requests allowed now (next_limit), at most cfg.connections

    @property
    def name(self) -> str:
        return self.cfg.name


class DeliveryWorker:
    """Runs under the supervisor: `run()` until `stop()`."""

    def __init__(
        self,
        store: Store,
        settings: CrmSettings,
        *,
        clock: Clock,
        public_url: str = "",
        instance: str | None = None,
    ) -> None:
        self.store = store
        # who holds this worker's leases: unique per process start, so a restarted process waits for
        # its predecessor's leases to expire like any other instance would
        self.instance = instance or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.lease = timedelta(seconds=settings.lease_seconds)
        self.settings = settings
        self.clock = clock
        self.public_url = public_url.rstrip("/")
        self.subscribers = [
            Subscriber(w, load_mapping(w.mapping) if w.mapping else None) for w in settings.webhooks
        ]
        self._done: list[Outcome] = []
        self._wake = asyncio.Event()
        self._stopping = False
        self._next_prune: datetime | None = None
        self.stats: dict[str, Any] = {
            "backlog": 0,
            "dead": 0,
            "unfanned": 0,
            "oldest_waiting_at": None,
            "counted_up_to": STATS_CAP,
        }
        self._stats_at: datetime | None = None
        self._renewed_at: datetime | None = None
        self._expired_at: datetime | None = None
        self.max_lag_s = 0.0

    # control ---------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop claiming; in-flight requests finish and are recorded."""
        self._stopping = True
        self._wake.set()

    def poke(self) -> None:
        """Look for work now (after a re-drive, say)."""
        for sub in self.subscribers:
            sub.idle_until = None
        self._wake.set()

    def health(self) -> dict[str, Any]:
        """What /healthz shows: the backlog and each subscriber's state (`backlog`, `dead` and
        `unfanned` stop at `counted_up_to`: that figure means that many or more)."""
        return self.stats | {
            "instance": self.instance,
            "subscribers": {
                s.name: {
                    "state": "failing" if s.failing else "ok",
                    "in_flight": len(s.inflight),
                    "in_flight_limit": s.limit,
                    "last_error": s.last_error,
                    "last_ok_at": s.last_ok_at.isoformat() if s.last_ok_at else None,
                }
                for s in self.subscribers
            },
        }

    # the loop --------------------------------------------------------------------------------

    async def run(self) -> None:
        """Deliver until stopped; attempts cut short by a crash (this process's or another
        instance's) are sent again once their lease expires (at least once)."""
        self._stopping = False
        log.info("event=crm_worker_start instance=%s lease_s=%s", self.instance, self.settings.lease_seconds)
        for sub in self.subscribers:
            sub.session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=sub.cfg.connections),
                timeout=aiohttp.ClientTimeout(total=sub.cfg.timeout_seconds),
                headers={"User-Agent": USER_AGENT},
            )
            sub.idle_until = None
            sub.limit = sub.cfg.connections
        try:
            await self._loop()
        finally:
            tasks = [t for s in self.subscribers for t in s.inflight]
            if tasks and not self._stopping:
                for t in tasks:
                    t.cancel()
            if tasks:
                # their done-callbacks (registered first) have collected the outcomes by now
                await asyncio.gather(*tasks, return_exceptions=True)
            with contextlib.suppress(Exception):
                await asyncio.shield(self._settle())
            for sub in self.subscribers:
                if sub.session is not None:
                    await sub.session.close()
                    sub.session = None

    async def _loop(self) -> None:
        events = self.store.crm_events
        wants = [(s.name, s.cfg.wants) for s in self.subscribers]
        loop = asyncio.get_running_loop()
        while not self._stopping:
            busy = False
            # yield once and see how long the loop took to come back to us: a lagging loop (pops,
            # calls, requests waiting) gets fewer deliveries in flight
            before = loop.time()
            await asyncio.sleep(0)
            lag = loop.time() - before
            for sub in self.subscribers:
                sub.limit = next_limit(sub.limit, lag, sub.cfg.connections)
            self.max_lag_s = max(self.max_lag_s, lag)
            fanned = await events.fan_out(wants)
            if fanned:
                busy = True
                for sub in self.subscribers:
                    if not sub.failing:
                        sub.idle_until = None
            now = self.clock()
            wanted = {
                sub.name: free
                for sub in self.subscribers
                if (free := sub.limit - len(sub.inflight)) > 0
                and (sub.idle_until is None or now >= sub.idle_until)
            }
            # one turn of the write lock for the outcomes gathered and the next claims (a background
            # transaction: a touch or any request's write waiting for the lock goes first)
            outcomes, self._done = self._done, []
            try:
                recorded, claimed = await events.exchange(
                    outcomes, list(wanted.items()), owner=self.instance, lease=self.lease
                )
            except BaseException:
                self._done[:0] = outcomes  # recorded next time (or, if never, the lease expires)
                raise
            if outcomes:
                busy = True
                self._lease_lost(len(outcomes), recorded)
            for sub in self.subscribers:
                if sub.name not in wanted:
                    continue
                got = claimed.get(sub.name, [])
                for d in got:
                    task = asyncio.create_task(self._attempt(sub, d), name=f"crm-delivery-{d.id}")
                    sub.inflight.add(task)
                    task.add_done_callback(self._finished(sub))
                if got:
                    busy = True
                if len(got) < wanted[sub.name]:
                    # nothing more is due until a retry time, a new event or a completion
                    # (at most IDLE_MAX: a re-drive from the CLI, another process, is seen soon)
                    sub.idle_until = now + timedelta(seconds=min(IDLE_MAX_S, self.settings.retry_max_seconds))
                    due = await self._earliest_retry(sub.name)
                    if due is not None:
                        sub.idle_until = min(sub.idle_until, due)
            await self._leases(now)
            await self._housekeeping(now)
            if busy:
                await self._gather()
            else:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.settings.poll_seconds)

    async def _gather(self) -> None:
        """Between two busy turns, let completions gather (up to GATHER_S, or until a quarter of a
        subscriber's connections are free) so that one turn settles and claims many deliveries:
        at 500 deliveries a second a turn per completion kept the writer, the reader and the loop
        busy with small transactions that the screen-pops' own writes and reads queued behind."""
        if not any(s.inflight for s in self.subscribers):
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + GATHER_S
        while not self._stopping and not self._enough_free():
            self._wake.clear()
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), remaining)

    def _enough_free(self) -> bool:
        now = self.clock()
        return any(
            s.limit - len(s.inflight) >= max(1, s.limit // 4)
            and (s.idle_until is None or now >= s.idle_until)
            for s in self.subscribers
        )

    def _finished(self, sub: Subscriber) -> Any:
        def done(task: asyncio.Task[Outcome]) -> None:
            sub.inflight.discard(task)
            if not task.cancelled() and task.exception() is None:
                self._done.append(task.result())
            if not sub.failing:
                sub.idle_until = None  # the contact's next event may go now
            self._wake.set()

        return done

    async def _settle(self) -> bool:
        outcomes, self._done = self._done, []
        if outcomes:
            self._lease_lost(len(outcomes), await self.store.crm_events.settle(outcomes, owner=self.instance))
        return bool(outcomes)

    def _lease_lost(self, outcomes: int, recorded: int) -> None:
        if recorded < outcomes:
            # this instance stalled past its lease and another one took those deliveries over
            log.warning(
                "event=crm_lease_lost instance=%s outcomes=%d recorded=%d", self.instance, outcomes, recorded
            )

    async def _leases(self, now: datetime) -> None:
        """Renew this instance's leases a few times per lease; take back those of dead instances."""
        third = self.lease / 3
        if any(s.inflight for s in self.subscribers) and (
            self._renewed_at is None or now - self._renewed_at >= third
        ):
            self._renewed_at = now
            await self.store.crm_events.renew_leases(self.instance, self.lease)
        if self._expired_at is None or now - self._expired_at >= min(third, timedelta(seconds=1)):
            self._expired_at = now
            expired = await self.store.crm_events.expire_leases()
            if expired:
                log.info("event=crm_leases_expired instance=%s count=%d", self.instance, expired)
                for sub in self.subscribers:
                    sub.idle_until = None

    async def _earliest_retry(self, subscriber: str) -> datetime | None:
        return await self.store.crm_events.next_retry_at(subscriber)

    async def _housekeeping(self, now: datetime) -> None:
        if self._stats_at is None or now - self._stats_at >= timedelta(seconds=STATS_EVERY_S):
            self._stats_at = now
            self.stats = await self.store.crm_events.waiting(STATS_CAP) | {"counted_up_to": STATS_CAP}
        if self.settings.retention_days and (self._next_prune is None or now >= self._next_prune):
            self._next_prune = now + timedelta(minutes=10)
            pruned = await self.store.crm_events.prune(now - timedelta(days=self.settings.retention_days))
            if pruned:
                log.info("event=crm_events_pruned count=%d", pruned)

    # one attempt -----------------------------------------------------------------------------

    def envelope(self, d: Delivery) -> dict[str, Any]:
        """The event as sent: our envelope (with the recording's absolute URL when there is one)."""
        body = d.event.envelope()
        path = body["data"].get("audio_path")
        if path and self.public_url:
            body["data"]["audio_url"] = self.public_url + path
        return body

    async def _attempt(self, sub: Subscriber, d: Delivery) -> Outcome:
        envelope = self.envelope(d)
        url, method, payload = sub.cfg.url, "POST", envelope
        if sub.mapping is not None:
            try:
                req = apply(sub.mapping, envelope)
            except MappingError as exc:
                return self._give_up(sub, d, None, f"mapping: {exc.reason}")
            if req is None:
                return Outcome(d.id, ok=True, status=None, error=None)  # the mapping takes no such event
            url, method, payload = sub.cfg.url.rstrip("/") + req.path, req.method, req.body
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
        ts = int(self.clock().timestamp())
        headers = {
            **sub.cfg.headers,
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(sub.cfg.secret.reveal(), ts, body),
            EVENT_ID_HEADER: d.event.uid,
            EVENT_TYPE_HEADER: d.event.type,
        }
        assert sub.session is not None
        try:
            async with sub.session.request(
                method, url, data=body, headers=headers, allow_redirects=False
            ) as resp:
                text = (await resp.text(errors="replace"))[:200]
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return self._retry(sub, d, None, f"{type(exc).__name__}: {exc}"[:300] or "connection failed")
        if 200 <= status < 300:
            sub.failing = False
            sub.last_ok_at = self.clock()
            sub.delivered += 1
            return Outcome(d.id, ok=True, status=status, error=None)
        reason = f"HTTP {status}: {text.strip()}"[:300]
        if status >= 500 or status in RETRYABLE_STATUS:
            return self._retry(sub, d, status, reason)
        return self._give_up(sub, d, status, reason)

    def _retry(self, sub: Subscriber, d: Delivery, status: int | None, reason: str) -> Outcome:
        sub.failing = True
        sub.last_error = reason
        if d.attempts >= self.settings.max_attempts:
            return self._give_up(sub, d, status, f"{reason} (after {d.attempts} attempts)")
        wait = backoff(d.attempts, self.settings.retry_first_seconds, self.settings.retry_max_seconds)
        retry_at = self.clock() + wait
        sub.idle_until = retry_at if sub.idle_until is None else min(sub.idle_until, retry_at)
        log.info(
            "event=crm_delivery_retry subscriber=%s delivery=%d attempts=%d wait_s=%.1f reason=%r",
            sub.name,
            d.id,
            d.attempts,
            wait.total_seconds(),
            reason,
        )
        return Outcome(d.id, ok=False, status=status, error=reason, retry_at=retry_at)

    def _give_up(self, sub: Subscriber, d: Delivery, status: int | None, reason: str) -> Outcome:
        sub.last_error = reason
        log.warning(
            "event=crm_delivery_dead subscriber=%s delivery=%d event=%s reason=%r",
            sub.name,
            d.id,
            d.event.uid,
            reason,
        )
        return Outcome(d.id, ok=False, status=status, error=reason)
