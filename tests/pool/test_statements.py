"""One-line statements on the pool (``await pool.fetchval(...)``), as asyncpg users write them:
each borrows a connection, runs one statement, and gives it back, on a real PostgreSQL."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from helpers import check_books, wait_until

from aiodbpool import Pool, create_pool


async def test_each_statement_borrows_runs_and_gives_back(postgres_url: str) -> None:
    pool: Pool[asyncpg.Connection] = create_pool(postgres_url, max_size=2)
    async with pool:
        await pool.execute("CREATE TEMP TABLE IF NOT EXISTS t (n int)")  # (one session's)
        assert await pool.fetchval("SELECT $1::int + 1", 41) == 42
        assert await pool.fetchval("SELECT 1, 2", column=1) == 2
        row = await pool.fetchrow("SELECT $1::text AS word, 7 AS n", "hello")
        assert row is not None
        assert (row["word"], row["n"]) == ("hello", 7)
        assert await pool.fetchrow("SELECT 1 WHERE false") is None
        rows = await pool.fetch("SELECT g FROM generate_series(1, 3) AS g")
        assert [row["g"] for row in rows] == [1, 2, 3]
        assert await pool.execute("SELECT 1") == "SELECT 1"
        stats = pool.stats()
        assert (stats.in_use, stats.acquired) == (0, 7)
        check_books(pool)


async def test_executemany_and_a_statement_timeout(postgres_url: str) -> None:
    async with create_pool(postgres_url, max_size=1) as pool:
        async with pool.acquire() as conn:
            await conn.execute("CREATE TEMP TABLE many (n int)")
        await pool.executemany("INSERT INTO many VALUES ($1)", [(1,), (2,), (3,)])
        assert await pool.fetchval("SELECT sum(n) FROM many") == 6  # the same, only connection
        with pytest.raises(TimeoutError):
            await pool.fetchval("SELECT pg_sleep(10)", timeout=0.1)
        assert await pool.fetchval("SELECT 1") == 1  # the connection came back, usable
        check_books(pool)


async def test_concurrent_statements_share_the_pool(postgres_url: str) -> None:
    async with create_pool(postgres_url, max_size=2) as pool:
        answers = await asyncio.gather(*(pool.fetchval("SELECT $1::int", n) for n in range(20)))
        assert answers == list(range(20))
        assert pool.stats().size <= 2
        check_books(pool)


async def test_a_cancelled_statement_gives_its_connection_back(postgres_url: str) -> None:
    async with create_pool(postgres_url, max_size=1) as pool:
        sleeping = asyncio.create_task(pool.fetchval("SELECT pg_sleep(30)"))
        await wait_until(lambda: pool.stats().in_use == 1)
        sleeping.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sleeping
        assert await pool.fetchval("SELECT 2") == 2  # the one connection, back and reset
        check_books(pool)


async def test_a_driver_without_these_methods_is_told_so(tmp_path: Path) -> None:
    pool: Pool[Any] = create_pool(f"sqlite:///{tmp_path / 'app.db'}", name="lite")
    async with pool:
        with pytest.raises(TypeError, match=r"pool\.fetchval\(\) runs the connection's own"):
            await pool.fetchval("SELECT 1")
        assert pool.stats().in_use == 0  # the borrowed connection went back
