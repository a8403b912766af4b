"""The circuit breaker: after ``breaker_threshold`` connects fail in a row, acquirers that need a
new connection fail at once, one probe at a time tests the database, and the first success closes
the breaker. Time comes from a FakeClock, so the backoff between probes is never waited out."""

from __future__ import annotations

import asyncio
import random

import pytest
from helpers import check_books, wait_until

from aiodbpool import Pool, PoolConnectError
from aiodbpool._breaker import Backoff, Breaker
from aiodbpool.drivers.fake import FakeClock, FakeConnection, FakeConnectionError, FakeDriver

THRESHOLD = 3


def _pool(driver: FakeDriver, clock: FakeClock, **options: object) -> Pool[FakeConnection]:
    settings: dict[str, object] = {
        "breaker_threshold": THRESHOLD,
        "backoff_initial": 1.0,
        "backoff_max": 8.0,
        "validate_after_idle": None,
        "clock": clock,
    }
    settings.update(options)
    return Pool(driver, **settings)  # type: ignore[arg-type]


async def _fail_until_open(pool: Pool[FakeConnection], driver: FakeDriver) -> None:
    driver.fail_connects(FakeConnectionError("connection refused by the test"))
    for _ in range(THRESHOLD):
        with pytest.raises(PoolConnectError, match="refused by the test"):
            await pool.acquire()
    assert pool.stats().breaker_open


async def test_the_breaker_opens_after_the_threshold_and_fails_acquirers_at_once() -> None:
    driver, clock = FakeDriver(), FakeClock()
    async with _pool(driver, clock) as pool:
        await _fail_until_open(pool, driver)
        attempts = driver.connect_attempts

        for _ in range(10):
            with pytest.raises(PoolConnectError, match="circuit breaker open") as caught:
                await pool.acquire()
            assert isinstance(caught.value.__cause__, FakeConnectionError)  # the last cause

        assert driver.connect_attempts == attempts  # nobody tried to connect
        stats = pool.stats()
        assert stats.connect_errors_in_a_row == THRESHOLD
        assert stats.breaker_rejections == 10
        check_books(pool)


async def test_below_the_threshold_every_acquirer_still_tries() -> None:
    driver, clock = FakeDriver(), FakeClock()
    async with _pool(driver, clock) as pool:
        driver.fail_connects()
        for _ in range(THRESHOLD - 1):
            with pytest.raises(PoolConnectError):
                await pool.acquire()
        assert not pool.stats().breaker_open
        driver.heal()
        async with pool.acquire():
            pass
        assert pool.stats().connect_errors_in_a_row == 0


async def test_idle_connections_are_still_handed_out_while_it_is_open() -> None:
    driver, clock = FakeDriver(), FakeClock()
    async with _pool(driver, clock, max_size=2) as pool:
        healthy = await pool.acquire()
        await pool.release(healthy)
        held = await pool.acquire()
        await _fail_until_open(pool, driver)
        await pool.release(held)

        async with pool.acquire() as conn:
            assert conn.id == healthy.id
        check_books(pool)


async def test_one_probe_after_the_backoff_and_the_first_success_closes_the_breaker() -> None:
    driver, clock = FakeDriver(), FakeClock()
    async with _pool(driver, clock) as pool:
        await _fail_until_open(pool, driver)
        attempts = driver.connect_attempts
        driver.heal()

        with pytest.raises(PoolConnectError, match="circuit breaker open"):
            await pool.acquire()  # the backoff delay has not passed yet
        clock.advance(8.0)  # past any delay the backoff can choose
        # The next acquirer is the probe (the maintenance job may be probing already).
        async with pool.acquire():
            pass

        assert driver.connect_attempts - attempts in (1, 2)
        stats = pool.stats()
        assert not stats.breaker_open
        assert stats.connect_errors_in_a_row == 0
        check_books(pool)


@pytest.mark.parametrize("outage", [5.0, 60.0, 600.0])
async def test_an_acquirer_succeeds_within_a_second_after_the_database_is_back(
    outage: float,
) -> None:
    """However long the outage (the background's backoff grows to ``backoff_max`` meanwhile),
    acquirers asking every 0.1 s get a connection within 1 s of the database coming back, while
    during the outage at most one of them tries every ``backoff_initial`` and the rest are
    refused without a connect."""
    driver, clock = FakeDriver(), FakeClock()
    async with _pool(
        driver, clock, backoff_initial=0.5, backoff_max=30.0, maintenance_interval=3600
    ) as pool:
        driver.fail_connects(FakeConnectionError("connection refused by the test"))
        while clock.now < outage:
            with pytest.raises(PoolConnectError):
                await pool.acquire()
            clock.advance(0.1)
        assert pool.stats().breaker_open
        assert driver.connect_attempts <= THRESHOLD + 2 * outage + 1

        driver.heal()
        back = clock.now
        refusals: list[PoolConnectError] = []
        while True:
            try:
                async with pool.acquire():
                    break
            except PoolConnectError as refused:
                refusals.append(refused)
                clock.advance(0.1)
        assert all("circuit breaker open" in str(refused) for refused in refusals)
        assert clock.now - back <= 1.0
        assert not pool.stats().breaker_open
        check_books(pool)


async def test_only_one_probe_runs_at_a_time() -> None:
    driver, clock = FakeDriver(), FakeClock()
    async with _pool(driver, clock, max_size=5, maintenance_interval=3600) as pool:
        await _fail_until_open(pool, driver)
        driver.heal()
        driver.stall_connects()
        clock.advance(8.0)
        probe = asyncio.ensure_future(pool.acquire())
        await wait_until(lambda: driver.stalled == 1)

        for _ in range(4):  # the probe is under way: the others fail at once
            with pytest.raises(PoolConnectError, match="circuit breaker open"):
                await pool.acquire()

        driver.heal()
        conn = await probe
        assert not pool.stats().breaker_open
        async with pool.acquire():  # the breaker is closed: connects are allowed again
            pass
        await pool.release(conn)
        check_books(pool)


async def test_the_background_job_probes_without_any_acquirer() -> None:
    driver, clock = FakeDriver(), FakeClock()
    async with _pool(driver, clock, maintenance_interval=0.01) as pool:
        await _fail_until_open(pool, driver)
        driver.heal()
        clock.advance(8.0)

        await wait_until(lambda: not pool.stats().breaker_open, timeout=10)

        assert pool.stats().idle == 1  # the probe's connection waits in the pool


async def test_waiters_granted_room_while_it_is_open_fail_at_once() -> None:
    driver, clock = FakeDriver(), FakeClock()
    async with _pool(driver, clock, max_size=2) as pool:
        held = await pool.acquire()
        await _fail_until_open(pool, driver)  # in the second slot
        pool.resize(max_size=1)
        waiting = [asyncio.ensure_future(pool.acquire()) for _ in range(3)]
        await wait_until(lambda: pool.stats().waiting == 3)

        pool.detach(held)  # frees the slot: each waiter in turn would have to connect

        for waiter in waiting:
            with pytest.raises(PoolConnectError, match="circuit breaker open"):
                await waiter
        check_books(pool)


async def test_breaker_threshold_none_turns_it_off() -> None:
    driver, clock = FakeDriver(), FakeClock()
    async with _pool(driver, clock, breaker_threshold=None) as pool:
        driver.fail_connects()
        for _ in range(THRESHOLD * 3):
            with pytest.raises(PoolConnectError, match="connection refused"):
                await pool.acquire()
        assert not pool.stats().breaker_open
        assert driver.connect_attempts == THRESHOLD * 3


@pytest.mark.parametrize("threshold", [0, -1, 1.5, "3", True])
def test_a_bad_threshold_is_refused(threshold: object) -> None:
    with pytest.raises((ValueError, TypeError), match="breaker_threshold"):
        Pool(FakeDriver(), breaker_threshold=threshold)  # type: ignore[arg-type]


# ------------------------------------------------------------------ the Breaker, step by step
# Its decisions read no clock and start nothing, so they are driven directly, one step at a time.


def _breaker(threshold: int | None = THRESHOLD) -> Breaker:
    return Breaker(threshold, Backoff(1.0, 8.0, random.Random(7)))


def test_it_opens_at_the_threshold_and_the_first_success_closes_it() -> None:
    breaker = _breaker()
    error = OSError("refused")
    for _ in range(THRESHOLD - 1):
        assert not breaker.connect_failed(error, 0.0, backs_off=False)
    assert breaker.backoff.failures == 0  # an acquirer's own failures do not back off
    assert breaker.connect_failed(error, 0.0, backs_off=False)  # this one opened it
    assert breaker.is_open()
    assert breaker.backoff.failures == 1
    assert not breaker.connect_failed(error, 0.0, backs_off=False)  # already open
    assert str(breaker.last_error) == "refused"  # the cause it reports

    assert breaker.connect_succeeded()  # this one closed it
    assert (breaker.is_open(), breaker.errors_in_a_row) == (False, 0)
    assert breaker.last_error is None
    assert breaker.backoff_left(0.0) == 0.0
    assert not breaker.connect_succeeded()


def test_refills_wait_out_the_backoff_then_only_one_probes() -> None:
    breaker = _breaker()
    assert breaker.claim_refills(2, now=0.0) == (2, False)  # nothing failed: all may start
    breaker.connect_failed(OSError("refused"), 0.0, backs_off=True)
    due = breaker.backoff.not_before
    assert breaker.claim_refills(2, now=due - 0.01) == (0, False)
    assert breaker.claim_refills(2, now=due) == (1, True)
    assert breaker.claim_refills(2, now=due) == (0, False)  # the probe is under way
    breaker.probe_ended()
    assert breaker.probes == 0


def test_waiters_may_probe_after_backoff_initial_however_long_the_backoff_grew() -> None:
    breaker = _breaker()
    for now in range(THRESHOLD + 3):  # open, then three more failed probes
        breaker.connect_failed(OSError("refused"), float(now), backs_off=True)
    failed_at = breaker.backoff.failed_at
    assert breaker.backoff.not_before > failed_at + 1.0  # the background waits longer
    assert not breaker.may_probe_for_waiters(failed_at + 0.99)
    assert breaker.may_probe_for_waiters(failed_at + 1.0)
    assert breaker.claim_refills(1, now=failed_at + 1.0) == (0, False)
    breaker.claim_probe_for_waiters()
    assert not breaker.may_probe_for_waiters(failed_at + 1.0)  # one probe at a time
    assert breaker.refuse(failed_at + 0.25) == 0.75
    assert breaker.rejections == 1


def test_without_a_threshold_it_never_opens() -> None:
    breaker = _breaker(threshold=None)
    for _ in range(THRESHOLD * 3):
        assert not breaker.connect_failed(OSError("refused"), 0.0, backs_off=False)
    assert not breaker.is_open()
