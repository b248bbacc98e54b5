"""Several instances on one PostgreSQL store: events handed between them through LISTEN/NOTIFY, and
one holder of a named role at a time through a session advisory lock.

PostgreSQL only (a SQLite store is one instance). Notifications are small (`origin:first:last`, the
sender and a range of `cluster_events` ids); the rows themselves are read by id. Each listener and
each lock lives on a dedicated connection outside the pool: LISTEN and a session lock belong to
one session, and a pooled connection is handed to others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from crm_link.db import Database, to_db_time
from crm_link.errors import StoreError, StoreUnavailable
from crm_link.pg import connect, describe_url

if TYPE_CHECKING:
    import psycopg

    from crm_link.pg import PgPool

log = logging.getLogger("crm_link.cluster")

CHANNEL = "switchboard_events"
NOTIFY_MAX = 7999  # PostgreSQL refuses a payload of 8000 bytes or more


@dataclass(frozen=True, slots=True)
class Notice:
    """One notification: `origin` stored the `cluster_events` rows `first`..`last`."""

    origin: str
    first: int
    last: int

    def encode(self) -> str:
        return f"{self.origin}:{self.first}:{self.last}"

    @classmethod
    def parse(cls, payload: str) -> Notice | None:
        """The notice a payload carries, or None for one that is not ours."""
        origin, _, rest = payload.rpartition(":")
        origin, _, first = origin.rpartition(":")
        try:
            lo, hi = int(first), int(rest)
        except ValueError:
            return None
        if not origin or lo > hi:
            return None
        return cls(origin, lo, hi)


class ClusterEvents:
    """The `cluster_events` table: append (and notify), read by id, catch up, prune."""

    def __init__(self, db: Database) -> None:
        if db.pg is None:
            raise StoreError("cluster events need a PostgreSQL store")
        self._db = db
        self._pool: PgPool = db.pg

    async def append(self, origin: str, bodies: list[str]) -> Notice:
        """Store these events in order and, at the same commit, notify every listener."""
        if not bodies:
            raise StoreError("no events to append")
        async with self._pool.connection() as c:
            cur = await c.raw.execute(
                "WITH ins AS ("
                " INSERT INTO cluster_events (origin, at, body)"
                " SELECT %s, %s, b FROM unnest(%s::text[]) WITH ORDINALITY AS t(b, n) ORDER BY n"
                " RETURNING id)"
                " SELECT min(id), max(id), pg_notify(%s, %s || ':' || min(id) || ':' || max(id)) FROM ins",
                (origin, to_db_time(self._db.now()), bodies, CHANNEL, origin),
            )
            row = await cur.fetchone()
        assert row is not None
        return Notice(origin, int(row[0]), int(row[1]))

    async def read(self, notice: Notice) -> list[tuple[int, str]]:
        """The rows a notice names, in order."""
        async with self._pool.connection() as c:
            cur = await c.raw.execute(
                "SELECT id, body FROM cluster_events WHERE id BETWEEN %s AND %s AND origin = %s ORDER BY id",
                (notice.first, notice.last, notice.origin),
            )
            return [(int(r[0]), str(r[1])) for r in await cur.fetchall()]

    async def since(self, after_id: int, *, not_from: str, newer_than: datetime) -> list[tuple[int, str]]:
        """Other instances' rows after `after_id` written since `newer_than` (a listener's catch-up)."""
        async with self._pool.connection() as c:
            cur = await c.raw.execute(
                "SELECT id, body FROM cluster_events WHERE id > %s AND origin <> %s AND at >= %s"
                " ORDER BY id LIMIT 10000",
                (after_id, not_from, to_db_time(newer_than)),
            )
            return [(int(r[0]), str(r[1])) for r in await cur.fetchall()]

    async def last_id(self) -> int:
        """The newest row's id (0 when empty)."""
        async with self._pool.connection() as c:
            cur = await c.raw.execute("SELECT coalesce(max(id), 0) FROM cluster_events")
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def prune(self, older_than: timedelta) -> int:
        """Delete rows older than this; returns how many."""
        async with self._pool.connection() as c:
            cur = await c.raw.execute(
                "DELETE FROM cluster_events WHERE at < %s", (to_db_time(self._db.now() - older_than),)
            )
            return max(cur.rowcount, 0)


class Listener:
    """LISTEN on a dedicated connection, reconnecting with backoff when it is lost.

    `on_notify(payload)` is awaited for each notification, in order; `on_connect()` after each
    (re)connect once LISTEN is in force, so the owner can catch up what was sent while it was away.
    While idle the connection is checked every `check_every` seconds, so a dead one is noticed.
    """

    def __init__(
        self,
        url: str,
        on_notify: Callable[[str], Awaitable[None]],
        *,
        on_connect: Callable[[], Awaitable[None]] | None = None,
        channel: str = CHANNEL,
        check_every: float = 5.0,
        backoff_min: float = 0.2,
        backoff_max: float = 5.0,
    ) -> None:
        self.url = url
        self.channel = channel
        self.on_notify = on_notify
        self.on_connect = on_connect
        self.check_every = check_every
        self.backoff_min, self.backoff_max = backoff_min, backoff_max
        self.state = "connecting"  # connecting | up | down
        self.connects = 0
        self.received = 0
        self.error: str | None = None
        self.backend_pid: int | None = None  # the server process of the current session
        self._up = asyncio.Event()

    async def wait_up(self, timeout: float | None = None) -> None:
        """Until LISTEN is in force (and the catch-up after it done)."""
        await asyncio.wait_for(self._up.wait(), timeout)

    async def run(self) -> None:
        """Listen until cancelled."""
        import psycopg

        delay = self.backoff_min
        while True:
            try:
                conn = await connect(self.url, timeout=max(1.0, self.backoff_max))
            except StoreUnavailable as e:
                self._down(str(e))
            else:
                try:
                    await self._session(conn)
                except (psycopg.Error, OSError, TimeoutError) as e:
                    if self._up.is_set():  # a session that was up: try again soon
                        delay = self.backoff_min
                    self._down(" ".join(str(e).split()) or type(e).__name__)
                finally:
                    self._up.clear()
                    with contextlib.suppress(Exception):
                        await conn.close()
            await asyncio.sleep(delay * (0.5 + random.random() / 2))
            delay = min(self.backoff_max, delay * 2)

    def _down(self, reason: str) -> None:
        if self.state != "down":
            log.warning("event=listener_down url=%s error=%r", describe_url(self.url), reason)
        self.state, self.error = "down", reason

    async def _session(self, conn: psycopg.AsyncConnection[Any]) -> None:
        from psycopg import sql

        await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
        self.backend_pid = conn.info.backend_pid
        self.connects += 1
        if self.on_connect is not None:
            await self.on_connect()
        self.state, self.error = "up", None
        self._up.set()
        log.info("event=listener_up channel=%s connects=%d", self.channel, self.connects)
        while True:
            async for note in conn.notifies(timeout=self.check_every):
                self.received += 1
                try:
                    await self.on_notify(note.payload)
                except StoreUnavailable:
                    raise
                except Exception:
                    log.exception("event=listener_handler_failed channel=%s", self.channel)
            # quiet for a while: make sure the session is still there
            await asyncio.wait_for(conn.execute("SELECT 1"), self.check_every)


class RoleLock:
    """One holder at a time of a named role among the instances: a session advisory lock taken on a
    dedicated connection. `run(while_held)` tries every `retry` seconds; once it holds the lock it
    runs `while_held()` until that ends or the lock's session is lost (the lock is then free for
    another instance, so `while_held` is cancelled at once), then lets the lock go and tries again.
    A holder that dies ends its session, and the lock is free as soon as the server notices.

    Never two holders at work: a holder checks its session every `check_every` seconds (a check
    that fails or takes over `check_timeout` ends its work), so within `check_every + check_timeout`
    of its session's end it has stopped. The lock is granted to another instance only once that
    session has ended (a database restart, a cut connection), and the new holder waits `grace`
    seconds, longer than that, still checking its own session, before it starts its work. What
    this cannot cover is a holder whose event loop stalls for longer than the margin, or a process
    frozen whole (stopped, its VM paused).
    """

    MARGIN = 0.5  # of the grace over the longest a former holder may take to notice its loss

    def __init__(
        self, url: str, name: str, *, retry: float = 2.0, check_every: float = 0.5, grace: float | None = None
    ) -> None:
        self.url = url
        self.name = name
        self.retry = retry
        self.check_every = check_every
        self.check_timeout = max(1.0, 2 * check_every)
        # every instance runs the same code, so a former holder noticed its loss within this
        self.grace = check_every + self.check_timeout + self.MARGIN if grace is None else grace
        self.role = "standby"  # standby | taking (the lock is held, the grace runs) | holder
        self.acquired = 0  # how many times this instance took the role
        self.error: str | None = None
        self._held = asyncio.Event()

    async def wait_held(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(self._held.wait(), timeout)

    async def run(self, while_held: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Take the role whenever it is free and hold it while `while_held` runs (until cancelled)."""
        import psycopg

        while True:
            try:
                conn = await connect(self.url, timeout=max(1.0, self.retry))
            except StoreUnavailable as e:
                self.error = str(e)
                await asyncio.sleep(self.retry)
                continue
            try:
                if await self._try(conn):
                    self.role, self.error = "taking", None
                    await self._hold(conn, while_held)
                else:
                    self.error = None
            except (psycopg.Error, OSError, TimeoutError) as e:
                self.error = " ".join(str(e).split()) or type(e).__name__
                log.warning("event=role_session_lost role=%s error=%r", self.name, self.error)
            finally:
                if self.role != "standby":
                    log.warning("event=role_released role=%s", self.name)
                self.role = "standby"
                self._held.clear()
                with contextlib.suppress(Exception):
                    await conn.close()  # ends the session: the lock is released
            await asyncio.sleep(self.retry * (0.75 + random.random() / 2))

    async def _try(self, conn: psycopg.AsyncConnection[Any]) -> bool:
        cur = await conn.execute(
            "SELECT pg_try_advisory_lock(hashtext(%s))", (f"switchboard.role:{self.name}",)
        )
        row = await cur.fetchone()
        return bool(row and row[0])

    async def _hold(
        self,
        conn: psycopg.AsyncConnection[Any],
        while_held: Callable[[], Coroutine[Any, Any, None]],
    ) -> None:
        watch = asyncio.create_task(self._watch(conn), name=f"role-watch-{self.name}")
        tasks = [watch]
        try:
            # the former holder, if its session ended only now, has stopped by the end of the grace
            await asyncio.wait({watch}, timeout=self.grace)
            if not watch.done():
                self.role = "holder"
                self.acquired += 1
                self._held.set()
                log.info("event=role_taken role=%s", self.name)
                work = asyncio.create_task(while_held(), name=f"role-{self.name}")
                tasks.append(work)
                await asyncio.wait({work, watch}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
        for r in results:  # the lost session (watch), or what ended the work
            if isinstance(r, BaseException) and not isinstance(r, asyncio.CancelledError):
                raise r

    async def _watch(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Return only by raising: the session that holds the lock is gone (or stopped answering)."""
        while True:
            await asyncio.sleep(self.check_every)
            await asyncio.wait_for(conn.execute("SELECT 1"), self.check_timeout)
