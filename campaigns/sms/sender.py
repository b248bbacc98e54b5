"""The send loop of one SMS channel: claim due rows, mark them sending, send at the channel's rate."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from campaigns.ratelimit import TokenBucket
from campaigns.sms.channel import ChannelError, OutboundSms, SmsChannel
from campaigns.sms.quiet import QUIET_HOURS, quiet_until
from crm_link.clock import system_clock
from crm_link.lanes import every, run_lanes
from crm_link.sms import OutboxMessage
from crm_link.store import Store

log = logging.getLogger("campaigns.sms.sender")

Outcome = tuple[OutboxMessage, str, str | None, str | None, str | None]


class ChannelWorker:
    """Sends a channel's queued messages exactly once each.

    A row is committed as `sending` before the gateway is called and as `sent` (with the provider's
    id) after; a crash in between leaves it `sending`, which the next start turns into `unknown`
    instead of sending it again. Several instances may share the store: each claims rows as
    `owner` under a lease it renews while it sends, and takes another's `sending` rows (as
    `unknown`) only once their lease ran out. Rate: a token bucket in segments per second. Quiet
    hours are checked again at send time in the recipient's zone; a held row keeps its place.
    """

    def __init__(
        self,
        store: Store,
        channel: SmsChannel,
        *,
        name: str,
        rate_per_second: float,
        quiet_start: str,
        quiet_end: str,
        window: int = 16,
        max_attempts: int = 5,
        retry_after: timedelta = timedelta(seconds=30),
        auto_pause_after: int = 20,
        clock: Callable[[], datetime] = system_clock,
        monotonic: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        idle_poll: float = 1.0,
        unknown_policy: str = "hold",
        lanes: int = 3,
        owner: str = "",
        lease: timedelta = timedelta(minutes=1),
        renew_every: float | None = None,
    ) -> None:
        if getattr(channel, "one_at_a_time", False):
            # a channel that sends one message at a time (a modem): claim no more than it can take,
            # so a crash leaves few rows in doubt
            lanes, window = 1, min(window, 4)
        self.lanes = max(1, lanes)
        if unknown_policy not in ("hold", "resend"):
            raise ValueError("unknown_policy must be hold or resend")
        self.unknown_policy = unknown_policy
        self.store = store
        self.channel = channel
        self.name = name
        self.quiet_start = quiet_start
        self.quiet_end = quiet_end
        self.window = window
        self.max_attempts = max_attempts
        self.retry_after = retry_after
        self.auto_pause_after = auto_pause_after
        self.clock = clock
        self.sleep = sleep
        self.idle_poll = idle_poll
        mono = monotonic or (lambda: self.clock().timestamp())
        self.bucket = TokenBucket(rate_per_second, burst=max(1.0, rate_per_second), clock=mono)
        self._blast_buckets: dict[int, TokenBucket] = {}
        self._rates: dict[int, float | None] = {}
        self._mono = mono
        self._errors: dict[int | None, int] = {}
        self._wake = asyncio.Event()
        self._stopped = asyncio.Event()
        # the instance claiming: the rows it claims are its own until their lease ends
        self.owner = owner or f"sms-{name}"
        self.lease = lease
        # seconds (of the event loop, not the injected clock) between renewals of the lease
        self.renew_every = renew_every if renew_every is not None else lease.total_seconds() / 3
        self.sent = 0
        self.failed = 0
        self.lapsed = 0  # outcomes not recorded: the rows' lease had lapsed and another instance took them

    def wake(self) -> None:
        """New work was queued: look now instead of at the next poll."""
        self._wake.set()

    async def recover(self) -> int:
        """Turn this channel's rows left `sending` by a crash into `unknown`, then settle what can
        be settled: a channel that can look a message up (Twilio) marks it sent if the provider has
        it and queues it again if not; otherwise the channel's `unknown_policy` decides: `hold`
        (an operator decides) or `resend` (accepting a possible duplicate)."""
        n = await self.store.sms.recover_after_crash(self.name, owner=self.owner)
        if n:
            log.warning("event=sms_unknown_after_restart channel=%s rows=%d", self.name, n)
        await self.reconcile()
        return n

    async def keep_leases(self) -> int:
        """Renew the lease of the rows this worker is sending, then take as in doubt (`unknown`)
        the rows of an instance that stopped renewing its own; how many were taken."""
        await self.store.sms.renew(self.name, self.owner, self.clock() + self.lease)
        n = await self.store.sms.recover_after_crash(self.name, owner=self.owner, starting=False)
        if n:
            log.warning("event=sms_unknown_after_lease channel=%s rows=%d", self.name, n)
            await self.reconcile()
        return n

    async def _keeper(self) -> None:
        await every(
            self.renew_every, self.keep_leases, stopped=self._stopped, log=log,
            event=f"sms_lease_error channel={self.name}",
        )  # fmt: skip

    async def reconcile(self) -> dict[str, int]:
        """Settle this channel's `unknown` rows as far as the provider or the policy allows."""
        counts = {"found": 0, "requeued": 0, "held": 0}
        lookup = getattr(self.channel, "reconcile", None)
        for msg, since in await self.store.sms.unknown_messages(self.name):
            if lookup is not None:
                try:
                    sid = await lookup(msg.to_e164, msg.text, since)
                except ChannelError as exc:
                    log.warning(
                        "event=sms_reconcile_failed channel=%s id=%d reason=%s", self.name, msg.id, exc.reason
                    )
                    counts["held"] += 1
                    continue
                if sid is not None:
                    await self.store.sms.apply_report(
                        self.name,
                        message_id=msg.id,
                        provider_id=sid,
                        status="sent",
                        error_code=None,
                        error_text=None,
                    )
                    counts["found"] += 1
                else:
                    await self.store.sms.requeue_unknown([msg.id])
                    counts["requeued"] += 1
            elif self.unknown_policy == "resend":
                await self.store.sms.requeue_unknown([msg.id])
                counts["requeued"] += 1
            else:
                counts["held"] += 1
        if any(counts.values()):
            log.info(
                "event=sms_reconciled channel=%s %s",
                self.name,
                " ".join(f"{k}={v}" for k, v in counts.items()),
            )
        return counts

    async def run(self) -> None:
        """Loop until stopped; never dies of one bad message. With several lanes, one lane's
        database work overlaps another's gateway requests (claims are atomic, so no message is taken
        twice; the token bucket is shared, so the rate holds). Three lanes keep a gateway busy while
        the other two wait on the store (measured against Kannel, bench/sms_blast.py --kannel); at
        most lanes × window rows are `sending` at once, which bounds what a crash leaves in doubt."""
        await self.recover()
        await run_lanes(self.lanes, self._lane, name=f"sms-{self.name}", beside={"leases": self._keeper})

    async def _lane(self) -> None:
        while not self._stopped.is_set():
            try:
                busy = await self.step()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("event=sms_worker_error channel=%s", self.name)
                busy = False
            if not busy:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), self.idle_poll)
                except TimeoutError:
                    pass

    def stop(self) -> None:
        self._stopped.set()
        self._wake.set()

    async def step(self) -> bool:
        """Claim and send one window of due messages; False when there was nothing to do."""
        batch = await self.store.sms.claim(
            self.name, self.clock(), self.window, owner=self.owner, lease=self.lease
        )
        if not batch:
            await self.store.sms.finish_blasts()
            return False
        rates = self._rates  # a blast's rate is fixed when it is created: read it once
        for bid in {m.blast_id for m in batch if m.blast_id is not None} - rates.keys():
            rates[bid] = (await self.store.sms.blast(bid))["rate_per_second"]
        outcomes = await asyncio.gather(*(self._send_one(m, rates) for m in batch))
        lapsed = await self.store.sms.settle([o for o in outcomes if o is not None], owner=self.owner)
        if lapsed:
            # this instance could not renew its lease in time (the database was out of reach) and
            # another one took these rows as in doubt: what the gateway answered is not recorded
            self.lapsed += len(lapsed)
            log.warning(
                "event=sms_result_after_lease channel=%s owner=%s rows=%d ids=%s",
                self.name, self.owner, len(lapsed), ",".join(map(str, lapsed[:50])),
            )  # fmt: skip
        await self._pause_failing_blasts(batch, outcomes)
        return True

    async def _throttle(self, msg: OutboxMessage, rates: dict[int, float | None]) -> None:
        delay = self.bucket.take(msg.segments)
        if msg.blast_id is not None:
            rate = rates.get(msg.blast_id)
            if rate:
                bucket = self._blast_buckets.setdefault(msg.blast_id, TokenBucket(rate, clock=self._mono))
                delay = max(delay, bucket.take(msg.segments))
        if delay > 0:
            await self.sleep(delay)

    async def _send_one(self, msg: OutboxMessage, rates: dict[int, float | None]) -> Outcome | None:
        now = self.clock()
        # quiet hours hold blasts and cadence steps; a rep's own text or a STOP confirmation goes at once
        automatic = msg.blast_id is not None or (msg.followup_id is not None and msg.user_id is None)
        hold = quiet_until(now, msg.time_zone, self.quiet_start, self.quiet_end) if automatic else None
        if hold is not None:
            await self.store.sms.hold(msg.id, hold, QUIET_HOURS)
            return None
        await self._throttle(msg, rates)
        try:
            result = await self.channel.send(OutboundSms(str(msg.id), msg.to_e164, msg.text))
        except ChannelError as exc:
            if exc.code == "ambiguous":
                return (msg, "unknown", None, exc.reason, exc.code)
            if exc.retryable and msg.attempts < self.max_attempts:
                backoff = self.retry_after * (2 ** (msg.attempts - 1))
                await self.store.sms.hold(msg.id, self.clock() + backoff, f"retrying: {exc.reason}")
                return None
            self.failed += 1
            return (msg, "failed", None, exc.reason, exc.code)
        except Exception as exc:
            # the gateway call blew up in a way we cannot read: it may have gone out
            log.exception("event=sms_send_error channel=%s message=%d", self.name, msg.id)
            return (msg, "unknown", None, f"send error: {type(exc).__name__}", None)
        self.sent += 1
        return (msg, "sent", result.provider_id, None, None)

    async def _pause_failing_blasts(self, batch: list[OutboxMessage], outcomes: list[Outcome | None]) -> None:
        for msg, outcome in zip(batch, outcomes, strict=True):
            if outcome is None:
                continue
            if outcome[1] == "failed":
                self._errors[msg.blast_id] = self._errors.get(msg.blast_id, 0) + 1
            else:
                self._errors[msg.blast_id] = 0
        for blast_id, n in list(self._errors.items()):
            if blast_id is not None and n >= self.auto_pause_after:
                await self.store.sms.set_blast_state(
                    blast_id, "paused", reason=f"{n} consecutive send errors"
                )
                log.warning("event=blast_auto_paused blast=%d errors=%d", blast_id, n)
                self._errors[blast_id] = 0
