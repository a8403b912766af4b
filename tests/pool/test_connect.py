"""Opening connections for acquirers: failures surface at once, every connect is time-bounded,
and a failed connect gives its slot back."""

from __future__ import annotations

import asyncio
import time

import pytest
from helpers import acquire, check_books, wait_for_waiters, wait_until

from aiodbpool import Pool, PoolConnectError
from aiodbpool.drivers.fake import FakeConnection, FakeConnectionError, FakeDriver


async def test_connect_failure_surfaces_at_once_as_pool_connect_error() -> None:
    driver = FakeDriver()
    async with Pool(driver, name="db", acquire_timeout=30) as pool:
        driver.fail_connects()
        started = time.monotonic()

        with pytest.raises(PoolConnectError) as failed:
            await pool.acquire()

        assert time.monotonic() - started < 5  # fails fast, long before acquire_timeout
        assert isinstance(failed.value.__cause__, FakeConnectionError)
        assert failed.value.pool_name == "db"
        assert "'db' could not open a connection" in str(failed.value)
        assert "connection refused" in str(failed.value)
        stats = pool.stats()
        assert (stats.size, stats.opening, stats.connect_errors, stats.created) == (0, 0, 1, 0)
        check_books(pool)

        driver.heal()
        async with pool.acquire() as conn:
            assert isinstance(conn, FakeConnection)
        assert pool.stats().created == 1


async def test_connect_timeout_bounds_a_stalled_connect() -> None:
    driver = FakeDriver()
    async with Pool(driver, connect_timeout=0.05, acquire_timeout=30) as pool:
        driver.stall_connects()
        started = time.monotonic()

        with pytest.raises(PoolConnectError, match=r"connect timed out after 0\.05s") as failed:
            await pool.acquire()

        assert time.monotonic() - started < 5
        assert isinstance(failed.value.__cause__, TimeoutError)
        assert (pool.stats().size, pool.stats().connect_errors) == (0, 1)
        check_books(pool)
        driver.heal()


async def test_driver_timeout_without_connect_timeout_is_described_not_crashed() -> None:
    driver = FakeDriver()
    async with Pool(driver, connect_timeout=None) as pool:
        driver.fail_next_connects(1, TimeoutError("the driver's own timeout"))

        with pytest.raises(PoolConnectError, match="the driver's own timeout") as failed:
            await pool.acquire()

        assert isinstance(failed.value.__cause__, TimeoutError)
        assert pool.stats().size == 0


async def test_connect_error_without_message_names_the_exception_type() -> None:
    driver = FakeDriver()
    async with Pool(driver) as pool:
        driver.fail_next_connects(1, ConnectionResetError())

        with pytest.raises(PoolConnectError, match=r"connection: ConnectionResetError$"):
            await pool.acquire()


async def test_waiter_given_room_gets_the_connect_error_at_once() -> None:
    driver = FakeDriver()
    async with Pool(driver, max_size=1, acquire_timeout=30) as pool:
        held = await pool.acquire()
        waiter = asyncio.create_task(acquire(pool))
        await wait_for_waiters(pool, 1)
        driver.fail_connects()

        detached = pool.detach(held)  # room for the waiter, whose connect then fails

        with pytest.raises(PoolConnectError):
            await waiter
        assert pool.stats().size == 0
        check_books(pool)
        await driver.close(detached)


async def test_failed_connect_hands_its_slot_to_the_next_waiter() -> None:
    driver = FakeDriver(connect_latency=0.2)
    async with Pool(driver, max_size=1) as pool:
        driver.fail_next_connects(1)
        first = asyncio.create_task(acquire(pool))
        await wait_until(lambda: pool.stats().opening == 1)
        second = asyncio.create_task(acquire(pool))
        await wait_for_waiters(pool, 1)

        with pytest.raises(PoolConnectError):
            await first
        conn = await second

        assert pool.stats().size == 1
        await pool.release(conn)
        check_books(pool)


async def test_connect_refused_by_a_cancelled_caller_is_not_reported_to_anyone() -> None:
    driver = FakeDriver(connect_latency=0.2)
    async with Pool(driver) as pool:
        driver.fail_next_connects(1)
        task = asyncio.create_task(acquire(pool))
        await wait_until(lambda: pool.stats().opening == 1)

        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

        await wait_until(lambda: pool.stats().connect_errors == 1)
        assert pool.stats().size == 0
        check_books(pool)
