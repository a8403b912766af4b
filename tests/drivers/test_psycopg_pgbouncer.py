"""The psycopg driver behind a real PgBouncer in transaction pooling mode.

In that mode consecutive transactions of one client connection may run on different server
connections, so nothing may rely on session state. psycopg prepares a query on the server once
it has run ``prepare_threshold`` times (5 by default), and PgBouncer before 1.21 cannot follow a
prepared statement from one server connection to the next: ``prepare_threshold=None`` turns
that off. Statements with parameters then go in one message sequence that PgBouncer keeps on
one server connection, inside a transaction or not. The driver's reset, which only ever rolls
back, works unchanged.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import psycopg
import pytest
from psycopg.pq import TransactionStatus

from aiodbpool import Pool, create_pool


def _pool(pgbouncer_dsn: str, **options: object) -> Pool[psycopg.AsyncConnection[tuple[int]]]:
    url = "postgresql+psycopg://" + pgbouncer_dsn.partition("://")[2]
    return create_pool(url, prepare_threshold=None, **options)


async def _fetchval(conn: psycopg.AsyncConnection[tuple[int]], sql: str, *params: object) -> int:
    cursor = await conn.execute(sql, params or None)
    row = await cursor.fetchone()
    assert row is not None
    return row[0]


async def test_many_tasks_work_through_pgbouncer(pgbouncer_dsn: str) -> None:
    pool = _pool(pgbouncer_dsn, max_size=10, validate_after_idle=0)
    async with pool:
        async with pool.acquire() as conn:
            await conn.execute("DROP TABLE IF EXISTS bounced_psycopg")
            await conn.execute("CREATE TABLE bounced_psycopg (task int, step int)")

        async def work(task: int) -> None:
            for step in range(8):  # more runs of each query than psycopg's prepare threshold
                async with pool.acquire() as conn, conn.transaction():
                    assert await _fetchval(conn, "SELECT %s::int * 2", task) == task * 2
                    await conn.execute("INSERT INTO bounced_psycopg VALUES (%s, %s)", [task, step])
                async with pool.acquire() as conn:  # parameters outside a transaction too
                    assert await _fetchval(conn, "SELECT %s::int + 1", step) == step + 1

        await asyncio.gather(*(work(task) for task in range(50)))
        async with pool.acquire() as conn:
            assert await _fetchval(conn, "SELECT count(*) FROM bounced_psycopg") == 400
            await conn.execute("DROP TABLE bounced_psycopg")
        stats = pool.stats()
        assert stats.in_use == 0
        assert stats.size <= 10


async def test_an_open_transaction_is_rolled_back_through_pgbouncer(pgbouncer_dsn: str) -> None:
    pool = _pool(pgbouncer_dsn, max_size=1)
    async with pool:
        async with pool.acquire() as conn:
            await conn.execute("DROP TABLE IF EXISTS abandoned_psycopg")
            await conn.execute("CREATE TABLE abandoned_psycopg (n int)")
        async with pool.acquire() as conn:
            await conn.execute("BEGIN")
            await conn.execute("INSERT INTO abandoned_psycopg VALUES (1)")
        async with pool.acquire() as conn:
            assert conn.info.transaction_status is TransactionStatus.IDLE
            assert await _fetchval(conn, "SELECT count(*) FROM abandoned_psycopg") == 0
            await conn.execute("DROP TABLE abandoned_psycopg")
        assert pool.stats().discarded == 0


async def _wait_for_sessions_running(pgbouncer_dsn: str, query: str, expected: int) -> None:
    """Poll pg_stat_activity (through PgBouncer) until ``expected`` sessions run ``query``."""
    deadline = time.monotonic() + 10
    async with await psycopg.AsyncConnection.connect(
        pgbouncer_dsn, autocommit=True, prepare_threshold=None
    ) as admin:
        sql = "SELECT count(*)::int FROM pg_stat_activity WHERE query = %s AND state = 'active'"
        while (count := await _fetchval(admin, sql, query)) != expected:
            if time.monotonic() > deadline:
                pytest.fail(f"{count} sessions run {query!r}, expected {expected}")
            await asyncio.sleep(0.05)


async def test_a_holder_cancelled_mid_query_through_pgbouncer(pgbouncer_dsn: str) -> None:
    pool = _pool(pgbouncer_dsn, max_size=1)
    query = f"SELECT pg_sleep(30) /* {uuid.uuid4().hex} */"

    async def hold() -> None:
        async with pool.acquire() as conn:
            await conn.execute("BEGIN")
            await conn.execute(query)

    async with pool:
        holder = asyncio.ensure_future(hold())
        await _wait_for_sessions_running(pgbouncer_dsn, query, 1)
        holder.cancel()  # psycopg sends the cancel request through PgBouncer, and waits
        with pytest.raises(asyncio.CancelledError):
            await holder
        async with asyncio.timeout(15), pool.acquire() as conn:
            assert conn.info.transaction_status is TransactionStatus.IDLE
            async with conn.transaction():
                assert await _fetchval(conn, "SELECT 1") == 1
        assert pool.stats().created == 1  # cleaned and reused, not replaced
    await _wait_for_sessions_running(pgbouncer_dsn, query, 0)  # the server stopped it
