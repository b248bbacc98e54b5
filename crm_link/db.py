"""SQLite through aiosqlite: a writer connection behind a lock, a reader connection, migrations."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import aiosqlite

from crm_link.clock import Clock, system_clock
from crm_link.errors import StoreError

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
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def load_migrations() -> list[Migration]:
    """Every migration shipped in crm_link/migrations, in version order."""
    out = []
    for entry in resources.files("crm_link.migrations").iterdir():
        m = _MIGRATION_NAME.match(entry.name)
        if m:
            out.append(Migration(int(m.group(1)), m.group(2), entry.read_text(encoding="utf-8")))
    out.sort(key=lambda m: m.version)
    versions = [m.version for m in out]
    if len(set(versions)) != len(versions):
        raise StoreError(f"two migrations share a version number: {versions}")
    return out


class Database:
    """The SQLite file: one writer (serialized by a lock) and one reader, WAL, foreign keys on."""

    def __init__(self, path: str | Path, *, clock: Clock = system_clock) -> None:
        self.path = str(path)
        self.now = clock
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._write_lock: Any = None

    async def open(self) -> None:
        """Open both connections and apply pending migrations."""
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._write_lock = asyncio.Lock()
        self._writer = await self._connect()
        try:
            await self._writer.execute("PRAGMA journal_mode=WAL")
            await self.migrate()
            self._reader = await self._connect() if self.path != ":memory:" else self._writer
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

    async def close(self) -> None:
        """Close both connections (the reader first)."""
        reader, writer = self._reader, self._writer
        self._reader = self._writer = None
        if reader is not None and reader is not writer:
            await reader.close()
        if writer is not None:
            await writer.close()

    async def migrate(self) -> list[int]:
        """Apply every migration newer than the store's version, each in its own transaction."""
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
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """A write transaction: commits on success, rolls back everything on any error.

        Safe to cancel anywhere: BEGIN, COMMIT and ROLLBACK run to their end on the writer's thread
        even when the awaiting task is cancelled, so the connection is never left inside a
        transaction and the work is all committed or all rolled back.
        """
        async with self._write_lock:
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

    async def write_returning(self, sql: str, params: Sequence[Any] = ()) -> list[aiosqlite.Row]:
        """One write statement (atomic on its own, e.g. UPDATE … RETURNING) in one round trip."""
        async with self._write_lock:
            return list(await self._w.execute_fetchall(sql, params))

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[aiosqlite.Row]:
        """Rows of a read query on the reader connection (one trip to its thread)."""
        return list(await self._r.execute_fetchall(sql, params))

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> aiosqlite.Row | None:
        """The first row of a read query, or None."""
        async with self._r.execute(sql, params) as cur:
            return await cur.fetchone()

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
