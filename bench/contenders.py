"""The pools under comparison, each behind the same three calls, so one workload runs them all.

A :class:`Contender` opens its pool with ``pool_size`` connections ready, lends a connection with
``borrow()`` (an async context manager: acquire on entry, release on exit), and runs the two
statements of the workloads on it, each in the way its library's users write them.

Like for like: every pool holds ``pool_size`` connections, opened before the measurement starts,
and is used through its ordinary public API with its defaults, except where the name says
otherwise (a reset turned off, autocommit turned on).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Protocol

import asyncpg
import psycopg
import psycopg_pool
import sqlalchemy
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from aiodbpool import Pool, create_pool
from aiodbpool.drivers.postgres import PostgresDriver, ResetMode

__all__ = ["Contender", "SLEEP_SECONDS", "close_all", "contenders", "open_all"]

SLEEP_SECONDS = 0.005
"""How long the slow statement of workload W4 takes on the server."""

_SELECT_ONE = "SELECT 1"
_SLEEP = f"SELECT pg_sleep({SLEEP_SECONDS})"


class Contender(Protocol):
    """A pool (or no pool) as the workloads see it."""

    name: str
    concurrent: bool  # whether many tasks may borrow at once (a single raw connection may not)

    async def open(self) -> None: ...

    def borrow(self) -> AbstractAsyncContextManager[Any]: ...

    async def select_one(self, conn: Any) -> None: ...

    async def sleep(self, conn: Any) -> None: ...

    async def close(self) -> None: ...


class _Asyncpg:
    """Statements on an ``asyncpg.Connection``: shared by every contender that lends one."""

    async def select_one(self, conn: asyncpg.Connection) -> None:
        await conn.fetchval(_SELECT_ONE)

    async def sleep(self, conn: asyncpg.Connection) -> None:
        await conn.execute(_SLEEP)


class _UnleasedPostgresDriver(PostgresDriver):
    """The PostgreSQL driver lending bare connections: what the lease costs, measured."""

    lease_class = None  # type: ignore[assignment]


class Aiodbpool(_Asyncpg):
    """aiodbpool with its PostgreSQL driver, defaults except the size (and ``reset``); with
    ``lease=False``, lending bare connections, which shows what the lease per lend costs."""

    concurrent = True

    def __init__(
        self, dsn: str, pool_size: int, reset: ResetMode = "transaction", lease: bool = True
    ) -> None:
        self.name = "aiodbpool" if reset == "transaction" else f'aiodbpool reset="{reset}"'
        if lease:
            self._pool: Pool[asyncpg.Connection] = create_pool(
                dsn, min_size=pool_size, max_size=pool_size, reset=reset
            )
        else:
            self.name += ", no lease"
            driver = _UnleasedPostgresDriver(dsn, reset=reset)
            self._pool = Pool(driver, min_size=pool_size, max_size=pool_size, close_driver=True)

    async def open(self) -> None:
        await self._pool.open()

    def borrow(self) -> AbstractAsyncContextManager[asyncpg.Connection]:
        return self._pool.acquire()

    async def close(self) -> None:
        await self._pool.close()


async def _no_reset(conn: asyncpg.Connection) -> None:
    """For asyncpg's pool: skip its reset query on release, to compare like for like."""


class AsyncpgPool(_Asyncpg):
    """``asyncpg.create_pool``: by default it runs a reset query on every release."""

    concurrent = True

    def __init__(self, dsn: str, pool_size: int, reset: bool = True) -> None:
        self.name = "asyncpg.Pool" if reset else "asyncpg.Pool, no reset"
        self._dsn = dsn
        self._size = pool_size
        self._reset = reset
        self._pool: asyncpg.Pool | None = None

    async def open(self) -> None:
        self._pool = await asyncpg.create_pool(
            self._dsn,
            min_size=self._size,
            max_size=self._size,
            reset=None if self._reset else _no_reset,
        )

    def borrow(self) -> AbstractAsyncContextManager[asyncpg.Connection]:
        assert self._pool is not None
        return self._pool.acquire()  # type: ignore[return-value]

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()


class AiodbpoolPsycopg:
    """aiodbpool with its psycopg 3 driver (``postgresql+psycopg://``), defaults except the
    size: against psycopg_pool, the same client library under another pool."""

    concurrent = True
    name = "aiodbpool (psycopg)"

    def __init__(self, dsn: str, pool_size: int) -> None:
        url = "postgresql+psycopg://" + dsn.partition("://")[2]
        self._pool: Pool[psycopg.AsyncConnection[Any]] = create_pool(
            url, min_size=pool_size, max_size=pool_size
        )

    async def open(self) -> None:
        await self._pool.open()

    def borrow(self) -> AbstractAsyncContextManager[psycopg.AsyncConnection[Any]]:
        return self._pool.acquire()

    async def select_one(self, conn: psycopg.AsyncConnection[Any]) -> None:
        cursor = await conn.execute(_SELECT_ONE)
        await cursor.fetchone()

    async def sleep(self, conn: psycopg.AsyncConnection[Any]) -> None:
        await conn.execute(_SLEEP)

    async def close(self) -> None:
        await self._pool.close()


class PsycopgPool:
    """``psycopg_pool.AsyncConnectionPool``. Without autocommit, a statement opens a
    transaction, which the pool rolls back when the connection comes back."""

    concurrent = True

    def __init__(self, dsn: str, pool_size: int, autocommit: bool) -> None:
        self.name = "psycopg_pool, autocommit" if autocommit else "psycopg_pool"
        self._pool = psycopg_pool.AsyncConnectionPool(
            dsn,
            min_size=pool_size,
            max_size=pool_size,
            kwargs={"autocommit": autocommit},
            open=False,
        )

    async def open(self) -> None:
        await self._pool.open(wait=True)

    def borrow(self) -> AbstractAsyncContextManager[psycopg.AsyncConnection[Any]]:
        return self._pool.connection()

    async def select_one(self, conn: psycopg.AsyncConnection[Any]) -> None:
        cursor = await conn.execute(_SELECT_ONE)
        await cursor.fetchone()

    async def sleep(self, conn: psycopg.AsyncConnection[Any]) -> None:
        await conn.execute(_SLEEP)

    async def close(self) -> None:
        await self._pool.close()


class SQLAlchemyEngine:
    """``create_async_engine`` on asyncpg: its ``AsyncAdaptedQueuePool`` of ``pool_size``,
    no overflow."""

    concurrent = True
    name = "SQLAlchemy"

    def __init__(self, dsn: str, pool_size: int) -> None:
        url = sqlalchemy.make_url(dsn).set(drivername="postgresql+asyncpg")
        self._engine = create_async_engine(url, pool_size=pool_size, max_overflow=0)
        self._size = pool_size
        self._select_one = sqlalchemy.text(_SELECT_ONE)
        self._sleep = sqlalchemy.text(_SLEEP)

    async def open(self) -> None:
        # The engine connects lazily: check out every connection once, so all exist.
        held = [await self._engine.connect() for _ in range(self._size)]
        for conn in held:
            await conn.close()

    def borrow(self) -> AbstractAsyncContextManager[AsyncConnection]:
        return self._engine.connect()

    async def select_one(self, conn: AsyncConnection) -> None:
        (await conn.execute(self._select_one)).scalar()

    async def sleep(self, conn: AsyncConnection) -> None:
        await conn.execute(self._sleep)

    async def close(self) -> None:
        await self._engine.dispose()


class ConnectPerUse(_Asyncpg):
    """No pool: ``asyncpg.connect`` for every use and ``close`` after it, the pattern a pool
    replaces."""

    concurrent = True
    name = "no pool (connect per use)"

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn

    async def open(self) -> None:
        pass

    @asynccontextmanager
    async def borrow(self) -> AsyncIterator[asyncpg.Connection]:
        conn = await asyncpg.connect(self._dsn)
        try:
            yield conn
        finally:
            await conn.close()

    async def close(self) -> None:
        pass


class RawConnection(_Asyncpg):
    """One asyncpg connection used directly, for one task: the lower bound of any pool."""

    concurrent = False
    name = "raw asyncpg connection"

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._conn: asyncpg.Connection | None = None

    async def open(self) -> None:
        self._conn = await asyncpg.connect(self._dsn)

    @asynccontextmanager
    async def borrow(self) -> AsyncIterator[asyncpg.Connection]:
        assert self._conn is not None
        yield self._conn

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()


def contenders(dsn: str, pool_size: int) -> list[Contender]:
    """Every contender, in the order the report lists them."""
    return [
        Aiodbpool(dsn, pool_size),
        Aiodbpool(dsn, pool_size, lease=False),
        Aiodbpool(dsn, pool_size, reset="full"),
        AiodbpoolPsycopg(dsn, pool_size),
        AsyncpgPool(dsn, pool_size),
        AsyncpgPool(dsn, pool_size, reset=False),
        PsycopgPool(dsn, pool_size, autocommit=True),
        PsycopgPool(dsn, pool_size, autocommit=False),
        SQLAlchemyEngine(dsn, pool_size),
        ConnectPerUse(dsn),
        RawConnection(dsn),
    ]


async def open_all(every: list[Contender]) -> None:
    """Open the contenders one after the other (connect storms would slow each other)."""
    for contender in every:
        await contender.open()


async def close_all(every: list[Contender]) -> None:
    await asyncio.gather(*(contender.close() for contender in every), return_exceptions=True)
