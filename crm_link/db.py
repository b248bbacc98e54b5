"""The database: SQLite through aiosqlite (a writer behind a lock, a reader) or PostgreSQL (crm_link.pg).

The store's SQL is written in SQLite's dialect; on PostgreSQL each statement is translated by
crm_link.dialect, and a migration without a hand-written PostgreSQL form (migrations/postgres/) is
translated too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import sqlite3
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import aiosqlite

from crm_link.clock import Clock, system_clock
from crm_link.dialect import skip_locked
from crm_link.errors import StoreError

if TYPE_CHECKING:
    from crm_link.pg import PgPool

log = logging.getLogger("crm_link.db")

_MIGRATION_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


def to_db_time(value: datetime) -> str:
    """An aware datetime as the store's sortable UTC text."""
    if value.tzinfo is None:
        raise StoreError("naive datetime given to the store; times must carry a zone")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def from_db_time(value: str | None) -> datetime | None:
    """The store's UTC text back to an aware datetime."""
    if value is None:
        return None
    if len(value) == 27 and value[-1] == "Z" and value[10] == "T":
        # the store's own form (to_db_time): fromisoformat reads it ~50x faster than strptime, which
        # mattered where thousands of rows a second are read (the CRM outbox's deliveries)
        return datetime.fromisoformat(value)
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def is_unique_violation(exc: BaseException) -> bool:
    """A write refused by a unique index, on either store (sqlite3's IntegrityError, or
    PostgreSQL's SQLSTATE 23505 as psycopg raises it)."""
    if isinstance(exc, sqlite3.IntegrityError):
        return "UNIQUE constraint failed" in str(exc)
    return getattr(exc, "sqlstate", None) == "23505"


def is_postgres_url(url: str) -> bool:
    """Whether a store URL names a PostgreSQL database."""
    return url.startswith(("postgresql://", "postgres://"))


def load_migrations(dialect: str = "sqlite") -> list[Migration]:
    """Every migration shipped in crm_link/migrations, in version order, as SQL for `dialect`.

    For "postgres" a migration is its hand-written form in migrations/postgres/ (same file name)
    when there is one, else the SQLite file translated by crm_link.dialect.
    """
    from crm_link.dialect import to_postgres

    folder = resources.files("crm_link.migrations")
    out = []
    for entry in folder.iterdir():
        m = _MIGRATION_NAME.match(entry.name)
        if not m:
            continue
        sql = entry.read_text(encoding="utf-8")
        if dialect == "postgres":
            own = folder.joinpath("postgres").joinpath(entry.name)
            sql = (
                own.read_text(encoding="utf-8") if own.is_file() else to_postgres(sql, ddl=True, params=False)
            )
        out.append(Migration(int(m.group(1)), m.group(2), sql))
    out.sort(key=lambda m: m.version)
    versions = [m.version for m in out]
    if len(set(versions)) != len(versions):
        raise StoreError(f"two migrations share a version number: {versions}")
    return out


# what a translated SQLite migration must not contain: write its PostgreSQL form in migrations/postgres/
_SQLITE_ONLY = re.compile(
    r"\b(CREATE\s+TRIGGER|CREATE\s+VIRTUAL\s+TABLE|PRAGMA|AUTOINCREMENT|json_each|json_tree|strftime"
    r"|julianday|datetime\s*\(|unixepoch)\b",
    re.I,
)


class WriteLock:
    """The writer connection's lock, with two classes of writers: foreground (requests, calls,
    touches: the default) in arrival order, and background (bulk outbox work such as the CRM
    deliveries) that gets the lock only when no foreground writer is waiting. A foreground write
    therefore waits for at most the one background transaction running when it arrived.

    The lock is handed straight to the next waiter on release, so nobody overtakes the queue.
    """

    def __init__(self) -> None:
        self._locked = False
        self._fg: deque[asyncio.Future[None]] = deque()
        self._bg: deque[asyncio.Future[None]] = deque()
        self.background_grants = 0  # how many times a background writer got the lock (tests, stats)
        # the most background transactions that started while one foreground writer waited (0 by
        # construction: it waits at most for the one running when it arrived)
        self.max_background_ahead = 0

    def locked(self) -> bool:
        return self._locked

    def waiting(self) -> tuple[int, int]:
        """How many foreground and background writers wait now."""
        return len(self._fg), len(self._bg)

    async def acquire(self, *, background: bool = False) -> None:
        if not self._locked:
            self._locked = True
            self.background_grants += background
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue = self._bg if background else self._fg
        queue.append(fut)
        grants = self.background_grants
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # handed the lock just as we were cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):
                    queue.remove(fut)
            raise
        if not background:
            self.max_background_ahead = max(self.max_background_ahead, self.background_grants - grants)

    def release(self) -> None:
        for queue in (self._fg, self._bg):
            while queue:
                fut = queue.popleft()
                if not fut.done():
                    fut.set_result(None)  # the lock passes to this waiter, still held
                    self.background_grants += queue is self._bg
                    return
        self._locked = False

    @contextlib.asynccontextmanager
    async def hold(self, *, background: bool = False) -> AsyncIterator[None]:
        await self.acquire(background=background)
        try:
            yield
        finally:
            self.release()


def untranslatable_migrations() -> list[str]:
    """Migrations with no PostgreSQL form whose translation still holds SQLite-only SQL, with what."""
    folder = resources.files("crm_link.migrations")
    bad = []
    for m in load_migrations("postgres"):
        name = f"{m.version:04d}_{m.name}.sql"
        if folder.joinpath("postgres").joinpath(name).is_file():
            continue
        code = "\n".join(line for line in m.sql.splitlines() if not line.lstrip().startswith("--"))
        found = sorted({x.group(0) for x in _SQLITE_ONLY.finditer(code)})
        if found:
            bad.append(f"{name}: {', '.join(found)} (write migrations/postgres/{name})")
    return bad


# a screen-pop read on the loop's thread is interrupted after this many of SQLite's
# virtual-machine steps (checked every _INLINE_TICK_STEPS): ~50 × a caller's usual file, ~1-2 ms
_INLINE_TICK_STEPS = 1000
_INLINE_TICKS = 12


class Database:
    """The SQLite file: one writer (serialized by a lock) and a reader (plus one kept for screen-pops),
    WAL, foreign keys on.

    Given a postgresql:// URL instead of a path: a pool of `pool_size` PostgreSQL connections, writes
    still serialized by the lock within this process (as on SQLite).
    """

    def __init__(self, path: str | Path, *, clock: Clock = system_clock, pool_size: int = 10) -> None:
        self.path = str(path)
        self.now = clock
        self.dialect = "postgres" if is_postgres_url(self.path) else "sqlite"
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        # a second reader for background work's reads (the CRM outbox's backlog counts and probes),
        # opened on first use: a 20-40 ms count never holds up a screen-pop's read on the first one
        self._bg_reader: aiosqlite.Connection | None = None
        self._bg_opening = asyncio.Lock()
        # a second reader kept for screen-pops (caller ID): no long read stands in front of a ring
        self._pop_reader: aiosqlite.Connection | None = None
        # and a connection that reads a screen-pop's rows on the event loop's own thread (SQLite):
        # a caller's file is a few hundred of SQLite's virtual-machine steps (~30 µs), less than
        # the two thread hand-offs a reader thread costs (to it and back, each waiting for a core
        # and for the interpreter's lock on a busy machine). A read that runs past its budget of
        # steps, or finds the file busy, is interrupted and goes to the pop reader's thread.
        self._pop_inline: sqlite3.Connection | None = None
        self._pop_inline_ticks = 0
        self.pop_reads_inline = 0  # screen-pop reads answered on the loop's thread
        self.pop_reads_moved = 0  # … and those handed to the pop reader's thread instead
        self.write_lock = WriteLock()
        self._opened = False  # open() has begun (close() then waits for the work in flight)
        self._pg: PgPool | None = None
        self.applied: list[int] = []  # the migrations the last open() applied
        self._in_flight = 0  # statements and transactions running now (close() lets them finish)
        self._last_busy = 0.0  # loop time the last of them ended
        if self.dialect == "postgres":
            from crm_link.pg import PgPool

            self._pg = PgPool(self.path, pool_size)

    @property
    def shared(self) -> bool:
        """Several instances may work on this store at once (PostgreSQL); an SQLite file is one
        process's, so at start-up everything it finds in flight was left by its own last run."""
        return self._pg is not None

    async def serialize_in(self, tx: Any, key: str) -> None:
        """Inside an open write transaction: wait for any other instance's transaction that took
        the same key to end, and hold the key until this one ends. SQLite's write transactions
        (BEGIN IMMEDIATE) already run one at a time, so there it costs nothing."""
        if self._pg is not None:
            await tx.execute("SELECT pg_advisory_xact_lock(hashtext(?))", (f"switchboard.{key}",))

    def skip_locked(self, of: str | None = None) -> str:
        """The clause a claim's candidate SELECT ends with (see crm_link.dialect.skip_locked)."""
        return skip_locked(self.dialect, of)

    @property
    def pg(self) -> PgPool | None:
        """The PostgreSQL pool (None on SQLite), for the PostgreSQL-only parts (crm_link.cluster)."""
        return self._pg

    @property
    def description(self) -> str:
        """Where the data lives, with any password masked (for logs and messages)."""
        from crm_link.pg import describe_url

        return describe_url(self.path) if self._pg is not None else self.path

    @property
    def state(self) -> str:
        """ "up", or "down" while PostgreSQL cannot be reached (from a lost connection until it answers)."""
        if self._pg is not None:
            return self._pg.state
        return "up" if self._writer is not None else "down"

    def health(self) -> dict[str, Any]:
        """What /healthz shows of the database: dialect, where (password masked), state, pool."""
        out: dict[str, Any] = {"dialect": self.dialect, "url": self.description, "state": self.state}
        if self._pg is not None:
            out["pool"] = {"max": self._pg.size, **self._pg.stats()}
            if self._pg.error:
                out["error"] = self._pg.error
        return out

    async def open(self) -> None:
        """Open both connections and apply pending migrations."""
        self._opened = True
        if self._pg is not None:
            self.write_lock = WriteLock()
            await self._pg.open()
            try:
                self.applied = await self.migrate()
            except BaseException:
                await self.close()
                raise
            return
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.write_lock = WriteLock()
        self._writer = await self._connect()
        try:
            await self._writer.execute("PRAGMA journal_mode=WAL")
            self.applied = await self.migrate()
            self._reader = await self._connect() if self.path != ":memory:" else self._writer
            self._pop_reader = await self._connect() if self.path != ":memory:" else self._writer
            if self.path != ":memory:":
                self._pop_inline = self._connect_inline()
        except BaseException:
            await self.close()  # a store that cannot open leaves no connection (and no thread) behind
            raise

    async def _connect(self) -> aiosqlite.Connection:
        conn = await aiosqlite.connect(self.path, isolation_level=None)
        conn.row_factory = aiosqlite.Row
        await conn.execute("PRAGMA foreign_keys=ON")
        await conn.execute("PRAGMA busy_timeout=10000")
        await conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    def _connect_inline(self) -> sqlite3.Connection:
        """The loop thread's read-only connection for screen-pop reads (see `fetchall_for_pop`)."""
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.row_factory = aiosqlite.Row
        conn.execute("PRAGMA query_only=ON")
        conn.execute("PRAGMA busy_timeout=0")  # never sleep on the loop: busy → the reader thread
        conn.set_progress_handler(self._inline_tick, _INLINE_TICK_STEPS)
        return conn

    def _inline_tick(self) -> int:
        self._pop_inline_ticks += 1
        return 1 if self._pop_inline_ticks > _INLINE_TICKS else 0

    @contextlib.contextmanager
    def _busy(self) -> Iterator[None]:
        self._in_flight += 1
        try:
            yield
        finally:
            self._in_flight -= 1
            self._last_busy = asyncio.get_running_loop().time()

    async def _quiesce(self, timeout: float) -> None:
        """Wait (up to `timeout`) until nothing has used the store for a moment.

        At shutdown a task may still be finishing store work its owner stopped waiting for (a
        write under asyncio.shield whose awaiting task was cancelled, say: settling what a gateway
        accepted). Closing under it would lose that write ("the store is not open"); a run of
        statements leaves no gap longer than QUIET between one and the next.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if self._in_flight == 0 and loop.time() - self._last_busy >= self.QUIET:
                return
            await asyncio.sleep(self.QUIET / 5)
        log.warning("event=store_close_busy in_flight=%d", self._in_flight)

    QUIET = 0.05

    async def close(self) -> None:
        """Let store work in flight finish (up to 10 s), then close the connections."""
        if self._opened:
            await self._quiesce(10.0)
        if self._pg is not None:
            await self._pg.close()
            return
        if self._pop_inline is not None:
            self._pop_inline.close()
            self._pop_inline = None
        reader, pop_reader, writer, bg = self._reader, self._pop_reader, self._writer, self._bg_reader
        self._reader = self._pop_reader = self._writer = self._bg_reader = None
        for conn in (bg, reader, pop_reader):
            if conn is not None and conn is not writer:
                await conn.close()
        if writer is not None:
            await writer.close()

    async def migrate(self) -> list[int]:
        """Apply every migration newer than the store's version, each in its own transaction."""
        if self._pg is not None:
            return await self._migrate_pg(self._pg)
        w = self._w
        await w.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
        )
        async with w.execute("SELECT version FROM schema_migrations") as cur:
            done = {row[0] for row in await cur.fetchall()}
        applied = []
        for m in load_migrations():
            if m.version in done:
                continue
            log.info("event=migration_apply version=%d name=%s", m.version, m.name)
            await w.execute("BEGIN IMMEDIATE")
            try:
                for statement in _split_sql(m.sql):
                    await w.execute(statement)
                await w.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                    (m.version, m.name, to_db_time(self.now())),
                )
                await w.execute("COMMIT")
            except BaseException:
                await w.execute("ROLLBACK")
                raise
            applied.append(m.version)
        return applied

    async def _migrate_pg(self, pool: PgPool) -> list[int]:
        import psycopg

        from crm_link.pg import compat_sql

        applied = []
        async with pool.connection() as c:
            raw = c.raw
            # one instance migrates at a time; the others wait here, then find nothing to do
            await raw.execute("SELECT pg_advisory_lock(hashtext('switchboard.migrate'))")
            try:
                try:
                    await raw.execute(compat_sql().encode())
                except psycopg.Error as e:
                    raise StoreError(f"cannot prepare {self.description}: {e}") from e
                await raw.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations ("
                    "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
                )
                done = {
                    r[0]
                    for r in await (await raw.execute("SELECT version FROM schema_migrations")).fetchall()
                }
                for m in load_migrations("postgres"):
                    if m.version in done:
                        continue
                    log.info("event=migration_apply version=%d name=%s", m.version, m.name)
                    try:
                        async with raw.transaction():
                            await raw.execute(m.sql.encode())
                            await raw.execute(
                                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (%s, %s, %s)",
                                (m.version, m.name, to_db_time(self.now())),
                            )
                    except psycopg.Error as e:
                        raise StoreError(f"migration {m.version:04d}_{m.name} failed: {e}") from e
                    applied.append(m.version)
            finally:
                await raw.execute("SELECT pg_advisory_unlock(hashtext('switchboard.migrate'))")
        return applied

    @property
    def _w(self) -> aiosqlite.Connection:
        if self._writer is None:
            raise StoreError("the store is not open")
        return self._writer

    @property
    def _r(self) -> aiosqlite.Connection:
        if self._reader is None:
            raise StoreError("the store is not open")
        return self._reader

    @contextlib.asynccontextmanager
    async def transaction(self, *, background: bool = False) -> AsyncIterator[aiosqlite.Connection]:
        """A write transaction: commits on success, rolls back everything on any error.
        `background` (bulk outbox work): it starts only when no other writer waits (WriteLock).

        Safe to cancel anywhere: BEGIN, COMMIT and ROLLBACK run to their end on the writer's thread
        even when the awaiting task is cancelled, so the connection is never left inside a
        transaction and the work is all committed or all rolled back.
        """
        with self._busy():
            async with self._transaction(background) as tx:
                yield tx

    @contextlib.asynccontextmanager
    async def _transaction(self, background: bool) -> AsyncIterator[aiosqlite.Connection]:
        if self._pg is not None:
            async with self.write_lock.hold(background=background), self._pg.connection() as c:
                await _to_the_end(c.raw.execute("BEGIN"))
                try:
                    # the same surface as aiosqlite's connection (see crm_link.pg.PgConnection)
                    yield cast(aiosqlite.Connection, c)
                except BaseException:
                    if not c.raw.broken:  # a lost connection has rolled back already
                        await _to_the_end(c.raw.execute("ROLLBACK"))
                    raise
                else:
                    await _to_the_end(c.raw.execute("COMMIT"))
            return
        async with self.write_lock.hold(background=background):
            w = self._w
            try:
                await _to_the_end(w.execute("BEGIN IMMEDIATE"))
            except asyncio.CancelledError:
                if w.in_transaction:
                    await _to_the_end(w.execute("ROLLBACK"))
                raise
            try:
                yield w
            except BaseException:
                await _to_the_end(w.execute("ROLLBACK"))
                raise
            else:
                await _to_the_end(w.execute("COMMIT"))

    async def write_returning(
        self, sql: str, params: Sequence[Any] = (), *, background: bool = False
    ) -> list[aiosqlite.Row]:
        """One write statement (atomic on its own, e.g. UPDATE … RETURNING) in one round trip."""
        with self._busy():
            return await self._write_returning(sql, params, background)

    async def _write_returning(
        self, sql: str, params: Sequence[Any], background: bool
    ) -> list[aiosqlite.Row]:
        if self._pg is not None:
            async with self.write_lock.hold(background=background), self._pg.connection() as c:
                return cast(list[aiosqlite.Row], await c.execute_fetchall(sql, params))
        async with self.write_lock.hold(background=background):
            return list(await self._w.execute_fetchall(sql, params))

    async def fetchall(
        self, sql: str, params: Sequence[Any] = (), *, background: bool = False
    ) -> list[aiosqlite.Row]:
        """Rows of a read query on the reader connection (one trip to its thread). `background`
        (bulk reads of background work): on a reader of their own, so that requests' and
        screen-pops' reads never queue behind them (PostgreSQL: any connection of the pool)."""
        with self._busy():
            return await self._fetchall(sql, params, background)

    async def _fetchall(self, sql: str, params: Sequence[Any], background: bool) -> list[aiosqlite.Row]:
        if self._pg is not None:
            async with self._pg.connection() as c:
                return cast(list[aiosqlite.Row], await c.execute_fetchall(sql, params))
        reader = await self._background_reader() if background else self._r
        return list(await reader.execute_fetchall(sql, params))

    async def _background_reader(self) -> aiosqlite.Connection:
        if self._bg_reader is None:
            async with self._bg_opening:
                if self._bg_reader is None:
                    reader = self._r  # not open: StoreError
                    conn = reader if self.path == ":memory:" else await self._connect()
                    if self._reader is None:  # closed meanwhile
                        if conn is not reader:
                            await conn.close()
                        raise StoreError("the store is not open")
                    self._bg_reader = conn
        return self._bg_reader

    async def fetchall_for_pop(self, sql: str, params: Sequence[Any] = ()) -> list[aiosqlite.Row]:
        """Rows of a read for a screen-pop, on connections of its own (SQLite): a long read on the
        shared reader (a report, an export, a backlog count) never stands in front of it.

        On SQLite the read runs on the loop's thread, with no hand-off (a caller's file by phone
        index is tens of microseconds); one that runs past `_INLINE_TICKS` × `_INLINE_TICK_STEPS`
        virtual-machine steps (a number shared by hundreds of contacts, say) or finds the file
        busy is interrupted and run again on the pop reader's thread. Each statement is its own
        read transaction: it sees everything committed before it began.
        On PostgreSQL, as fetchall (a pooled connection)."""
        with self._busy():
            if self._pg is not None:
                return await self._fetchall(sql, params, False)
            if self._pop_reader is None:
                raise StoreError("the store is not open")
            if self._pop_inline is not None:
                self._pop_inline_ticks = 0
                try:
                    rows = self._pop_inline.execute(sql, params).fetchall()
                except sqlite3.OperationalError:  # past its budget, or the file busy
                    self.pop_reads_moved += 1
                else:
                    self.pop_reads_inline += 1
                    return rows
            return list(await self._pop_reader.execute_fetchall(sql, params))

    async def fetchone(
        self, sql: str, params: Sequence[Any] = (), *, background: bool = False
    ) -> aiosqlite.Row | None:
        """The first row of a read query, or None (the store's one-row queries are by key, an
        aggregate or LIMIT 1).

        One trip to the reader's thread, like fetchall: a cursor held open across awaits would keep
        the shared reader connection inside one read transaction, so every read that ran meanwhile
        (another request's, or the one after a commit) would see the database as it was when that
        cursor opened: a row just committed would be "not found".
        """
        rows = await self.fetchall(sql, params, background=background)
        return rows[0] if rows else None

    async def execute_many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """One statement over many rows in one transaction."""
        async with self.transaction() as tx:
            await tx.executemany(sql, rows)


async def one_row(cur: aiosqlite.Cursor) -> aiosqlite.Row:
    """The row a statement always returns (an INSERT … RETURNING, an aggregate); StoreError if none."""
    row = await cur.fetchone()
    if row is None:
        raise StoreError("the statement returned no row")
    return row


async def _to_the_end(statement: Awaitable[Any]) -> None:
    """Await a statement; if the caller is cancelled meanwhile, let it finish first, then re-raise."""
    task = asyncio.ensure_future(statement)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        # cancelled again while waiting (a task group tearing down its members): keep waiting, or
        # the caller would see a BEGIN as not run and release the writer while it is mid-transaction
        while not task.done():
            try:
                await asyncio.shield(task)
            except asyncio.CancelledError:
                continue
            except Exception:
                break
        raise


def _split_sql(script: str) -> list[str]:
    """Statements of a migration script, split where sqlite3 says a statement is complete."""
    statements, buf = [], ""
    for line in script.splitlines(keepends=True):
        if not buf and line.strip().startswith("--"):
            continue
        buf += line
        if sqlite3.complete_statement(buf):
            statements.append(buf.strip())
            buf = ""
    if buf.strip():
        statements.append(buf.strip())
    return statements
