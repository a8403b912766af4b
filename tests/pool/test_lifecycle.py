"""The pool's life: open (filling min_size), close (waiting, then terminating), and what happens
to acquirers, releases and connects caught in between. Nothing may leak: after close the driver
has no connection open."""

from __future__ import annotations

import asyncio
import gc
import time
import warnings

import pytest
from helpers import (
    TerminatingDriver,
    acquire,
    check_books,
    maintenance_tasks,
    wait_for_waiters,
    wait_until,
)

from aiodbpool import ConnectionReleased, Pool, PoolClosed, PoolConnectError, PoolTimeout
from aiodbpool.drivers.fake import FakeClock, FakeConnection, FakeConnectionError, FakeDriver
from aiodbpool.events import ConnectFailed, PoolEvent

# ------------------------------------------------------------------ open


async def test_open_fills_min_size_before_returning() -> None:
    driver = FakeDriver()
    pool = Pool(driver, min_size=3)

    await pool.open()

    assert (pool.stats().idle, driver.opened) == (3, 3)
    await pool.close()
    assert driver.live == 0


async def test_failed_open_raises_and_leaves_the_pool_unopened_for_a_retry() -> None:
    driver = FakeDriver()
    pool = Pool(driver, name="db", min_size=3)
    driver.fail_next_connects(1)

    with pytest.raises(PoolConnectError) as failed:
        await pool.open()

    assert isinstance(failed.value.__cause__, FakeConnectionError)
    assert repr(pool).startswith("<Pool 'db' new size=0")
    assert driver.live == 0  # the two that did open were closed again
    with pytest.raises(PoolClosed, match="not open"):
        await pool.acquire()

    await pool.open()
    assert pool.stats().idle == 3
    await pool.close()
    assert driver.live == 0


def _retrying_pool(driver: FakeDriver) -> Pool[FakeConnection]:
    return Pool(
        driver,
        name="db",
        min_size=2,
        backoff_initial=0.01,
        backoff_max=0.02,
        breaker_threshold=None,
    )


async def test_open_with_a_timeout_retries_failed_connects_until_min_size_exist() -> None:
    driver = FakeDriver()
    pool = _retrying_pool(driver)
    driver.fail_next_connects(5)  # a database still starting

    await pool.open(timeout=30)

    assert pool.stats().idle == 2
    assert driver.connect_attempts == 7  # five failed, two made
    check_books(pool)
    await pool.close()
    assert driver.live == 0


async def test_open_with_a_timeout_fails_with_the_last_connect_error_when_time_is_up() -> None:
    driver = FakeDriver()
    pool = _retrying_pool(driver)
    driver.fail_connects(FakeConnectionError("still refused by the test"))

    with pytest.raises(PoolConnectError, match="opened 0 of its 2 connections") as failed:
        await pool.open(timeout=0.1)

    assert "still refused by the test" in str(failed.value)
    assert isinstance(failed.value.__cause__, FakeConnectionError)
    assert driver.connect_attempts > 2  # it did try again
    assert repr(pool).startswith("<Pool 'db' new size=0")  # unopened: open() may be tried again
    driver.heal()
    await pool.open(timeout=30)
    assert pool.stats().idle == 2
    await pool.close()


async def test_open_with_a_timeout_stops_connects_that_hang_past_it() -> None:
    driver = FakeDriver()
    pool = _retrying_pool(driver)
    driver.stall_connects()

    with pytest.raises(PoolTimeout, match="the connects did not finish"):
        await pool.open(timeout=0.05)

    assert repr(pool).startswith("<Pool 'db' new size=0")  # no slot kept by the stopped connects
    driver.heal()
    await pool.open()
    assert pool.stats().idle == 2
    check_books(pool)
    await pool.close()
    assert driver.live == 0


async def test_a_bad_open_timeout_is_refused_naming_it() -> None:
    pool = Pool(FakeDriver())
    with pytest.raises(ValueError, match="timeout must be more than zero seconds"):
        await pool.open(timeout=0)


async def test_open_cancelled_while_connecting_leaves_the_pool_unopened() -> None:
    driver = FakeDriver()
    pool = Pool(driver, min_size=2)
    driver.stall_connects()
    opening = asyncio.create_task(pool.open())
    await wait_until(lambda: driver.stalled == 2)

    opening.cancel()
    with pytest.raises(asyncio.CancelledError):
        await opening

    assert pool.stats().size == 0
    assert repr(pool).startswith("<Pool 'default' new")
    driver.heal()
    async with pool:
        assert pool.stats().idle == 2
    assert driver.live == 0


async def test_open_cancelled_before_its_connects_started_frees_their_slots() -> None:
    driver = FakeDriver()
    pool = Pool(driver, min_size=2, close_timeout=0.5)
    opening = asyncio.create_task(pool.open())
    await asyncio.sleep(0)  # open() has started its connects, which have not run yet

    opening.cancel()
    with pytest.raises(asyncio.CancelledError):
        await opening

    await wait_until(lambda: pool.stats().size == 0)
    assert repr(pool).startswith("<Pool 'default' new")
    async with pool:
        assert pool.stats().idle == 2
    assert driver.live == 0


async def test_close_during_an_open_that_then_fails_leaves_the_pool_closed() -> None:
    driver = FakeDriver(connect_latency=0.05)
    pool = Pool(driver, min_size=2)
    driver.fail_next_connects(1)
    opening = asyncio.create_task(pool.open())
    await wait_until(lambda: pool.stats().opening == 2)

    await pool.close()

    with pytest.raises(PoolConnectError):
        await opening
    assert pool.closed
    with pytest.raises(PoolClosed, match="cannot be reopened"):
        await pool.open()
    assert driver.live == 0


async def test_close_called_while_a_failed_open_cleans_up_returns_once_it_is_done() -> None:
    driver = FakeDriver(close_latency=0.05)
    pool = Pool(driver, min_size=2)
    driver.fail_next_connects(1)
    opening = asyncio.create_task(pool.open())
    await wait_until(lambda: pool.stats().closing == 1)  # open() failed and is closing the other

    await asyncio.wait_for(pool.close(), timeout=5)

    with pytest.raises(PoolConnectError):
        await opening
    assert pool.closed
    assert driver.live == 0


async def test_open_without_waiting_returns_at_once_and_fills_in_the_background() -> None:
    driver = FakeDriver(connect_latency=0.02)
    pool = Pool(driver, min_size=2)

    await pool.open(wait=False)

    assert pool.stats().idle == 0
    await wait_until(lambda: pool.stats().idle == 2)
    await pool.close()
    assert driver.live == 0


async def test_opening_an_open_pool_does_nothing() -> None:
    driver = FakeDriver()
    async with Pool(driver, min_size=1) as pool:
        await pool.open()
        assert driver.opened == 1


async def test_a_closed_pool_cannot_be_reopened() -> None:
    pool = Pool(FakeDriver())
    await pool.open()
    await pool.close()

    with pytest.raises(PoolClosed, match="cannot be reopened"):
        await pool.open()


async def test_a_pool_closed_before_opening_cannot_be_opened() -> None:
    pool = Pool(FakeDriver())
    await pool.close()

    assert pool.closed
    with pytest.raises(PoolClosed, match="cannot be reopened"):
        await pool.open()
    with pytest.raises(PoolClosed, match="is closed"):
        await pool.acquire()


def _forget(pools: list[Pool[FakeConnection]]) -> None:
    """Drop the last references to ``pools`` and collect them."""
    pools.clear()
    gc.collect()


async def test_pool_garbage_collected_while_open_warns_and_stops_its_job() -> None:
    pools = [Pool(FakeDriver(), name="forgotten")]
    await pools[0].open()
    assert len(maintenance_tasks()) == 1

    with pytest.warns(ResourceWarning, match="'forgotten' was garbage-collected while open"):
        _forget(pools)

    await wait_until(lambda: not maintenance_tasks())


def test_pool_left_open_when_its_event_loop_ended_warns_when_collected() -> None:
    async def open_and_forget() -> list[Pool[FakeConnection]]:
        pool = Pool(FakeDriver(), name="leftover")
        await pool.open()
        return [pool]

    pools = asyncio.run(open_and_forget())  # the loop cancels the job and closes

    with pytest.warns(ResourceWarning, match="'leftover' was garbage-collected while open"):
        _forget(pools)


async def test_pool_garbage_collected_unopened_or_closed_does_not_warn() -> None:
    closed = Pool(FakeDriver())
    await closed.open()
    await closed.close()
    pools = [closed, Pool(FakeDriver())]
    del closed

    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        _forget(pools)

    assert not [w for w in warned if issubclass(w.category, ResourceWarning)]


# ------------------------------------------------------------------ close


async def test_close_stops_new_acquires() -> None:
    pool = Pool(FakeDriver(), name="db")
    await pool.open()
    await pool.close()

    assert pool.closed
    with pytest.raises(PoolClosed, match="'db' is closed") as refused:
        await pool.acquire()
    assert refused.value.pool_name == "db"


async def test_close_closes_idle_connections_and_stops_the_maintenance_job() -> None:
    driver = FakeDriver()
    pool = Pool(driver, min_size=2, maintenance_interval=0.01)
    await pool.open()
    assert len(maintenance_tasks()) == 1

    await pool.close()

    assert driver.live == 0
    assert not maintenance_tasks()
    stats = pool.stats()
    assert (stats.size, stats.closed, stats.discarded, stats.evicted_idle) == (0, 2, 0, 0)
    check_books(pool)


async def test_close_wakes_every_waiter_with_pool_closed() -> None:
    driver = FakeDriver()
    pool = Pool(driver, max_size=1)
    await pool.open()
    held = await pool.acquire()
    waiters = []
    for count in range(1, 4):
        waiters.append(asyncio.create_task(acquire(pool)))
        await wait_for_waiters(pool, count)

    closing = asyncio.create_task(pool.close())
    results = await asyncio.gather(*waiters, return_exceptions=True)

    assert all(isinstance(result, PoolClosed) for result in results)
    assert pool.stats().waiting == 0
    await pool.release(held)
    await closing
    assert driver.live == 0


async def test_close_waits_for_connections_in_use_and_closes_them_on_return() -> None:
    driver = FakeDriver()
    pool = Pool(driver)
    await pool.open()
    held = await pool.acquire()
    spare = await pool.acquire()
    await pool.release(spare)

    closing = asyncio.create_task(pool.close(timeout=30))
    await wait_until(lambda: spare.closed)
    await asyncio.sleep(0.01)
    assert not closing.done()  # still waiting for the connection in use

    await pool.release(held)
    await closing
    assert held.closed
    assert driver.live == 0
    check_books(pool)


async def test_close_timeout_terminates_connections_still_in_use(
    caplog: pytest.LogCaptureFixture,
) -> None:
    driver = FakeDriver()
    pool = Pool(driver, name="app")
    await pool.open()
    held = await pool.acquire()
    started = time.monotonic()

    await pool.close(timeout=0.05)

    assert time.monotonic() - started < 5
    assert "pool 'app': close() waited 0.05s; ending what is left: 1 in use" in caplog.text
    assert held.closed
    assert driver.live == 0
    assert pool.stats().size == 0
    check_books(pool)

    before = pool.stats()
    await pool.release(held)  # accepted silently: it was already terminated
    assert pool.stats() == before
    with pytest.raises(ConnectionReleased, match="was closed and terminated it"):
        await held.execute("SELECT 1")  # its lease ended with the close
    assert held.executed == []


async def test_a_connection_terminated_by_close_can_be_released_only_once() -> None:
    pool = Pool(FakeDriver())
    await pool.open()
    held = await pool.acquire()
    await pool.close(timeout=0)
    await pool.release(held)  # accepted silently: it was already terminated

    with pytest.raises(ValueError, match="already released"):
        await pool.release(held)  # but only once: a second release is the caller's bug


async def test_concurrent_closes_all_return_once_the_pool_is_closed() -> None:
    driver = FakeDriver(close_latency=0.02)
    pool = Pool(driver, min_size=2)
    await pool.open()

    first = asyncio.create_task(pool.close())
    second = asyncio.create_task(pool.close())
    await asyncio.gather(first, second)

    assert driver.live == 0
    await pool.close()  # and once more: nothing to do


async def test_closing_a_never_opened_pool_twice_does_nothing() -> None:
    pool = Pool(FakeDriver())

    await pool.close()
    await pool.close()

    assert pool.closed


async def test_close_during_open_closes_the_first_connections_and_stops_the_job() -> None:
    driver = FakeDriver(connect_latency=0.05)
    pool = Pool(driver, min_size=2)
    opening = asyncio.create_task(pool.open())
    await wait_until(lambda: pool.stats().opening == 2)

    await pool.close()
    await opening

    assert pool.closed
    assert (driver.opened, driver.live) == (2, 0)
    await wait_until(lambda: not maintenance_tasks())
    with pytest.raises(PoolClosed):
        await pool.acquire()


async def test_close_timeout_cuts_short_a_slow_polite_close_and_terminates(
    caplog: pytest.LogCaptureFixture,
) -> None:
    driver = FakeDriver()
    pool = Pool(driver, min_size=1, close_timeout=30)
    await pool.open()
    driver.close_latency = 60
    started = time.monotonic()

    await pool.close(timeout=0.05)

    assert time.monotonic() - started < 5
    assert driver.live == 0  # terminated
    assert (pool.stats().size, pool.stats().closed) == (0, 1)
    # Nothing was in use: the log says what close() waited for.
    assert "close() waited 0.05s; ending what is left: 1 close" in caplog.text


async def test_close_while_an_acquirer_connects_waits_for_the_connect_then_closes_it() -> None:
    driver = FakeDriver(connect_latency=0.05)
    pool = Pool(driver)
    await pool.open()
    acquiring = asyncio.create_task(acquire(pool))
    await wait_until(lambda: pool.stats().opening == 1)

    await pool.close()

    with pytest.raises(PoolClosed):
        await acquiring
    assert (driver.opened, driver.live) == (1, 0)


async def test_acquirer_whose_stalled_connect_close_gave_up_on_gets_pool_closed() -> None:
    driver = FakeDriver()
    pool = Pool(driver)
    await pool.open()
    driver.stall_connects()
    acquiring = asyncio.create_task(acquire(pool))
    await wait_until(lambda: driver.stalled == 1)

    await pool.close(timeout=0.05)

    with pytest.raises(PoolClosed):
        await acquiring
    assert pool.stats().size == 0
    assert driver.live == 0
    driver.heal()


async def test_connect_left_behind_by_a_timed_out_acquirer_is_closed_by_close() -> None:
    driver = FakeDriver(connect_latency=0.1)
    pool = Pool(driver)
    await pool.open()
    with pytest.raises(PoolTimeout):
        await pool.acquire(timeout=0.01)

    await pool.close()

    assert (driver.opened, driver.live) == (1, 0)


async def test_close_while_an_acquirer_validates_gives_it_pool_closed() -> None:
    driver = FakeDriver()
    pool = Pool(driver, validate_after_idle=0, ping_timeout=30, clock=FakeClock())
    await pool.open()
    conn = await pool.acquire()
    await pool.release(conn)
    driver.stall_pings()
    acquiring = asyncio.create_task(acquire(pool))
    await wait_until(lambda: driver.stalled == 1)

    await pool.close(timeout=0.05)
    assert conn.closed
    driver.heal()  # the ping goes on, and fails: the connection was terminated

    with pytest.raises(PoolClosed):
        await acquiring
    assert pool.stats().size == 0
    assert driver.live == 0
    check_books(pool)


async def test_close_while_an_acquirer_validates_successfully_gives_it_pool_closed() -> None:
    driver = TerminatingDriver()
    gate = asyncio.Event()
    pool = Pool(driver, validate_after_idle=0, ping_timeout=30, clock=FakeClock())
    await pool.open()
    conn = await pool.acquire()
    await pool.release(conn)

    async def slow_ping(conn: object) -> None:
        await gate.wait()

    driver.ping = slow_ping  # type: ignore[method-assign]
    acquiring = asyncio.create_task(acquire(pool))
    await wait_until(lambda: pool.stats().idle == 0)

    await pool.close(timeout=0.05)
    assert conn.terminated
    gate.set()  # the ping succeeds after all

    with pytest.raises(PoolClosed):
        await acquiring
    assert pool.stats().size == 0
    check_books(pool)


async def test_close_while_a_release_resets_terminates_the_connection() -> None:
    driver = TerminatingDriver()
    pool = Pool(driver, reset_timeout=30)
    await pool.open()
    conn = await pool.acquire()
    driver.reset_gate = asyncio.Event()
    releasing = asyncio.create_task(pool.release(conn))
    await asyncio.sleep(0)

    await pool.close(timeout=0.05)
    assert conn.terminated
    driver.reset_gate.set()  # the reset finishes after close gave up on it

    await releasing
    assert pool.stats().size == 0
    check_books(pool)


async def test_close_while_a_failing_release_resets_terminates_the_connection() -> None:
    driver = FakeDriver()
    pool = Pool(driver, reset_timeout=30)
    await pool.open()
    conn = await pool.acquire()
    await conn.execute("BEGIN")
    driver.stall_resets()
    releasing = asyncio.create_task(pool.release(conn))
    await wait_until(lambda: driver.stalled == 1)

    await pool.close(timeout=0.05)
    driver.heal()  # the reset goes on, and fails: the connection was terminated

    await releasing
    assert driver.live == 0
    assert pool.stats().size == 0


async def test_release_during_close_closes_the_connection_and_lets_close_finish() -> None:
    driver = FakeDriver()
    pool = Pool(driver)
    await pool.open()
    held = await pool.acquire()
    closing = asyncio.create_task(pool.close(timeout=30))
    await wait_until(lambda: pool.closed)

    await pool.release(held)

    await closing
    assert held.closed
    assert pool.stats().closed == 1


async def test_close_cancelled_just_after_a_release_still_closes_that_connection() -> None:
    driver = FakeDriver()
    pool = Pool(driver)
    await pool.open()
    held = await pool.acquire()
    closing = asyncio.create_task(pool.close(timeout=30))
    await wait_until(lambda: pool.closed)

    closing.cancel()
    await pool.release(held)  # its close is started in the same loop iteration

    with pytest.raises(asyncio.CancelledError):  # close() gives up before that close ran at all
        await closing
    await wait_until(lambda: held.closed)
    assert pool.stats().size == 0
    check_books(pool)


async def test_close_cancelled_just_after_a_release_that_started_a_close_is_harmless() -> None:
    driver = FakeDriver()
    pool = Pool(driver)
    await pool.open()
    held = await pool.acquire()
    closing = asyncio.create_task(pool.close(timeout=30))
    await wait_until(lambda: pool.closed)

    await pool.release(held)  # its close starts in the background...
    closing.cancel()  # ...and close() is cancelled in the same loop iteration

    with pytest.raises(asyncio.CancelledError):
        await closing
    await wait_until(lambda: held.closed)
    assert pool.stats().size == 0
    check_books(pool)


async def test_acquirer_that_runs_after_close_began_gets_pool_closed() -> None:
    driver = FakeDriver()
    pool = Pool(driver)
    await pool.open()
    held = await pool.acquire()
    acquiring = asyncio.create_task(acquire(pool))  # created before close(), runs after it began

    await pool.close(timeout=0)

    with pytest.raises(PoolClosed):
        await acquiring
    await wait_until(lambda: pool.stats().size == 0)
    assert driver.live == 0
    await pool.release(held)
    check_books(pool)


async def test_repr_shows_the_state_of_the_pool() -> None:
    pool = Pool(FakeDriver(), name="app", max_size=4)
    assert repr(pool) == "<Pool 'app' new size=0 idle=0 in_use=0 waiting=0 max=4>"
    await pool.open()
    conn = await pool.acquire()
    assert repr(pool) == "<Pool 'app' open size=1 idle=0 in_use=1 waiting=0 max=4>"
    await pool.release(conn)
    assert repr(pool) == "<Pool 'app' open size=1 idle=1 in_use=0 waiting=0 max=4>"
    await pool.close()
    assert repr(pool) == "<Pool 'app' closed size=0 idle=0 in_use=0 waiting=0 max=4>"


# ------------------------------------------------------------------ the driver's own resources


class _DriverWithResources(FakeDriver):
    """A fake driver that owns something beyond its connections, like SQLite's memory database."""

    def __init__(self, *, fail: bool = False) -> None:
        super().__init__()
        self.fail = fail
        self.live_at_aclose: list[int] = []

    async def aclose(self) -> None:
        self.live_at_aclose.append(self.live)
        if self.fail:
            raise RuntimeError("could not release")


async def test_close_driver_releases_the_drivers_resources_after_its_connections() -> None:
    driver = _DriverWithResources()
    async with Pool(driver, min_size=2, close_driver=True):
        pass
    assert driver.live_at_aclose == [0]


async def test_by_default_the_driver_is_left_to_its_owner() -> None:
    driver = _DriverWithResources()
    async with Pool(driver, min_size=1):
        pass
    assert driver.live_at_aclose == []


async def test_a_failing_aclose_is_logged_and_the_pool_still_closes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    driver = _DriverWithResources(fail=True)
    pool = Pool(driver, min_size=1, close_driver=True)
    async with pool:
        pass
    assert pool.closed
    assert driver.live_at_aclose == [0]
    assert "closing the driver's resources failed: RuntimeError: could not release" in caplog.text


async def test_a_second_open_waits_for_the_first_one() -> None:
    """asyncpg's test_pool_init_race: an open() during another must not return before min_size
    connections exist."""
    driver = FakeDriver(connect_latency=0.05)
    pool = Pool(driver, min_size=2)
    first = asyncio.create_task(pool.open())
    await asyncio.sleep(0)  # the first open() is connecting now
    await pool.open()
    assert pool.stats().idle == 2
    await first
    await pool.close()


async def test_a_second_open_shares_the_first_ones_failure() -> None:
    driver = FakeDriver(connect_latency=0.05)
    driver.fail_next_connects(1)
    pool = Pool(driver, min_size=2)
    first = asyncio.create_task(pool.open())
    await asyncio.sleep(0)
    with pytest.raises(PoolConnectError):
        await pool.open()
    with pytest.raises(PoolConnectError):
        await first
    await pool.open()  # the pool was left unopened: a new open() tries again
    assert pool.stats().idle == 2
    await pool.close()


async def test_a_second_open_tries_itself_when_the_first_is_cancelled() -> None:
    driver = FakeDriver(connect_latency=0.05)
    pool = Pool(driver, min_size=2)
    first = asyncio.create_task(pool.open())
    await asyncio.sleep(0)
    second = asyncio.create_task(pool.open())
    await asyncio.sleep(0.01)
    first.cancel()
    await second
    assert pool.stats().idle == 2
    assert first.cancelled()
    await pool.close()


async def test_open_whose_deadline_passes_mid_connect_keeps_the_last_error_as_cause() -> None:
    """The deadline may pass while a retry's connects are still under way: the error still
    carries the last connect error as its cause."""
    driver = FakeDriver()
    pool = _retrying_pool(driver)
    driver.fail_next_connects(2, FakeConnectionError("refused by the test"))
    failed_connects = 0

    def stall_after_the_failures(event: PoolEvent) -> None:
        nonlocal failed_connects
        if isinstance(event, ConnectFailed):
            failed_connects += 1
            if failed_connects == 2:
                driver.stall_connects()  # the retries hang until the deadline

    pool.add_listener(stall_after_the_failures)
    with pytest.raises(PoolConnectError, match="refused by the test") as failed:
        await pool.open(timeout=0.2)

    assert isinstance(failed.value.__cause__, FakeConnectionError)
    assert repr(pool).startswith("<Pool 'db' new size=0")
    driver.heal()
