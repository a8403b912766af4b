"""The psycopg driver on a real PostgreSQL server that misbehaves: killed backends and a restart
under load, as ``test_postgres_recovery.py`` runs them with asyncpg. Every test ends with the
server showing only what the pool holds.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import asyncpg
import psycopg
import pytest
from helpers import wait_until
from tally import Tally, server_shows, unique_app_name

from aiodbpool import Pool, PoolError, create_pool
from aiodbpool.integrations.testing import PostgresServer

PSYCOPG_OUTAGE_ERRORS: tuple[type[BaseException], ...] = (
    PoolError,
    psycopg.OperationalError,  # the server ended the session, or cannot be reached yet
    psycopg.InterfaceError,  # the connection is closed
    ConnectionError,
)
"""What an operation through the psycopg driver may fail with while the server is away."""

OPERATION_BOUND = 20.0
"""No single operation may take longer than this, outage or not."""


def _pool(dsn: str, app_name: str, **options: Any) -> Pool[psycopg.AsyncConnection[Any]]:
    url = "postgresql+psycopg://" + dsn.partition("://")[2]
    return create_pool(url, application_name=app_name, **options)


async def _select_one(pool: Pool[psycopg.AsyncConnection[Any]]) -> None:
    async with pool.acquire() as conn:
        cursor = await conn.execute("SELECT 1")
        assert await cursor.fetchone() == (1,)


async def _terminate_backends(dsn: str, app_name: str) -> int:
    admin = await asyncpg.connect(dsn)
    try:
        killed: int = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity "
            "WHERE application_name = $1",
            app_name,
        )
        return killed
    finally:
        await admin.close()


async def _sessions_are(dsn: str, app_name: str, expected: int) -> None:
    sessions, _ = await server_shows(dsn, app_name, lambda view: view[0] == expected)
    assert sessions == expected


async def test_killed_idle_backends_are_never_handed_out_with_validation_on(
    postgres_url: str,
) -> None:
    app_name = unique_app_name("psycopg-killed")
    pool = _pool(postgres_url, app_name, max_size=5, validate_after_idle=0)
    async with pool:
        held = [await pool.acquire() for _ in range(5)]
        for conn in held:
            await pool.release(conn)
        assert await _terminate_backends(postgres_url, app_name) == 5
        for _ in range(20):  # every one gets a live connection, none an error
            await _select_one(pool)
        stats = pool.stats()
        assert stats.discarded >= 5
        await _sessions_are(postgres_url, app_name, stats.size)
    await _sessions_are(postgres_url, app_name, 0)


@pytest.mark.slow
async def test_the_pool_recovers_from_a_server_restart_under_load(
    postgres_server: PostgresServer,
) -> None:
    """Scenario: 50 tasks query continuously through the psycopg driver while the server
    restarts."""
    app_name = unique_app_name("psycopg-restart")
    pool = _pool(postgres_server.dsn, app_name, max_size=10, acquire_timeout=5, connect_timeout=5)
    tally = Tally("database restart under load, psycopg", allowed=PSYCOPG_OUTAGE_ERRORS)
    successes: list[float] = []  # when each successful operation ended
    failures: list[float] = []  # when each failed operation began
    warmed_up = asyncio.Event()
    served_again = asyncio.Event()
    stop = asyncio.Event()
    server_back = math.inf

    async def client() -> None:
        while not stop.is_set():
            began = time.monotonic()
            succeeded = await tally.run(lambda: _select_one(pool), bound=OPERATION_BOUND)
            if succeeded:
                successes.append(time.monotonic())
                if successes[-1] > server_back:
                    served_again.set()
            else:
                failures.append(began)
            if tally.attempted >= 200:
                warmed_up.set()
            if not succeeded:
                await asyncio.sleep(0.01)  # a client backs off a little after an error

    async with pool:
        clients = [asyncio.ensure_future(client()) for _ in range(50)]
        await warmed_up.wait()
        restart_began = time.monotonic()
        await asyncio.to_thread(postgres_server.restart)
        server_back = time.monotonic()
        async with asyncio.timeout(30):
            await served_again.wait()
        # The clients run on until 200 more operations have been served after the first.
        served_before = len(successes)
        await wait_until(lambda: len(successes) >= served_before + 200, timeout=30)
        stop.set()
        await asyncio.gather(*clients)

        first_success = min(when for when in successes if when > server_back)
        recovery = first_success - server_back
        stats = pool.stats()
        assert stats.in_use == 0
        await _sessions_are(postgres_server.dsn, app_name, stats.size)
    await _sessions_are(postgres_server.dsn, app_name, 0)
    tally.report(
        faults=f"pg_ctl restart -m fast ({(server_back - restart_began) * 1000:.0f} ms), 50 tasks",
        leaked=0,
        recovery=f"{recovery * 1000:.0f} ms after the server was back",
    )
    assert tally.hung == 0
    assert recovery < 10
    # Once the pool serves again, it serves: no request begun after that fails.
    assert [began for began in failures if began > first_success] == []
