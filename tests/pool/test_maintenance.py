"""Background maintenance: idle eviction, lifetime and use-count retirement, refill to min_size
with exponential backoff, expire(), and leak reports.

Ages and backoff delays are read from an injected clock that moves only when a test advances it.
To show that something did *not* happen, a test waits for a few more maintenance rounds (counted
by the clock's reads) instead of sleeping.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import weakref
from typing import Any

import pytest
from helpers import (
    CountingClock,
    acquire,
    check_books,
    maintenance_rounds,
    maintenance_tasks,
    wait_until,
)

from aiodbpool import Pool, raw_connection
from aiodbpool._breaker import Backoff
from aiodbpool._maintenance import run_maintenance
from aiodbpool.drivers.fake import FakeConnection, FakeDriver

FAST = 0.01
"""maintenance_interval of these tests: rounds follow each other quickly."""


def _pool(driver: FakeDriver, clock: CountingClock, **options: Any) -> Pool[FakeConnection]:
    options.setdefault("maintenance_interval", FAST)
    return Pool(driver, clock=clock, **options)


async def _release_all(pool: Pool[FakeConnection], conns: list[FakeConnection]) -> None:
    for conn in conns:
        await pool.release(conn)


# ------------------------------------------------------------------ idle eviction


async def test_connections_idle_longer_than_max_idle_are_closed_down_to_min_size() -> None:
    driver, clock = FakeDriver(), CountingClock()
    async with _pool(driver, clock, min_size=1, max_size=4, max_idle=10) as pool:
        conns = [await pool.acquire() for _ in range(4)]
        for conn in conns:  # released one second apart: the first is the least recently used
            await pool.release(conn)
            clock.advance(1)
        clock.advance(10)

        await wait_until(lambda: pool.stats().evicted_idle >= 3 and pool.stats().closing == 0)
        await maintenance_rounds(clock)

        stats = pool.stats()
        assert (stats.idle, stats.evicted_idle, stats.closed) == (1, 3, 3)
        assert driver.opened == 4  # min_size was kept: nothing had to be reopened
        assert [conn.closed for conn in conns] == [True, True, True, False]
        check_books(pool)


async def test_connections_idle_less_than_max_idle_are_kept() -> None:
    driver, clock = FakeDriver(), CountingClock()
    async with _pool(driver, clock, max_idle=10) as pool:
        older, newer = await pool.acquire(), await pool.acquire()
        await pool.release(older)
        clock.advance(5)
        await pool.release(newer)
        clock.advance(5)  # older: idle 10s, newer: idle 5s

        await wait_until(lambda: older.closed)
        await maintenance_rounds(clock)

        assert not newer.closed
        assert (pool.stats().idle, pool.stats().evicted_idle) == (1, 1)


async def test_max_idle_none_keeps_idle_connections_forever() -> None:
    driver, clock = FakeDriver(), CountingClock()
    async with _pool(driver, clock, max_idle=None, max_lifetime=None) as pool:
        await _release_all(pool, [await pool.acquire() for _ in range(2)])
        clock.advance(10**9)

        await maintenance_rounds(clock)

        assert (pool.stats().idle, driver.live) == (2, 2)


# ------------------------------------------------------------------ lifetime and uses


async def test_max_lifetime_retires_idle_connections_within_their_jittered_lifetime() -> None:
    driver, clock = FakeDriver(), CountingClock()
    async with _pool(driver, clock, max_lifetime=100, max_idle=None) as pool:
        conns = [await pool.acquire() for _ in range(5)]
        await _release_all(pool, conns)

        clock.advance(89)  # below 0.9 * max_lifetime: nobody may retire yet
        await maintenance_rounds(clock)
        assert not any(conn.closed for conn in conns)

        clock.advance(11)  # max_lifetime reached: everybody retires
        await wait_until(lambda: all(conn.closed for conn in conns))
        assert pool.stats().evicted_lifetime == 5
        check_books(pool)


async def test_connection_past_its_lifetime_is_not_handed_out() -> None:
    driver, clock = FakeDriver(), CountingClock()
    pool = Pool(driver, clock=clock, max_lifetime=100, max_idle=None, maintenance_interval=1000)
    async with pool:
        old = await pool.acquire()
        await pool.release(old)
        clock.advance(100)

        async with pool.acquire() as conn:
            assert conn.id != old.id

        assert pool.stats().evicted_lifetime == 1
        await wait_until(lambda: old.closed)


async def test_connection_in_use_past_its_lifetime_is_retired_on_release() -> None:
    driver, clock = FakeDriver(), CountingClock()
    async with _pool(driver, clock, max_lifetime=100) as pool:
        conn = await pool.acquire()
        clock.advance(100)

        await pool.release(conn)

        await wait_until(lambda: conn.closed)
        assert (pool.stats().size, pool.stats().evicted_lifetime) == (0, 1)


async def test_max_uses_retires_a_connection_after_that_many_acquisitions() -> None:
    driver, clock = FakeDriver(), CountingClock()
    async with _pool(driver, clock, max_uses=2) as pool:
        first = await pool.acquire()
        await pool.release(first)
        second = await pool.acquire()
        assert second.id == first.id
        await pool.release(second)

        await wait_until(lambda: first.closed)
        async with pool.acquire() as conn:
            assert conn.id != first.id
        assert pool.stats().evicted_lifetime == 1


# ------------------------------------------------------------------ refill and backoff


async def test_lost_connections_are_refilled_up_to_min_size() -> None:
    driver, clock = FakeDriver(), CountingClock()
    async with _pool(driver, clock, min_size=3) as pool:
        first, second, third = driver.connections
        driver.break_connection(third, detected=True)
        conn = await pool.acquire()  # the broken one is discarded, the next one handed out
        assert raw_connection(conn) is second
        assert pool.detach(conn) is second

        await wait_until(lambda: pool.stats().idle == 3)
        assert driver.opened == 5
        check_books(pool)
        assert not first.closed
        await driver.close(second)


async def test_idle_connections_known_closed_are_dropped_without_an_acquire() -> None:
    """After a server restart, dead idle connections must not keep counting toward the size
    until someone happens to acquire them: the maintenance round drops them and refills."""
    driver, clock = FakeDriver(), CountingClock()
    async with _pool(driver, clock, min_size=2, max_size=3) as pool:
        first, second = driver.connections
        driver.break_connection(first, detected=True)
        driver.break_connection(second, detected=False)  # silent: only a round trip would tell
        await wait_until(lambda: first.closed)
        await maintenance_rounds(clock)
        stats = pool.stats()
        assert (stats.discarded, stats.idle, stats.size) == (1, 2, 2)
        assert not second.closed  # is_closed only: no ping, so the silent one stays for now
        assert second.pings == 0
        check_books(pool)


async def test_failed_refills_back_off_exponentially_then_heal() -> None:
    driver, clock = FakeDriver(), CountingClock()
    driver.fail_connects()
    pool = _pool(driver, clock, min_size=1, backoff_initial=1, backoff_max=8)
    await pool.open(wait=False)
    try:
        await wait_until(lambda: driver.connect_attempts == 1)

        # After the n-th failure the next attempt waits between half and all of
        # min(backoff_max, backoff_initial * 2**(n-1)).
        for attempts, ceiling in [(1, 1), (2, 2), (3, 4), (4, 8), (5, 8)]:
            clock.advance(ceiling / 2 - 0.1)  # too early, whatever the jitter
            await maintenance_rounds(clock)
            assert driver.connect_attempts == attempts
            clock.advance(ceiling / 2 + 0.2)  # late enough, whatever the jitter
            await wait_until(lambda: driver.connect_attempts == attempts + 1)  # noqa: B023

        driver.heal()
        clock.advance(8)
        await wait_until(lambda: pool.stats().idle == 1)
        assert pool.stats().connect_errors == 6
    finally:
        driver.heal()
        await pool.close()


async def test_backoff_does_not_spin_while_a_refill_is_under_way() -> None:
    driver, clock = FakeDriver(), CountingClock()
    driver.fail_connects()
    pool = _pool(
        driver, clock, min_size=2, backoff_initial=1, backoff_max=1, maintenance_interval=0.1
    )
    await pool.open(wait=False)
    try:
        await wait_until(lambda: pool.stats().connect_errors == 2)
        driver.stall_connects()
        clock.advance(1)
        await wait_until(lambda: driver.stalled == 1)  # one probe, hanging

        reads = clock.reads
        for _ in range(200):  # 200 turns of the event loop, a few milliseconds
            await asyncio.sleep(0)

        assert clock.reads - reads < 20  # not a round on every turn (it was one every two)
        await maintenance_rounds(clock)  # rounds while the probe hangs start no second probe
        assert driver.stalled == 1
        driver.heal()
        await wait_until(lambda: pool.stats().idle == 2)
    finally:
        driver.heal()
        await pool.close()


async def test_refill_after_a_success_starts_from_the_initial_delay_again() -> None:
    backoff = Backoff(1.0, 8.0, random.Random(7))
    for _ in range(3):
        backoff.failed(0.0)
    backoff.succeeded()

    assert (backoff.failures, backoff.not_before) == (0, -math.inf)
    delay = backoff.failed(100.0)
    assert 0.5 <= delay <= 1.0
    assert backoff.not_before == 100.0 + delay


# ------------------------------------------------------------------ expire


async def test_expire_retires_idle_connections_now_and_those_in_use_on_release() -> None:
    driver, clock = FakeDriver(), CountingClock()
    async with _pool(driver, clock) as pool:
        idle, held = await pool.acquire(), await pool.acquire()
        await pool.release(idle)

        pool.expire()

        await wait_until(lambda: idle.closed)
        assert not held.closed
        await pool.release(held)
        await wait_until(lambda: held.closed)
        assert pool.stats().evicted_lifetime == 2
        async with pool.acquire() as conn:
            assert conn.id not in (idle.id, held.id)


async def test_expire_refills_min_size_with_new_connections() -> None:
    driver, clock = FakeDriver(), CountingClock()
    async with _pool(driver, clock, min_size=2) as pool:
        old = driver.connections

        pool.expire()

        await wait_until(lambda: pool.stats().idle == 2 and all(conn.closed for conn in old))
        assert driver.opened == 4


async def test_connect_under_way_during_expire_is_used_once_then_retired() -> None:
    driver, clock = FakeDriver(), CountingClock()
    async with _pool(driver, clock) as pool:
        driver.stall_connects()
        acquiring = asyncio.create_task(acquire(pool))
        await wait_until(lambda: driver.stalled == 1)

        pool.expire()
        driver.heal()
        conn = await acquiring
        await pool.release(conn)

        await wait_until(lambda: conn.closed)
        assert pool.stats().evicted_lifetime == 1


# ------------------------------------------------------------------ leaks


async def test_connection_held_longer_than_leak_timeout_is_reported_once_with_its_stack(
    caplog: pytest.LogCaptureFixture,
) -> None:
    driver, clock = FakeDriver(), CountingClock()
    caplog.set_level(logging.WARNING, logger="aiodbpool")
    async with _pool(driver, clock, name="app", leak_timeout=30) as pool:
        conn = await pool.acquire()
        clock.advance(29)
        await maintenance_rounds(clock)
        assert not caplog.records

        clock.advance(1)
        await wait_until(lambda: caplog.records)
        await maintenance_rounds(clock)

        (record,) = caplog.records
        assert record.levelno == logging.WARNING
        assert record.name == "aiodbpool"
        message = record.getMessage()
        assert "pool 'app': a connection has been held for 30.0s (leak_timeout=30s)" in message
        assert "test_connection_held_longer_than_leak_timeout_is_reported_once" in message
        await pool.release(conn)


async def test_leak_report_points_at_a_fast_path_acquire(
    caplog: pytest.LogCaptureFixture,
) -> None:
    driver, clock = FakeDriver(), CountingClock()
    caplog.set_level(logging.WARNING, logger="aiodbpool")
    async with _pool(driver, clock, leak_timeout=30) as pool:
        conn = await pool.acquire()
        await pool.release(conn)
        conn = await _hold_a_connection(pool)  # the fast path: the idle connection is ready
        clock.advance(30)

        await wait_until(lambda: caplog.records)

        assert "in _hold_a_connection" in caplog.records[0].getMessage()
        await pool.release(conn)


async def _hold_a_connection(pool: Pool[FakeConnection]) -> FakeConnection:
    return await pool.acquire()


async def test_connections_released_in_time_are_not_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    driver, clock = FakeDriver(), CountingClock()
    caplog.set_level(logging.WARNING, logger="aiodbpool")
    async with _pool(driver, clock, leak_timeout=30) as pool:
        conn = await pool.acquire()
        clock.advance(29)
        await pool.release(conn)
        clock.advance(100)
        await maintenance_rounds(clock)
    assert not caplog.records


# ------------------------------------------------------------------ the job itself


async def test_maintenance_round_that_fails_is_logged_and_retried(
    caplog: pytest.LogCaptureFixture,
) -> None:
    driver, clock = FakeDriver(), CountingClock()
    async with _pool(driver, clock, min_size=1) as pool:
        clock.error = RuntimeError("clock broke")
        await wait_until(lambda: "a maintenance round failed" in caplog.text)
        clock.error = None

        conn = driver.connections[0]
        driver.break_connection(conn, detected=True)
        async with pool.acquire() as replacement:  # the broken one is discarded
            assert replacement.id != conn.id
        await wait_until(lambda: pool.stats().idle == 1)  # and maintenance still refills


async def test_maintenance_job_ends_when_its_pool_is_gone() -> None:
    class Tiny:
        def __init__(self) -> None:
            self.rounds = 0

        def one_round(self) -> float | None:
            self.rounds += 1
            return 60.0

    owners = [Tiny()]
    tiny: weakref.ref[Any] = weakref.ref(owners[0])
    wakeup = asyncio.Event()
    job = asyncio.create_task(run_maintenance(tiny, Tiny.one_round, wakeup, 1.0))
    await wait_until(lambda: owners[0].rounds == 1)

    owners.clear()
    assert tiny() is None  # the job did not keep it alive
    wakeup.set()

    await asyncio.wait_for(job, timeout=5)
    assert not maintenance_tasks()
