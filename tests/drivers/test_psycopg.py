"""The psycopg 3 driver against a real server: URLs, options, the lease, resets and cancellation.

What every driver must do is in ``test_contract.py``, which runs over this driver too; PgBouncer
is in ``test_psycopg_pgbouncer.py``.
"""

from __future__ import annotations

import asyncio
import inspect
import socket
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from helpers import finishes_at_once
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row

from aiodbpool import ConnectionReleased, Pool, PoolConnectError, create_pool, raw_connection
from aiodbpool.drivers.psycopg import (
    Connection,
    PsycopgDriver,
    ReleasedConnectionError,
    _PsycopgLease,
    from_url,
)
from aiodbpool.integrations.testing import PostgresServer

LONG_QUERY = "SELECT pg_sleep(30)"


def _psycopg_url(dsn: str) -> str:
    return "postgresql+psycopg://" + dsn.partition("://")[2]


def _app_name() -> str:
    """A unique application_name, to find a test's own sessions in pg_stat_activity."""
    return f"aiodbpool-psycopg-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def pool(postgres_url: str) -> AsyncIterator[Pool[Connection]]:
    """One connection, so every acquire gets the connection the previous user returned."""
    pool: Pool[Connection] = create_pool(_psycopg_url(postgres_url), max_size=1)
    async with pool:
        yield pool


async def _fetchval(conn: Connection, sql: str, *params: object) -> Any:
    cursor = await conn.execute(sql, params or None)
    row = await cursor.fetchone()
    assert row is not None
    return row[0]


async def _sessions(dsn: str, app_name: str, *, where: str = "true") -> int:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as admin:
        count: int = await _fetchval(
            admin,
            f"SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND {where}",
            app_name,
        )
        return count


async def _wait_until_sessions(
    dsn: str, app_name: str, expected: int, *, where: str = "true"
) -> None:
    """Poll pg_stat_activity until ``expected`` sessions match; fail after 10 s."""
    deadline = time.monotonic() + 10
    while (count := await _sessions(dsn, app_name, where=where)) != expected:
        if time.monotonic() > deadline:
            pytest.fail(f"{count} sessions named {app_name}, expected {expected}")
        await asyncio.sleep(0.05)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


# ------------------------------------------------------------------ URLs and options


@pytest.mark.parametrize("scheme", ["postgresql+psycopg", "PostgreSQL+Psycopg"])
async def test_create_pool_hands_out_psycopg_connections(postgres_url: str, scheme: str) -> None:
    pool = create_pool(scheme + "://" + postgres_url.partition("://")[2], max_size=2)
    assert isinstance(pool.driver, PsycopgDriver)
    async with pool, pool.acquire() as conn:
        assert isinstance(conn, psycopg.AsyncConnection)
        assert isinstance(raw_connection(conn), psycopg.AsyncConnection)
        assert type(conn) is not type(raw_connection(conn))  # a lease
        assert conn.autocommit
        assert await _fetchval(conn, "SELECT 40 + %s", 2) == 42


async def test_the_driver_takes_plain_postgresql_urls_too(postgres_url: str) -> None:
    driver = PsycopgDriver(postgres_url)
    conn = await driver.connect()
    try:
        assert await _fetchval(conn, "SELECT 1") == 1
    finally:
        await driver.close(conn)


async def test_libpq_parameters_in_the_url_and_as_keywords(postgres_url: str) -> None:
    app_name = _app_name()
    url = _psycopg_url(postgres_url)
    url += ("&" if "?" in url else "?") + f"application_name={app_name}"
    pool = create_pool(url, options="-c search_path=pg_catalog", prepare_threshold=None)
    async with pool, pool.acquire() as conn:
        assert await _fetchval(conn, "SHOW application_name") == app_name
        assert await _fetchval(conn, "SHOW search_path") == "pg_catalog"
        assert conn.prepare_threshold is None
        assert await _sessions(postgres_url, app_name) == 1


async def test_a_row_factory_for_every_connection(postgres_url: str) -> None:
    pool = create_pool(_psycopg_url(postgres_url), row_factory=dict_row)
    async with pool, pool.acquire() as conn:
        cursor = await conn.execute("SELECT 42 AS answer")
        assert await cursor.fetchone() == {"answer": 42}


@pytest.mark.parametrize(
    ("url", "options", "error", "mistake"),
    [
        ("postgresql+psycopg://app:hunter2@db:54x2/app", {}, ValueError, "port .* not a number"),
        ("postgresql+psycopg://app:hunter2@db/app#x", {}, ValueError, "has a '#'"),
        ("postgresql+psycopg://app:hunter2@db/app?bogus=1", {}, ValueError, "bogus"),
        ("postgresql+psycopg://app:hunter2@db/app", {"bogus": 1}, ValueError, "bogus"),
        ("postgresql+psycopg://app:hunter2@db host/app", {}, ValueError, "spaces"),
        ("postgresql+psycopg://app:hunter2@db/app?sslmode=requre", {}, ValueError, "sslmode"),
        ("postgresql+psycopg://app:hunter2@db/app", {"autocommit": False}, TypeError, "autocom"),
        ("postgresql+psycopg://app:hunter2@db/app", {"init": "SET x"}, TypeError, "init must"),
        ("postgresql+psycopg://app:hunter2@db/app", {"password": 1}, TypeError, "password must"),
        ("postgresql+psycopg://app:hunter2@db/app", {"prepare_threshold": "5"}, TypeError, "int"),
    ],
)
def test_mistakes_are_refused_when_the_pool_is_created(
    url: str, options: dict[str, Any], error: type[Exception], mistake: str
) -> None:
    with pytest.raises(error, match=mistake) as caught:
        create_pool(url, **options)
    assert "hunter2" not in str(caught.value)
    assert caught.value.__context__ is None or "hunter2" not in str(caught.value.__context__)


def test_a_url_of_another_database_is_refused() -> None:
    with pytest.raises(ValueError, match="not a PostgreSQL URL") as caught:
        from_url("mysql://app:hunter2@db/app")
    assert "hunter2" not in str(caught.value)
    with pytest.raises(TypeError, match="url must be a string"):
        PsycopgDriver(b"postgresql://db/app")  # type: ignore[arg-type]


async def test_a_url_with_several_hosts_tries_them_in_turn(
    postgres_server: PostgresServer,
) -> None:
    """libpq's failover form, ``host1:port1,host2:port2``: the first host is down, the pool
    connects to the second."""
    here = f"{postgres_server.host}:{postgres_server.port}"
    url = _psycopg_url(postgres_server.dsn).replace(
        here, f"{postgres_server.host}:{_free_port()},{here}"
    )
    assert url.count(",") == 1
    async with create_pool(url, max_size=1) as pool, pool.acquire() as conn:
        assert await _fetchval(conn, "SELECT 1") == 1


def test_a_driver_without_a_url_says_where_its_settings_come_from() -> None:
    assert repr(PsycopgDriver(host="db.internal")) == "<PsycopgDriver (PG* environment)>"


# ------------------------------------------------------------------ passwords


async def test_a_password_never_shows_in_reprs_or_errors(postgres_server: PostgresServer) -> None:
    secret = postgres_server.password
    url = _psycopg_url(postgres_server.dsn)
    pool = create_pool(url)
    assert secret not in repr(pool)
    assert secret not in repr(pool.driver)
    assert "***" in repr(pool.driver)
    wrong_port = url.replace(f":{postgres_server.port}/", f":{_free_port()}/")
    failing = create_pool(wrong_port, connect_timeout=5)
    async with failing:
        with pytest.raises(PoolConnectError) as caught:
            await failing.acquire()
    assert isinstance(caught.value.__cause__, psycopg.OperationalError)
    assert secret not in str(caught.value)
    assert secret not in repr(caught.value.__cause__)


async def test_a_connect_error_quoting_the_password_is_scrubbed(
    postgres_server: PostgresServer,
) -> None:
    secret = postgres_server.password

    async def init(conn: Connection) -> None:
        raise RuntimeError(f"set-up failed for a session logged in with {secret}")

    pool = create_pool(_psycopg_url(postgres_server.dsn), init=init)
    async with pool:
        with pytest.raises(PoolConnectError) as caught:
            await pool.acquire()
    cause = caught.value.__cause__
    assert isinstance(cause, RuntimeError)  # scrubbed in place, its type kept
    assert secret not in str(cause)
    assert "***" in str(cause)
    assert secret not in str(caught.value)


async def test_a_password_function_is_asked_at_every_connect(
    postgres_server: PostgresServer,
) -> None:
    asked: list[str] = []

    def current_password() -> str:
        asked.append("sync")
        return postgres_server.password

    async def current_token() -> str:
        await asyncio.sleep(0)
        asked.append("async")
        return postgres_server.password

    without = _psycopg_url(postgres_server.dsn).replace(f":{postgres_server.password}@", "@")
    assert postgres_server.password not in without
    for password in (current_password, current_token):
        pool = create_pool(without, password=password, max_size=2)
        async with pool:
            held = [await pool.acquire() for _ in range(2)]
            for conn in held:
                await pool.release(conn)
    assert asked == ["sync"] * 2 + ["async"] * 2


# ------------------------------------------------------------------ init


async def test_init_runs_once_on_each_new_connection(postgres_url: str) -> None:
    seen: list[int] = []

    async def init(conn: Connection) -> None:
        await conn.execute("SET search_path TO pg_catalog, public")
        seen.append(conn.info.backend_pid)

    pool = create_pool(_psycopg_url(postgres_url), init=init, max_size=2)
    async with pool:
        for _ in range(3):
            async with pool.acquire() as a, pool.acquire() as b:
                for conn in (a, b):
                    assert await _fetchval(conn, "SHOW search_path") == "pg_catalog, public"
    assert len(seen) == 2  # reused afterwards: the reset keeps session state


async def test_an_init_that_leaves_a_transaction_open_fails_the_connect(postgres_url: str) -> None:
    async def init(conn: Connection) -> None:
        await conn.execute("BEGIN")

    pool = create_pool(_psycopg_url(postgres_url), init=init)
    async with pool:
        with pytest.raises(PoolConnectError):
            await pool.acquire()
        assert pool.stats().size == 0


async def test_a_failing_init_leaves_no_session(postgres_url: str) -> None:
    app_name = _app_name()

    async def init(conn: Connection) -> None:
        raise RuntimeError("type registration failed")

    pool = create_pool(_psycopg_url(postgres_url), init=init, application_name=app_name)
    async with pool:
        with pytest.raises(PoolConnectError, match="type registration failed"):
            await pool.acquire()
    await _wait_until_sessions(postgres_url, app_name, 0)


# ------------------------------------------------------------------ transaction status and reset


async def test_transaction_status_follows_the_server(postgres_url: str) -> None:
    driver = PsycopgDriver(postgres_url)
    conn = await driver.connect()
    try:
        assert driver.transaction_status(conn) == "idle"
        await conn.execute("BEGIN")
        assert driver.transaction_status(conn) == "in_transaction"
        with pytest.raises(psycopg.errors.DivisionByZero):
            await conn.execute("SELECT 1 / 0")
        assert driver.transaction_status(conn) == "failed"
        await driver.reset(conn)
        assert driver.transaction_status(conn) == "idle"
    finally:
        await driver.close(conn)


async def test_a_clean_connection_resets_without_a_round_trip(pool: Pool[Connection]) -> None:
    async with pool.acquire() as conn:
        await conn.execute("SET statement_timeout TO '42s'")  # session state, no transaction
        assert finishes_at_once(pool.driver.reset(raw_connection(conn)))
        async with conn.transaction():
            await conn.execute("SELECT 1")
        assert finishes_at_once(pool.driver.reset(raw_connection(conn)))
    async with pool.acquire() as conn:
        assert await _fetchval(conn, "SHOW statement_timeout") == "42s"


async def test_a_failed_transaction_is_rolled_back(pool: Pool[Connection]) -> None:
    async with pool.acquire() as conn:
        await conn.execute("BEGIN")
        with pytest.raises(psycopg.errors.DivisionByZero):
            await conn.execute("SELECT 1 / 0")
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            await conn.execute("SELECT 1")
    async with pool.acquire() as conn:
        assert conn.info.transaction_status is TransactionStatus.IDLE
        assert await _fetchval(conn, "SELECT 1") == 1
    assert pool.stats().discarded == 0


async def test_a_transaction_block_left_open_does_not_leak(pool: Pool[Connection]) -> None:
    async with pool.acquire() as conn:
        block = conn.transaction()
        await block.__aenter__()  # and never exited
        await conn.execute("CREATE TEMP TABLE left_open (n int)")
    with pytest.raises(ConnectionReleased):
        await block.__aexit__(None, None, None)  # too late: refused, nothing sent
    async with pool.acquire() as conn:
        async with conn.transaction():  # would be a savepoint outside a transaction otherwise
            assert await _fetchval(conn, "SELECT to_regclass('pg_temp.left_open')") is None
        assert conn.info.transaction_status is TransactionStatus.IDLE
    assert pool.stats().discarded == 0


# ------------------------------------------------------------------ the lease


def test_the_lease_names_every_public_method_of_the_connection() -> None:
    methods = {
        name
        for name, value in inspect.getmembers(psycopg.AsyncConnection)
        if not name.startswith("_")
        and callable(value)
        and not isinstance(value, type)
        and not isinstance(inspect.getattr_static(psycopg.AsyncConnection, name), classmethod)
    }
    unguarded = {name for name in methods if name not in vars(_PsycopgLease)}
    assert unguarded == set()


async def test_what_was_made_through_a_lease_refuses_after_the_release(
    pool: Pool[Connection],
) -> None:
    async with pool.acquire() as conn:
        cursor = conn.cursor()
        await cursor.execute("SELECT 1")
        returned = await conn.execute("SELECT 2")
        run = conn.execute
        assert cursor.connection is conn
        assert conn.connection is conn
        async with conn.pipeline():
            piped = [await conn.execute("SELECT %s::int", [n]) for n in range(3)]
        assert [await each.fetchone() for each in piped] == [(0,), (1,), (2,)]
        with pytest.raises(AttributeError, match="set_autocommit"):
            conn.autocommit = False  # psycopg's own advice, as without the pool
    for late in (cursor.execute("SELECT 1"), returned.execute("SELECT 2"), run("SELECT 3")):
        with pytest.raises(ReleasedConnectionError):
            await late
    assert issubclass(ReleasedConnectionError, psycopg.InterfaceError)
    assert pool.stats().stale_uses == 3


async def test_a_transaction_block_ending_after_the_release_sends_nothing(
    pool: Pool[Connection],
) -> None:
    async with pool.acquire() as conn:
        await conn.execute("CREATE TEMP TABLE IF NOT EXISTS late (n int)")
    conn = await pool.acquire()
    block = conn.transaction()
    await block.__aenter__()
    await conn.execute("INSERT INTO late VALUES (1)")
    await pool.release(conn)  # rolled back, and the lease ends
    with pytest.raises(ReleasedConnectionError):
        await block.__aexit__(None, None, None)  # its COMMIT is refused
    async with pool.acquire() as conn:
        assert await _fetchval(conn, "SELECT count(*) FROM late") == 0


async def test_what_a_borrower_changed_on_the_client_goes_back_at_the_release(
    pool: Pool[Connection],
) -> None:
    notices: list[object] = []
    async with pool.acquire() as conn:
        conn.row_factory = dict_row
        conn.prepare_threshold = None
        await conn.set_autocommit(False)
        await conn.set_isolation_level(psycopg.IsolationLevel.SERIALIZABLE)
        conn.add_notice_handler(notices.append)
        cursor = await conn.execute("SELECT 1 AS n")
        assert await cursor.fetchone() == {"n": 1}
        assert conn.info.transaction_status is TransactionStatus.INTRANS  # not autocommit
    async with pool.acquire() as conn:
        raw = raw_connection(conn)
        assert (conn.autocommit, conn.isolation_level, conn.prepare_threshold) == (True, None, 5)
        assert raw.row_factory is not dict_row
        await conn.execute("DO $$ BEGIN RAISE NOTICE 'for the next borrower'; END $$")
    assert notices == []
    assert pool.stats().discarded == 0


# ------------------------------------------------------------------ cancellation


@pytest.mark.parametrize("in_transaction", [False, True], ids=["autocommit", "in-transaction"])
async def test_a_holder_cancelled_mid_query_leaves_a_usable_connection(
    postgres_url: str, in_transaction: bool
) -> None:
    app_name = _app_name()
    pool = create_pool(_psycopg_url(postgres_url), max_size=1, application_name=app_name)
    async with pool:

        async def hold() -> None:
            async with pool.acquire() as conn:
                if in_transaction:
                    await conn.execute("BEGIN")
                    await conn.execute("CREATE TEMP TABLE scratch (n int)")
                await conn.execute(LONG_QUERY)

        holder = asyncio.ensure_future(hold())
        await _wait_until_sessions(postgres_url, app_name, 1, where=f"query = '{LONG_QUERY}'")
        started = time.monotonic()
        holder.cancel()
        with pytest.raises(asyncio.CancelledError):
            await holder
        async with pool.acquire() as conn:  # the same, single connection
            assert conn.info.transaction_status is TransactionStatus.IDLE
            assert await _fetchval(conn, "SELECT 1") == 1
            exists = "SELECT to_regclass('pg_temp.scratch') IS NOT NULL"
            assert await _fetchval(conn, exists) is False  # rolled back, or never made
        recovered = time.monotonic() - started
        assert (pool.stats().size, pool.stats().created) == (1, 1)
        # The server stopped the statement instead of letting it run on.
        await _wait_until_sessions(
            postgres_url, app_name, 0, where=f"query = '{LONG_QUERY}' AND state = 'active'"
        )
    assert recovered < 10, f"took {recovered:.2f}s to get the connection back"


async def test_a_connection_released_while_a_cursor_runs_waits_for_it(
    pool: Pool[Connection],
) -> None:
    """A statement through a cursor is not counted by the lease, but it holds the connection's
    lock, which the reset waits for: the next borrower gets the connection idle."""
    conn = await pool.acquire()
    cursor = conn.cursor()
    await cursor.execute("BEGIN")
    running = asyncio.ensure_future(cursor.execute("SELECT pg_sleep(0.3)"))
    await asyncio.sleep(0)  # the statement takes the lock and is sent
    assert raw_connection(conn).lock.locked()
    await pool.release(conn)
    async with asyncio.timeout(15), pool.acquire() as again:
        assert running.done()  # lent again only once the statement had ended
        assert again.info.transaction_status is TransactionStatus.IDLE
        assert await _fetchval(again, "SELECT 1") == 1
    await running  # it finished before the connection was lent again
    assert pool.stats().discarded == 0


async def test_a_statement_that_outlives_reset_timeout_discards_the_connection(
    postgres_url: str,
) -> None:
    pool = create_pool(_psycopg_url(postgres_url), max_size=1, reset_timeout=0.2)
    async with pool:
        conn = await pool.acquire()
        raw = raw_connection(conn)
        cursor = conn.cursor()
        running = asyncio.ensure_future(cursor.execute(LONG_QUERY))
        await asyncio.sleep(0)
        await pool.release(conn)
        async with asyncio.timeout(15), pool.acquire() as fresh:
            assert raw_connection(fresh) is not raw
            assert await _fetchval(fresh, "SELECT 1") == 1
        assert pool.stats().discarded == 1
        with pytest.raises(psycopg.OperationalError):
            await running  # terminated under it


async def test_set_connect_args_applies_to_the_connects_that_follow(
    postgres_server: PostgresServer,
) -> None:
    url = _psycopg_url(postgres_server.dsn)
    driver = PsycopgDriver(url, application_name="before")

    async def name_of(pool: Pool[Any]) -> str:
        async with pool.acquire() as conn:
            cursor = await conn.execute("SHOW application_name")
            row = await cursor.fetchone()
            assert row is not None
            return str(row[0])

    async with Pool(driver, max_size=1) as pool:
        assert await name_of(pool) == "before"
        driver.set_connect_args(url, application_name="after")
        assert await name_of(pool) == "before"  # the open connection keeps its parameters
        pool.expire()
        assert await name_of(pool) == "after"
        with pytest.raises(TypeError, match="autocommit"):
            driver.set_connect_args(url, autocommit=False)
        pool.expire()
        assert await name_of(pool) == "after"  # a refused change changed nothing
