"""The driver contract is structural: five methods, no base class. And the pool survives drivers
whose close hangs or fails, with or without the optional ``terminate``."""

from __future__ import annotations

import logging
import time
from typing import assert_type

import pytest
from helpers import MinimalConn, MinimalDriver, TerminatingDriver, check_books, wait_until

from aiodbpool import Driver, Pool, PoolConnectError, SupportsTerminate


async def test_a_driver_with_only_the_five_methods_runs_a_pool() -> None:
    driver = MinimalDriver()
    pool = Pool(driver, min_size=1, validate_after_idle=0)
    assert_type(pool, Pool[MinimalConn])
    typed: Pool[MinimalConn] = pool
    assert isinstance(driver, Driver)
    assert not isinstance(driver, SupportsTerminate)

    async with typed:
        async with typed.acquire() as conn:
            assert_type(conn, MinimalConn)
            assert conn.number == 1
        first = conn
        first.closed = True  # the client noticed the connection died
        async with typed.acquire() as conn:
            assert conn.number == 2
        check_books(typed)
    assert driver.live == 0


async def test_a_minimal_driver_connect_failure_is_chained() -> None:
    driver = MinimalDriver()
    driver.refuse = True
    async with Pool(driver) as pool:
        with pytest.raises(PoolConnectError, match="minimal: connection refused") as failed:
            await pool.acquire()
    assert isinstance(failed.value.__cause__, ConnectionRefusedError)


async def test_close_that_hangs_is_terminated_after_close_timeout() -> None:
    driver = TerminatingDriver()
    pool = Pool(driver, min_size=2, close_timeout=0.05)
    await pool.open()
    driver.stall_closes = True
    started = time.monotonic()

    await pool.close()

    assert time.monotonic() - started < 5
    assert all(conn.terminated for conn in driver.opened)
    assert (pool.stats().size, pool.stats().closed) == (0, 2)
    check_books(pool)


async def test_close_that_hangs_without_terminate_is_abandoned_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    driver = MinimalDriver()
    caplog.set_level(logging.WARNING, logger="aiodbpool")
    async with Pool(driver, name="app", close_timeout=0.05) as pool:
        conn = await pool.acquire()
        await pool.release(conn)
        driver.stall_closes = True
        pool.expire()

        await wait_until(lambda: pool.stats().closed == 1)

        assert pool.stats().size == 0
        assert "pool 'app': closing a connection failed: TimeoutError" in caplog.text
        driver.stall_closes = False
    assert driver.live == 1  # it could not be closed: the driver has no terminate


async def test_close_that_fails_terminates_the_connection_and_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    driver = TerminatingDriver()
    caplog.set_level(logging.WARNING, logger="aiodbpool")
    pool = Pool(driver, min_size=1)
    await pool.open()
    driver.close_error = OSError("socket already gone")

    await pool.close()

    assert driver.opened[0].terminated
    assert "closing a connection failed: OSError: socket already gone" in caplog.text


async def test_terminate_that_raises_is_logged_and_the_books_still_balance(
    caplog: pytest.LogCaptureFixture,
) -> None:
    driver = TerminatingDriver()
    caplog.set_level(logging.WARNING, logger="aiodbpool")
    pool = Pool(driver, min_size=1, close_timeout=0.05)
    await pool.open()
    driver.stall_closes = True
    driver.terminate_error = RuntimeError("driver bug")

    await pool.close()

    assert "terminating a connection failed: RuntimeError: driver bug" in caplog.text
    assert (pool.stats().size, pool.stats().closed) == (0, 1)
    check_books(pool)


async def test_close_timeout_without_terminate_closes_connections_still_in_use_politely() -> None:
    driver = MinimalDriver()
    pool = Pool(driver)
    await pool.open()
    conn = await pool.acquire()

    await pool.close(timeout=0.05)

    assert conn.closed
    assert pool.stats().size == 0
    await pool.release(conn)  # accepted silently


async def test_connection_the_client_closed_while_in_use_is_discarded_on_release() -> None:
    driver = MinimalDriver()
    async with Pool(driver) as pool:
        conn = await pool.acquire()
        conn.closed = True  # the client library noticed the server went away

        await pool.release(conn)  # its reset succeeds, but it is closed: not reusable

        await wait_until(lambda: pool.stats().size == 0)
        assert pool.stats().discarded == 1
        async with pool.acquire() as other:
            assert other is not conn
