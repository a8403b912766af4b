"""Scenario: a black hole. The database's address accepts TCP connections but never answers: the
fault proxy is stalled, so it accepts, holds every byte, and delivers nothing.

What must hold: every driver call the pool makes times out as configured, and nothing waits
forever. A connect gives up after ``connect_timeout`` and the acquirer gets
``PoolConnectError``; ``close(timeout=...)`` returns within its timeout plus ``close_timeout``,
having terminated what did not close politely; and the background refill to ``min_size``, whose
connects time out, backs off, keeps running, and fills the pool by itself once the network heals.
(Pings and resets into a black hole are in ``test_network_faults.py``.)

Each test ends with the books balanced, the server showing exactly the sessions the pool holds,
and none once the pool is closed. A backend behind the black hole ends once the network heals and
what the proxy held for it (a goodbye, or a reset) reaches it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from faultproxy import FaultProxy
from helpers import maintenance_tasks, wait_until
from tally import (
    MARGIN,
    NETWORK_ERRORS,
    OPERATION_BOUND,
    TIMER_SLACK,
    Tally,
    proxied_pool,
    select_one,
    sessions_settled,
    settled_books,
    timed,
    unaccounted,
    unique_app_name,
)

from aiodbpool import PoolConnectError, PoolStats, raw_connection
from aiodbpool.integrations.testing import PostgresServer

MAX_SIZE = 4
CONNECT_TIMEOUT = 0.5
CLOSE_TIMEOUT = 0.5
ACQUIRE_TIMEOUT = 5.0


# ------------------------------------------------------------------ connect


async def test_a_connect_into_a_black_hole_fails_after_connect_timeout(
    fault_proxy: FaultProxy, postgres_server: PostgresServer
) -> None:
    app_name = unique_app_name("black-hole-connect")
    pool = proxied_pool(
        fault_proxy,
        postgres_server,
        app_name,
        max_size=MAX_SIZE,
        connect_timeout=CONNECT_TIMEOUT,
        acquire_timeout=ACQUIRE_TIMEOUT,
    )
    tally = Tally("black hole: connect", allowed=NETWORK_ERRORS)
    acquirers = 3  # fewer than breaker_threshold: each one tries a connect of its own
    errors: list[PoolConnectError] = []
    took: list[float] = []

    async def acquire() -> None:
        try:
            await select_one(pool)
        except PoolConnectError as error:
            errors.append(error)
            raise

    async with pool:
        fault_proxy.stall()
        results = await asyncio.gather(
            *(
                tally.run(lambda: timed(acquire, took), bound=OPERATION_BOUND)
                for _ in range(acquirers)
            )
        )
        accepted, held = fault_proxy.connections_total, fault_proxy.bytes_held
        during = pool.stats()
        heal_at = time.monotonic()
        fault_proxy.heal()
        served = [await tally.run(lambda: select_one(pool), bound=OPERATION_BOUND)]
        serving_again = time.monotonic() - heal_at
        served += [
            await tally.run(lambda: select_one(pool), bound=OPERATION_BOUND) for _ in range(4)
        ]
        stats, shown = await settled_books(pool, postgres_server, app_name)
    shown_after_close = await sessions_settled(postgres_server, app_name, 0)

    leaked = unaccounted(stats, shown, shown_after_close)
    tally.report(
        faults=(
            f"black hole from the start: {acquirers} acquirers, each connect accepted by TCP and "
            f"never answered (failed after {min(took):.2f}-{max(took):.2f} s, "
            f"connect_timeout {CONNECT_TIMEOUT:g} s)"
        ),
        leaked=leaked,
        recovery=f"served {serving_again * 1000:.0f} ms after the heal",
    )

    assert tally.hung == 0
    assert leaked == 0, f"stats {stats}; the server showed {shown}, then {shown_after_close}"
    # The black hole accepted each connection and held what asyncpg sent (its startup message).
    assert accepted == acquirers
    assert held > 0
    # Each acquirer failed with PoolConnectError, caused by the connect timing out, after about
    # connect_timeout: not before, and never much later.
    assert results == [False] * acquirers
    assert len(errors) == acquirers
    for error in errors:
        assert "connect timed out" in str(error)
        assert isinstance(error.__cause__, TimeoutError)
    assert all(CONNECT_TIMEOUT - TIMER_SLACK <= t < CONNECT_TIMEOUT + MARGIN for t in took)
    assert during.connect_errors == acquirers
    assert during.size == 0
    assert not during.breaker_open
    # Once the network heals, the next acquirer connects.
    assert served == [True] * 5
    assert serving_again < MARGIN


# ------------------------------------------------------------------ close


async def test_close_into_a_black_hole_returns_within_its_timeouts_and_terminates_the_rest(
    fault_proxy: FaultProxy, postgres_server: PostgresServer
) -> None:
    app_name = unique_app_name("black-hole-close")
    pool = proxied_pool(
        fault_proxy,
        postgres_server,
        app_name,
        max_size=MAX_SIZE,
        close_timeout=CLOSE_TIMEOUT,
        acquire_timeout=ACQUIRE_TIMEOUT,
    )
    tally = Tally("black hole: close", allowed=NETWORK_ERRORS)
    close_wait = 1.0  # close(timeout=...): how long connections in use may take to come back
    took: list[float] = []

    await pool.open()
    try:
        conns = [await pool.acquire() for _ in range(MAX_SIZE)]
        for conn in conns[:2]:
            await pool.release(conn)
        held, querying = conns[2:]  # one held quietly, one whose query is stuck in the stall
        # The driver's connections under those two leases, to look at once close() ended them.
        raw_held, raw_querying = raw_connection(held), raw_connection(querying)
        assert await sessions_settled(postgres_server, app_name, MAX_SIZE) == MAX_SIZE

        async def stuck_query() -> None:
            try:
                await querying.fetchval("SELECT 1")
            finally:
                await pool.release(querying)  # after close(): accepted, it was terminated

        fault_proxy.stall()
        query = asyncio.create_task(tally.run(stuck_query, bound=OPERATION_BOUND))
        await wait_until(lambda: fault_proxy.bytes_held > 0, message="the query is held")
        closed = await tally.run(
            lambda: timed(lambda: pool.close(timeout=close_wait), took), bound=OPERATION_BOUND
        )
        query_succeeded = await query
        released_late = await tally.run(lambda: pool.release(held), bound=OPERATION_BOUND)
    finally:
        await pool.close()
    stats = pool.stats()
    held_terminated = raw_held.is_closed() and raw_querying.is_closed()
    heal_at = time.monotonic()
    fault_proxy.heal()
    shown_after_close = await sessions_settled(postgres_server, app_name, 0)
    sessions_gone = time.monotonic() - heal_at

    (close_took,) = took
    leaked = stats.size + stats.in_use + stats.opening + shown_after_close
    tally.report(
        faults=(
            f"black hole, then close(timeout={close_wait:g}) with 2 idle and 2 in use (one "
            f"mid-query), close_timeout {CLOSE_TIMEOUT:g} s: close returned in {close_took:.2f} s"
        ),
        leaked=leaked,
        recovery=f"server sessions gone {sessions_gone * 1000:.0f} ms after the heal",
    )

    assert tally.hung == 0
    assert leaked == 0, f"stats {stats}; the server showed {shown_after_close} after the close"
    # close() waited for the connections in use until its timeout, not longer than its timeout
    # plus close_timeout (the polite closes of the idle ones ran meanwhile), and left nothing.
    assert closed
    assert close_wait - TIMER_SLACK <= close_took < close_wait + CLOSE_TIMEOUT + MARGIN
    assert stats.closed == MAX_SIZE
    assert pool.closed
    # The connections still in use were terminated: the stuck query failed with a driver error,
    # and giving a terminated connection back afterwards is accepted.
    assert held_terminated
    assert not query_succeeded
    assert set(tally.errors) <= {"ConnectionDoesNotExistError", "InterfaceError"}
    assert released_late


# ------------------------------------------------------------------ the background refill


async def test_the_background_refill_backs_off_in_a_black_hole_and_refills_after_heal(
    fault_proxy: FaultProxy, postgres_server: PostgresServer
) -> None:
    app_name = unique_app_name("black-hole-refill")
    min_size = 2
    backoff_initial, backoff_max = 0.2, 1.0
    maintenance_interval = 0.25
    pool = proxied_pool(
        fault_proxy,
        postgres_server,
        app_name,
        min_size=min_size,
        max_size=MAX_SIZE,
        connect_timeout=CONNECT_TIMEOUT,
        acquire_timeout=ACQUIRE_TIMEOUT,
        backoff_initial=backoff_initial,
        backoff_max=backoff_max,
        breaker_threshold=3,
        maintenance_interval=maintenance_interval,
    )
    tally = Tally("black hole: background refill", allowed=NETWORK_ERRORS)
    most_opening_while_backing_off = 0

    def opening_sampled(done: Callable[[PoolStats], bool]) -> Callable[[], bool]:
        """``done``, noting meanwhile how many connects run at once after the first failures."""

        def check() -> bool:
            nonlocal most_opening_while_backing_off
            stats = pool.stats()
            if stats.connect_errors >= min_size:
                most_opening_while_backing_off = max(most_opening_while_backing_off, stats.opening)
            return done(stats)

        return check

    fault_proxy.stall()
    stalled_at = time.monotonic()
    await pool.open(wait=False)
    try:
        # The refill's connects time out; three in a row open the breaker; the probes go on.
        await wait_until(
            opening_sampled(lambda stats: stats.breaker_open),
            timeout=10 * (CONNECT_TIMEOUT + backoff_max),
            message="the breaker opens",
        )
        breaker_opened = time.monotonic() - stalled_at
        errors_when_opened = pool.stats().connect_errors
        await wait_until(
            opening_sampled(lambda stats: stats.connect_errors > errors_when_opened),
            timeout=backoff_max + CONNECT_TIMEOUT + MARGIN,
            message="a probe runs, and times out, while the breaker is open",
        )
        # An acquirer meanwhile fails cleanly: at once, or as the probe after connect_timeout.
        rejected = await tally.run(lambda: select_one(pool), bound=OPERATION_BOUND)
        during = pool.stats()
        stalled_for = time.monotonic() - stalled_at

        heal_at = time.monotonic()
        fault_proxy.heal()
        await wait_until(
            lambda: pool.stats().idle >= min_size,
            timeout=backoff_max + CONNECT_TIMEOUT + maintenance_interval + MARGIN,
            message="the pool refills to min_size by itself",
        )
        refilled = time.monotonic() - heal_at
        after_heal = pool.stats()
        served = [
            await tally.run(lambda: select_one(pool), bound=OPERATION_BOUND) for _ in range(5)
        ]
        job_running = [
            task for task in maintenance_tasks() if app_name in task.get_name() and not task.done()
        ]
        stats, shown = await settled_books(pool, postgres_server, app_name)
    finally:
        await pool.close()
    shown_after_close = await sessions_settled(postgres_server, app_name, 0)

    leaked = unaccounted(stats, shown, shown_after_close)
    tally.report(
        faults=(
            f"black hole from open(wait=False) with min_size {min_size}: "
            f"{during.connect_errors} connects timed out in {stalled_for:.1f} s, breaker open "
            f"after {breaker_opened:.1f} s"
        ),
        leaked=leaked,
        recovery=f"min_size refilled {refilled * 1000:.0f} ms after the heal, breaker closed",
    )

    assert tally.hung == 0
    assert leaked == 0, f"stats {stats}; the server showed {shown}, then {shown_after_close}"
    # While the database was unreachable: connects timed out, one probe at a time after the
    # first failures, spaced by the backoff (at most one per connect_timeout plus the shortest
    # delay, backoff_initial / 2), and the acquirer failed cleanly.
    assert most_opening_while_backing_off <= 1
    assert during.created == 0
    assert during.breaker_open
    assert during.connect_errors <= min_size + stalled_for / (CONNECT_TIMEOUT + backoff_initial / 2)
    assert not rejected
    assert tally.errors["PoolConnectError"] == 1
    # After the heal the job refilled the pool by itself and closed the breaker; it still runs.
    assert after_heal.idle == min_size
    assert not after_heal.breaker_open
    assert after_heal.connect_errors_in_a_row == 0
    assert served == [True] * 5
    assert len(job_running) == 1
