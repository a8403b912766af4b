"""Events: each kind reported once, at its moment, with its numbers; listeners that raise, add or
remove listeners never break the pool. Time comes from a FakeClock, so durations are exact."""

from __future__ import annotations

import asyncio
import logging

import pytest
from helpers import acquire, check_books, wait_for_waiters, wait_until

from aiodbpool import Pool, PoolConnectError, PoolExhausted, PoolTimeout
from aiodbpool.drivers.fake import FakeClock, FakeConnection, FakeConnectionError, FakeDriver
from aiodbpool.events import (
    Acquired,
    BreakerClosed,
    BreakerOpened,
    Closed,
    Connected,
    ConnectFailed,
    Exhausted,
    PoolEvent,
    Released,
    Removed,
    Reset,
    TimedOut,
)


class Recorder:
    """A listener that keeps every event."""

    def __init__(self) -> None:
        self.events: list[PoolEvent] = []

    def __call__(self, event: PoolEvent) -> None:
        self.events.append(event)

    def of(self, kind: type[object]) -> list[PoolEvent]:
        return [event for event in self.events if isinstance(event, kind)]


def _pool(driver: FakeDriver, clock: FakeClock, **options: object) -> Pool[FakeConnection]:
    settings: dict[str, object] = {"name": "app", "validate_after_idle": None, "clock": clock}
    settings.update(options)
    return Pool(driver, **settings)  # type: ignore[arg-type]


async def test_a_lend_reports_its_acquire_and_release_with_its_number_and_times() -> None:
    clock, heard = FakeClock(), Recorder()
    async with _pool(FakeDriver(), clock, min_size=1) as pool:
        pool.add_listener(heard)
        async with pool.acquire():  # the fast path
            clock.advance(0.25)
        conn = await pool.acquire()
        clock.advance(1.5)
        await pool.release(conn)

    assert heard.events[:4] == [
        Acquired("app", lend=1, wait=0.0),
        Released("app", lend=1, held=0.25),
        Acquired("app", lend=2, wait=0.0),
        Released("app", lend=2, held=1.5),
    ]


async def test_an_acquire_that_waited_reports_its_wait() -> None:
    clock, heard = FakeClock(), Recorder()
    async with _pool(FakeDriver(), clock, max_size=1) as pool:
        held = await pool.acquire()
        pool.add_listener(heard)
        waiter = asyncio.create_task(acquire(pool))
        await wait_for_waiters(pool, 1)
        clock.advance(2.0)
        await pool.release(held)
        await pool.release(await waiter)

    acquired = heard.of(Acquired)
    assert acquired == [Acquired("app", lend=2, wait=2.0)]


async def test_connects_report_their_duration_and_failures_their_error() -> None:
    clock, heard = FakeClock(), Recorder()
    driver = FakeDriver()
    async with _pool(driver, clock, breaker_threshold=None) as pool:
        pool.add_listener(heard)
        async with pool.acquire():
            pass
        refused = FakeConnectionError("refused by the test")
        driver.fail_next_connects(1, refused)
        pool.expire()  # the idle connection goes: the next acquire connects
        with pytest.raises(PoolConnectError):
            await pool.acquire()

    assert heard.of(Connected) == [Connected("app", duration=0.0)]
    assert heard.of(ConnectFailed) == [ConnectFailed("app", duration=0.0, error=refused)]


async def test_the_breaker_reports_opening_and_closing() -> None:
    clock, heard = FakeClock(), Recorder()
    driver = FakeDriver()
    async with _pool(driver, clock, breaker_threshold=2, backoff_initial=1.0) as pool:
        pool.add_listener(heard)
        refused = FakeConnectionError("refused by the test")
        driver.fail_connects(refused)
        for _ in range(2):
            with pytest.raises(PoolConnectError):
                await pool.acquire()
        assert heard.of(BreakerOpened) == [BreakerOpened("app", errors_in_a_row=2, error=refused)]

        driver.heal()
        clock.advance(60.0)  # past any backoff: the next acquirer probes
        await wait_until(lambda: not pool.stats().breaker_open or pool.stats().opening == 0)
        async with pool.acquire():
            pass

    assert heard.of(BreakerClosed) == [BreakerClosed("app")]
    assert len(heard.of(ConnectFailed)) == 2


async def test_a_reset_that_waits_reports_its_duration_and_outcome() -> None:
    heard = Recorder()
    driver = FakeDriver(reset_latency=0.01)
    async with Pool(driver, name="app", max_size=1) as pool:
        pool.add_listener(heard)
        conn = await pool.acquire()
        await conn.execute("BEGIN")
        await pool.release(conn)  # the rollback waits on the "server"

        conn = await pool.acquire()
        await conn.execute("BEGIN")
        driver.fail_resets(1)
        await pool.release(conn)

    resets = heard.of(Reset)
    assert [reset.ok for reset in resets if isinstance(reset, Reset)] == [True, False]
    assert all(reset.duration >= 0 for reset in resets if isinstance(reset, Reset))
    assert heard.of(Removed)[0] == Removed("app", reason="discarded")


async def test_a_clean_release_reports_no_reset() -> None:
    heard = Recorder()
    async with _pool(FakeDriver(), FakeClock()) as pool:
        pool.add_listener(heard)
        async with pool.acquire():
            pass
    assert heard.of(Reset) == []


async def test_removals_report_their_reason_and_then_their_close() -> None:
    clock, heard = FakeClock(), Recorder()
    async with _pool(FakeDriver(), clock, min_size=2) as pool:
        pool.add_listener(heard)
        pool.expire()
        await wait_until(lambda: len(heard.of(Closed)) == 2)
        assert heard.of(Removed) == [Removed("app", reason="evicted_lifetime")] * 2
        heard.events.clear()
    assert heard.of(Removed) == [Removed("app", reason="closed")] * len(heard.of(Removed))
    assert len(heard.of(Closed)) == len(heard.of(Removed))


async def test_a_timeout_and_a_refusal_by_max_waiting_are_reported() -> None:
    clock, heard = FakeClock(), Recorder()
    async with _pool(FakeDriver(), clock, max_size=1, max_waiting=0) as pool:
        pool.add_listener(heard)
        async with pool.acquire():
            with pytest.raises(PoolExhausted):
                await pool.acquire()
    assert heard.of(Exhausted) == [Exhausted("app", waiting=0)]

    async with Pool(FakeDriver(), name="app", max_size=1) as pool:
        pool.add_listener(heard)
        async with pool.acquire():
            with pytest.raises(PoolTimeout):
                await pool.acquire(timeout=0.01)
    (timed_out,) = heard.of(TimedOut)
    assert isinstance(timed_out, TimedOut)
    assert timed_out.pool == "app"
    assert timed_out.waited >= 0.0


async def test_a_listener_that_raises_is_logged_once_and_the_pool_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    heard = Recorder()

    def broken(event: PoolEvent) -> None:
        raise RuntimeError("listener bug")

    async with _pool(FakeDriver(), FakeClock()) as pool:
        pool.add_listener(broken)
        pool.add_listener(heard)  # added after the broken one: still told of everything
        with caplog.at_level(logging.WARNING, logger="aiodbpool"):
            for _ in range(3):
                async with pool.acquire():
                    pass
        check_books(pool)

    failures = [record for record in caplog.records if "listener" in record.getMessage()]
    assert len(failures) == 1
    assert failures[0].exc_info is not None
    assert "listener bug" in str(failures[0].exc_info[1])
    assert len(heard.of(Acquired)) == 3


async def test_a_listener_can_be_removed_and_may_change_the_listeners_while_called() -> None:
    heard, late = Recorder(), Recorder()
    async with _pool(FakeDriver(), FakeClock(), min_size=1) as pool:
        remove = pool.add_listener(heard)

        def adds_another_once(event: PoolEvent) -> None:
            pool.remove_listener(adds_another_once)
            pool.add_listener(late)

        pool.add_listener(adds_another_once)
        async with pool.acquire():
            pass
        remove()
        remove()  # a second removal is harmless
        async with pool.acquire():
            pass

    assert [type(event) for event in heard.events] == [Acquired, Released]
    # Added while the first Acquired was being told: it hears from the next event on.
    assert [type(event) for event in late.events][:3] == [Released, Acquired, Released]


async def test_a_listener_must_be_callable() -> None:
    pool: Pool[FakeConnection] = Pool(FakeDriver())
    with pytest.raises(TypeError, match="add_listener\\(\\) takes a callable of one event"):
        pool.add_listener("print")  # type: ignore[arg-type]
