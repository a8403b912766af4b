"""The pool on a real PostgreSQL server that misbehaves: many tasks, killed backends, a restart,
and connects that cannot succeed. Every test ends with the server showing only what the pool
holds.

Recovery times are measured and printed (``pytest -s`` shows them); the assertions use bounds
generous enough for a loaded two-core machine.
"""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import Awaitable, Callable

import asyncpg
import pytest
from tally import POSTGRES_OUTAGE_ERRORS, Tally, restart_under_load

from aiodbpool import Pool, PoolConnectError, create_pool
from aiodbpool.integrations.testing import PostgresServer

# No single operation may take longer than this, outage or not.
OPERATION_BOUND = 20.0


def _app_name() -> str:
    return f"aiodbpool-test-{uuid.uuid4().hex[:12]}"


def _pool(dsn: str, app_name: str, **options: object) -> Pool[asyncpg.Connection]:
    return create_pool(dsn, server_settings={"application_name": app_name}, **options)


async def _count_sessions(dsn: str, app_name: str) -> int:
    admin = await asyncpg.connect(dsn)
    try:
        count: int = await admin.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", app_name
        )
        return count
    finally:
        await admin.close()


async def _server_shows(dsn: str, app_name: str, expected: int) -> None:
    """Wait until the server counts ``expected`` sessions of the pool (backends end a moment
    after their socket closes)."""
    deadline = time.monotonic() + 15
    while (count := await _count_sessions(dsn, app_name)) != expected:
        if time.monotonic() > deadline:
            pytest.fail(f"the server shows {count} sessions of the pool, expected {expected}")
        await asyncio.sleep(0.05)


async def _terminate_backends(dsn: str, app_name: str) -> int:
    admin = await asyncpg.connect(dsn)
    try:
        killed: int = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = $1",
            app_name,
        )
        return killed
    finally:
        await admin.close()


async def _bounded(operation: Callable[[], Awaitable[object]]) -> BaseException | None:
    """Run one operation; return its error if it is an allowed outage error. Fail on a hang."""
    try:
        async with asyncio.timeout(OPERATION_BOUND):
            await operation()
    except TimeoutError:
        pytest.fail(f"an operation took longer than {OPERATION_BOUND}s")
    except POSTGRES_OUTAGE_ERRORS as error:
        return error
    return None


# ------------------------------------------------------------------ the size bound


async def test_the_size_bound_holds_under_100_concurrent_tasks(postgres_url: str) -> None:
    app_name = _app_name()
    max_size = 10
    pool = _pool(postgres_url, app_name, max_size=max_size)
    backends: set[int] = set()
    peak_sessions = 0
    monitor = await asyncpg.connect(postgres_url)
    done = asyncio.Event()

    async def watch_the_server() -> None:
        nonlocal peak_sessions
        while not done.is_set():
            seen = await monitor.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", app_name
            )
            peak_sessions = max(peak_sessions, seen)

    async def work() -> None:
        for _ in range(5):
            async with pool.acquire() as conn:
                backends.add(await conn.fetchval("SELECT pg_backend_pid()"))
                await conn.execute("SELECT pg_sleep(0.002)")

    async with pool:
        watcher = asyncio.ensure_future(watch_the_server())
        await asyncio.gather(*(work() for _ in range(100)))
        done.set()
        await watcher
        stats = pool.stats()
        assert stats.size <= max_size
        assert stats.in_use == 0
    await monitor.close()
    assert len(backends) <= max_size
    assert 0 < peak_sessions <= max_size
    await _server_shows(postgres_url, app_name, 0)


# ------------------------------------------------------------------ killed backends


async def test_killed_idle_backends_are_never_handed_out_with_validation_on(
    postgres_url: str,
) -> None:
    app_name = _app_name()
    pool = _pool(postgres_url, app_name, max_size=5, validate_after_idle=0)
    async with pool:
        held = [await pool.acquire() for _ in range(5)]
        for conn in held:
            await pool.release(conn)
        assert await _terminate_backends(postgres_url, app_name) == 5
        started = time.monotonic()
        for _ in range(20):  # every one gets a live connection, none an error
            async with pool.acquire() as conn:
                assert await conn.fetchval("SELECT 1") == 1
        recovered = time.monotonic() - started
        stats = pool.stats()
        assert stats.discarded >= 5
        await _server_shows(postgres_url, app_name, stats.size)
    print(f"\n20 requests after killing 5 idle backends (validation on): {recovered * 1000:.0f} ms")
    await _server_shows(postgres_url, app_name, 0)


async def test_with_validation_off_only_the_holder_of_a_killed_backend_fails(
    postgres_url: str,
) -> None:
    app_name = _app_name()
    pool = _pool(postgres_url, app_name, max_size=1, validate_after_idle=None)
    async with pool:
        conn = await pool.acquire()
        assert await _terminate_backends(postgres_url, app_name) == 1
        with pytest.raises(POSTGRES_OUTAGE_ERRORS) as caught:
            await conn.fetchval("SELECT 1")
        print(f"\nthe holder of the killed backend got: {caught.value!r}")
        await pool.release(conn)
        assert pool.stats().size == 0  # discarded, not returned
        async with pool.acquire() as fresh:
            assert await fresh.fetchval("SELECT 1") == 1

        # An idle connection whose backend is killed: at most the first request fails.
        assert await _terminate_backends(postgres_url, app_name) == 1
        failures = 0
        for _ in range(5):
            error = await _bounded(lambda: _select_one(pool))
            failures += error is not None
        assert failures <= 1
    await _server_shows(postgres_url, app_name, 0)


async def _select_one(pool: Pool[asyncpg.Connection]) -> None:
    async with pool.acquire() as conn:
        await conn.fetchval("SELECT 1")


# ------------------------------------------------------------------ a server restart


@pytest.mark.slow
async def test_the_pool_recovers_from_a_server_restart_under_load(
    postgres_server: PostgresServer,
) -> None:
    """Scenario: 50 tasks query continuously while the server restarts."""
    app_name = _app_name()
    pool = _pool(postgres_server.dsn, app_name, max_size=10, acquire_timeout=5, connect_timeout=5)
    tally = Tally("database restart under load", allowed=POSTGRES_OUTAGE_ERRORS)

    async with pool:
        restart = await restart_under_load(
            postgres_server, tally, lambda: _select_one(pool), bound=OPERATION_BOUND
        )
        stats = pool.stats()
        assert stats.in_use == 0
        await _server_shows(postgres_server.dsn, app_name, stats.size)
    await _server_shows(postgres_server.dsn, app_name, 0)
    tally.report(
        faults=f"pg_ctl restart -m fast ({restart.restart_ms:.0f} ms), 50 tasks",
        leaked=0,
        recovery=f"{restart.recovery * 1000:.0f} ms after the server was back",
    )
    assert tally.hung == 0
    assert restart.recovery < 10
    # Once the pool serves again, it serves: no request begun after that fails.
    assert restart.failures_after_recovery() == []


# ------------------------------------------------------------------ connects that cannot succeed


async def test_a_wrong_port_is_a_quick_connect_error(postgres_server: PostgresServer) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    dsn = postgres_server.dsn.replace(f":{postgres_server.port}/", f":{closed_port}/")
    pool = create_pool(dsn, connect_timeout=10)
    async with pool:
        started = time.monotonic()
        with pytest.raises(PoolConnectError) as caught:
            await pool.acquire()
        elapsed = time.monotonic() - started
    assert isinstance(caught.value.__cause__, OSError)
    assert elapsed < 5, f"a refused connection took {elapsed:.2f}s to report"


async def test_a_wrong_password_is_a_quick_connect_error(postgres_server: PostgresServer) -> None:
    dsn = postgres_server.dsn.replace(f":{postgres_server.password}@", ":not-the-right-one@")
    pool = create_pool(dsn, connect_timeout=10)
    async with pool:
        started = time.monotonic()
        with pytest.raises(PoolConnectError, match="password authentication failed") as caught:
            await pool.acquire()
        elapsed = time.monotonic() - started
        assert pool.stats().size == 0
    assert isinstance(caught.value.__cause__, asyncpg.InvalidPasswordError)
    assert "not-the-right-one" not in str(caught.value)
    assert elapsed < 5, f"a refused password took {elapsed:.2f}s to report"
