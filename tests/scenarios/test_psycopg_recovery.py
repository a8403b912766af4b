"""The psycopg driver on a real PostgreSQL server that misbehaves: killed backends and a restart
under load, as ``test_postgres_recovery.py`` runs them with asyncpg. Every test ends with the
server showing only what the pool holds.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import psycopg
import pytest
from tally import Tally, restart_under_load, server_shows, unique_app_name

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

    async with pool:
        restart = await restart_under_load(
            postgres_server, tally, lambda: _select_one(pool), bound=OPERATION_BOUND
        )
        stats = pool.stats()
        assert stats.in_use == 0
        await _sessions_are(postgres_server.dsn, app_name, stats.size)
    await _sessions_are(postgres_server.dsn, app_name, 0)
    tally.report(
        faults=f"pg_ctl restart -m fast ({restart.restart_ms:.0f} ms), 50 tasks",
        leaked=0,
        recovery=f"{restart.recovery * 1000:.0f} ms after the server was back",
    )
    assert tally.hung == 0
    assert restart.recovery < 10
    # Once the pool serves again, it serves: no request begun after that fails.
    assert restart.failures_after_recovery() == []
