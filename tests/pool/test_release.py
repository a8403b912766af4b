"""Releasing: every returned connection is reset, a reset that fails or hangs discards it, and a
connection the pool does not lend out right now cannot be released or detached."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace

import pytest
from helpers import acquire, check_books, wait_for_waiters, wait_until

from aiodbpool import ConnectionReleased, Pool, PoolStats, raw_connection
from aiodbpool.drivers.fake import FakeClock, FakeConnection, FakeDriver


def _one_more_stale_release(stats: PoolStats) -> PoolStats:
    """``stats`` with one more refused release counted, and nothing else changed."""
    return replace(stats, stale_releases=stats.stale_releases + 1)


# ------------------------------------------------------------------ reset


async def test_release_rolls_back_a_dirty_connection_before_reuse() -> None:
    driver = FakeDriver()
    async with Pool(driver, clock=FakeClock()) as pool:
        conn = await pool.acquire()
        await conn.execute("BEGIN")
        await conn.execute("INSERT INTO t VALUES (1)")

        await pool.release(conn)

        assert conn.executed[-1] == ("ROLLBACK", ())
        assert not conn.in_transaction
        async with pool.acquire() as again:
            assert again.id == conn.id


async def test_dirty_reset_that_waits_on_the_server_still_reuses_the_connection() -> None:
    driver = FakeDriver(reset_latency=0.01)
    async with Pool(driver, clock=FakeClock()) as pool:
        conn = await pool.acquire()
        await conn.execute("BEGIN")

        await pool.release(conn)

        assert conn.resets == 1
        assert (pool.stats().idle, pool.stats().discarded) == (1, 0)


async def test_holder_cancelled_mid_query_still_has_its_connection_reset() -> None:
    driver = FakeDriver()
    async with Pool(driver, max_size=1, clock=FakeClock()) as pool:

        async def slow_transaction() -> None:
            async with pool.acquire() as conn:
                await conn.execute("BEGIN")
                driver.query_latency = 60
                await conn.execute("SELECT pg_sleep(60)")

        task = asyncio.create_task(slow_transaction())
        await wait_until(lambda: len(driver.queries) == 2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

        assert [sql for _, sql, _ in driver.queries] == ["BEGIN", "SELECT pg_sleep(60)", "ROLLBACK"]
        (conn,) = driver.connections
        assert not conn.in_transaction
        assert (pool.stats().idle, pool.stats().in_use) == (1, 0)
        check_books(pool)
        async with pool.acquire() as again:
            assert raw_connection(again) is conn


async def test_failed_reset_discards_the_connection_and_never_reuses_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    driver = FakeDriver()
    async with Pool(driver, name="app", clock=FakeClock()) as pool:
        conn = await pool.acquire()
        driver.fail_resets(1)

        with caplog.at_level(logging.WARNING, logger="aiodbpool"):
            await pool.release(conn)

        assert conn.closed
        assert (pool.stats().size, pool.stats().discarded) == (0, 1)
        assert "pool 'app': reset failed, connection discarded" in caplog.text
        async with pool.acquire() as again:
            assert again.id != conn.id
        check_books(pool)


async def test_a_connection_that_comes_back_closed_is_discarded_without_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """After an outage, every lent connection comes back closed and fails its reset: expected,
    so it is told at INFO, not as one warning per connection."""
    driver = FakeDriver()
    async with Pool(driver, name="app", clock=FakeClock()) as pool:
        conn = await pool.acquire()
        await conn.execute("BEGIN")  # dirty, so the reset would talk to the server
        driver.break_connection(conn)

        with caplog.at_level(logging.INFO, logger="aiodbpool"):
            await pool.release(conn)

        assert conn.closed
        assert (pool.stats().size, pool.stats().discarded) == (0, 1)
        [record] = [r for r in caplog.records if r.name == "aiodbpool"]
        assert record.levelno == logging.INFO
        assert "pool 'app': connection came back closed, discarded" in record.getMessage()
        check_books(pool)


class _FailingIsClosed(FakeDriver):
    """A driver whose ``is_closed`` raises while ``failing`` is set: a driver bug."""

    failing = False

    def is_closed(self, conn: FakeConnection) -> bool:
        if self.failing:
            raise RuntimeError("is_closed is broken")
        return super().is_closed(conn)


@pytest.mark.parametrize("dirty", [False, True], ids=["clean", "in a transaction"])
async def test_a_failing_is_closed_on_release_discards_the_connection_and_frees_its_slot(
    dirty: bool, caplog: pytest.LogCaptureFixture
) -> None:
    driver = _FailingIsClosed()
    async with Pool(driver, name="app", max_size=1, clock=FakeClock()) as pool:
        conn = await pool.acquire()
        if dirty:
            await conn.execute("BEGIN")
        driver.failing = True

        await pool.release(conn)

        driver.failing = False
        await wait_until(lambda: pool.stats().closing == 0)  # closed in the background
        assert (pool.stats().size, pool.stats().in_use, pool.stats().discarded) == (0, 0, 1)
        assert "the driver's is_closed() raised" in caplog.text
        async with pool.acquire(timeout=5) as again:
            assert again.id != conn.id
        check_books(pool)


@pytest.mark.parametrize("fresh", [0.0, 5.0], ids=["fast path", "slow path"])
async def test_a_failing_is_closed_on_acquire_discards_the_connection(
    fresh: float, caplog: pytest.LogCaptureFixture
) -> None:
    driver = _FailingIsClosed()
    clock = FakeClock()
    async with Pool(driver, max_size=1, validate_after_idle=1, clock=clock) as pool:
        async with pool.acquire() as first:
            pass
        clock.advance(fresh)  # fresh: the fast path asks first; else the slow path does
        driver.failing = True

        async with pool.acquire(timeout=5) as second:
            assert second.id != first.id  # the first one's state is unknown: replaced
            driver.failing = False

        assert first.closed
        assert (pool.stats().discarded, pool.stats().idle) == (1, 1)
        assert "the driver's is_closed() raised" in caplog.text
        check_books(pool)


async def test_reset_timeout_bounds_a_stalled_reset_and_discards_the_connection() -> None:
    driver = FakeDriver()
    async with Pool(driver, reset_timeout=0.05, clock=FakeClock()) as pool:
        conn = await pool.acquire()
        await conn.execute("BEGIN")
        driver.stall_resets()
        started = time.monotonic()

        await pool.release(conn)

        assert time.monotonic() - started < 5
        assert conn.closed  # terminated: its state is unknown
        assert (pool.stats().size, pool.stats().discarded) == (0, 1)
        driver.heal()
        async with pool.acquire() as again:
            assert again.id != conn.id
        check_books(pool)


@pytest.mark.parametrize("way", ["release", "async with"])
async def test_releasing_task_cancelled_during_the_reset_leaves_the_reset_to_finish(
    way: str,
) -> None:
    """The reset goes on in the pool's own task: the connection is rolled back and pooled, not
    thrown away because its borrower was cancelled (whether it called ``release`` or left
    ``async with``, whose exit takes a path of its own)."""
    driver = FakeDriver(reset_latency=0.05)
    async with Pool(driver, max_size=1, clock=FakeClock()) as pool:
        acquiring = pool.acquire()
        conn = await acquiring
        await conn.execute("BEGIN")
        raw = raw_connection(conn)

        async def leave() -> None:
            if way == "release":
                await pool.release(conn)
            else:
                await acquiring.__aexit__(None, None, None)

        releasing = asyncio.create_task(leave())
        await asyncio.sleep(0)  # the release has started, and waits for the rollback

        releasing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await releasing

        await wait_until(lambda: pool.stats().idle == 1)
        assert not raw.closed
        assert not raw.in_transaction
        assert (pool.stats().size, pool.stats().discarded) == (1, 0)
        check_books(pool)


async def test_a_clean_release_at_the_exit_of_async_with_is_done_before_anything_is_awaited() -> (
    None
):
    """The exit of ``async with pool.acquire()`` makes no coroutine: the connection is back in
    the pool when ``__aexit__`` returns, and what it returns is already done."""
    async with Pool(FakeDriver(), clock=FakeClock()) as pool:
        acquiring = pool.acquire()
        await acquiring

        exiting = acquiring.__aexit__(None, None, None)

        assert pool.stats().idle == 1
        with pytest.raises(StopIteration):  # its first step finishes it: it never suspends
            next(exiting.__await__())
        check_books(pool)


async def test_a_reset_left_to_finish_is_still_bounded_by_reset_timeout() -> None:
    driver = FakeDriver(reset_latency=60)
    async with Pool(driver, max_size=1, reset_timeout=0.05, clock=FakeClock()) as pool:
        conn = await pool.acquire()
        await conn.execute("BEGIN")
        raw = raw_connection(conn)
        releasing = asyncio.create_task(pool.release(conn))
        await asyncio.sleep(0)

        releasing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await releasing

        await wait_until(lambda: pool.stats().discarded == 1)
        assert raw.closed  # terminated: its state is unknown
        assert pool.stats().size == 0
        check_books(pool)


async def test_connection_broken_while_in_use_is_discarded_on_release() -> None:
    driver = FakeDriver()
    async with Pool(driver, clock=FakeClock()) as pool:
        conn = await pool.acquire()
        driver.break_connection(conn, detected=True)
        driver.heal()

        await pool.release(conn)

        await wait_until(lambda: conn.closed)
        assert (pool.stats().size, pool.stats().discarded) == (0, 1)


# ------------------------------------------------------------------ what cannot be released


async def test_releasing_a_foreign_connection_raises_and_changes_nothing() -> None:
    other = FakeDriver()
    async with Pool(FakeDriver()) as pool, Pool(other) as other_pool:
        mine = await pool.acquire()
        theirs = await other_pool.acquire()
        before = pool.stats()

        with pytest.raises(ValueError, match="it was not acquired from <Pool"):
            await pool.release(theirs)
        with pytest.raises(ValueError, match="str object"):
            await pool.release("not a connection")  # type: ignore[arg-type]

        assert pool.stats() == before
        await pool.release(mine)
        await other_pool.release(theirs)


async def test_releasing_twice_raises_and_changes_nothing() -> None:
    async with Pool(FakeDriver()) as pool:
        conn = await pool.acquire()
        await pool.release(conn)
        before = pool.stats()

        with pytest.raises(ValueError, match="already released"):
            await pool.release(conn)

        assert pool.stats() == _one_more_stale_release(before)
        check_books(pool)


async def test_a_stale_release_leaves_the_connections_next_holder_untouched() -> None:
    """The handle kept from the first lend cannot release (nor use) the connection that the
    second borrower now holds under a lease of its own."""
    async with Pool(FakeDriver(), max_size=1) as pool:
        stale = await pool.acquire()
        await pool.release(stale)
        holder = await pool.acquire()
        assert holder.id == stale.id  # the same connection, lent again
        await holder.execute("BEGIN")
        before = pool.stats()

        with pytest.raises(ValueError, match="already released"):
            await pool.release(stale)
        with pytest.raises(ConnectionReleased):
            await stale.execute("INSERT INTO t VALUES (1)")

        stats = pool.stats()
        assert stats == replace(_one_more_stale_release(before), stale_uses=before.stale_uses + 1)
        assert (stats.in_use, stats.idle) == (1, 0)
        assert holder.in_transaction  # nothing rolled the holder's transaction back
        assert holder.executed == [("BEGIN", ())]  # nor wrote inside it
        await holder.execute("COMMIT")  # still the holder's to use
        await pool.release(holder)
        check_books(pool)


async def test_releasing_again_a_connection_already_handed_to_a_waiter_raises() -> None:
    async with Pool(FakeDriver(), max_size=1) as pool:
        conn = await pool.acquire()
        waiter = asyncio.create_task(acquire(pool))
        await wait_for_waiters(pool, 1)
        await pool.release(conn)  # handed to the waiter, which has not resumed yet
        before = pool.stats()

        with pytest.raises(ValueError, match="already released"):
            await pool.release(conn)

        assert pool.stats() == _one_more_stale_release(before)
        again = await waiter
        assert again.id == conn.id
        await again.execute("SELECT 1")  # the waiter's lease is good
        await pool.release(again)
        check_books(pool)


async def test_releasing_a_connection_whose_release_is_under_way_raises() -> None:
    driver = FakeDriver(reset_latency=0.05)
    async with Pool(driver) as pool:
        conn = await pool.acquire()
        await conn.execute("BEGIN")
        first = asyncio.create_task(pool.release(conn))
        await asyncio.sleep(0)  # the first release is now waiting for the rollback
        before = pool.stats()

        with pytest.raises(ValueError, match="already released"):
            await pool.release(conn)

        assert pool.stats() == _one_more_stale_release(before)
        await first
        assert pool.stats().idle == 1


# ------------------------------------------------------------------ detach


async def test_detach_frees_the_slot_and_leaves_the_connection_to_the_caller() -> None:
    driver = FakeDriver()
    async with Pool(driver, max_size=1) as pool:
        conn = await pool.acquire()
        own = raw_connection(conn)

        detached = pool.detach(conn)

        assert detached is own  # the driver's connection, no longer a lease
        assert type(detached) is FakeConnection
        assert pool.stats().size == 0
        async with pool.acquire() as other:  # the freed slot opens a new connection
            assert other.id != detached.id
        with pytest.raises(ValueError, match="already detached"):
            await pool.release(conn)
        with pytest.raises(ValueError, match="it was not acquired from"):
            await pool.release(detached)
        with pytest.raises(ConnectionReleased, match="detached"):
            await conn.execute("SELECT 1")  # the lease ended; the caller uses `detached`
        await detached.execute("SELECT 1")
        assert pool.stats().stale_uses == 1
    assert not detached.closed  # the pool closed its own connections, not the detached one
    assert driver.live == 1
    await driver.close(detached)


async def test_detaching_a_connection_the_pool_does_not_lend_out_raises() -> None:
    async with Pool(FakeDriver()) as pool, Pool(FakeDriver()) as other_pool:
        foreign = await other_pool.acquire()
        idle = await pool.acquire()
        await pool.release(idle)
        before = pool.stats()

        with pytest.raises(ValueError, match="cannot detach FakeConnection"):
            pool.detach(foreign)
        assert pool.stats() == before
        with pytest.raises(ValueError, match="already released"):
            pool.detach(idle)

        assert pool.stats() == _one_more_stale_release(before)
        await other_pool.release(foreign)


@pytest.mark.parametrize("action", ["release", "detach"])
async def test_the_drivers_own_connection_behind_a_lease_cannot_be_given_back(
    action: str,
) -> None:
    """Only the lease that acquire() returned releases or detaches; the raw connection (from
    raw_connection) is refused, and the lease stays good."""
    async with Pool(FakeDriver()) as pool:
        conn = await pool.acquire()
        before = pool.stats()

        async def give_back_the_drivers_own() -> None:
            if action == "release":
                await pool.release(raw_connection(conn))
            else:
                pool.detach(raw_connection(conn))

        with pytest.raises(ValueError, match=f"cannot {action} the driver's own connection"):
            await give_back_the_drivers_own()

        assert pool.stats() == before
        await conn.execute("SELECT 1")  # still lent, through its lease
        await pool.release(conn)
        assert (pool.stats().idle, pool.stats().in_use) == (1, 0)
        check_books(pool)


async def test_detach_of_a_connection_being_released_raises() -> None:
    driver = FakeDriver(reset_latency=0.05)
    async with Pool(driver) as pool:
        conn: FakeConnection = await pool.acquire()
        await conn.execute("BEGIN")
        releasing = asyncio.create_task(pool.release(conn))
        await asyncio.sleep(0)

        with pytest.raises(ValueError, match="already released"):
            pool.detach(conn)

        await releasing
        check_books(pool)


class _InterruptingDriver(FakeDriver):
    """A fake whose statements, like SQLite's, would run on after their task was cancelled."""

    def __init__(self) -> None:
        super().__init__()
        self.interrupted: list[FakeConnection] = []

    def interrupt(self, conn: FakeConnection) -> None:
        self.interrupted.append(conn)


async def test_a_release_by_a_task_being_cancelled_interrupts_first() -> None:
    driver = _InterruptingDriver()
    async with Pool(driver, max_size=1, clock=FakeClock()) as pool:
        async with pool.acquire():
            pass  # an ordinary release: nothing to interrupt
        assert driver.interrupted == []

        async def cancelled_inside() -> None:
            async with pool.acquire():
                await asyncio.sleep(3600)

        task = asyncio.create_task(cancelled_inside())
        await wait_until(lambda: pool.stats().in_use == 1)
        raw = driver.connections[0]
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

        assert driver.interrupted == [raw]  # the driver's own connection, before the reset
        assert pool.stats().idle == 1
        check_books(pool)
