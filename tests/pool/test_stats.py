"""Stats: each counter of PoolStats moves exactly when its docstring says, and a snapshot is frozen.

Each step below compares two snapshots and names every counter that changed, so a counter that
moves when it should not fails the test as surely as one that does not move.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math

import pytest
from helpers import CountingClock, acquire, maintenance_rounds, wait_for_waiters, wait_until

from aiodbpool import (
    ConnectionReleased,
    DurationHistogram,
    Pool,
    PoolConnectError,
    PoolStats,
    PoolTimeout,
)
from aiodbpool.drivers.fake import FakeClock, FakeConnection, FakeDriver

COUNTERS = (
    "acquired",
    "waited",
    "timeouts",
    "created",
    "closed",
    "connect_errors",
    "validation_failures",
    "discarded",
    "evicted_idle",
    "evicted_lifetime",
    "wait_time_total",
    "wait_time_max",
    "stale_releases",
    "stale_uses",
)


class _Changes:
    """Snapshots a pool's stats and reports which counters changed since the last look."""

    def __init__(self, pool: Pool[FakeConnection]) -> None:
        self._pool = pool
        self._last = pool.stats()

    def __call__(self) -> dict[str, float]:
        now = self._pool.stats()
        before, after = self._last.as_dict(), now.as_dict()
        self._last = now
        return {
            name: after[name] - before[name] for name in COUNTERS if after[name] != before[name]
        }


async def _settled(pool: Pool[FakeConnection]) -> None:
    await wait_until(lambda: pool.stats().opening == 0 and pool.stats().closing == 0)


async def test_every_counter_moves_as_documented() -> None:
    driver, clock = FakeDriver(), CountingClock()
    pool = Pool(
        driver,
        max_size=1,
        validate_after_idle=10,
        max_idle=100,
        max_lifetime=1000,
        maintenance_interval=0.01,
        clock=clock,
    )
    async with pool:
        changes = _Changes(pool)

        conn = await pool.acquire()  # opens a connection: a slow-path acquisition
        assert changes() == {"acquired": 1, "waited": 1, "created": 1}

        await pool.release(conn)
        conn = await pool.acquire()  # the fast path
        assert changes() == {"acquired": 1}

        waiter = asyncio.create_task(acquire(pool))
        await wait_for_waiters(pool, 1)
        clock.advance(3)
        await pool.release(conn)
        conn = await waiter  # waited 3 seconds on the pool's clock
        assert changes() == {"acquired": 1, "waited": 1, "wait_time_total": 3, "wait_time_max": 3}

        with pytest.raises(PoolTimeout):
            await pool.acquire(timeout=0.01)
        assert changes() == {"timeouts": 1}

        await pool.release(conn)
        driver.break_connection(conn, detected=True)
        driver.fail_next_connects(1)
        with pytest.raises(PoolConnectError):
            await pool.acquire()  # the broken one is discarded, its replacement fails to open
        await _settled(pool)
        assert changes() == {"discarded": 1, "closed": 1, "connect_errors": 1}

        conn = await pool.acquire()
        await pool.release(conn)
        clock.advance(10)
        driver.fail_pings(1)
        conn = await pool.acquire()  # pinged, failed: discarded and replaced
        await _settled(pool)
        assert changes() == {
            "acquired": 2,
            "waited": 2,
            "created": 2,
            "validation_failures": 1,
            "discarded": 1,
            "closed": 1,
        }

        clock.advance(1000)
        await pool.release(conn)  # past its lifetime
        await _settled(pool)
        assert changes() == {"evicted_lifetime": 1, "closed": 1}

        conn = await pool.acquire()
        await pool.release(conn)
        clock.advance(100)
        await wait_until(lambda: pool.stats().evicted_idle == 1)
        await _settled(pool)
        assert changes() == {
            "acquired": 1,
            "waited": 1,
            "created": 1,
            "evicted_idle": 1,
            "closed": 1,
        }

        stale = await pool.acquire()
        await pool.release(stale)
        with pytest.raises(ValueError, match="already released"):
            await pool.release(stale)  # a second release: refused, nothing else moves
        assert changes() == {"acquired": 1, "waited": 1, "created": 1, "stale_releases": 1}
        with pytest.raises(ConnectionReleased):
            await stale.fetchval("SELECT 1")  # a use after the release: refused, nothing sent
        assert stale.executed == []
        assert changes() == {"stale_uses": 1}

        await maintenance_rounds(clock)
        assert changes() == {}


async def test_wait_time_max_keeps_the_longest_wait() -> None:
    clock = CountingClock()
    async with Pool(FakeDriver(), max_size=1, clock=clock) as pool:
        held = await pool.acquire()
        for wait in (5, 2):
            waiter = asyncio.create_task(acquire(pool))
            await wait_for_waiters(pool, 1)
            clock.advance(wait)
            await pool.release(held)
            held = await waiter

        stats = pool.stats()
        assert (stats.wait_time_total, stats.wait_time_max) == (7, 5)
        await pool.release(held)


async def test_gauges_describe_the_pool_now() -> None:
    driver = FakeDriver()
    pool = Pool(driver, name="app", max_size=4, close_timeout=30)
    async with pool:
        retiring = await pool.acquire()
        await pool.release(retiring)
        driver.close_latency = 60
        pool.expire()  # closing, slowly
        held, spare = await pool.acquire(), await pool.acquire()
        driver.stall_connects()
        waiter = asyncio.create_task(acquire(pool))
        await wait_until(lambda: driver.stalled == 1)  # a connection opens for the waiter

        stats = pool.stats()
        assert (stats.name, stats.min_size, stats.max_size) == ("app", 0, 4)
        gauges = (stats.size, stats.idle, stats.in_use, stats.opening, stats.closing)
        assert gauges == (4, 0, 2, 1, 1)
        assert stats.waiting == 1

        await pool.release(spare)  # comes back first: the waiter takes it
        again = await waiter
        assert again.id == spare.id
        assert pool.stats().waiting == 0
        driver.heal()
        await wait_until(lambda: pool.stats().idle == 1)  # the new one joined the pool
        stats = pool.stats()
        gauges = (stats.size, stats.idle, stats.in_use, stats.opening, stats.closing)
        assert gauges == (4, 1, 2, 0, 1)

        for conn in (held, again):
            await pool.release(conn)
        await pool.close(timeout=0.01)  # cuts the slow close short: terminated
    assert driver.live == 0


async def test_a_snapshot_never_changes_after_it_is_taken() -> None:
    async with Pool(FakeDriver()) as pool:
        before = pool.stats()
        conn = await pool.acquire()
        await pool.release(conn)

        assert before.acquired == 0
        assert pool.stats().acquired == 1
        with pytest.raises(dataclasses.FrozenInstanceError):
            before.acquired = 5  # type: ignore[misc]


async def test_as_dict_gives_every_field_ready_for_json() -> None:
    async with Pool(FakeDriver(), name="app") as pool:
        data = pool.stats().as_dict()

    assert list(data) == [field.name for field in dataclasses.fields(PoolStats)]
    assert data["name"] == "app"
    assert json.loads(json.dumps(data)) == data


# ------------------------------------------------------------------ duration histograms


async def test_histograms_count_connects_waits_and_uses() -> None:
    clock = FakeClock()
    driver = FakeDriver()
    async with Pool(driver, max_size=1, validate_after_idle=None, clock=clock) as pool:
        first = await pool.acquire()  # the slow path: it opens a connection
        clock.advance(0.3)
        await pool.release(first)  # held 0.3 s
        for _ in range(4):  # the fast path: an idle connection at once
            async with pool.acquire():
                clock.advance(0.002)
        stats = pool.stats()

    assert stats.create_time.count == 1
    assert stats.wait_time.count == 5
    assert stats.wait_time.counts[0] == 5  # no clock time passed while acquiring
    assert stats.use_time.count == 5
    assert stats.use_time.total == pytest.approx(0.308)
    buckets = dict(zip((*stats.use_time.bounds, math.inf), stats.use_time.counts, strict=True))
    assert buckets[0.0025] == 4  # 2 ms each
    assert buckets[0.5] == 1  # 0.3 s
    assert stats.use_time.cumulative()[-1] == (math.inf, 5)


async def test_a_wait_is_recorded_with_its_duration() -> None:
    clock = FakeClock()
    async with Pool(FakeDriver(), max_size=1, clock=clock) as pool:
        held = await pool.acquire()
        waiting = asyncio.ensure_future(pool.acquire())
        await wait_for_waiters(pool, 1)
        clock.advance(0.04)
        await pool.release(held)
        await pool.release(await waiting)
        wait_time = pool.stats().wait_time

    assert wait_time.count == 2
    assert sum(wait_time.counts[1:]) == 1
    bounds = (*wait_time.bounds, math.inf)
    assert [bound for bound, n in zip(bounds, wait_time.counts, strict=True) if n][-1] == 0.05
    assert wait_time.total == pytest.approx(0.04)


def test_a_histogram_as_json() -> None:
    histogram = DurationHistogram(bounds=(0.1, 1.0), counts=(2, 0, 1), total=3.5)
    assert histogram.count == 3
    assert histogram.as_dict() == {
        "bounds": [0.1, 1.0],
        "counts": [2, 0, 1],
        "count": 3,
        "total": 3.5,
    }
    assert histogram.cumulative() == [(0.1, 2), (1.0, 2), (math.inf, 3)]
