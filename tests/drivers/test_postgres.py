"""The PostgreSQL driver against a real server: URLs, options, resets and cancellation.

Server-wide behaviour (the size bound seen from ``pg_stat_activity``, killed backends, restarts,
refused connects) is in ``tests/scenarios/test_postgres_recovery.py``; PgBouncer in
``test_postgres_pgbouncer.py``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from helpers import finishes_at_once

from aiodbpool import Pool, PoolConnectError, create_pool, raw_connection
from aiodbpool.drivers.postgres import PostgresDriver, from_url
from aiodbpool.integrations.testing import PostgresServer

# A statement long enough to be cancelled halfway, short enough not to slow the suite if a
# cancellation were lost (the tests also check that the server stopped running it).
LONG_QUERY = "SELECT pg_sleep(30)"


def _app_name() -> str:
    """A unique application_name, to find a test's own sessions in pg_stat_activity."""
    return f"aiodbpool-test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def pool(postgres_url: str) -> AsyncIterator[Pool[asyncpg.Connection]]:
    """One connection, so every acquire gets the connection the previous user returned."""
    pool: Pool[asyncpg.Connection] = Pool(PostgresDriver(postgres_url), max_size=1)
    await pool.open()
    yield pool
    await pool.close()


async def _sessions(dsn: str, app_name: str, *, where: str = "true") -> int:
    admin = await asyncpg.connect(dsn)
    try:
        count: int = await admin.fetchval(
            f"SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND {where}",
            app_name,
        )
        return count
    finally:
        await admin.close()


# ------------------------------------------------------------------ create_pool and options


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
async def test_create_pool_hands_out_asyncpg_connections(postgres_url: str, scheme: str) -> None:
    url = scheme + postgres_url[postgres_url.index("://") :]
    pool = create_pool(url, max_size=2, command_timeout=30)
    assert isinstance(pool.driver, PostgresDriver)
    async with pool, pool.acquire() as conn:
        assert isinstance(conn, asyncpg.Connection)
        assert await conn.fetchval("SELECT 40 + 2") == 42


async def test_a_password_never_shows_in_reprs_or_errors(postgres_server: PostgresServer) -> None:
    secret = postgres_server.password
    pool = create_pool(postgres_server.dsn)
    assert secret not in repr(pool)
    assert secret not in repr(pool.driver)
    assert "***" in repr(pool.driver)
    # Wrong port: the connect error, its message and its cause name no password.
    wrong_port = postgres_server.dsn.replace(f":{postgres_server.port}/", f":{_free_port()}/")
    failing = create_pool(wrong_port, connect_timeout=5)
    async with failing:
        with pytest.raises(PoolConnectError) as caught:
            await failing.acquire()
    assert secret not in str(caught.value)
    assert secret not in repr(caught.value.__cause__)


def test_options_are_checked_when_the_pool_is_created(postgres_url: str) -> None:
    with pytest.raises(TypeError, match=r"unknown PostgreSQL driver option.*statment_cache_size"):
        create_pool(postgres_url, statment_cache_size=0)
    with pytest.raises(ValueError, match="reset must be 'transaction' or 'full', got 'none'"):
        create_pool(postgres_url, reset="none")
    with pytest.raises(TypeError, match="init must be an async function"):
        PostgresDriver(postgres_url, init="SET search_path TO app")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="password must be a string or a function"):
        PostgresDriver(postgres_url, password=1234)  # type: ignore[arg-type]


def test_a_malformed_postgres_url_is_refused_without_its_password() -> None:
    with pytest.raises(ValueError, match="not a number") as caught:
        create_pool("postgresql://app:hunter2@db:54x2/app")
    assert "hunter2" not in str(caught.value)
    with pytest.raises(ValueError, match="not a PostgreSQL URL"):
        from_url("mysql://app:hunter2@db/app")
    with pytest.raises(TypeError, match="dsn must be a string"):
        PostgresDriver(b"postgresql://db/app")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("url", "mistake"),
    [
        ("postgresql://app:hunter2@db:99999/app", "the port in .* is not a number"),
        ("postgresql://app:hunter2@db1:5432,db2:x/app", "the port in .* is not a number"),
        ("postgresql://app:hunter2@[::1]:port/app", "the port in .* is not a number"),
        ("postgresql://app:hunter2@db host/app", "the host in .* contains whitespace"),
        ("postgresql://app:hunter2@db1,db\t2/app", "control character"),
        ("postgresql://app:hunter2@db/app?sslmode=requires", "sslmode in .* must be one of"),
        ("postgresql://app:hunter2@db/app?target_session_attrs=master", "target_session_attrs"),
    ],
)
def test_a_bad_host_or_port_is_refused_at_once(url: str, mistake: str) -> None:
    with pytest.raises(ValueError, match=mistake) as caught:
        create_pool(url)
    assert "hunter2" not in str(caught.value)


async def test_a_dsn_with_several_hosts_tries_them_in_turn(postgres_server: PostgresServer) -> None:
    """asyncpg's failover form, ``host1:port1,host2:port2``: the first host is down, the pool
    connects to the second."""
    here = f"{postgres_server.host}:{postgres_server.port}"
    url = postgres_server.dsn.replace(here, f"{postgres_server.host}:{_free_port()},{here}")
    assert url.count(",") == 1
    async with create_pool(url, max_size=1) as pool, pool.acquire() as conn:
        assert await conn.fetchval("SELECT 1") == 1


def test_a_driver_without_a_dsn_says_where_its_settings_come_from() -> None:
    driver = PostgresDriver(host="db.internal", reset="full")
    assert repr(driver) == "<PostgresDriver (PG* environment) reset='full'>"
    assert driver.reset_mode == "full"


async def test_connect_options_pass_through_to_asyncpg(postgres_url: str) -> None:
    app_name = _app_name()
    pool = create_pool(
        postgres_url,
        server_settings={"application_name": app_name, "search_path": "pg_catalog"},
        statement_cache_size=0,
        command_timeout=0.5,
    )
    async with pool, pool.acquire() as conn:
        assert await conn.fetchval("SHOW search_path") == "pg_catalog"
        assert await _sessions(postgres_url, app_name) == 1
        # command_timeout applies to every statement of the connection.
        with pytest.raises(asyncio.TimeoutError):
            await conn.execute("SELECT pg_sleep(10)")


# ------------------------------------------------------------------ password and init callbacks


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

    dsn_without_password = postgres_server.dsn.replace(f":{postgres_server.password}@", "@")
    assert postgres_server.password not in dsn_without_password
    for password in (current_password, current_token):
        pool = create_pool(dsn_without_password, password=password, max_size=3)
        async with pool:
            held = [await pool.acquire() for _ in range(3)]
            for conn in held:
                await pool.release(conn)
    assert asked == ["sync"] * 3 + ["async"] * 3


async def test_a_rotated_password_is_used_by_the_next_connect(
    postgres_server: PostgresServer,
) -> None:
    role = f"rotating_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(postgres_server.admin_dsn)
    await admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'first-token'")
    try:
        token = "first-token"
        pool = create_pool(
            f"postgresql://{role}@{postgres_server.host}:{postgres_server.port}/{postgres_server.database}",
            password=lambda: token,
            max_size=2,
        )
        async with pool:
            async with pool.acquire() as first:
                await admin.execute(f"ALTER ROLE {role} PASSWORD 'second-token'")
                token = "second-token"
                async with pool.acquire() as second:  # a new connection, with the new token
                    assert await second.fetchval("SELECT current_user") == role
                assert await first.fetchval("SELECT 1") == 1  # the old one stays logged in
            token = "stale-token"
            pool.expire()  # the next acquire must connect
            with pytest.raises(PoolConnectError) as caught:
                await pool.acquire()
            assert isinstance(caught.value.__cause__, asyncpg.InvalidPasswordError)
            assert "token" not in str(caught.value)
    finally:
        await admin.execute(f"DROP ROLE IF EXISTS {role}")
        await admin.close()


async def test_init_runs_once_on_each_new_connection(postgres_url: str) -> None:
    seen: list[int] = []

    async def init(conn: asyncpg.Connection) -> None:
        await conn.execute("SET search_path TO pg_catalog, public")
        await conn.set_type_codec(
            "json", encoder=str, decoder=lambda text: f"decoded {text}", schema="pg_catalog"
        )
        seen.append(conn.get_server_pid())

    pool = create_pool(postgres_url, init=init, max_size=2)
    async with pool:
        for _ in range(3):
            async with pool.acquire() as a, pool.acquire() as b:
                for conn in (a, b):
                    assert await conn.fetchval("SHOW search_path") == "pg_catalog, public"
                    assert await conn.fetchval("SELECT '[1]'::json") == "decoded [1]"
    assert len(seen) == 2  # reused afterwards: the default reset keeps session state


async def test_a_failing_init_fails_the_connect_and_leaves_no_session(postgres_url: str) -> None:
    app_name = _app_name()

    async def init(conn: asyncpg.Connection) -> None:
        await conn.execute("SET search_path TO no_such_schema_is_fine")
        raise RuntimeError("codec registration failed")

    pool = create_pool(postgres_url, init=init, server_settings={"application_name": app_name})
    async with pool:
        with pytest.raises(PoolConnectError, match="codec registration failed"):
            await pool.acquire()
        assert pool.stats().size == 0
    await wait_until_sessions(postgres_url, app_name, 0)


async def wait_until_sessions(
    dsn: str, app_name: str, expected: int, *, where: str = "true"
) -> None:
    """Poll pg_stat_activity: a closed socket takes a moment to end its backend."""
    deadline = time.monotonic() + 10
    while (count := await _sessions(dsn, app_name, where=where)) != expected:
        if time.monotonic() > deadline:
            pytest.fail(f"{count} sessions named {app_name}, expected {expected}")
        await asyncio.sleep(0.05)


# ------------------------------------------------------------------ reset="transaction"


async def test_a_failed_transaction_is_rolled_back(pool: Pool[asyncpg.Connection]) -> None:
    async with pool.acquire() as conn:
        await conn.execute("BEGIN")
        with pytest.raises(asyncpg.DivisionByZeroError):
            await conn.execute("SELECT 1 / 0")
        with pytest.raises(asyncpg.InFailedSQLTransactionError):
            await conn.execute("SELECT 1")
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT 1") == 1


async def test_an_unfinished_transaction_object_does_not_leak(
    pool: Pool[asyncpg.Connection],
) -> None:
    async with pool.acquire() as conn:
        started = conn.transaction()
        await started.start()  # and never committed nor rolled back
    async with pool.acquire() as conn:
        async with conn.transaction():  # would be a SAVEPOINT outside a transaction otherwise
            assert await conn.fetchval("SELECT 1") == 1
        assert not conn.is_in_transaction()


async def test_session_state_survives_the_default_reset(pool: Pool[asyncpg.Connection]) -> None:
    async with pool.acquire() as conn:
        await conn.execute("SET statement_timeout TO '42s'")
        # A change of the session opens no transaction: its reset has nothing to send.
        assert finishes_at_once(pool.driver.reset(conn))
    async with pool.acquire() as conn:
        assert await conn.fetchval("SHOW statement_timeout") == "42s"


# ------------------------------------------------------------------ reset="full"


async def test_a_full_reset_clears_session_state(postgres_url: str) -> None:
    pool = create_pool(postgres_url, reset="full", max_size=1)
    async with pool:
        async with pool.acquire() as conn:
            await conn.execute("SET statement_timeout TO '42s'")
            await conn.add_listener("jobs", _on_notification)
            await conn.execute("SELECT pg_advisory_lock(4242)")
            await conn.execute("DECLARE held CURSOR WITH HOLD FOR SELECT 1")
            await conn.execute("BEGIN")
        async with pool.acquire() as conn:
            assert not conn.is_in_transaction()
            assert await conn.fetchval("SHOW statement_timeout") == "0"
            assert await conn.fetch("SELECT pg_listening_channels()") == []
            locks = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = $1"
            assert await conn.fetchval(locks, conn.get_server_pid()) == 0
            cursors = "SELECT count(*) FROM pg_cursors WHERE name = 'held'"
            assert await conn.fetchval(cursors) == 0


def _on_notification(*args: object) -> None:
    """A LISTEN callback; the full reset must drop it with the server-side registration."""


# ------------------------------------------------------------------ cancellation mid-query


@pytest.mark.parametrize("in_transaction", [False, True], ids=["autocommit", "in-transaction"])
@pytest.mark.parametrize("reset", ["transaction", "full"])
async def test_a_holder_cancelled_mid_query_leaves_a_usable_connection(
    postgres_url: str, in_transaction: bool, reset: str
) -> None:
    app_name = _app_name()
    pool = create_pool(
        postgres_url, max_size=1, reset=reset, server_settings={"application_name": app_name}
    )
    async with pool:

        async def hold() -> None:
            async with pool.acquire() as conn:
                if in_transaction:
                    await conn.execute("BEGIN")
                    await conn.execute("CREATE TEMP TABLE scratch (n int)")
                await conn.execute(LONG_QUERY)

        holder = asyncio.ensure_future(hold())
        await wait_until_sessions(postgres_url, app_name, 1, where=f"query = '{LONG_QUERY}'")
        started = time.monotonic()
        holder.cancel()
        with pytest.raises(asyncio.CancelledError):
            await holder
        async with pool.acquire() as conn:  # the same, single connection
            assert not conn.is_in_transaction()
            assert await conn.fetchval("SELECT 1") == 1
            if in_transaction:
                exists = "SELECT to_regclass('pg_temp.scratch') IS NOT NULL"
                assert await conn.fetchval(exists) is False  # rolled back
        recovered = time.monotonic() - started
        assert pool.stats().size == 1
        # The server stopped the statement instead of letting it run on.
        await wait_until_sessions(
            postgres_url, app_name, 0, where=f"query = '{LONG_QUERY}' AND state = 'active'"
        )
    print(f"\nthe next user had the connection {recovered * 1000:.1f} ms after the cancellation")
    assert recovered < 10, f"took {recovered:.2f}s to get the connection back"


async def test_a_cancellation_the_server_never_confirms_discards_the_connection(
    postgres_server: PostgresServer,
) -> None:
    app_name = _app_name()
    pool = create_pool(
        postgres_server.dsn,
        max_size=1,
        reset_timeout=0.2,
        server_settings={"application_name": app_name},
    )
    async with pool:
        conn = await pool.acquire()
        blocked = asyncio.ensure_future(conn.execute(LONG_QUERY))
        await wait_until_sessions(postgres_server.dsn, app_name, 1, where="state = 'active'")
        backend = conn.get_server_pid()
        raw = raw_connection(conn)  # what the lease stands for, to look at after the release
        # A frozen backend cannot act on the cancel request asyncpg sends when the query's
        # task is cancelled, so the cancellation is never confirmed.
        os.kill(backend, signal.SIGSTOP)
        try:
            blocked.cancel()
            with pytest.raises(asyncio.CancelledError):
                await blocked
            started = time.monotonic()
            await pool.release(conn)
            waited = time.monotonic() - started
            assert pool.stats().discarded == 1
            assert raw.is_closed()
        finally:
            os.kill(backend, signal.SIGCONT)
        assert waited < 5, f"release took {waited:.2f}s with a reset_timeout of 0.2s"
        async with pool.acquire() as fresh:
            assert raw_connection(fresh) is not raw
            assert fresh.get_server_pid() != backend
            assert await fresh.fetchval("SELECT 1") == 1


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


# ------------------------------------------------------------------ connect arguments changed


async def test_set_connect_args_applies_to_the_connects_that_follow(
    postgres_server: PostgresServer,
) -> None:
    driver = PostgresDriver(postgres_server.dsn, server_settings={"application_name": "before"})
    async with Pool(driver, max_size=2) as pool:
        async with pool.acquire() as conn:
            assert await conn.fetchval("SHOW application_name") == "before"

        driver.set_connect_args(postgres_server.dsn, server_settings={"application_name": "after"})
        async with pool.acquire() as conn:  # the connection opened before keeps its settings
            assert await conn.fetchval("SHOW application_name") == "before"
        pool.expire()  # replace the connections opened with the old arguments
        async with pool.acquire() as conn:
            assert await conn.fetchval("SHOW application_name") == "after"


async def test_a_password_set_later_is_scrubbed_and_replaced(
    postgres_server: PostgresServer,
) -> None:
    dsn = postgres_server.dsn
    driver = PostgresDriver(dsn)
    wrong = "a-wrong-password-set-later"
    async with Pool(driver, breaker_threshold=None) as pool:
        driver.set_connect_args(dsn, password=wrong)
        with pytest.raises(PoolConnectError) as refused:
            await pool.acquire()
        assert isinstance(refused.value.__cause__, asyncpg.InvalidPasswordError)
        assert wrong not in repr(driver)

        driver.set_connect_args(dsn, password=postgres_server.password)
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT 1") == 1


def test_bad_connect_args_are_refused_and_change_nothing() -> None:
    driver = PostgresDriver("postgresql://app@db/shop", command_timeout=5)
    with pytest.raises(TypeError, match="unknown PostgreSQL driver option"):
        driver.set_connect_args("postgresql://app@db2/shop", no_such_option=1)
    with pytest.raises(ValueError, match="not a PostgreSQL URL"):
        driver.set_connect_args("mysql://app@db/shop")
    assert repr(driver) == "<PostgresDriver 'postgresql://app@db/shop' reset='transaction'>"
