"""Borrowers cancelled the anyio way, as FastAPI and Starlette cancel them, on real databases.

anyio's cancel scopes cancel a task again at every await left inside a cancelled scope: the
``release`` at the end of ``async with pool.acquire()`` runs inside the scope, so a rollback it
awaited directly would be cancelled too, and every cancelled borrower's connection thrown away and
reopened. The pool runs the reset in a task of its own instead: the connection is rolled back
and kept, within ``reset_timeout``, and nothing leaks.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from helpers import check_books, wait_until

from aiodbpool import Pool, create_pool

BORROWERS = 20
LONG = 30.0
"""Longer than any test: a borrower that sleeps this long is always cancelled first."""


@pytest.fixture(params=["postgres", "sqlite"])
async def pool(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Pool[Any]]:
    if request.param == "postgres":
        url: str = request.getfixturevalue("postgres_url")
    else:
        url = f"sqlite:///{tmp_path / 'anyio.db'}"
    async with create_pool(url, min_size=1, max_size=2, acquire_timeout=LONG) as opened:
        async with opened.acquire() as conn:
            await conn.execute("CREATE TABLE IF NOT EXISTS notes (body TEXT)")
            await conn.execute("DELETE FROM notes")
        yield opened


async def _write_then_wait(pool: Pool[Any], wait: Callable[[], Any]) -> None:
    """Borrow, open a transaction and write in it, then wait to be cancelled."""
    async with pool.acquire() as conn:
        await conn.execute("BEGIN")
        await conn.execute("INSERT INTO notes VALUES ('never committed')")
        await wait()


async def _nothing_leaked_nor_lost(pool: Pool[Any], opened_before: int) -> None:
    """Every connection came back clean and pooled: no permit held, none discarded, no write."""
    await wait_until(lambda: pool.stats().in_use == 0, message="every reset finished")
    stats = pool.stats()
    assert (stats.discarded, stats.opening, stats.waiting) == (0, 0, 0), stats
    # (A borrower may come while the last reset still runs: then a second connection opens.)
    assert stats.created <= max(opened_before, stats.max_size), f"connections reopened: {stats}"
    assert stats.idle == stats.size
    check_books(pool)
    async with pool.acquire() as conn:
        count = await _count_notes(conn)
    assert count == 0  # every transaction was rolled back


async def _count_notes(conn: Any) -> int:
    if hasattr(conn, "fetchval"):  # asyncpg
        value: int = await conn.fetchval("SELECT count(*) FROM notes")
        return value
    async with conn.execute("SELECT count(*) FROM notes") as cursor:
        (value,) = await cursor.fetchone()
        return int(value)


async def test_move_on_after_keeps_every_cancelled_borrowers_connection(pool: Pool[Any]) -> None:
    opened = pool.stats().created
    for _ in range(BORROWERS):
        with anyio.move_on_after(0.02) as scope:
            await _write_then_wait(pool, lambda: anyio.sleep(LONG))
        assert scope.cancelled_caught
    await _nothing_leaked_nor_lost(pool, opened)


async def test_a_cancel_scope_cancelled_by_hand_keeps_the_connection(pool: Pool[Any]) -> None:
    opened = pool.stats().created
    for _ in range(BORROWERS):
        with anyio.CancelScope() as scope:

            async def cancel_then_wait(scope: anyio.CancelScope = scope) -> None:
                scope.cancel()
                await anyio.sleep(LONG)

            await _write_then_wait(pool, cancel_then_wait)
        assert scope.cancelled_caught
    await _nothing_leaked_nor_lost(pool, opened)


async def test_a_failing_task_group_sibling_keeps_the_borrowers_connections(
    pool: Pool[Any],
) -> None:
    opened = pool.stats().created

    async def failing_sibling() -> None:
        await wait_until(lambda: pool.stats().in_use == 2, message="both borrowers hold one")
        raise LookupError("a sibling failed")

    async def two_borrowers_and_a_failing_sibling() -> None:
        async with anyio.create_task_group() as group:
            for _ in range(2):
                group.start_soon(_write_then_wait, pool, lambda: anyio.sleep(LONG))
            group.start_soon(failing_sibling)

    for _ in range(BORROWERS // 2):
        with pytest.raises(ExceptionGroup) as failed:
            await two_borrowers_and_a_failing_sibling()
        assert failed.group_contains(LookupError)
    await _nothing_leaked_nor_lost(pool, opened)


async def test_a_statement_cancelled_by_a_scope_is_stopped_and_rolled_back(
    pool: Pool[Any],
) -> None:
    """Cancelled while the database runs a long statement: PostgreSQL cancels it on the server,
    SQLite interrupts it in its thread; either way the connection comes back clean."""
    opened = pool.stats().created
    if pool.driver.__class__.__name__ == "PostgresDriver":
        long_statement = "SELECT pg_sleep(30)"
    else:  # a recursive count that runs for minutes unless interrupted
        long_statement = (
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n"
        )
    for _ in range(3):
        with anyio.move_on_after(0.1):
            async with pool.acquire() as conn:
                await conn.execute("BEGIN")
                await conn.execute(long_statement)
    await _nothing_leaked_nor_lost(pool, opened)


async def test_under_asyncio_timeout_too(pool: Pool[Any]) -> None:
    opened = pool.stats().created
    for _ in range(BORROWERS):
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.02):
                await _write_then_wait(pool, lambda: asyncio.sleep(LONG))
    await _nothing_leaked_nor_lost(pool, opened)
