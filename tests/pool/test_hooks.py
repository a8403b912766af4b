"""The hooks a migrating user relies on: ``setup`` on every lend (asyncpg's), ``check`` in place
of the ping (psycopg_pool's), and ``pool.check()``, which validates every idle connection now."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from helpers import CountingClock, check_books, maintenance_rounds, wait_until

from aiodbpool import Pool, PoolClosed, PoolTimeout, create_pool, raw_connection
from aiodbpool.drivers.fake import FakeClock, FakeConnection, FakeDriver


async def test_setup_runs_on_every_lend_with_what_the_borrower_gets() -> None:
    prepared: list[FakeConnection] = []

    async def setup(conn: FakeConnection) -> None:
        await conn.execute("SET app.user = 'someone'")
        prepared.append(conn)

    async with Pool(FakeDriver(), min_size=1, setup=setup, clock=FakeClock()) as pool:
        for _ in range(3):
            async with pool.acquire() as conn:
                assert prepared[-1] is conn  # the lease itself, before acquire() returned
                raw = raw_connection(conn)
        assert len(prepared) == 3  # every lend, the idle connection's too: no fast path
        assert raw.executed.count(("SET app.user = 'someone'", ())) == 3
        check_books(pool)


async def test_a_setup_that_fails_discards_the_connection_and_tells_the_acquirer() -> None:
    calls = 0

    async def setup(conn: FakeConnection) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("setup failed")

    async with Pool(FakeDriver(), setup=setup, clock=FakeClock()) as pool:
        with pytest.raises(RuntimeError, match="setup failed"):
            await pool.acquire()
        stats = pool.stats()
        assert (stats.discarded, stats.in_use, stats.size) == (1, 0, 0)
        async with pool.acquire():  # the next lend gets a connection of its own
            pass
        check_books(pool)


async def test_a_setup_that_hangs_is_bounded_by_the_acquire_timeout() -> None:
    async def setup(conn: FakeConnection) -> None:
        await asyncio.Event().wait()

    async with Pool(FakeDriver(), setup=setup, max_size=1) as pool:
        with pytest.raises(PoolTimeout):
            await pool.acquire(timeout=0.05)
        await wait_until(lambda: pool.stats().size == 0)  # discarded: its state is unknown
        assert pool.stats().discarded == 1
        check_books(pool)


async def test_check_replaces_the_ping_and_a_failing_one_discards() -> None:
    driver = FakeDriver()
    checked: list[FakeConnection] = []
    refuse: set[int] = set()

    async def check(conn: FakeConnection) -> None:
        checked.append(conn)
        if conn.id in refuse:
            raise ConnectionError("not fit")

    async with Pool(driver, min_size=1, validate_after_idle=0, check=check) as pool:
        async with pool.acquire() as first:
            first_id = raw_connection(first).id
        refuse.add(first_id)
        async with pool.acquire() as second:
            assert raw_connection(second).id != first_id  # the unfit one was discarded
        assert sum(conn.pings for conn in driver.connections) == 0  # the driver's ping: unused
        assert [conn.id for conn in checked][:2] == [first_id, first_id]
        assert pool.stats().discarded == 1
        check_books(pool)


async def test_pool_check_validates_every_idle_connection_now() -> None:
    driver = FakeDriver()
    async with Pool(driver, min_size=3, validate_after_idle=None, clock=FakeClock()) as pool:
        assert pool.stats().idle == 3
        broken = driver.connections[1]
        driver.break_connection(broken, detected=False)  # dead, and nothing shows it yet

        assert await pool.check() == 1

        stats = pool.stats()
        assert stats.discarded == 1
        assert sum(conn.pings for conn in driver.connections if conn is not broken) == 2
        await wait_until(lambda: pool.stats().idle == 3)  # min_size refilled
        assert await pool.check() == 0
        check_books(pool)


async def test_pool_check_on_a_pool_not_open_says_so() -> None:
    pool: Pool[Any] = create_pool("fake://")
    with pytest.raises(PoolClosed, match="not open"):
        await pool.check()


@pytest.mark.parametrize("option", ["setup", "check"])
def test_a_hook_that_is_not_callable_is_refused_naming_it(option: str) -> None:
    with pytest.raises(TypeError, match=f"{option} must be an async function of one connection"):
        Pool(FakeDriver(), **{option: "print"})  # type: ignore[arg-type]


async def test_reconnect_failed_is_told_once_per_outage() -> None:
    driver, clock = FakeDriver(), CountingClock()
    told: list[Pool[Any]] = []
    pool = Pool(
        driver,
        min_size=1,
        maintenance_interval=0.01,
        backoff_initial=1.0,
        backoff_max=1.0,
        reconnect_timeout=60.0,
        reconnect_failed=told.append,
        clock=clock,
    )
    driver.fail_connects()
    await pool.open(wait=False)
    try:
        await wait_until(lambda: pool.stats().connect_errors >= 1)
        clock.advance(30.0)
        await maintenance_rounds(clock)
        assert told == []  # failing for 30 s: not yet
        for _ in range(3):
            clock.advance(20.0)  # past 60 s, and on: each round may probe again, and fail
            await maintenance_rounds(clock)
        assert told == [pool]  # once for the outage, however long it lasts

        driver.heal()
        clock.advance(2.0)
        await wait_until(lambda: pool.stats().idle == 1)  # a probe connected: the outage ended
        errors = pool.stats().connect_errors
        driver.fail_connects()
        pool.expire()  # the connection goes; refills fail again: a second outage
        await wait_until(lambda: pool.stats().connect_errors > errors)
        clock.advance(61.0)
        await maintenance_rounds(clock)
        await wait_until(lambda: len(told) == 2)
    finally:
        driver.heal()
        await pool.close()


async def test_a_reconnect_failed_hook_that_raises_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    driver, clock = FakeDriver(), CountingClock()

    def broken(pool: Pool[Any]) -> None:
        raise RuntimeError("hook bug")

    pool = Pool(
        driver,
        min_size=1,
        maintenance_interval=0.01,
        reconnect_timeout=1.0,
        reconnect_failed=broken,
        clock=clock,
    )
    driver.fail_connects()
    await pool.open(wait=False)
    try:
        await wait_until(lambda: pool.stats().connect_errors >= 1)
        clock.advance(2.0)
        await wait_until(lambda: any("hook raised" in r.getMessage() for r in caplog.records))
        await maintenance_rounds(clock)  # the job goes on
    finally:
        driver.heal()
        await pool.close()


def test_a_bad_reconnect_option_is_refused_naming_it() -> None:
    with pytest.raises(TypeError, match="reconnect_failed must be a function of the pool"):
        Pool(FakeDriver(), reconnect_failed="alert")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="reconnect_timeout must be more than zero"):
        Pool(FakeDriver(), reconnect_timeout=0)
