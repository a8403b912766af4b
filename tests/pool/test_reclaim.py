"""A connection never given back: when its holder drops the lease without a release (the lease is
garbage-collected), the pool takes the slot back, closes the connection and says so in a warning,
with where it was acquired when ``leak_timeout`` is set. ``close()`` does not wait for it."""

from __future__ import annotations

import asyncio
import gc
import logging
from pathlib import Path
from typing import Any

import pytest
from helpers import check_books, wait_until
from sqlite_helpers import wait_for_worker_threads, worker_threads

from aiodbpool import Pool, create_pool, raw_connection
from aiodbpool.drivers.fake import FakeClock, FakeConnection, FakeDriver

LOST = "was garbage-collected without being released"


async def _borrow_and_forget(pool: Pool[Any]) -> Any:
    """Acquire, use, and drop the connection without releasing it; return the driver's own
    connection (which does not keep the lease alive)."""
    conn = await pool.acquire()
    raw = raw_connection(conn)
    del conn
    return raw


async def test_a_dropped_lease_gives_its_slot_back(caplog: pytest.LogCaptureFixture) -> None:
    driver = FakeDriver()
    async with Pool(driver, max_size=1, acquire_timeout=5, clock=FakeClock()) as pool:
        raw = await _borrow_and_forget(pool)

        stats = pool.stats()
        assert (stats.in_use, stats.reclaimed) == (0, 1), stats
        assert raw.closed  # its state is unknown: it is not lent again
        async with pool.acquire() as conn:  # the one slot is free again
            assert raw_connection(conn) is not raw
        check_books(pool)
    (record,) = [r for r in caplog.records if LOST in r.getMessage()]
    assert record.levelno == logging.WARNING
    assert "Set leak_timeout" in record.getMessage()  # how to find out where


async def test_with_leak_timeout_the_warning_shows_where_it_was_acquired(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with Pool(FakeDriver(), leak_timeout=3600, clock=FakeClock()) as pool:
        await _borrow_and_forget(pool)
    (record,) = [r for r in caplog.records if LOST in r.getMessage()]
    assert "_borrow_and_forget" in record.getMessage()
    assert "conn = await pool.acquire()" in record.getMessage()


async def test_without_leak_timeout_no_stack_is_captured() -> None:
    async with Pool(FakeDriver(), clock=FakeClock()) as pool:
        conn = await pool.acquire()
        assert all(record.acquired_stack is None for record in pool._books.in_use.values())
        await pool.release(conn)


async def test_a_released_lease_dropped_later_changes_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with Pool(FakeDriver(), clock=FakeClock()) as pool:
        conn = await pool.acquire()
        await pool.release(conn)
        del conn
        again = await pool.acquire()
        del again  # dropped while lent: reclaimed
        await asyncio.sleep(0)
        assert pool.stats().reclaimed == 1
        assert pool.stats().created == 1
    assert len([r for r in caplog.records if LOST in r.getMessage()]) == 1


async def test_close_does_not_wait_for_a_lease_only_garbage_holds() -> None:
    """A lease caught in a reference cycle is freed only by the cycle collector: close() runs it
    once, rather than waiting its whole timeout for a release that cannot come."""
    gc.disable()
    try:
        pool = Pool(FakeDriver(), clock=FakeClock())
        await pool.open()
        cycle: dict[str, Any] = {"conn": await pool.acquire()}
        cycle["self"] = cycle
        del cycle
        assert pool.stats().in_use == 1

        async with asyncio.timeout(20):
            await pool.close(timeout=60)

        assert pool.stats().size == 0
        assert pool.stats().reclaimed == 1
    finally:
        gc.enable()


async def test_a_dropped_lease_is_reclaimed_on_sqlite(tmp_path: Path) -> None:
    before = worker_threads()
    async with create_pool(f"sqlite:///{tmp_path / 'lost.db'}", max_size=1) as pool:
        conn = await pool.acquire()
        await conn.execute("CREATE TABLE t (x)")
        del conn
        assert pool.stats().reclaimed == 1
        async with pool.acquire(timeout=5) as conn:
            await conn.execute("INSERT INTO t VALUES (1)")
        check_books(pool)
    await wait_for_worker_threads(before)


async def test_a_dropped_lease_is_reclaimed_on_postgres(postgres_url: str) -> None:
    async with create_pool(postgres_url, max_size=1) as pool:
        conn = await pool.acquire()
        raw = raw_connection(conn)
        pid = await conn.fetchval("SELECT pg_backend_pid()")
        await conn.execute("BEGIN")
        del conn

        assert pool.stats().reclaimed == 1
        await wait_until(raw.is_closed)
        async with pool.acquire(timeout=5) as conn:
            assert await conn.fetchval("SELECT pg_backend_pid()") != pid
            # The server ends the lost session, and with it its transaction.
            sessions = 1
            for _ in range(200):
                query = "SELECT count(*) FROM pg_stat_activity WHERE pid = $1"
                sessions = await conn.fetchval(query, pid)
                if not sessions:
                    break
                await asyncio.sleep(0.05)
            assert sessions == 0
        check_books(pool)


def test_a_lease_dropped_after_its_loop_ended_is_forgotten(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Dropped when nothing runs the pool's loop any more: the record is only forgotten."""
    loop = asyncio.new_event_loop()
    pool: Pool[FakeConnection] = Pool(FakeDriver())
    try:
        loop.run_until_complete(pool.open())
        kept = loop.run_until_complete(pool.acquire())
    finally:
        loop.close()
    del kept
    assert pool.stats().in_use == 0
    assert pool.stats().reclaimed == 1


async def test_a_lease_dropped_in_another_thread_is_reclaimed_in_the_pools_loop() -> None:
    """The weak reference's callback runs where the last reference died; the books change only in
    the pool's own loop."""
    async with Pool(FakeDriver(), max_size=1, clock=FakeClock()) as pool:
        holder = [await pool.acquire()]
        await asyncio.to_thread(holder.clear)  # the lease dies in a worker thread

        await wait_until(lambda: pool.stats().reclaimed == 1)
        assert pool.stats().in_use == 0
        async with pool.acquire(timeout=5):
            pass
        check_books(pool)
