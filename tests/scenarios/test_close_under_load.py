"""Scenario: ``close()`` under load, on a real PostgreSQL server, while connections are stuck.

* Connections stuck in ``SELECT pg_sleep(60)`` while other tasks keep acquiring: ``close(timeout)``
  returns soon after its timeout, terminates what is still in use, fails every waiter with
  ``PoolClosed``, and the server ends up with no session of the pool.
* Connects under way to a server that does not answer: its postmaster is frozen (``SIGSTOP``),
  so the kernel still accepts TCP connections but nothing answers them -- the way a hung server
  or a paused machine looks to a client. ``close()`` does not wait for those connects past its
  timeout, even with no ``connect_timeout`` at all.
* The same, and then the server is stopped (``pg_ctl stop -m fast``) while those connects are
  under way: ``close()`` returns, and every acquirer fails cleanly.

PostgreSQL notices that a client went away in the middle of a statement only if
``client_connection_check_interval`` is set; otherwise a backend whose client was terminated runs
its ``pg_sleep(60)`` to the end. The pool's connections here set it, so that the server's session
count shows what the pool did, within a moment.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import asyncpg
from helpers import check_books, wait_until
from tally import Tally, server_shows

from aiodbpool import Pool, PoolClosed, PoolConnectError, PoolError, raw_connection
from aiodbpool.drivers.postgres import PostgresDriver
from aiodbpool.integrations.testing import PostgresServer

CLOSE_TIMEOUT = 2.0
CLOSE_BOUND = 10.0
"""``close(timeout=CLOSE_TIMEOUT)`` must return within this many seconds, on a busy machine."""

OPERATION_BOUND = 30.0
"""No single operation may take longer than this: past it, it counts as hung."""

# What an operation may fail with when the pool closes under it: the pool's errors, or
# asyncpg's "the connection was closed" errors for a statement whose connection was terminated.
CLOSING_ERRORS: tuple[type[BaseException], ...] = (
    PoolError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
)


def _app_name() -> str:
    return f"aiodbpool-close-under-load-{uuid.uuid4().hex[:12]}"


def _driver(postgres_server: PostgresServer, app_name: str) -> PostgresDriver:
    return PostgresDriver(
        postgres_server.dsn,
        server_settings={"application_name": app_name, "client_connection_check_interval": "100"},
    )


async def _run(
    tally: Tally, operation: Callable[[], Awaitable[object]], errors: list[BaseException]
) -> BaseException | None:
    """Run one operation through ``tally``; return the error it failed with cleanly, if any."""
    before = len(errors)

    async def noting_the_error() -> None:
        try:
            await operation()
        except Exception as error:
            errors.append(error)
            raise

    await tally.run(noting_the_error, bound=OPERATION_BOUND)
    return errors[before] if len(errors) > before else None


def _postmaster_pid(postgres_server: PostgresServer) -> int:
    return int(Path(postgres_server.data_dir, "postmaster.pid").read_text().split()[0])


def _signal_pending(pid: int, signum: int) -> bool:
    """Whether ``signum`` was sent to process ``pid`` and is not yet delivered (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("ShdPnd:"):
            return bool(int(line.split()[1], 16) & (1 << (signum - 1)))
    return False


@asynccontextmanager
async def _frozen(postgres_server: PostgresServer) -> AsyncIterator[int]:
    """Hold the server's postmaster stopped (``SIGSTOP``): the kernel completes TCP handshakes
    on its port, but no connection gets an answer until it resumes. Yields its process id."""
    pid = _postmaster_pid(postgres_server)
    os.kill(pid, signal.SIGSTOP)
    try:
        yield pid
    finally:
        os.kill(pid, signal.SIGCONT)


# ------------------------------------------------------------------ connections stuck in queries

STUCK = 3
STUCK_QUERY = "SELECT pg_sleep(60)"
MAX_SIZE = 5
WORKERS = 20


async def test_close_terminates_connections_stuck_in_queries_and_fails_the_waiters(
    postgres_server: PostgresServer,
) -> None:
    app_name = _app_name()
    pool = Pool(
        _driver(postgres_server, app_name),
        name="close-under-load",
        max_size=MAX_SIZE,
        acquire_timeout=OPERATION_BOUND - 5,
    )
    tally = Tally("close() with stuck queries", allowed=CLOSING_ERRORS)
    holder_errors: list[BaseException] = []
    worker_errors: list[BaseException] = []
    held: list[asyncpg.Connection] = []  # the driver's connections under the stuck leases

    async def hold_stuck() -> None:
        async with pool.acquire() as conn:
            held.append(raw_connection(conn))
            await conn.execute(STUCK_QUERY)

    async def one_request() -> None:
        async with pool.acquire() as conn:
            await conn.execute("SELECT pg_sleep(0.005)")

    async def worker() -> None:
        while not isinstance(await _run(tally, one_request, worker_errors), PoolClosed):
            pass

    await pool.open()
    holders: list[asyncio.Task[BaseException | None]] = []
    workers: list[asyncio.Task[None]] = []
    try:
        holders += [
            asyncio.create_task(_run(tally, hold_stuck, holder_errors)) for _ in range(STUCK)
        ]
        await server_shows(
            postgres_server.admin_dsn, app_name, lambda view: view[1] == STUCK, running=STUCK_QUERY
        )
        workers += [asyncio.create_task(worker()) for _ in range(WORKERS)]
        await wait_until(
            lambda: tally.succeeded >= 50 and pool.stats().waiting >= WORKERS // 2,
            timeout=15,
            message="workers served and queued",
        )
    finally:
        waiting_at_close = pool.stats().waiting
        close_began = time.monotonic()
        async with asyncio.timeout(OPERATION_BOUND):
            await pool.close(timeout=CLOSE_TIMEOUT)
        close_took = time.monotonic() - close_began
    await asyncio.gather(*holders, *workers)
    stats = pool.stats()
    check_books(pool)
    view = await server_shows(postgres_server.admin_dsn, app_name, lambda view: view == (0, 0))
    server_clean = time.monotonic() - close_began

    closed_errors = sum(isinstance(error, PoolClosed) for error in worker_errors)
    tally.report(
        faults=(
            f"{STUCK} connections in pg_sleep(60), {WORKERS} workers ({waiting_at_close} "
            f"waiting) on a pool of {MAX_SIZE}; close(timeout={CLOSE_TIMEOUT:g})"
        ),
        leaked=stats.size + view[0],
        recovery=(
            f"close() took {close_took:.2f} s; no session on the server {server_clean:.2f} s "
            "after it began"
        ),
    )

    assert tally.hung == 0
    assert close_took < CLOSE_BOUND
    # What was stuck was terminated: its holder's statement failed with asyncpg's "connection
    # closed" error, and releasing it afterwards was accepted silently.
    assert len(holder_errors) == STUCK
    assert all(isinstance(error, CLOSING_ERRORS) for error in holder_errors), holder_errors
    assert all(conn.is_closed() for conn in held)
    # Everyone in line, and everyone who came later, was told the pool is closed.
    assert closed_errors >= waiting_at_close > 0
    assert all(isinstance(error, PoolClosed) for error in worker_errors), worker_errors
    assert (stats.size, stats.in_use, stats.opening, stats.waiting) == (0, 0, 0, 0)
    assert view == (0, 0), f"the server still shows (sessions, stuck): {view}"


# ------------------------------------------------------------------ connects that never finish


async def _acquire_and_select(pool: Pool[asyncpg.Connection]) -> None:
    async with pool.acquire() as conn:
        await conn.fetchval("SELECT 1")


CONNECTS = 2
"""Connects the pool runs at once for its waiters (GROWTH_AT_ONCE), below max_size."""
ACQUIRERS = 8


async def test_close_does_not_wait_for_connects_to_a_frozen_server(
    postgres_server: PostgresServer,
) -> None:
    app_name = _app_name()
    pool = Pool(
        _driver(postgres_server, app_name),
        name="close-frozen-server",
        max_size=CONNECTS + 1,
        acquire_timeout=None,  # nothing but close() ends these acquires
        connect_timeout=None,
        breaker_threshold=None,
    )
    tally = Tally("close() during hung connects", allowed=CLOSING_ERRORS)
    errors: list[BaseException] = []
    await pool.open()
    async with _frozen(postgres_server):
        try:
            acquirers = [
                asyncio.create_task(_run(tally, partial(_acquire_and_select, pool), errors))
                for _ in range(ACQUIRERS)
            ]
            await wait_until(
                lambda: pool.stats().opening == CONNECTS and pool.stats().waiting == ACQUIRERS,
                message="connects under way and acquirers in line",
            )
        finally:
            close_began = time.monotonic()
            async with asyncio.timeout(OPERATION_BOUND):
                await pool.close(timeout=CLOSE_TIMEOUT)
            close_took = time.monotonic() - close_began
        await asyncio.gather(*acquirers)
        stats = pool.stats()
        check_books(pool)
    view = await server_shows(postgres_server.admin_dsn, app_name, lambda view: view == (0, 0))

    tally.report(
        faults=(
            f"server frozen (SIGSTOP): {CONNECTS} connects hung, "
            f"{ACQUIRERS} acquirers in line; close(timeout={CLOSE_TIMEOUT:g})"
        ),
        leaked=stats.size + view[0],
        recovery=f"close() took {close_took:.2f} s",
    )
    assert tally.hung == 0
    assert close_took < CLOSE_BOUND
    assert tally.succeeded == 0
    assert len(errors) == ACQUIRERS
    assert all(isinstance(error, PoolClosed) for error in errors), errors
    assert (stats.size, stats.opening, stats.connect_errors, stats.created) == (0, 0, CONNECTS, 0)
    assert view == (0, 0), f"the server shows (sessions, stuck): {view}"


async def test_close_returns_when_the_server_stops_in_the_middle_of_connects(
    postgres_server: PostgresServer,
) -> None:
    app_name = _app_name()
    pool = Pool(
        _driver(postgres_server, app_name),
        name="close-server-stopping",
        max_size=CONNECTS + 1,
        acquire_timeout=None,
        connect_timeout=None,
        breaker_threshold=None,
    )
    tally = Tally("close() as the server stops mid-connect", allowed=CLOSING_ERRORS)
    errors: list[BaseException] = []
    await pool.open()
    try:
        async with _frozen(postgres_server) as postmaster:
            acquirers = [
                asyncio.create_task(_run(tally, partial(_acquire_and_select, pool), errors))
                for _ in range(ACQUIRERS)
            ]
            await wait_until(
                lambda: pool.stats().opening == CONNECTS and pool.stats().waiting == ACQUIRERS,
                message="connects under way and acquirers in line",
            )
            close_began = time.monotonic()
            closing = asyncio.create_task(pool.close(timeout=CLOSE_TIMEOUT))
            await wait_until(lambda: pool.closed, message="close() started")
            # Stop the server while the connects wait for it: pg_ctl asks the postmaster to
            # shut down, and it does so as soon as it runs again.
            stopping = asyncio.create_task(asyncio.to_thread(postgres_server.stop))
            await wait_until(
                lambda: _signal_pending(postmaster, signal.SIGINT),
                timeout=15,
                message="pg_ctl stop sent its signal",
            )
        async with asyncio.timeout(OPERATION_BOUND):
            await closing
        close_took = time.monotonic() - close_began
        await stopping
        await asyncio.gather(*acquirers)
        stats = pool.stats()
        check_books(pool)
    finally:
        await asyncio.to_thread(postgres_server.start)
    view = await server_shows(postgres_server.admin_dsn, app_name, lambda view: view == (0, 0))

    kinds = sorted({type(error.__cause__ or error).__name__ for error in errors})
    tally.report(
        faults=(
            f"server frozen, then stopped, during {CONNECTS} connects "
            f"({ACQUIRERS} acquirers in line); close(timeout={CLOSE_TIMEOUT:g})"
        ),
        leaked=stats.size + view[0],
        recovery=f"close() took {close_took:.2f} s; errors (causes): {', '.join(kinds)}",
    )
    assert tally.hung == 0
    assert close_took < CLOSE_BOUND
    assert tally.succeeded == 0
    assert len(errors) == ACQUIRERS
    # Those in line were told the pool closed; those connecting, that the pool closed or that
    # their connect failed.
    assert all(isinstance(error, PoolClosed | PoolConnectError) for error in errors), errors
    assert sum(isinstance(error, PoolClosed) for error in errors) >= ACQUIRERS - CONNECTS
    assert (stats.size, stats.opening, stats.created) == (0, 0, 0)
    assert view == (0, 0), f"the server shows (sessions, stuck): {view}"
