"""resize(): growing lets waiters in at once; shrinking closes the excess idle connections now and
the excess in use as they come back, and opens nothing until the pool is under the new bound."""

from __future__ import annotations

import asyncio

import pytest
from helpers import acquire, check_books, wait_for_waiters, wait_until

from aiodbpool import Pool, PoolClosed, PoolTimeout
from aiodbpool.drivers.fake import FakeClock, FakeConnection, FakeDriver


async def _settled(pool: Pool[FakeConnection]) -> None:
    await wait_until(lambda: pool.stats().opening == 0 and pool.stats().closing == 0)


async def test_growing_max_size_lets_waiters_open_connections_at_once() -> None:
    driver = FakeDriver()
    async with Pool(driver, max_size=1) as pool:
        held = await pool.acquire()
        waiters = [asyncio.create_task(acquire(pool)) for _ in range(2)]
        await wait_for_waiters(pool, 2)

        pool.resize(max_size=3)

        conns = await asyncio.gather(*waiters)
        assert len({held, *conns}) == 3
        assert pool.stats().max_size == 3
        for conn in (held, *conns):
            await pool.release(conn)
        check_books(pool)


async def test_growing_min_size_opens_connections_in_the_background() -> None:
    async with Pool(FakeDriver(), maintenance_interval=60) as pool:
        pool.resize(min_size=3)

        await wait_until(lambda: pool.stats().idle == 3)
        assert pool.stats().min_size == 3


async def test_shrinking_closes_excess_idle_connections_now() -> None:
    driver = FakeDriver()
    async with Pool(driver, max_size=4, clock=FakeClock()) as pool:
        conns = [await pool.acquire() for _ in range(4)]
        for conn in conns:
            await pool.release(conn)

        pool.resize(max_size=2)

        await _settled(pool)
        assert (pool.stats().idle, driver.live) == (2, 2)
        assert [conn.closed for conn in conns] == [True, True, False, False]  # oldest first
        assert pool.stats().evicted_lifetime == 2
        check_books(pool)


async def test_shrinking_retires_excess_connections_in_use_as_they_return() -> None:
    driver = FakeDriver()
    async with Pool(driver, max_size=4, clock=FakeClock()) as pool:
        spare = await pool.acquire()
        held = [await pool.acquire() for _ in range(3)]
        await pool.release(spare)

        pool.resize(max_size=2)
        await _settled(pool)
        assert spare.closed  # the idle one went at once

        for conn in held:
            await pool.release(conn)
        await _settled(pool)
        assert (pool.stats().idle, driver.live) == (2, 2)
        assert pool.stats().evicted_lifetime == 2
        check_books(pool)


async def test_nothing_new_opens_until_the_pool_is_under_the_new_bound() -> None:
    driver = FakeDriver()
    async with Pool(driver, max_size=3, clock=FakeClock()) as pool:
        held = [await pool.acquire() for _ in range(3)]
        pool.resize(max_size=1)

        with pytest.raises(PoolTimeout):
            await pool.acquire(timeout=0.01)
        waiter = asyncio.create_task(acquire(pool, timeout=30))
        await wait_for_waiters(pool, 1)
        await pool.release(held[0])
        await pool.release(held[1])
        await _settled(pool)
        assert not waiter.done()  # two retired, one still in use: the pool is at its bound

        await pool.release(held[2])

        again = await waiter
        assert again.id == held[2].id
        assert (driver.opened, driver.peak_live) == (3, 3)
        await pool.release(again)
        check_books(pool)


async def test_resizing_twice_to_the_same_bound_retires_only_the_excess() -> None:
    driver = FakeDriver()
    async with Pool(driver, max_size=4, clock=FakeClock()) as pool:
        held = [await pool.acquire() for _ in range(4)]

        pool.resize(max_size=3)
        pool.resize(max_size=3)
        for conn in held:
            await pool.release(conn)

        await _settled(pool)
        assert (pool.stats().idle, pool.stats().evicted_lifetime) == (3, 1)


async def test_shrinking_again_retires_only_the_additional_excess() -> None:
    driver = FakeDriver()
    async with Pool(driver, max_size=4, clock=FakeClock()) as pool:
        held = [await pool.acquire() for _ in range(4)]

        pool.resize(max_size=3)
        pool.resize(max_size=2)
        for conn in held:
            await pool.release(conn)

        await _settled(pool)
        assert (pool.stats().idle, pool.stats().evicted_lifetime) == (2, 2)


async def test_connect_finishing_after_a_shrink_is_used_once_then_retired() -> None:
    driver = FakeDriver()
    async with Pool(driver, max_size=2, clock=FakeClock()) as pool:
        held = await pool.acquire()
        driver.stall_connects()
        acquiring = asyncio.create_task(acquire(pool))
        await wait_until(lambda: driver.stalled == 1)

        pool.resize(max_size=1)
        driver.heal()
        late = await acquiring
        await pool.release(late)

        await wait_until(lambda: late.closed)
        await pool.release(held)
        assert (pool.stats().idle, pool.stats().size) == (1, 1)


@pytest.mark.parametrize(
    ("min_size", "max_size", "named"),
    [
        (None, 0, "max_size"),
        (-1, None, "min_size"),
        (5, None, "min_size"),
        (None, True, "max_size"),
        (1.5, None, "min_size"),
        (3, 2, "min_size"),
    ],
)
async def test_resize_rejects_bad_sizes_and_changes_nothing(
    min_size: object, max_size: object, named: str
) -> None:
    async with Pool(FakeDriver(), min_size=1, max_size=4) as pool:
        with pytest.raises(ValueError, match=named):
            pool.resize(min_size=min_size, max_size=max_size)  # type: ignore[arg-type]

        assert (pool.stats().min_size, pool.stats().max_size) == (1, 4)


async def test_a_closed_pool_refuses_to_resize() -> None:
    pool = Pool(FakeDriver(), max_size=4)
    pool.resize(max_size=3)  # before open: the sizes it opens with
    await pool.open()
    await pool.close()

    with pytest.raises(PoolClosed, match="cannot resize pool 'default': it is closed"):
        pool.resize(max_size=5)

    assert (pool.stats().min_size, pool.stats().max_size) == (0, 3)


async def test_after_shrinking_whichever_connection_comes_back_first_is_closed() -> None:
    async with Pool(FakeDriver(), max_size=2) as pool:
        first = await pool.acquire()
        second = await pool.acquire()
        pool.resize(max_size=1)

        await pool.release(second)  # back first, while the pool is above its new bound

        stats = pool.stats()
        assert (stats.idle, stats.in_use, stats.closing) == (0, 1, 1)  # closed, not parked
        await pool.release(first)  # now within the bound: it stays
        await wait_until(lambda: pool.stats().closing == 0)
        stats = pool.stats()
        assert (stats.size, stats.idle) == (1, 1)
        check_books(pool)
