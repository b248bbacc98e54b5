"""PostgreSQL through psycopg 3: the connection surface the store's code uses, over a pool.

The store's modules talk to `Database.transaction()`'s connection as they would to aiosqlite's
(`async with tx.execute(sql, params) as cur`, `cur.fetchone()`, `cur.rowcount`, `tx.executemany`,
`tx.total_changes`). `PgConnection` offers the same on a psycopg connection, passing each
statement through `crm_link.dialect.to_postgres`; rows come back as `Row` (by index or by name),
JSON as text, numeric as int/float and booleans as 0/1, as SQLite returns them.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import AsyncIterator, Generator, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager
from importlib import resources
from typing import TYPE_CHECKING, Any

from crm_link.dialect import to_postgres
from crm_link.errors import StoreError, StoreUnavailable

__all__ = ["PgPool", "Row", "StoreUnavailable", "connect", "describe_url"]

if TYPE_CHECKING:
    import psycopg
    import psycopg_pool


class Row:
    """One result row: `row[0]`, `row["name"]`, `row.keys()`, `dict(row)`, like sqlite3.Row."""

    __slots__ = ("_index", "_names", "_values")

    def __init__(
        self, names: tuple[str, ...], values: Sequence[Any], index: dict[str, int] | None = None
    ) -> None:
        self._names = names
        # name -> position, built once per statement and shared by its rows (the first of a repeated name)
        self._index = _name_index(names) if index is None else index
        self._values = tuple(values)

    def __getitem__(self, key: int | str | slice) -> Any:
        if isinstance(key, str):
            try:
                return self._values[self._index[key]]
            except KeyError:
                raise IndexError(f"no such column: {key}") from None
        return self._values[key]

    def keys(self) -> list[str]:
        return list(self._names)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Row):
            return self._names == other._names and self._values == other._values
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._values)

    def __repr__(self) -> str:
        return f"Row({dict(zip(self._names, self._values, strict=True))!r})"


def _name_index(names: tuple[str, ...]) -> dict[str, int]:
    index: dict[str, int] = {}
    for i, name in enumerate(names):
        index.setdefault(name, i)
    return index


class PgCursor:
    """A statement's result, fetched whole (the store's queries are paged)."""

    def __init__(self, rows: list[Row], rowcount: int, description: Any) -> None:
        self._rows = rows
        self._pos = 0
        self.rowcount = rowcount
        self.description = description

    @property
    def lastrowid(self) -> int:
        raise StoreError("lastrowid is SQLite's; write INSERT … RETURNING id")

    async def fetchone(self) -> Row | None:
        if self._pos >= len(self._rows):
            return None
        self._pos += 1
        return self._rows[self._pos - 1]

    async def fetchall(self) -> list[Row]:
        rest = self._rows[self._pos :]
        self._pos = len(self._rows)
        return rest

    async def fetchmany(self, size: int = 100) -> list[Row]:
        rest = self._rows[self._pos : self._pos + size]
        self._pos += len(rest)
        return rest

    async def close(self) -> None:
        return None

    def __aiter__(self) -> PgCursor:
        return self

    async def __anext__(self) -> Row:
        row = await self.fetchone()
        if row is None:
            raise StopAsyncIteration
        return row


class _Executing:
    """What `execute` returns: awaitable (the cursor) and an async context manager (the cursor)."""

    def __init__(self, conn: PgConnection, sql: str, params: Any) -> None:
        self._conn, self._sql, self._params = conn, sql, params

    def __await__(self) -> Generator[Any, None, PgCursor]:
        return self._conn._run(self._sql, self._params).__await__()

    async def __aenter__(self) -> PgCursor:
        return await self._conn._run(self._sql, self._params)

    async def __aexit__(self, *exc: object) -> None:
        return None


def _row_factory(cursor: Any) -> Any:
    # psycopg builds `description` anew on each access (a Column per column): read it once
    desc = cursor.description
    names = tuple(d.name for d in desc) if desc else ()
    index = _name_index(names)

    def make(values: Sequence[Any]) -> Row:
        return Row(names, values, index)

    return make


class PgConnection:
    """A psycopg connection that speaks the part of aiosqlite's Connection the store uses."""

    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self.raw = conn
        self.total_changes = 0

    @property
    def in_transaction(self) -> bool:
        from psycopg.pq import TransactionStatus

        return self.raw.info.transaction_status != TransactionStatus.IDLE

    def execute(self, sql: str, parameters: Iterable[Any] | None = None) -> _Executing:
        return _Executing(self, sql, parameters)

    async def _run(self, sql: str, params: Any) -> PgCursor:
        async with self.raw.cursor(row_factory=_row_factory) as cur:
            await cur.execute(to_postgres(sql), tuple(params or ()))
            desc = cur.description  # built anew on each access
            rows = await cur.fetchall() if desc is not None else []
            if cur.rowcount > 0 and _is_write(sql):
                self.total_changes += cur.rowcount
            return PgCursor(rows, cur.rowcount, desc)

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> PgCursor:
        batch = [tuple(r) for r in rows]
        async with self.raw.cursor() as cur:
            if batch:
                await cur.executemany(to_postgres(sql), batch)
            count = max(cur.rowcount, 0) if batch else 0
        self.total_changes += count
        return PgCursor([], count, None)

    async def execute_fetchall(self, sql: str, parameters: Iterable[Any] | None = None) -> list[Row]:
        cur = await self._run(sql, parameters)
        return await cur.fetchall()


_WRITE = re.compile(r"^\s*(INSERT|UPDATE|DELETE|REPLACE|WITH)\b", re.I)


def _is_write(sql: str) -> bool:
    return bool(_WRITE.match(sql))


def configure_adapters(conn: psycopg.AsyncConnection[Any]) -> None:
    """Values as SQLite gives them: JSON as text, numeric as int or float, booleans as 0/1."""
    from psycopg.adapt import Dumper, Loader
    from psycopg.types.string import TextLoader

    class NumberLoader(Loader):
        def load(self, data: Any) -> int | float:
            text = bytes(data).decode()
            return float(text) if any(c in text for c in ".eEnN") else int(text)

    class BoolAsIntLoader(Loader):
        def load(self, data: Any) -> int:
            return 1 if bytes(data) == b"t" else 0

    class BoolAsIntDumper(Dumper):
        oid = 20  # int8: the store's 0/1 columns are integers, as in SQLite

        def dump(self, obj: Any) -> bytes:
            return b"1" if obj else b"0"

    adapters = conn.adapters
    for name in ("json", "jsonb"):
        adapters.register_loader(name, TextLoader)
    adapters.register_loader("numeric", NumberLoader)
    adapters.register_loader("bool", BoolAsIntLoader)
    adapters.register_dumper(bool, BoolAsIntDumper)


def compat_sql() -> str:
    """The SQLite functions PostgreSQL is given (pg_compat.sql)."""
    return resources.files("crm_link").joinpath("pg_compat.sql").read_text(encoding="utf-8")


def describe_url(url: str) -> str:
    """The URL with any password masked, for messages and logs."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


async def connect(url: str, *, timeout: float = 10.0) -> psycopg.AsyncConnection[Any]:
    """One autocommit connection, or StoreUnavailable naming the URL and the reason."""
    import psycopg

    try:
        conn = await psycopg.AsyncConnection.connect(
            url, autocommit=True, connect_timeout=max(1, int(timeout))
        )
    except (psycopg.Error, OSError) as e:
        reason = " ".join(line.strip() for line in str(e).strip().splitlines()) or type(e).__name__
        raise StoreUnavailable(f"cannot connect to {describe_url(url)}: {reason}") from e
    configure_adapters(conn)
    return conn


class PgPool:
    """A pool of autocommit connections to one database, that survives the database going away.

    A statement that finds its connection broken (the server restarted, the network dropped) raises
    StoreUnavailable and marks the database down; every connection the pool held before is then
    checked once before its next use, so stale ones are replaced rather than failing one request
    each. While the database is down a request waits `down_wait` seconds at most for a connection.
    """

    def __init__(self, url: str, size: int, *, wait: float = 30.0, down_wait: float = 2.0) -> None:
        self.url = url
        self.size = size
        self.wait = wait
        self.down_wait = down_wait
        self.state = "down"  # "up" once open; "down" from a lost connection until a statement succeeds
        self.error: str | None = None  # why it is down
        self._epoch = 0  # bumped on each lost connection
        # connection -> the epoch it was last known good in
        self._checked: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
        self._pool: psycopg_pool.AsyncConnectionPool[Any] | None = None

    async def open(self) -> None:
        try:
            import psycopg_pool
        except ImportError as e:  # the [postgres] extra is not installed
            raise StoreError(
                "PostgreSQL needs the postgres extra: pip install 'switchboard[postgres]'"
            ) from e

        async def configure(conn: Any) -> None:
            configure_adapters(conn)
            self._checked[conn] = self._epoch

        async def check(conn: Any) -> None:
            # only connections older than the last lost one pay a round trip
            if self._checked.get(conn) != self._epoch:
                await psycopg_pool.AsyncConnectionPool.check_connection(conn)
                self._checked[conn] = self._epoch

        probe = await connect(self.url)
        await probe.close()
        self._pool = psycopg_pool.AsyncConnectionPool(
            self.url,
            min_size=1,
            max_size=max(1, self.size),
            open=False,
            configure=configure,
            check=check,
            kwargs={"autocommit": True, "connect_timeout": max(1, int(self.down_wait))},
            timeout=self.wait,
            reconnect_timeout=0,  # keep trying while the database is away, never give up the pool
        )
        await self._pool.open(wait=True, timeout=self.wait)
        self.state, self.error = "up", None

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    def stats(self) -> dict[str, int]:
        """Connections held and idle, and requests waiting for one."""
        if self._pool is None:
            return {}
        s = self._pool.get_stats()
        return {
            "size": s.get("pool_size", 0),
            "idle": s.get("pool_available", 0),
            "waiting": s.get("requests_waiting", 0),
        }

    def _lost(self, reason: str) -> StoreUnavailable:
        if self.state == "up":
            self._epoch += 1
        self.state, self.error = "down", reason
        return StoreUnavailable(f"the store {describe_url(self.url)} cannot be reached: {reason}")

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[PgConnection]:
        import psycopg
        import psycopg_pool

        if self._pool is None:
            raise StoreError("the store is not open")
        conn = None
        try:
            async with self._pool.connection(
                timeout=self.wait if self.state == "up" else self.down_wait
            ) as conn:
                yield PgConnection(conn)
        except psycopg_pool.PoolTimeout:
            if conn is not None:
                raise  # raised by the caller's code, not by the pool here
            raise self._lost(self.error or "no connection could be made") from None
        except psycopg.Error as e:
            if conn is None or not (conn.broken or conn.closed):
                raise
            raise self._lost(_one_line(e)) from e
        except OSError as e:
            if conn is None or not (conn.broken or conn.closed):
                raise
            raise self._lost(_one_line(e)) from e
        if self.state != "up":
            self.state, self.error = "up", None


def _one_line(e: BaseException) -> str:
    return " ".join(line.strip() for line in str(e).strip().splitlines()) or type(e).__name__
