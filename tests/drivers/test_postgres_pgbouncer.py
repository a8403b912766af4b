"""The pool behind a real PgBouncer in transaction pooling mode.

In that mode consecutive transactions of one client connection may run on different server
connections, so nothing may rely on session state: asyncpg's statement cache is turned off
(``statement_cache_size=0``), statements with parameters run inside transactions (PgBouncer
before 1.21 cannot keep an unnamed prepared statement between two transactions), and the
driver's default reset, which only ever rolls back, works unchanged.
"""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from aiodbpool import Pool, create_pool


def _pool(pgbouncer_dsn: str, **options: object) -> Pool[asyncpg.Connection]:
    return create_pool(pgbouncer_dsn, statement_cache_size=0, **options)


async def test_many_tasks_work_through_pgbouncer(pgbouncer_dsn: str) -> None:
    pool = _pool(pgbouncer_dsn, max_size=10, validate_after_idle=0)
    async with pool:
        async with pool.acquire() as conn:
            await conn.execute(
                "DROP TABLE IF EXISTS bounced; CREATE TABLE bounced (task int, step int)"
            )

        async def work(task: int) -> None:
            for step in range(5):
                async with pool.acquire() as conn, conn.transaction():
                    assert await conn.fetchval("SELECT $1::int * 2", task) == task * 2
                    await conn.execute("INSERT INTO bounced VALUES ($1, $2)", task, step)
                async with pool.acquire() as conn:
                    await conn.execute("SELECT 1")  # the simple protocol needs no transaction

        await asyncio.gather(*(work(task) for task in range(50)))
        async with pool.acquire() as conn:
            async with conn.transaction():
                assert await conn.fetchval("SELECT count(*) FROM bounced") == 250
            await conn.execute("DROP TABLE bounced")
        stats = pool.stats()
        assert stats.in_use == 0
        assert stats.size <= 10


async def test_an_open_transaction_is_rolled_back_through_pgbouncer(pgbouncer_dsn: str) -> None:
    pool = _pool(pgbouncer_dsn, max_size=1)
    async with pool:
        async with pool.acquire() as conn:
            await conn.execute("DROP TABLE IF EXISTS abandoned; CREATE TABLE abandoned (n int)")
        async with pool.acquire() as conn:
            await conn.execute("BEGIN; INSERT INTO abandoned VALUES (1)")
            assert conn.is_in_transaction()
        async with pool.acquire() as conn:
            assert not conn.is_in_transaction()
            async with conn.transaction():
                assert await conn.fetchval("SELECT count(*) FROM abandoned") == 0
            await conn.execute("DROP TABLE abandoned")


async def test_a_holder_cancelled_mid_query_through_pgbouncer(pgbouncer_dsn: str) -> None:
    pool = _pool(pgbouncer_dsn, max_size=1)
    running = asyncio.Event()

    async def hold() -> None:
        async with pool.acquire() as conn:
            await conn.execute("BEGIN")
            running.set()
            await conn.execute("SELECT pg_sleep(30)")

    async with pool:
        holder = asyncio.ensure_future(hold())
        await running.wait()
        await asyncio.sleep(0.2)  # let the statement reach the server
        holder.cancel()
        with pytest.raises(asyncio.CancelledError):
            await holder
        async with asyncio.timeout(15), pool.acquire() as conn:
            assert not conn.is_in_transaction()
            async with conn.transaction():
                assert await conn.fetchval("SELECT 1") == 1
