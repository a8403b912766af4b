"""Acquiring: the fast path, LIFO reuse, the max_size bound, FIFO waiting, and one deadline.

Every test that cancels or times out an acquirer checks afterwards that nothing was lost: the
connection and its slot are back, and the pool's books balance.
"""

from __future__ import annotations

import asyncio
import random
from contextlib import AbstractAsyncContextManager, AsyncExitStack

import pytest
from helpers import acquire, check_books, wait_for_waiters, wait_until

from aiodbpool import ConnectionReleased, Pool, PoolClosed, PoolExhausted, PoolTimeout
from aiodbpool.drivers.fake import FakeClock, FakeConnection, FakeDriver

# ------------------------------------------------------------------ the fast path and LIFO


async def test_acquire_of_a_ready_idle_connection_completes_without_suspending() -> None:
    async with Pool(FakeDriver(), clock=FakeClock()) as pool:
        conn = await pool.acquire()
        await pool.release(conn)

        steps = pool.acquire().__await__()
        with pytest.raises(StopIteration) as finished:
            steps.send(None)

        again: FakeConnection = finished.value.value
        assert again.id == conn.id  # the same connection, under a new lease
        assert again is not conn
        assert pool.stats().waited == 1  # only the first acquire, which opened the connection
        await pool.release(again)


async def test_release_of_a_clean_connection_completes_without_suspending() -> None:
    async with Pool(FakeDriver(), clock=FakeClock()) as pool:
        conn = await pool.acquire()

        steps = pool.release(conn)
        with pytest.raises(StopIteration):
            steps.send(None)

        assert (pool.stats().idle, pool.stats().in_use) == (1, 0)


async def test_most_recently_released_connection_is_handed_out_first() -> None:
    async with Pool(FakeDriver(), clock=FakeClock()) as pool:
        first, second, third = [await pool.acquire() for _ in range(3)]
        for conn in (second, third, first):
            await pool.release(conn)

        handed_out = [await pool.acquire() for _ in range(3)]

        assert [conn.id for conn in handed_out] == [first.id, third.id, second.id]
        for conn in handed_out:
            await pool.release(conn)


async def test_async_with_acquire_releases_on_exit_and_on_error() -> None:
    async with Pool(FakeDriver()) as pool:
        async with pool.acquire() as conn:
            assert pool.stats().in_use == 1
        assert (pool.stats().idle, pool.stats().in_use) == (1, 0)

        async def fail_while_holding() -> None:
            async with pool.acquire() as again:
                assert again.id == conn.id  # the same connection, under a new lease
                with pytest.raises(ConnectionReleased):
                    await conn.execute("SELECT 1")  # the first lease ended on exit
                raise LookupError("the block failed")

        with pytest.raises(LookupError):
            await fail_while_holding()
        assert (pool.stats().idle, pool.stats().in_use) == (1, 0)
        assert conn.executed == []  # the refused statement was never sent


def _lend(pool: Pool[FakeConnection]) -> AbstractAsyncContextManager[FakeConnection]:
    """mypy --strict checks that acquire() fits where an async context manager is expected."""
    return pool.acquire()


async def test_acquire_is_an_async_context_manager_for_exit_stacks() -> None:
    async with Pool(FakeDriver(), max_size=2) as pool:
        async with AsyncExitStack() as stack:
            first = await stack.enter_async_context(_lend(pool))
            second = await stack.enter_async_context(pool.acquire())
            assert first.id != second.id
            assert pool.stats().in_use == 2
        assert (pool.stats().idle, pool.stats().in_use) == (2, 0)


async def test_one_acquire_object_lends_one_connection_only() -> None:
    """Entered a second time (by mistake, or by two tasks), it refuses at once: otherwise the
    first exit would release the connection the second user still holds."""
    async with Pool(FakeDriver(), max_size=2) as pool:
        lend = pool.acquire()
        async with lend as conn:
            with pytest.raises(RuntimeError, match=r"already awaited or entered"):
                async with lend:
                    pytest.fail("entered twice")
            assert pool.stats().in_use == 1
            await conn.execute("SELECT 1")  # still this caller's
        with pytest.raises(RuntimeError, match=r"already awaited"):
            await lend  # nor reused after its release
        spent = pool.acquire()
        await pool.release(await spent)
        with pytest.raises(RuntimeError, match=r"already awaited"):
            await spent
        assert (pool.stats().idle, pool.stats().in_use) == (1, 0)
        check_books(pool)


# ------------------------------------------------------------------ the bound and the queue


async def test_never_more_than_max_size_connections_under_many_concurrent_acquirers() -> None:
    driver = FakeDriver(connect_latency=0.001, query_latency=0.001)
    sizes: list[int] = []
    async with Pool(driver, max_size=5) as pool:

        async def work() -> None:
            async with pool.acquire() as conn:
                sizes.append(pool.stats().size)
                await conn.execute("SELECT 1")
                sizes.append(pool.stats().size)

        await asyncio.gather(*(work() for _ in range(150)))
        assert pool.stats().acquired == 150
        check_books(pool)
    assert max(sizes) <= 5
    assert driver.peak_live <= 5
    assert driver.live == 0


async def test_cancelling_random_acquirers_at_random_points_loses_nothing() -> None:
    rng = random.Random(1234)
    driver = FakeDriver(connect_latency=0.002, query_latency=0.001)
    async with Pool(driver, max_size=4) as pool:

        async def work() -> None:
            async with pool.acquire() as conn:
                await conn.execute("SELECT 1")

        tasks = [asyncio.create_task(work()) for _ in range(120)]
        for task in rng.sample(tasks, 40):
            await asyncio.sleep(rng.choice([0, 0, 0.001]))
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

        await wait_until(lambda: pool.stats().opening == 0)
        stats = pool.stats()
        assert (stats.in_use, stats.waiting) == (0, 0)
        assert stats.size == stats.idle <= 4
        check_books(pool)
        # Every slot came back: the pool can still hand out max_size connections at once.
        conns = [await pool.acquire(timeout=5) for _ in range(4)]
        for conn in conns:
            await pool.release(conn)
    assert driver.peak_live <= 4
    assert driver.live == 0


async def test_waiters_are_served_strictly_in_arrival_order() -> None:
    served: list[int] = []
    async with Pool(FakeDriver(), max_size=1) as pool:
        held = await pool.acquire()

        async def take_turn(number: int) -> None:
            async with pool.acquire():
                served.append(number)
                await asyncio.sleep(0)

        tasks = []
        for number in range(10):
            tasks.append(asyncio.create_task(take_turn(number)))
            await wait_for_waiters(pool, number + 1)
        await pool.release(held)
        await asyncio.gather(*tasks)
    assert served == list(range(10))


async def test_max_waiting_refuses_one_acquirer_too_many_at_once() -> None:
    async with Pool(FakeDriver(), name="busy", max_size=1, max_waiting=1) as pool:
        held = await pool.acquire()
        waiter = asyncio.create_task(acquire(pool))
        await wait_for_waiters(pool, 1)

        with pytest.raises(PoolExhausted, match="max_waiting=1") as refused:
            await pool.acquire()

        assert refused.value.pool_name == "busy"
        assert pool.stats().exhausted == 1
        await pool.release(held)
        await pool.release(await waiter)
        check_books(pool)


# ------------------------------------------------------------------ giving up loses nothing


async def test_waiter_cancelled_before_any_grant_leaves_the_queue() -> None:
    async with Pool(FakeDriver(), max_size=1) as pool:
        held = await pool.acquire()
        waiter = asyncio.create_task(acquire(pool))
        await wait_for_waiters(pool, 1)

        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter

        assert pool.stats().waiting == 0
        await pool.release(held)
        assert (pool.stats().idle, pool.stats().in_use) == (1, 0)
        check_books(pool)


async def test_waiter_cancelled_after_handoff_returns_connection() -> None:
    async with Pool(FakeDriver(), max_size=1) as pool:
        held = await pool.acquire()
        waiter = asyncio.create_task(acquire(pool))
        await wait_for_waiters(pool, 1)

        await pool.release(held)  # handed to the waiter, which has not resumed yet
        assert (pool.stats().waiting, pool.stats().in_use) == (0, 1)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter

        stats = pool.stats()
        assert (stats.idle, stats.in_use, stats.waiting, stats.size) == (1, 0, 0, 1)
        check_books(pool)
        again = await pool.acquire(timeout=1)
        assert again.id == held.id
        await pool.release(again)


async def test_waiter_cancelled_after_handoff_passes_connection_to_next_waiter() -> None:
    async with Pool(FakeDriver(), max_size=1) as pool:
        held = await pool.acquire()
        first = asyncio.create_task(acquire(pool))
        await wait_for_waiters(pool, 1)
        second = asyncio.create_task(acquire(pool))
        await wait_for_waiters(pool, 2)

        await pool.release(held)
        first.cancel()

        again = await second
        assert again.id == held.id
        assert first.cancelled()
        check_books(pool)
        await pool.release(again)


async def test_waiter_cancelled_while_a_connection_opens_for_it_leaves_it_to_the_pool() -> None:
    driver = FakeDriver()
    async with Pool(driver, max_size=1) as pool:
        held = await pool.acquire()
        waiter = asyncio.create_task(acquire(pool))
        await wait_for_waiters(pool, 1)
        driver.stall_connects()

        raw = pool.detach(held)  # frees a slot: a connect starts for the waiter
        assert (pool.stats().waiting, pool.stats().opening) == (1, 1)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        driver.heal()

        await wait_until(lambda: pool.stats().opening == 0)
        assert (pool.stats().size, pool.stats().idle) == (1, 1)  # it joined the pool
        check_books(pool)
        await driver.close(raw)


async def test_slot_freed_while_the_only_waiter_is_being_cancelled_is_not_lost() -> None:
    driver = FakeDriver()
    async with Pool(driver, max_size=1) as pool:
        held = await pool.acquire()
        waiter = asyncio.create_task(acquire(pool))
        await wait_for_waiters(pool, 1)

        waiter.cancel()  # its future is cancelled; its task has not run its clean-up yet
        raw = pool.detach(held)  # the slot is free again, whatever it is used for

        with pytest.raises(asyncio.CancelledError):
            await waiter
        await wait_until(lambda: pool.stats().opening == 0)
        assert pool.stats().size <= 1
        check_books(pool)
        async with pool.acquire(timeout=1):
            assert pool.stats().size == 1
        await driver.close(raw)


async def test_waiter_that_times_out_loses_nothing() -> None:
    async with Pool(FakeDriver(), max_size=1) as pool:
        held = await pool.acquire()

        with pytest.raises(PoolTimeout):
            await pool.acquire(timeout=0.01)

        assert pool.stats().waiting == 0
        await pool.release(held)  # goes idle: no dead waiter swallows it
        assert (pool.stats().idle, pool.stats().in_use) == (1, 0)
        assert pool.stats().timeouts == 1
        check_books(pool)


async def test_caller_timeout_while_waiting_is_honoured_and_leaks_nothing() -> None:
    async with Pool(FakeDriver(), max_size=1) as pool:
        held = await pool.acquire()

        with pytest.raises(TimeoutError) as raised:
            async with asyncio.timeout(0.01):
                await pool.acquire()

        assert not isinstance(raised.value, PoolTimeout)  # the caller's deadline, not the pool's
        assert (pool.stats().waiting, pool.stats().timeouts) == (0, 0)
        await pool.release(held)
        assert pool.stats().idle == 1
        check_books(pool)


async def test_caller_cancellation_while_connecting_keeps_the_new_connection() -> None:
    driver = FakeDriver()
    async with Pool(driver) as pool:
        driver.stall_connects()
        task = asyncio.create_task(acquire(pool))
        await wait_until(lambda: driver.stalled == 1)

        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        driver.heal()

        await wait_until(lambda: pool.stats().idle == 1)
        assert pool.stats().in_use == 0
        check_books(pool)


# ------------------------------------------------------------------ one deadline


async def test_acquire_timeout_raises_pool_timeout_naming_the_pool() -> None:
    async with Pool(FakeDriver(), name="orders", max_size=1) as pool:
        held = await pool.acquire()

        with pytest.raises(PoolTimeout) as timed_out:
            await pool.acquire(timeout=0.02)

        assert isinstance(timed_out.value, TimeoutError)
        assert timed_out.value.pool_name == "orders"
        message = str(timed_out.value)
        assert "'orders'" in message
        assert "within 0.02s" in message
        assert "max_size=1" in message
        await pool.release(held)


async def test_pool_acquire_timeout_applies_when_acquire_gives_none() -> None:
    async with Pool(FakeDriver(), max_size=1, acquire_timeout=0.02) as pool:
        held = await pool.acquire()

        with pytest.raises(PoolTimeout, match=r"within 0\.02s"):
            await pool.acquire()

        await pool.release(held)


async def test_one_deadline_bounds_waiting_and_connecting_together() -> None:
    # Waiting (>= 0.2s) and connecting (>= 0.2s) each fit in 0.3s; together they do not.
    driver = FakeDriver()
    async with Pool(driver, max_size=1) as pool:
        held = await pool.acquire()
        driver.connect_latency = 0.2

        async def free_a_slot_later() -> None:
            await asyncio.sleep(0.2)
            pool.detach(held)

        freeing = asyncio.create_task(free_a_slot_later())
        with pytest.raises(PoolTimeout):
            await pool.acquire(timeout=0.3)
        await freeing

        await wait_until(lambda: pool.stats().opening == 0)
        check_books(pool)


async def test_connect_outliving_a_timed_out_acquire_joins_the_pool() -> None:
    driver = FakeDriver(connect_latency=0.2)
    async with Pool(driver) as pool:
        with pytest.raises(PoolTimeout):
            await pool.acquire(timeout=0.05)

        await wait_until(lambda: pool.stats().idle == 1)
        stats = pool.stats()
        assert (stats.created, stats.connect_errors, stats.timeouts) == (1, 0, 1)
        check_books(pool)


async def test_acquire_with_zero_timeout_still_takes_an_idle_connection() -> None:
    async with Pool(FakeDriver(), clock=FakeClock()) as pool:
        conn = await pool.acquire()
        await pool.release(conn)
        again = await pool.acquire(timeout=0)
        assert again.id == conn.id
        await pool.release(again)


# ------------------------------------------------------------------ wrong pool state


async def test_acquire_on_a_never_opened_pool_says_how_to_open_it() -> None:
    pool = Pool(FakeDriver(), name="lazy")

    with pytest.raises(PoolClosed, match=r"not open.*await pool.open\(\)") as refused:
        await pool.acquire()

    assert refused.value.pool_name == "lazy"
