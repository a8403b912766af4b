"""The MySQL driver against a real MariaDB server: URLs, options, passwords, resets, the lease
and cancellation. What every driver must do is in ``test_contract.py``."""

from __future__ import annotations

import asyncio
import inspect
import uuid
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncmy
import pytest
from asyncmy.cursors import Cursor, DictCursor, SSCursor
from helpers import finishes_at_once, wait_until

from aiodbpool import ConnectionReleased, Pool, PoolConnectError, create_pool, raw_connection
from aiodbpool.drivers.mysql import MySQLDriver, ReleasedConnectionError, from_url
from aiodbpool.integrations.testing import MariaDBServer

# A statement long enough to be cancelled halfway; the tests check the server stopped it.
LONG_QUERY = "SELECT SLEEP(30)"


@pytest.fixture
async def pool(mariadb_url: str) -> AsyncIterator[Pool[asyncmy.Connection]]:
    """One connection, so every acquire gets the connection the previous user returned."""
    pool: Pool[asyncmy.Connection] = Pool(MySQLDriver(mariadb_url), max_size=1)
    await pool.open()
    yield pool
    await pool.close()


@pytest.fixture
async def admin(mariadb_server: MariaDBServer) -> AsyncIterator[asyncmy.Connection]:
    """``root`` over the Unix socket, for the process list."""
    conn = await asyncmy.connect(
        unix_socket=str(mariadb_server.socket_path), user="root", autocommit=True
    )
    yield conn
    await conn.ensure_closed()


async def run(conn: asyncmy.Connection, sql: str, args: Any = None) -> list[Any]:
    """Run ``sql`` on a cursor of ``conn`` and return its rows."""
    async with conn.cursor() as cursor:
        await cursor.execute(sql, args)
        return list(await cursor.fetchall())


async def thread_running(admin: asyncmy.Connection, thread_id: int) -> bool:
    rows = await run(
        admin, "SELECT 1 FROM information_schema.PROCESSLIST WHERE ID = %s", [thread_id]
    )
    return bool(rows)


# ------------------------------------------------------------------ URLs and options


@pytest.mark.parametrize("scheme", ["mysql", "mariadb"])
async def test_create_pool_hands_out_asyncmy_connections(mariadb_url: str, scheme: str) -> None:
    url = f"{scheme}://{mariadb_url.partition('://')[2]}?max_size=2&charset=utf8mb4"
    async with create_pool(url) as pool, pool.acquire() as conn:
        assert isinstance(pool.driver, MySQLDriver)
        assert pool.stats().max_size == 2  # a pool option in the URL goes to the pool
        assert isinstance(conn, asyncmy.Connection)
        assert await run(conn, "SELECT 6 * 7") == [(42,)]
        assert conn.character_set_name() == "utf8mb4"


def test_the_url_gives_asyncmy_its_keywords() -> None:
    driver = from_url(
        "mysql://shop%40eu:p%40ss@db.internal:3307/orders?unix_socket=/run/my.sock"
        "&read_timeout=2.5&init_command=SET%20time_zone%3D%27%2B00%3A00%27"
    )
    assert driver._options == {
        "host": "db.internal",
        "port": 3307,
        "user": "shop@eu",
        "database": "orders",
        "unix_socket": "/run/my.sock",
        "read_timeout": 2.5,
        "init_command": "SET time_zone='+00:00'",
    }
    assert driver._password == "p@ss"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://app@db/x", "not a MySQL URL"),
        ("mysql://app@db:99999/x", "port"),
        ("mysql://app@db/x?sslmode=require", "unknown mysql:// URL parameter 'sslmode'"),
        ("mysql://app@db/x?read_timeout=soon", "read_timeout='soon' is not valid"),
        ("mysql://app@db/x/y", "more than one path segment"),
        ("mysql://app:s3cr3t#tail@db/x", "'#'"),
    ],
)
def test_a_malformed_url_is_refused_when_the_driver_is_made(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as refused:
        from_url(url)
    assert "s3cr3t" not in str(refused.value)


def test_unknown_and_refused_options_fail_at_once() -> None:
    with pytest.raises(TypeError, match=r"unknown MySQL driver option.*: databse"):
        MySQLDriver("mysql://app@db/x", databse="y")
    with pytest.raises(TypeError, match="autocommit"):
        MySQLDriver("mysql://app@db/x", autocommit=False)
    with pytest.raises(TypeError, match="password="):
        MySQLDriver("mysql://app@db/x", password_creator=lambda: "x")


def test_the_repr_shows_no_password() -> None:
    driver = from_url("mysql://app:correct-horse@db.internal/shop")
    assert repr(driver) == "<MySQLDriver 'mysql://app:***@db.internal/shop'>"
    assert "correct-horse" not in repr(driver)


def test_a_password_typed_without_encoding_is_refused_without_quoting_it() -> None:
    with pytest.raises(ValueError, match="percent-encode") as refused:
        from_url("mysql://app:pa@ss@db.internal/shop")
    assert "pa@ss" not in str(refused.value)


# ------------------------------------------------------------------ passwords and connect


async def test_a_connect_error_that_quotes_the_password_is_scrubbed(
    mariadb_server: MariaDBServer,
) -> None:
    # The server quotes the database name it refuses: name one after the password.
    server = mariadb_server
    driver = MySQLDriver(server.url.rpartition("/")[0] + "/" + server.password)
    with pytest.raises(PoolConnectError) as failed:
        async with Pool(driver) as pool:
            await pool.acquire()
    cause = failed.value.__cause__
    assert isinstance(cause, asyncmy.errors.OperationalError)  # scrubbed in place, type kept
    assert server.password not in str(cause)
    assert server.password[:6] not in str(failed.value)
    assert "***" in str(cause)


async def test_a_password_function_is_asked_at_each_connect(
    mariadb_server: MariaDBServer,
) -> None:
    asked = 0

    async def password() -> str:
        nonlocal asked
        asked += 1
        return mariadb_server.password

    url = f"mysql://{mariadb_server.user}@{mariadb_server.host}:{mariadb_server.port}/aiodbpool"
    driver = MySQLDriver(url, password=password)
    first, second = await driver.connect(), await driver.connect()
    assert asked == 2
    await driver.close(first)
    await driver.close(second)


async def test_an_init_that_leaves_a_transaction_open_fails_the_connect(mariadb_url: str) -> None:
    async def init(conn: asyncmy.Connection) -> None:
        await run(conn, "BEGIN")

    async with Pool(MySQLDriver(mariadb_url, init=init)) as pool:
        with pytest.raises(PoolConnectError, match="transaction"):
            await pool.acquire()


async def test_an_init_that_fails_closes_its_connection(mariadb_url: str) -> None:
    made: list[asyncmy.Connection] = []

    async def init(conn: asyncmy.Connection) -> None:
        made.append(conn)
        await run(conn, "SELECT no_such_column")

    with pytest.raises(asyncmy.errors.OperationalError):
        await MySQLDriver(mariadb_url, init=init).connect()
    assert not made[0].connected


# ------------------------------------------------------------------ reset


async def test_reset_turns_autocommit_back_on_after_rolling_back(mariadb_url: str) -> None:
    driver = MySQLDriver(mariadb_url)
    conn = await driver.connect()
    try:
        await run(conn, "CREATE TABLE IF NOT EXISTS mysql_autocommit (n integer)")
        await run(conn, "DELETE FROM mysql_autocommit")
        await conn.autocommit(False)
        await run(conn, "INSERT INTO mysql_autocommit VALUES (1)")  # begins a transaction
        assert driver.transaction_status(conn) == "in_transaction"
        await driver.reset(conn)  # rolls back first: turning autocommit on would commit
        assert conn.get_autocommit()
        assert driver.transaction_status(conn) == "idle"
        assert await run(conn, "SELECT count(*) FROM mysql_autocommit") == [(0,)]
        assert finishes_at_once(driver.reset(conn))
    finally:
        await driver.close(conn)


@pytest.mark.parametrize(
    ("cursor_class", "sql"),
    [
        (SSCursor, "SELECT seq FROM seq_1_to_10000"),  # rows left unread on the socket
        (Cursor, "SELECT 1; SELECT 2; SELECT 3"),  # result sets left unread
    ],
)
async def test_a_result_left_unread_is_read_before_the_next_borrower(
    pool: Pool[asyncmy.Connection], cursor_class: type[Cursor], sql: str
) -> None:
    async with pool.acquire() as conn:
        cursor = conn.cursor(cursor_class)
        await cursor.execute(sql)
        assert await cursor.fetchone() == (1,)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # asyncmy warns when it must finish a result itself
        async with pool.acquire() as conn:
            assert await run(conn, "SELECT 'next'") == [("next",)]
    stats = pool.stats()
    assert (stats.created, stats.discarded) == (1, 0)


# ------------------------------------------------------------------ transactions


async def test_a_transaction_inside_a_transaction_is_a_savepoint(
    pool: Pool[asyncmy.Connection],
) -> None:
    async with pool.acquire() as conn:
        driver = pool.driver
        assert isinstance(driver, MySQLDriver)
        await run(conn, "CREATE TABLE IF NOT EXISTS mysql_nested (n integer)")
        await run(conn, "DELETE FROM mysql_nested")
        async with driver.transaction(conn):
            await run(conn, "INSERT INTO mysql_nested VALUES (1)")
            with pytest.raises(LookupError):
                await _insert_in_a_failing_transaction(driver, conn)
            assert conn.get_transaction_status()  # the outer transaction goes on
        assert await run(conn, "SELECT n FROM mysql_nested") == [(1,)]


async def _insert_in_a_failing_transaction(driver: MySQLDriver, conn: asyncmy.Connection) -> None:
    async with driver.transaction(conn):
        await run(conn, "INSERT INTO mysql_nested VALUES (2)")
        raise LookupError("the inner block failed")


# ------------------------------------------------------------------ the lease


def test_the_lease_names_every_public_method_of_the_connection() -> None:
    lease_class = MySQLDriver.lease_class
    methods = {
        name
        for name, value in inspect.getmembers(asyncmy.Connection)
        if not name.startswith("_") and inspect.isroutine(value)
    }
    assert methods <= set(vars(lease_class)), sorted(methods - set(vars(lease_class)))


async def test_a_cursor_refuses_after_the_release(pool: Pool[asyncmy.Connection]) -> None:
    async with pool.acquire() as conn:
        cursor = conn.cursor(DictCursor)
        assert isinstance(cursor, DictCursor)
        await cursor.execute("SELECT 1 AS one")
        assert await cursor.fetchone() == {"one": 1}
        execute = cursor.execute
    with pytest.raises(ReleasedConnectionError):
        await execute("SELECT 2")
    with pytest.raises(ConnectionReleased):
        await cursor.fetchall()
    with pytest.raises(asyncmy.errors.InterfaceError):  # as asyncmy's own errors are
        conn.cursor()
    assert pool.stats().stale_uses == 3


async def test_cursors_are_of_the_class_the_connection_was_opened_with(mariadb_url: str) -> None:
    pool: Pool[asyncmy.Connection] = Pool(MySQLDriver(mariadb_url, cursor_cls=DictCursor))
    async with pool, pool.acquire() as conn, conn.cursor() as cursor:
        assert isinstance(cursor, DictCursor)
        await cursor.execute("SELECT 1 AS one")
        assert await cursor.fetchall() == [{"one": 1}]


async def test_a_prepared_statement_refuses_after_the_release_and_is_closed(
    pool: Pool[asyncmy.Connection],
) -> None:
    async with pool.acquire() as conn:
        statement = await conn.prepare("SELECT ? + 1")
        result = await statement.execute((41,))
        assert result.rows == ((42,),)
        assert isinstance(statement, asyncmy.connection.PreparedStatement)
    with pytest.raises(ConnectionReleased):
        await statement.execute((1,))
    assert statement._closed  # type: ignore[attr-defined]  # deallocated at the release
    async with pool.acquire() as conn:
        assert await run(conn, "SELECT 1") == [(1,)]
    assert pool.stats().created == 1


async def test_a_release_waits_for_a_cursor_statement_still_running(
    pool: Pool[asyncmy.Connection], admin: asyncmy.Connection
) -> None:
    conn = await pool.acquire()
    thread_id = conn.thread_id()
    cursor = conn.cursor()
    statement = asyncio.ensure_future(cursor.execute("SELECT SLEEP(0.5)"))
    await _wait_for_state(admin, thread_id, "User sleep")
    await pool.release(conn)  # from another task than the statement's
    assert await statement == 1
    async with pool.acquire() as again:
        assert raw_connection(again).thread_id() == thread_id
        assert await run(again, "SELECT 1") == [(1,)]
    assert pool.stats().created == 1


async def _until(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    """Wait until ``condition()`` is true, polling; fail after 20 s (a margin, not a timing)."""
    try:
        async with asyncio.timeout(20):
            while not await condition():  # noqa: ASYNC110 -- the server's state: no event to await
                await asyncio.sleep(0.01)
    except TimeoutError:
        pytest.fail(f"still waiting for {what}")


async def _wait_for_state(admin: asyncmy.Connection, thread_id: int, state: str) -> None:
    """Wait until the server thread ``thread_id`` is in ``state`` (the process list's)."""

    async def reached() -> bool:
        rows = await run(
            admin, "SELECT STATE FROM information_schema.PROCESSLIST WHERE ID = %s", [thread_id]
        )
        return bool(rows) and rows[0][0] == state

    await _until(reached, f"thread {thread_id} in state {state!r}")


# ------------------------------------------------------------------ cancellation


async def test_a_holder_cancelled_mid_statement_has_its_server_thread_killed(
    mariadb_url: str, admin: asyncmy.Connection
) -> None:
    """asyncmy closes a connection whose read was cancelled, but the server would run the
    statement on, holding the transaction's row locks: here a lock wait, which would last
    ``innodb_lock_wait_timeout`` (50 s). The driver kills the thread before the pool drops it."""
    table = f"aiodbpool.mysql_locks_{uuid.uuid4().hex[:8]}"
    await run(admin, f"CREATE TABLE {table} (id integer PRIMARY KEY)")
    await run(admin, f"INSERT INTO {table} VALUES (1), (2)")
    await run(admin, "BEGIN")
    await run(admin, f"SELECT id FROM {table} WHERE id = 1 FOR UPDATE")
    async with Pool(MySQLDriver(mariadb_url), max_size=2) as pool:
        holder_thread: list[int] = []

        async def hold() -> None:
            async with pool.acquire() as conn:
                holder_thread.append(conn.thread_id())
                await run(conn, "BEGIN")
                await run(conn, f"SELECT id FROM {table} WHERE id = 2 FOR UPDATE")
                await run(conn, f"SELECT id FROM {table} WHERE id = 1 FOR UPDATE")  # waits

        holder = asyncio.ensure_future(hold())
        await wait_until(lambda: holder_thread, timeout=10)

        async def waits_for_the_lock() -> bool:
            # (The statement runs until it gets the lock, for up to 50 s: this is where it waits.)
            rows = await run(
                admin,
                "SELECT 1 FROM information_schema.PROCESSLIST WHERE ID = %s AND INFO = %s",
                [*holder_thread, f"SELECT id FROM {table} WHERE id = 1 FOR UPDATE"],
            )
            return bool(rows)

        await _until(waits_for_the_lock, "the holder to wait for the row lock")
        holder.cancel()
        with pytest.raises(asyncio.CancelledError):
            await holder

        async def thread_gone() -> bool:
            return not await thread_running(admin, holder_thread[0])

        await _until(thread_gone, "the cancelled statement's server thread to end")
        driver = pool.driver
        assert isinstance(driver, MySQLDriver)
        async with pool.acquire() as conn, driver.transaction(conn):
            # The row lock went with the killed thread.
            assert await run(conn, f"SELECT id FROM {table} WHERE id = 2 FOR UPDATE") == [(2,)]
        stats = pool.stats()
        assert (stats.in_use, stats.discarded) == (0, 1)
    await run(admin, "ROLLBACK")
    await run(admin, f"DROP TABLE {table}")
