"""One contract, every driver: what the pool relies on, checked against PostgreSQL (through asyncpg
and through psycopg), MariaDB (through asyncmy), SQLite and the fake driver alike.

Each database gets a small adapter that knows its SQL dialect and, where the database has them,
how to make the server side of a connection go away and how to run a statement slow enough to be
cancelled halfway. A test that needs one of those runs only over the drivers that have it: it is
not collected for the others, rather than skipped.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncmy
import asyncpg
import psycopg
import pytest
from helpers import finishes_at_once, wait_until

from aiodbpool import (
    ConnectionReleased,
    Driver,
    Pool,
    SupportsTerminate,
    SupportsTransaction,
    create_pool,
    raw_connection,
)
from aiodbpool.drivers.fake import FakeConnectionError, FakeDriver
from aiodbpool.integrations.testing import MariaDBServer


class Adapter:
    """How the contract tests talk to one database through its driver's connections."""

    name = ""
    # Whether the database can lose a connection's server side (PostgreSQL's backends).
    has_server_side = False
    # What the driver's calls raise on a closed connection.
    closed_error: type[Exception] = Exception

    def __init__(self, driver: Driver[Any]) -> None:
        self.driver = driver

    async def execute(self, conn: Any, sql: str) -> None:
        raise NotImplementedError

    async def count(self, conn: Any, table: str) -> int | None:
        """Rows in ``table``, or None where the database stores nothing (the fake)."""
        raise NotImplementedError

    def in_transaction(self, conn: Any) -> bool:
        raise NotImplementedError

    def slow_statement(self, conn: Any) -> Awaitable[object]:
        """A statement that runs for many seconds unless cancelled."""
        raise NotImplementedError

    async def lose_server_side(self, conn: Any) -> None:
        """End the connection from the server's side, as a restart or a kill would."""
        raise NotImplementedError


class PostgresAdapter(Adapter):
    name = "postgres"
    has_server_side = True
    closed_error = asyncpg.InterfaceError

    def __init__(self, driver: Driver[Any], dsn: str) -> None:
        super().__init__(driver)
        self.dsn = dsn

    async def execute(self, conn: asyncpg.Connection, sql: str) -> None:
        await conn.execute(sql)

    async def count(self, conn: asyncpg.Connection, table: str) -> int | None:
        rows: int = await conn.fetchval(f"SELECT count(*) FROM {table}")
        return rows

    def in_transaction(self, conn: asyncpg.Connection) -> bool:
        return conn.is_in_transaction()

    def slow_statement(self, conn: asyncpg.Connection) -> Awaitable[object]:
        return conn.execute("SELECT pg_sleep(30)")

    async def lose_server_side(self, conn: asyncpg.Connection) -> None:
        admin = await asyncpg.connect(self.dsn)
        try:
            await admin.execute("SELECT pg_terminate_backend($1)", conn.get_server_pid())
        finally:
            await admin.close()


class PsycopgAdapter(Adapter):
    name = "psycopg"
    has_server_side = True
    closed_error = psycopg.OperationalError

    def __init__(self, driver: Driver[Any], dsn: str) -> None:
        super().__init__(driver)
        self.dsn = dsn

    async def execute(self, conn: psycopg.AsyncConnection[Any], sql: str) -> None:
        await conn.execute(sql)

    async def count(self, conn: psycopg.AsyncConnection[Any], table: str) -> int | None:
        cursor = await conn.execute(f"SELECT count(*) FROM {table}")
        row = await cursor.fetchone()
        assert row is not None
        rows: int = row[0]
        return rows

    def in_transaction(self, conn: psycopg.AsyncConnection[Any]) -> bool:
        return conn.info.transaction_status is not psycopg.pq.TransactionStatus.IDLE

    def slow_statement(self, conn: psycopg.AsyncConnection[Any]) -> Awaitable[object]:
        return conn.execute("SELECT pg_sleep(30)")

    async def lose_server_side(self, conn: psycopg.AsyncConnection[Any]) -> None:
        async with await psycopg.AsyncConnection.connect(self.dsn, autocommit=True) as admin:
            await admin.execute("SELECT pg_terminate_backend(%s, 5000)", [conn.info.backend_pid])


class MariaDBAdapter(Adapter):
    name = "mariadb"
    has_server_side = True
    closed_error = asyncmy.errors.InterfaceError

    def __init__(self, driver: Driver[Any], server: MariaDBServer) -> None:
        super().__init__(driver)
        self.server = server

    async def execute(self, conn: asyncmy.Connection, sql: str) -> None:
        async with conn.cursor() as cursor:
            await cursor.execute(sql)

    async def count(self, conn: asyncmy.Connection, table: str) -> int | None:
        async with conn.cursor() as cursor:
            await cursor.execute(f"SELECT count(*) FROM {table}")
            row = await cursor.fetchone()
        rows: int = row[0]
        return rows

    def in_transaction(self, conn: asyncmy.Connection) -> bool:
        return conn.get_transaction_status()

    def slow_statement(self, conn: asyncmy.Connection) -> Awaitable[object]:
        return self.execute(conn, "SELECT SLEEP(30)")

    async def lose_server_side(self, conn: asyncmy.Connection) -> None:
        admin = await asyncmy.connect(unix_socket=str(self.server.socket_path), user="root")
        try:
            async with admin.cursor() as cursor:
                await cursor.execute(f"KILL CONNECTION {conn.thread_id()}")
        finally:
            await admin.ensure_closed()


class SQLiteAdapter(Adapter):
    name = "sqlite"
    closed_error = ValueError  # aiosqlite's

    async def execute(self, conn: Any, sql: str) -> None:
        await conn.execute(sql)

    async def count(self, conn: Any, table: str) -> int | None:
        async with conn.execute(f"SELECT count(*) FROM {table}") as cursor:
            row = await cursor.fetchone()
        assert row is not None
        rows: int = row[0]
        return rows

    def in_transaction(self, conn: Any) -> bool:
        in_transaction: bool = conn.in_transaction
        return in_transaction

    def slow_statement(self, conn: Any) -> Awaitable[object]:
        # Counting to a billion in a recursive query takes minutes: only an interrupt ends it.
        statement: Awaitable[object] = conn.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000000000)"
            " SELECT count(*) FROM n"
        )
        return statement


class FakeAdapter(Adapter):
    name = "fake"
    has_server_side = True
    closed_error = FakeConnectionError

    async def execute(self, conn: Any, sql: str) -> None:
        await conn.execute(sql)

    async def count(self, conn: Any, table: str) -> int | None:
        return None

    def in_transaction(self, conn: Any) -> bool:
        in_transaction: bool = conn.in_transaction
        return in_transaction

    def slow_statement(self, conn: Any) -> Awaitable[object]:
        assert isinstance(self.driver, FakeDriver)
        self.driver.query_latency = 30
        statement: Awaitable[object] = conn.execute("SELECT slowly")
        return statement

    async def lose_server_side(self, conn: Any) -> None:
        assert isinstance(self.driver, FakeDriver)
        self.driver.break_connection(conn, detected=True)


ALL = ["postgres", "psycopg", "mariadb", "sqlite", "fake"]
WITH_SERVER_SIDE = ["postgres", "psycopg", "mariadb", "fake"]


@pytest.fixture
def adapter(request: pytest.FixtureRequest, tmp_path: Path) -> Adapter:
    """The driver under test, made from its URL as ``create_pool`` makes it."""
    name: str = request.param
    if name == "postgres":
        dsn: str = request.getfixturevalue("postgres_url")
        return PostgresAdapter(create_pool(dsn).driver, dsn)
    if name == "psycopg":
        dsn = request.getfixturevalue("postgres_url")
        url = "postgresql+psycopg://" + dsn.partition("://")[2]
        return PsycopgAdapter(create_pool(url).driver, dsn)
    if name == "mariadb":
        server: MariaDBServer = request.getfixturevalue("mariadb_server")
        return MariaDBAdapter(create_pool(server.url).driver, server)
    if name == "sqlite":
        return SQLiteAdapter(create_pool(f"sqlite:///{tmp_path / 'contract.db'}").driver)
    return FakeAdapter(create_pool("fake://").driver)


@pytest.fixture
async def conn(adapter: Adapter) -> AsyncIterator[Any]:
    """A connection opened by the driver itself, closed afterwards whatever the test did."""
    conn = await adapter.driver.connect()
    yield conn
    if not adapter.driver.is_closed(conn):
        await adapter.driver.close(conn)


# ------------------------------------------------------------------ connect, ping, close


@pytest.mark.parametrize("adapter", ALL, indirect=True)
async def test_a_new_connection_is_open_and_answers_pings(adapter: Adapter, conn: Any) -> None:
    assert not adapter.driver.is_closed(conn)
    await adapter.driver.ping(conn)
    assert not adapter.in_transaction(conn)


@pytest.mark.parametrize("adapter", ALL, indirect=True)
async def test_close_closes_and_is_closed_says_so(adapter: Adapter) -> None:
    conn = await adapter.driver.connect()
    await adapter.driver.close(conn)
    assert adapter.driver.is_closed(conn)
    with pytest.raises(adapter.closed_error, match="closed"):
        await adapter.driver.ping(conn)
    await adapter.driver.close(conn)  # closing again does nothing
    assert adapter.driver.is_closed(conn)


@pytest.mark.parametrize("adapter", ALL, indirect=True)
async def test_terminate_closes_at_once(adapter: Adapter) -> None:
    assert isinstance(adapter.driver, SupportsTerminate)
    conn = await adapter.driver.connect()
    adapter.driver.terminate(conn)
    await wait_until(lambda: adapter.driver.is_closed(conn), timeout=10)


# ------------------------------------------------------------------ reset


@pytest.mark.parametrize("adapter", ALL, indirect=True)
async def test_a_clean_connection_resets_without_any_io(adapter: Adapter, conn: Any) -> None:
    await adapter.execute(conn, "SELECT 1")
    assert finishes_at_once(adapter.driver.reset(conn))


@pytest.mark.parametrize("adapter", ALL, indirect=True)
async def test_reset_rolls_back_an_open_transaction(adapter: Adapter, conn: Any) -> None:
    await adapter.execute(conn, "CREATE TABLE IF NOT EXISTS contract_reset (n integer)")
    await adapter.execute(conn, "DELETE FROM contract_reset")
    await adapter.execute(conn, "BEGIN")
    await adapter.execute(conn, "INSERT INTO contract_reset VALUES (1)")
    assert adapter.in_transaction(conn)
    await adapter.driver.reset(conn)
    assert not adapter.in_transaction(conn)
    assert await adapter.count(conn, "contract_reset") in (0, None)
    await adapter.driver.ping(conn)  # still usable


@pytest.mark.parametrize("adapter", ALL, indirect=True)
async def test_a_release_rolls_back_what_its_user_left_and_lends_the_connection_again(
    adapter: Adapter,
) -> None:
    pool: Pool[Any] = Pool(adapter.driver, max_size=1)
    async with pool:
        async with pool.acquire() as conn:
            await adapter.execute(conn, "CREATE TABLE IF NOT EXISTS contract_release (n integer)")
            await adapter.execute(conn, "DELETE FROM contract_release")
            await adapter.execute(conn, "BEGIN")
            await adapter.execute(conn, "INSERT INTO contract_release VALUES (1)")
            first = raw_connection(conn)
        async with pool.acquire() as conn:
            assert raw_connection(conn) is first  # the same connection, cleaned
            assert not adapter.in_transaction(conn)
            assert await adapter.count(conn, "contract_release") in (0, None)
        assert pool.stats().discarded == 0


# ------------------------------------------------------------------ transactions


@pytest.mark.parametrize("adapter", ALL, indirect=True)
async def test_a_transaction_commits_on_success(adapter: Adapter, conn: Any) -> None:
    assert isinstance(adapter.driver, SupportsTransaction)
    await adapter.execute(conn, "CREATE TABLE IF NOT EXISTS contract_commit (n integer)")
    await adapter.execute(conn, "DELETE FROM contract_commit")
    other = await adapter.driver.connect()
    try:
        async with adapter.driver.transaction(conn):
            assert adapter.in_transaction(conn)
            await adapter.execute(conn, "INSERT INTO contract_commit VALUES (1)")
            assert await adapter.count(other, "contract_commit") in (0, None)  # not yet
        assert not adapter.in_transaction(conn)
        assert await adapter.count(conn, "contract_commit") in (1, None)
        assert await adapter.count(other, "contract_commit") in (1, None)  # committed
    finally:
        await adapter.driver.close(other)


@pytest.mark.parametrize("adapter", ALL, indirect=True)
async def test_a_transaction_rolls_back_on_an_error(adapter: Adapter, conn: Any) -> None:
    assert isinstance(adapter.driver, SupportsTransaction)
    await adapter.execute(conn, "CREATE TABLE IF NOT EXISTS contract_rollback (n integer)")
    await adapter.execute(conn, "DELETE FROM contract_rollback")
    with pytest.raises(LookupError):
        await _insert_then_fail(adapter, conn)
    assert not adapter.in_transaction(conn)
    assert await adapter.count(conn, "contract_rollback") in (0, None)


async def _insert_then_fail(adapter: Adapter, conn: Any) -> None:
    assert isinstance(adapter.driver, SupportsTransaction)
    async with adapter.driver.transaction(conn):
        await adapter.execute(conn, "INSERT INTO contract_rollback VALUES (1)")
        raise LookupError("the handler failed")


# ------------------------------------------------------------------ the connection as lent


@pytest.mark.parametrize("adapter", ALL, indirect=True)
async def test_the_driver_takes_the_connection_the_pool_lent(adapter: Adapter) -> None:
    """Integrations call the driver with what the pool lent, a lease standing in for the
    driver's connection: the readiness route pings it, the FastAPI dependencies ask ``is_closed``
    and run ``transaction`` on it. Once it is given back, the driver's calls refuse it too."""
    assert isinstance(adapter.driver, SupportsTransaction)
    pool: Pool[Any] = Pool(adapter.driver, max_size=1)
    async with pool:
        async with pool.acquire() as conn:
            assert type(conn) is not type(raw_connection(conn))  # a lease, not the raw object
            await adapter.driver.ping(conn)
            assert not adapter.driver.is_closed(conn)
            async with adapter.driver.transaction(conn):
                assert adapter.in_transaction(conn)
                await adapter.execute(conn, "SELECT 1")
            assert not adapter.in_transaction(conn)
            await adapter.execute(conn, "BEGIN")
            await adapter.driver.reset(conn)
            assert not adapter.in_transaction(conn)
        with pytest.raises(ConnectionReleased):
            await adapter.driver.ping(conn)
        stats = pool.stats()
        assert (stats.size, stats.discarded, stats.stale_uses) == (1, 0, 1)


# ------------------------------------------------------------------ the server side goes away


@pytest.mark.parametrize("adapter", WITH_SERVER_SIDE, indirect=True)
async def test_a_connection_whose_server_side_went_away_fails_its_ping(
    adapter: Adapter, conn: Any
) -> None:
    await adapter.lose_server_side(conn)
    with pytest.raises(Exception):  # noqa: B017, PT011 -- each driver raises its own error
        await adapter.driver.ping(conn)
    await wait_until(lambda: adapter.driver.is_closed(conn), timeout=10)


@pytest.mark.parametrize("adapter", WITH_SERVER_SIDE, indirect=True)
async def test_a_pool_discards_a_connection_whose_server_side_went_away(
    adapter: Adapter,
) -> None:
    pool: Pool[Any] = Pool(adapter.driver, max_size=1, validate_after_idle=0)
    async with pool:
        async with pool.acquire() as conn:
            first = raw_connection(conn)  # the lease refuses use after the release; this does not
        await adapter.lose_server_side(first)
        async with pool.acquire() as second:
            assert raw_connection(second) is not first
            await adapter.driver.ping(second)


# ------------------------------------------------------------------ cancellation mid-query


@pytest.mark.parametrize("adapter", ALL, indirect=True)
async def test_a_holder_cancelled_mid_query_leaves_the_next_user_a_clean_connection(
    adapter: Adapter,
) -> None:
    pool: Pool[Any] = Pool(adapter.driver, max_size=1, reset_timeout=10)
    started = asyncio.Event()

    async def hold(statement: Callable[[Any], Awaitable[object]]) -> None:
        async with pool.acquire() as conn:
            await adapter.execute(conn, "BEGIN")
            started.set()
            await statement(conn)

    async with pool:
        holder = asyncio.ensure_future(hold(adapter.slow_statement))
        await started.wait()
        await asyncio.sleep(0.2)  # let the slow statement reach the database
        holder.cancel()
        with pytest.raises(asyncio.CancelledError):
            await holder
        if isinstance(adapter.driver, FakeDriver):
            adapter.driver.query_latency = 0
        async with asyncio.timeout(15), pool.acquire() as conn:
            assert not adapter.in_transaction(conn)
            await adapter.execute(conn, "SELECT 1")
        assert pool.stats().in_use == 0
