"""Scenario: the network between the pool and PostgreSQL breaks. The fault proxy resets every
connection (a cut, as when a firewall or a load balancer drops its state) or goes silent while
keeping them open (a stall, a black hole).

What must hold:

* **A cut of idle connections** costs the application nothing when validation is on
  (``validate_after_idle=0``): every acquirer gets a live connection, the dead ones are
  discarded.
* **A cut under running queries** fails those queries cleanly, with asyncpg's "connection lost"
  errors; their connections are discarded when they come back, and the pool serves again at once.
* **A stall** never hangs anyone: a ping of an idle connection gives up after ``ping_timeout``
  and the connection is discarded, so an acquire fails or times out within its bound; a release
  of a connection left in a transaction gives up on the rollback after ``reset_timeout`` and
  discards it. Once the network heals, the pool serves again.

Each test ends with the books balanced, the server showing exactly the sessions the pool holds,
and none once the pool is closed. Backends behind a cut notice it a moment later: the pool's
sessions set ``client_connection_check_interval``, so one in the middle of ``pg_sleep`` ends then
instead of when its sleep is over. Backends behind a stall end once the network heals and the
resets the proxy held reach them.
"""

from __future__ import annotations

import asyncio
import time

import asyncpg
from faultproxy import FaultProxy
from tally import (
    MARGIN,
    NETWORK_ERRORS,
    OPERATION_BOUND,
    SETTLE,
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

from aiodbpool import Pool
from aiodbpool.integrations.testing import PostgresServer

MAX_SIZE = 4
CHECK_CLIENT = {"client_connection_check_interval": "100"}
"""The server checks every 100 ms that its client is still there (see the module docstring)."""
PING_TIMEOUT = 0.5
RESET_TIMEOUT = 0.5
CONNECT_TIMEOUT = 0.5
CLOSE_TIMEOUT = 0.5
ACQUIRE_TIMEOUT = 5.0


async def _count(postgres_server: PostgresServer, sql: str, *args: object) -> int:
    """One count from the server, asked over its Unix socket, not through the proxy."""
    admin = await asyncpg.connect(postgres_server.admin_dsn)
    try:
        count: int = await admin.fetchval(sql, *args)
        return count
    finally:
        await admin.close()


async def _warm_up(pool: Pool[asyncpg.Connection], count: int) -> None:
    """Open ``count`` connections and leave them idle."""
    held = [await pool.acquire() for _ in range(count)]
    for conn in held:
        await pool.release(conn)
    assert pool.stats().idle == count


# ------------------------------------------------------------------ a cut


async def test_a_cut_of_idle_connections_costs_nothing_with_validation_on(
    fault_proxy: FaultProxy, postgres_server: PostgresServer
) -> None:
    app_name = unique_app_name("cut-idle")
    pool = proxied_pool(
        fault_proxy,
        postgres_server,
        app_name,
        CHECK_CLIENT,
        max_size=MAX_SIZE,
        validate_after_idle=0,
    )
    tally = Tally("network cut, connections idle", allowed=NETWORK_ERRORS)
    clients, requests = 8, 3
    served_at: list[float] = []

    async def client() -> None:
        for _ in range(requests):
            if await tally.run(lambda: select_one(pool), bound=OPERATION_BOUND):
                served_at.append(time.monotonic())

    async with pool:
        await _warm_up(pool, MAX_SIZE)
        before = pool.stats()
        assert await sessions_settled(postgres_server, app_name, MAX_SIZE) == MAX_SIZE
        cut = fault_proxy.cut()
        cut_at = time.monotonic()
        await asyncio.gather(*(client() for _ in range(clients)))
        all_served = time.monotonic()
        stats, shown = await settled_books(pool, postgres_server, app_name)
    shown_after_close = await sessions_settled(postgres_server, app_name, 0)

    leaked = unaccounted(stats, shown, shown_after_close)
    first = min(served_at) - cut_at
    tally.report(
        faults=f"cut of {cut} idle connections (RST both ways), validate_after_idle=0",
        leaked=leaked,
        recovery=(
            f"first request served {first * 1000:.0f} ms after the cut, all "
            f"{clients * requests} in {(all_served - cut_at) * 1000:.0f} ms"
        ),
    )
    print(
        f"discarded {stats.discarded - before.discarded} (failed ping: "
        f"{stats.validation_failures - before.validation_failures}), "
        f"opened {stats.created - before.created} new"
    )

    assert cut == MAX_SIZE
    assert tally.hung == 0
    assert leaked == 0, f"stats {stats}; the server showed {shown}, then {shown_after_close}"
    # Validation found every dead connection before anyone got it: no request failed.
    assert tally.succeeded == tally.attempted == clients * requests
    assert stats.discarded - before.discarded == MAX_SIZE
    assert 1 <= stats.created - before.created <= MAX_SIZE
    assert all_served - cut_at < OPERATION_BOUND


async def test_a_cut_under_running_queries_fails_them_cleanly_and_the_pool_serves_again(
    fault_proxy: FaultProxy, postgres_server: PostgresServer
) -> None:
    app_name = unique_app_name("cut-in-use")
    pool = proxied_pool(
        fault_proxy,
        postgres_server,
        app_name,
        CHECK_CLIENT,
        max_size=MAX_SIZE,
    )
    tally = Tally("network cut, queries running", allowed=NETWORK_ERRORS)
    running_sql = (
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 "
        "AND state = 'active' AND query LIKE 'SELECT pg_sleep%'"
    )

    async def long_query() -> None:
        async with pool.acquire() as conn:
            await conn.fetchval("SELECT pg_sleep(60)")

    async with pool:
        await _warm_up(pool, MAX_SIZE)
        before = pool.stats()
        queries = [
            asyncio.create_task(tally.run(long_query, bound=OPERATION_BOUND))
            for _ in range(MAX_SIZE)
        ]
        deadline = time.monotonic() + SETTLE
        while await _count(postgres_server, running_sql, app_name) < MAX_SIZE:
            assert time.monotonic() < deadline, "the queries never started on the server"
            await asyncio.sleep(0.02)
        cut = fault_proxy.cut()
        cut_at = time.monotonic()
        interrupted = await asyncio.gather(*queries)
        failed_within = time.monotonic() - cut_at
        after_cut = pool.stats()
        served = [await tally.run(lambda: select_one(pool), bound=OPERATION_BOUND)]
        serving_again = time.monotonic() - cut_at
        served += [
            await tally.run(lambda: select_one(pool), bound=OPERATION_BOUND) for _ in range(9)
        ]
        stats, shown = await settled_books(pool, postgres_server, app_name)
    shown_after_close = await sessions_settled(postgres_server, app_name, 0)

    leaked = unaccounted(stats, shown, shown_after_close)
    tally.report(
        faults=f"cut of {cut} connections, each in the middle of pg_sleep(60)",
        leaked=leaked,
        recovery=(
            f"queries failed within {failed_within * 1000:.0f} ms of the cut; next request "
            f"served {serving_again * 1000:.0f} ms after it"
        ),
    )

    assert cut == MAX_SIZE
    assert tally.hung == 0
    assert leaked == 0, f"stats {stats}; the server showed {shown}, then {shown_after_close}"
    # Every interrupted query failed with a driver error; its connection was discarded on the
    # way back, none went back idle.
    assert interrupted == [False] * MAX_SIZE
    assert tally.failed_cleanly == MAX_SIZE
    assert set(tally.errors) <= {"ConnectionDoesNotExistError", "ConnectionResetError"}
    assert after_cut.discarded - before.discarded == MAX_SIZE
    assert after_cut.size == 0
    assert failed_within < MARGIN
    # The pool serves again at once.
    assert served == [True] * 10
    assert serving_again < failed_within + MARGIN


# ------------------------------------------------------------------ a stall


async def test_a_stall_times_out_pings_and_resets_and_the_pool_serves_after_heal(
    fault_proxy: FaultProxy, postgres_server: PostgresServer
) -> None:
    app_name = unique_app_name("stall")
    pool = proxied_pool(
        fault_proxy,
        postgres_server,
        app_name,
        CHECK_CLIENT,
        max_size=MAX_SIZE,
        validate_after_idle=0,
        ping_timeout=PING_TIMEOUT,
        reset_timeout=RESET_TIMEOUT,
        connect_timeout=CONNECT_TIMEOUT,
        close_timeout=CLOSE_TIMEOUT,
        acquire_timeout=ACQUIRE_TIMEOUT,
    )
    tally = Tally("network stall: ping and reset", allowed=NETWORK_ERRORS)
    short_timeout = 0.3  # shorter than the ping timeout: the acquirer's deadline comes first
    took: list[float] = []

    async with pool:
        # Pings: three idle connections behind a black hole.
        await _warm_up(pool, 3)
        before = pool.stats()
        fault_proxy.stall()
        impatient = await tally.run(
            lambda: timed(lambda: select_one(pool, short_timeout), took),
            bound=OPERATION_BOUND,
        )
        after_impatient = pool.stats()
        patient = await tally.run(
            lambda: timed(lambda: select_one(pool), took), bound=OPERATION_BOUND
        )
        after_pings = pool.stats()
        impatient_took, patient_took = took

        # Resets: three connections left in a transaction, given back behind a black hole.
        heal_at = time.monotonic()
        fault_proxy.heal()
        dirty = [await pool.acquire() for _ in range(3)]
        served_after_heal = time.monotonic() - heal_at
        for conn in dirty:
            await conn.execute("BEGIN")  # left open: the release must roll it back
        before_resets = pool.stats()
        fault_proxy.stall()
        release_took: list[float] = []

        async def release(conn: asyncpg.Connection) -> bool:
            return await tally.run(
                lambda: timed(lambda: pool.release(conn), release_took), bound=OPERATION_BOUND
            )

        releases = await asyncio.gather(*(release(conn) for conn in dirty))
        after_resets = pool.stats()

        # Heal: the pool serves again.
        heal_at = time.monotonic()
        fault_proxy.heal()
        served = [await tally.run(lambda: select_one(pool), bound=OPERATION_BOUND)]
        serving_again = time.monotonic() - heal_at
        served += [
            await tally.run(lambda: select_one(pool), bound=OPERATION_BOUND) for _ in range(9)
        ]
        stats, shown = await settled_books(pool, postgres_server, app_name)
    shown_after_close = await sessions_settled(postgres_server, app_name, 0)

    leaked = unaccounted(stats, shown, shown_after_close)
    tally.report(
        faults=(
            f"stall with 3 idle connections (pings time out: acquire with timeout "
            f"{short_timeout} s failed in {impatient_took:.2f} s, with {ACQUIRE_TIMEOUT:g} s in "
            f"{patient_took:.2f} s), then with 3 in a transaction (released in "
            f"{max(release_took):.2f} s at most); validation_failures "
            f"{stats.validation_failures - before.validation_failures}, discarded "
            f"{stats.discarded - before.discarded}"
        ),
        leaked=leaked,
        recovery=(
            f"served {served_after_heal * 1000:.0f} ms after the first heal, "
            f"{serving_again * 1000:.0f} ms after the second"
        ),
    )

    assert tally.hung == 0
    assert leaked == 0, f"stats {stats}; the server showed {shown}, then {shown_after_close}"
    # An acquirer with a deadline shorter than the ping timeout times out at its deadline; the
    # ping it interrupted counts as a failed validation, and the connection is discarded.
    assert not impatient
    assert tally.errors["PoolTimeout"] == 1
    assert short_timeout - TIMER_SLACK <= impatient_took < short_timeout + MARGIN
    assert after_impatient.validation_failures - before.validation_failures == 1
    assert after_impatient.discarded - before.discarded == 1
    # One with the pool's acquire_timeout waits for each ping to time out, discards both
    # connections, then fails to connect (connect_timeout) -- well within its acquire_timeout.
    assert not patient
    assert tally.errors["PoolConnectError"] == 1
    assert patient_took >= 2 * PING_TIMEOUT + CONNECT_TIMEOUT - TIMER_SLACK
    assert patient_took < ACQUIRE_TIMEOUT
    assert after_pings.validation_failures - before.validation_failures == 3
    assert after_pings.discarded - before.discarded == 3
    assert after_pings.connect_errors - before.connect_errors == 1
    assert after_pings.size == 0
    # Each release waited for its rollback until reset_timeout, then discarded the connection.
    assert releases == [True] * 3
    assert all(RESET_TIMEOUT - TIMER_SLACK <= t < RESET_TIMEOUT + MARGIN for t in release_took)
    assert after_resets.discarded - before_resets.discarded == 3
    assert after_resets.size == 0
    # After the heal, the pool serves again.
    assert served == [True] * 10
    assert served_after_heal < MARGIN
    assert serving_again < MARGIN
