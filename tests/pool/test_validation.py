"""Validation on acquire: idle connections are pinged after ``validate_after_idle``, and broken ones
are never handed out. Ages come from a FakeClock, so no test waits for time to pass."""

from __future__ import annotations

import asyncio

import pytest
from helpers import acquire, check_books, wait_for_waiters, wait_until

from aiodbpool import Pool, PoolTimeout, raw_connection
from aiodbpool.drivers.fake import FakeClock, FakeConnection, FakeDriver


async def _idle_connection(pool: Pool[FakeConnection]) -> FakeConnection:
    """Open a connection and leave it idle in ``pool``; return the driver's own connection,
    which a later lease of it stands in for (the lease it was lent under ended at its release)."""
    lease = await pool.acquire()
    conn = raw_connection(lease)
    await pool.release(lease)
    return conn


async def test_connection_idle_less_than_validate_after_idle_is_not_pinged() -> None:
    clock = FakeClock()
    async with Pool(FakeDriver(), validate_after_idle=5, clock=clock) as pool:
        conn = await _idle_connection(pool)
        clock.advance(4.9)

        steps = pool.acquire().__await__()
        with pytest.raises(StopIteration) as finished:  # the fast path: no ping, no suspension
            steps.send(None)

        again: FakeConnection = finished.value.value
        assert raw_connection(again) is conn
        assert conn.pings == 0
        await pool.release(again)


async def test_connection_idle_longer_than_validate_after_idle_is_pinged() -> None:
    clock = FakeClock()
    async with Pool(FakeDriver(), validate_after_idle=5, clock=clock) as pool:
        conn = await _idle_connection(pool)
        clock.advance(5)

        again = await pool.acquire()

        assert raw_connection(again) is conn
        assert conn.pings == 1
        assert pool.stats().validation_failures == 0
        await pool.release(again)


async def test_validate_after_idle_zero_pings_on_every_acquire() -> None:
    async with Pool(FakeDriver(), validate_after_idle=0, clock=FakeClock()) as pool:
        conn = await _idle_connection(pool)
        for _ in range(3):
            async with pool.acquire() as again:
                assert raw_connection(again) is conn
        assert conn.pings == 3


async def test_validate_after_idle_none_never_pings() -> None:
    clock = FakeClock()
    pool = Pool(
        FakeDriver(), validate_after_idle=None, max_idle=None, max_lifetime=None, clock=clock
    )
    async with pool:
        conn = await _idle_connection(pool)
        clock.advance(10**9)

        async with pool.acquire() as again:
            assert raw_connection(again) is conn
        assert conn.pings == 0


async def test_failed_ping_discards_the_connection_and_the_acquirer_gets_another() -> None:
    driver = FakeDriver()
    async with Pool(driver, validate_after_idle=0, clock=FakeClock()) as pool:
        stale = await _idle_connection(pool)
        driver.fail_pings(1)

        conn = await pool.acquire()

        assert raw_connection(conn) is not stale
        assert stale.closed
        stats = pool.stats()
        assert (stats.validation_failures, stats.discarded) == (1, 1)
        assert (stats.in_use, stats.size) == (1, 1)
        check_books(pool)
        await pool.release(conn)


async def test_validation_falls_back_to_older_idle_connections_then_to_a_new_one() -> None:
    driver = FakeDriver()
    async with Pool(driver, validate_after_idle=0, clock=FakeClock()) as pool:
        older, newer = await pool.acquire(), await pool.acquire()
        await pool.release(older)
        await pool.release(newer)

        driver.fail_pings(1)  # the newest fails; the older one passes
        async with pool.acquire() as conn:
            assert conn.id == older.id
        assert newer.closed

        driver.fail_pings(1)  # the only idle one fails: a new connection is opened
        async with pool.acquire() as conn:
            assert conn.id not in (older.id, newer.id)
        assert pool.stats().validation_failures == 2
        check_books(pool)


async def test_ping_timeout_discards_a_stalled_connection_and_the_acquirer_gets_another() -> None:
    driver = FakeDriver()
    async with Pool(driver, validate_after_idle=0, ping_timeout=0.05, clock=FakeClock()) as pool:
        stale = await _idle_connection(pool)
        driver.stall_pings()

        conn = await pool.acquire(timeout=5)

        assert raw_connection(conn) is not stale
        assert stale.closed  # terminated: its state was unknown
        assert pool.stats().validation_failures == 1
        await pool.release(conn)
        check_books(pool)
        driver.heal()


async def test_acquire_deadline_during_a_ping_raises_pool_timeout_and_discards_it() -> None:
    driver = FakeDriver()
    async with Pool(driver, validate_after_idle=0, ping_timeout=30, clock=FakeClock()) as pool:
        stale = await _idle_connection(pool)
        driver.stall_pings()

        with pytest.raises(PoolTimeout):
            await pool.acquire(timeout=0.05)

        assert stale.closed
        assert (pool.stats().size, pool.stats().timeouts) == (0, 1)
        check_books(pool)
        driver.heal()


async def test_acquirer_cancelled_during_a_ping_discards_the_connection() -> None:
    driver = FakeDriver()
    async with Pool(driver, validate_after_idle=0, ping_timeout=30, clock=FakeClock()) as pool:
        stale = await _idle_connection(pool)
        driver.stall_pings()
        task = asyncio.create_task(acquire(pool))
        await wait_until(lambda: driver.stalled == 1)

        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

        assert stale.closed
        assert pool.stats().size == 0
        check_books(pool)
        driver.heal()


@pytest.mark.parametrize("validate_after_idle", [None, 0.0, 5.0])
async def test_connection_known_to_be_closed_is_never_handed_out(
    validate_after_idle: float | None,
) -> None:
    driver = FakeDriver()
    pool = Pool(driver, validate_after_idle=validate_after_idle, clock=FakeClock())
    async with pool:
        broken = await _idle_connection(pool)
        driver.break_connection(broken, detected=True)

        async with pool.acquire() as conn:
            assert raw_connection(conn) is not broken

        assert broken.pings == 0  # no need to ask the server
        assert pool.stats().discarded == 1
        await wait_until(lambda: broken.closed)
        check_books(pool)


async def test_silently_broken_connection_is_caught_by_validation() -> None:
    driver = FakeDriver()
    async with Pool(driver, validate_after_idle=0, clock=FakeClock()) as pool:
        broken = await _idle_connection(pool)
        driver.break_connection(broken, detected=False)

        async with pool.acquire() as conn:
            assert raw_connection(conn) is not broken

        assert broken.closed
        assert pool.stats().validation_failures == 1


async def test_a_connection_whose_lifetime_ends_during_its_ping_is_not_handed_out() -> None:
    clock = FakeClock()
    driver = FakeDriver()
    pool = Pool(driver, validate_after_idle=0, max_lifetime=100, max_idle=None, clock=clock)
    async with pool:
        old = await _idle_connection(pool)
        driver.stall_pings()
        acquiring = asyncio.ensure_future(pool.acquire())
        await wait_until(lambda: driver.stalled == 1)
        clock.advance(1000)  # the ping outlasts the connection's lifetime
        driver.heal()

        conn = await acquiring

        assert raw_connection(conn) is not old
        assert driver.is_closed(old)
        assert pool.stats().evicted_lifetime == 1
        await pool.release(conn)
        check_books(pool)


async def test_an_acquirer_whose_connection_expired_while_pinged_keeps_its_place() -> None:
    clock = FakeClock()
    driver = FakeDriver()
    pool = Pool(driver, max_size=1, validate_after_idle=0, max_idle=None, clock=clock)
    async with pool:
        old = await _idle_connection(pool)
        driver.stall_pings()
        validating = asyncio.ensure_future(pool.acquire())
        await wait_until(lambda: driver.stalled == 1)
        younger = asyncio.ensure_future(pool.acquire())  # arrives while the ping runs
        await wait_for_waiters(pool, 1)
        pool.expire()  # retires the connection being pinged
        driver.heal()

        first = await validating  # served before the younger acquirer, with a new connection

        assert raw_connection(first) is not old
        assert not younger.done()
        await pool.release(first)
        await pool.release(await younger)
        check_books(pool)
