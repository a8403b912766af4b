"""Scenario: a soak. Mixed load on a real PostgreSQL with faults at regular intervals, for
``$AIODBPOOL_SOAK_SECONDS`` seconds per event loop (10 by default, so that the normal suite and CI
run it briefly, under asyncio and under uvloop).

What must hold for the whole run: memory, tasks and connections stay flat. The test samples them
every second: the memory Python allocated (``tracemalloc``, leaving out the log records pytest
keeps; RSS is reported too), the event loop's
tasks, the pool's size (never above ``max_size``) and the sessions PostgreSQL shows for the pool
(never above ``max_size`` plus a few backends still ending). Every operation succeeds or fails
cleanly within its bound, none hangs, and from a second after each fault's recovery until the
next fault none fails. At the end nothing is lent, the server shows exactly the pool's sessions,
none once the pool is closed, and the pool's tasks are gone.

The load, from 16 tasks: queries, transactions (some rolled back), connections given back in
the middle of a transaction, statements cancelled part-way, acquires with a tiny timeout,
connections held for a while, and detached ones. The pool retires connections by age and by use,
so it also replaces connections all the time. The faults, in turn: ``pg_terminate_backend`` of
some or all of the pool's backends, a restart, and a stop of half a second or more; each kind at
least once, however short the run.

A longer soak, by hand::

    AIODBPOOL_SOAK_SECONDS=300 .venv/bin/pytest tests/scenarios/test_soak.py -s
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import random
import time
import tracemalloc
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import asyncpg
import pytest
from helpers import check_books, wait_until
from tally import POSTGRES_OUTAGE_ERRORS, Tally

from aiodbpool import Pool, PoolTimeout, create_pool
from aiodbpool.integrations.testing import PostgresServer

DURATION = float(os.environ.get("AIODBPOOL_SOAK_SECONDS", "10"))
"""Seconds of load per run (each event loop runs the test once)."""

WORKERS = 16
MIN_SIZE = 2
MAX_SIZE = 8
ACQUIRE_TIMEOUT = 3.0
OPERATION_BOUND = ACQUIRE_TIMEOUT + 12.0
"""No operation may take longer, fault or not: past it, it counts as hung."""
FAULT_EVERY = 1.5
"""Seconds of undisturbed load between the end of one fault and the next."""
SAMPLE_EVERY = 1.0
CALM_AFTER = 1.0
"""Seconds after a fault's recovery from which no operation may fail any more."""
ENDING_BACKENDS = 4
"""Sessions the server may show beyond max_size: backends of connections just closed, detached
or terminated, which end a moment after their sockets close."""
MEMORY_GROWTH = 1_000_000
"""Bytes the traced memory may grow from the second sample to the last (the first one is
taken before caches and the pool's histograms have warmed up)."""

"""What an operation may fail with during a fault: the pool's errors, or the driver's "the
database ended this session" errors."""

LOST: tuple[type[Exception], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
)
"""The errors of a connection the server ended (the test's own admin connection, too)."""
SERVER_GONE: tuple[type[Exception], ...] = (*LOST, asyncpg.PostgresError)
"""... and of a server that is stopped or starting: no sample of its sessions then."""

FAULTS = ("terminate some", "restart", "terminate all", "stop and start")


class RolledBack(Exception):
    """Raised inside a transaction to roll it back."""


@dataclass
class Sample:
    at: float
    traced: int
    rss: int
    tasks: int
    size: int
    sessions: int | None  # None while the server is down


@dataclass
class Soak:
    """What the run observed, kept as counters so that the test itself does not grow."""

    tally: Tally
    last_success: float = 0.0
    faults: dict[str, int] = field(default_factory=dict)
    terminated: int = 0
    recoveries: list[float] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    dirty_handouts: int = 0
    fault: str | None = None  # the fault under way
    calm_from: float = 0.0  # a moment after the last fault's recovery
    failed_between_faults: int = 0


HARNESS = (
    tracemalloc.Filter(False, logging.__file__),
    tracemalloc.Filter(False, "*/_pytest/*"),
    tracemalloc.Filter(False, tracemalloc.__file__),
)
"""Allocations that are the test harness's: pytest keeps every log record of the test (the pool
logs a warning for each connection a fault broke), and tracemalloc's own."""


def _traced() -> int:
    """Bytes allocated since tracing started and still alive, the harness's left out."""
    snapshot = tracemalloc.take_snapshot().filter_traces(HARNESS)
    return sum(trace.size for trace in snapshot.traces)


def _rss() -> int:
    """Resident memory of this process, in bytes (from ``/proc``; 0 where there is none)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class Admin:
    """A superuser connection for counting and terminating the pool's sessions; it connects
    again when the server has ended it (a restart)."""

    def __init__(self, postgres_server: PostgresServer, application_name: str) -> None:
        self._dsn = postgres_server.admin_dsn
        self._name = application_name
        self._conn: asyncpg.Connection | None = None

    async def _fetchval(self, sql: str, *args: object) -> int:
        for attempt in range(2):
            if self._conn is None or self._conn.is_closed():
                self._conn = await asyncpg.connect(self._dsn)
            try:
                value: int = await self._conn.fetchval(sql, *args)
                return value
            except LOST:
                if attempt:
                    raise
                self._conn.terminate()  # ended by a restart the client had not noticed yet
        raise AssertionError("unreachable")

    async def sessions(self) -> int:
        return await self._fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", self._name
        )

    async def terminate(self, share: float) -> int:
        """End ``share`` (0 to 1) of the pool's backends; return how many."""
        return await self._fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = $1 AND random() < $2",
            self._name,
            share,
        )

    def close(self) -> None:
        if self._conn is not None:
            self._conn.terminate()


async def _sessions_settled(admin: Admin, expected: Callable[[], int], timeout: float) -> int:
    """The server's sessions of the pool once they number ``expected()``, or after ``timeout``
    seconds (a backend ends a moment after its client's socket closes)."""
    deadline = time.monotonic() + timeout
    while (count := await admin.sessions()) != expected():
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    return count


@pytest.mark.slow
async def test_a_soak_with_faults_keeps_memory_and_connections_flat(
    postgres_server: PostgresServer,
) -> None:
    name = f"aiodbpool-soak-{uuid.uuid4().hex[:12]}"
    table = f"soak_{uuid.uuid4().hex[:12]}"
    pool: Pool[asyncpg.Connection] = create_pool(
        postgres_server.dsn,
        name="soak",
        min_size=MIN_SIZE,
        max_size=MAX_SIZE,
        acquire_timeout=ACQUIRE_TIMEOUT,
        connect_timeout=5.0,
        max_lifetime=4.0,  # connections retire by age (with jitter) ...
        max_uses=200,  # ... and by use, all through the run
        backoff_max=2.0,
        maintenance_interval=0.2,
        server_settings={"application_name": name},
    )
    soak = Soak(Tally("soak", allowed=POSTGRES_OUTAGE_ERRORS))
    tally = soak.tally
    admin = Admin(postgres_server, name)  # counts sessions
    killer = Admin(postgres_server, name)  # terminates them, at the same time
    setup = await asyncpg.connect(postgres_server.dsn)
    await setup.execute(f"CREATE TABLE {table} (worker int, n bigint)")
    await setup.close()
    stop = asyncio.Event()

    # -- the load ------------------------------------------------------------------------------

    async def query(rng: random.Random) -> None:
        async with pool.acquire() as conn:
            if conn.is_in_transaction():
                soak.dirty_handouts += 1
            assert await conn.fetchval("SELECT $1::int", 7) == 7

    async def transaction(rng: random.Random) -> None:
        async with pool.acquire() as conn:
            try:
                async with conn.transaction():
                    await conn.execute(f"INSERT INTO {table} VALUES ($1, $2)", 1, 2)
                    if rng.random() < 0.3:
                        raise RolledBack
            except RolledBack:
                pass

    async def left_in_a_transaction(rng: random.Random) -> None:
        conn = await pool.acquire()
        try:
            await conn.execute("BEGIN")
            await conn.execute(f"INSERT INTO {table} VALUES ($1, $2)", 2, 3)
        finally:
            await pool.release(conn)  # the pool's reset rolls it back

    async def cancelled_mid_statement(rng: random.Random) -> None:
        try:
            async with asyncio.timeout(rng.uniform(0.001, 0.05)):
                async with pool.acquire() as conn:
                    await conn.execute("SELECT pg_sleep(1)")
        except TimeoutError:
            pass  # cancelled waiting, connecting or mid-statement: that is the point

    async def tiny_timeout(rng: random.Random) -> None:
        try:
            async with pool.acquire(timeout=rng.choice([0, 0.001, 0.01])) as conn:
                await conn.fetchval("SELECT 1")
        except PoolTimeout:
            pass  # as likely as not, with every connection busy

    async def held_a_while(rng: random.Random) -> None:
        async with pool.acquire() as conn:
            await conn.execute(f"SELECT pg_sleep({rng.uniform(0.01, 0.1):.3f})")

    async def detached(rng: random.Random) -> None:
        # detach() ends the lease and gives the driver's connection, which is ours to close.
        conn = pool.detach(await pool.acquire())
        try:
            await conn.fetchval("SELECT 1")
        finally:
            await conn.close(timeout=5)

    operations: list[Callable[[random.Random], Coroutine[Any, Any, None]]] = [
        *[query] * 8,
        *[transaction] * 4,
        *[left_in_a_transaction] * 2,
        *[cancelled_mid_statement] * 3,
        tiny_timeout,
        *[held_a_while] * 2,
        detached,
    ]

    async def worker(number: int) -> None:
        rng = random.Random(number)
        while not stop.is_set():
            operation = rng.choice(operations)
            if await tally.run(partial(operation, rng), bound=OPERATION_BOUND):
                soak.last_success = time.monotonic()
                continue
            if soak.fault is None and time.monotonic() > soak.calm_from:
                soak.failed_between_faults += 1
            await asyncio.sleep(0.02)  # a failed client pauses a moment, as real ones do

    # -- the faults and the samples -------------------------------------------------------------

    async def inject(fault: str) -> None:
        soak.faults[fault] = soak.faults.get(fault, 0) + 1
        if fault == "terminate some":
            soak.terminated += await killer.terminate(0.5)
        elif fault == "terminate all":
            soak.terminated += await killer.terminate(1.0)
        elif fault == "restart":
            await asyncio.to_thread(postgres_server.restart)
        else:
            await asyncio.to_thread(postgres_server.stop)
            try:
                # The outage lasts until the pool has noticed it (half a second at least).
                down = time.monotonic()
                await wait_until(
                    lambda: pool.stats().breaker_open and time.monotonic() - down >= 0.5,
                    timeout=OPERATION_BOUND,
                    message="the pool notices the outage",
                )
            finally:
                await asyncio.to_thread(postgres_server.start)

    async def sample() -> None:
        try:
            sessions: int | None = await admin.sessions()
        except SERVER_GONE:
            sessions = None  # the server is down or restarting
        soak.samples.append(
            Sample(
                at=time.monotonic(),
                traced=_traced(),
                rss=_rss(),
                tasks=len(asyncio.all_tasks()),
                size=pool.stats().size,
                sessions=sessions,
            )
        )

    async def sampler() -> None:
        # The schedule of the samples: nothing waits on them.
        while not stop.is_set():
            await sample()
            await asyncio.sleep(SAMPLE_EVERY)

    tracing_already = tracemalloc.is_tracing()
    if not tracing_already:
        tracemalloc.start()
    tasks_before = len(asyncio.all_tasks())
    workers: list[asyncio.Task[None]] = []
    sampling: asyncio.Task[None] | None = None
    try:
        async with pool:
            began = time.monotonic()
            sampling = asyncio.create_task(sampler())
            workers = [asyncio.create_task(worker(number)) for number in range(WORKERS)]
            for fault in itertools.cycle(FAULTS):
                # The schedule of the faults: load runs undisturbed in between.
                await asyncio.sleep(FAULT_EVERY)
                if time.monotonic() - began >= DURATION and soak.faults.keys() == set(FAULTS):
                    break  # (every kind of fault, however short the run)
                soak.fault = fault
                await inject(fault)
                ended = time.monotonic()
                await wait_until(
                    lambda: soak.last_success > ended,  # noqa: B023 -- waited on at once
                    timeout=OPERATION_BOUND,
                    message=f"an operation succeeds after the fault {fault!r}",
                )
                soak.recoveries.append(soak.last_success - ended)
                # Operations that began before the recovery may still fail a moment later.
                soak.calm_from = time.monotonic() + CALM_AFTER
                soak.fault = None
            stop.set()
            await asyncio.gather(*workers)
            await sampling
            await sample()

            # Nothing is lent, nothing is under way, and the server shows the pool's sessions.
            await wait_until(
                lambda: pool.stats().opening == pool.stats().closing == 0,
                timeout=OPERATION_BOUND,
                message="no connect or close under way",
            )
            stats = pool.stats()
            check_books(pool)
            shown = await _sessions_settled(admin, lambda: pool.stats().size, timeout=15)
            size = pool.stats().size
        shown_after_close = await _sessions_settled(admin, lambda: 0, timeout=15)
        # The pool's background tasks have ended with it.
        await wait_until(
            lambda: len(asyncio.all_tasks()) == tasks_before,
            timeout=OPERATION_BOUND,
            message="the pool's tasks end once it is closed",
        )
    finally:
        stop.set()
        for task in [*workers, *([sampling] if sampling else [])]:
            task.cancel()
        await asyncio.gather(*workers, *([sampling] if sampling else []), return_exceptions=True)
        if not tracing_already:
            tracemalloc.stop()
        if not postgres_server.is_running():
            await asyncio.to_thread(postgres_server.start)
        cleanup = await asyncpg.connect(postgres_server.dsn)
        await cleanup.execute(f"DROP TABLE {table}")
        await cleanup.close()
        admin.close()
        killer.close()

    samples = soak.samples
    steady = samples[1:]
    growth = samples[-1].traced - samples[1].traced
    most_sessions = max(s.sessions for s in samples if s.sessions is not None)
    leaked = stats.in_use + abs(shown - size) + shown_after_close
    row = tally.report(
        faults=(
            ", ".join(f"{count} {fault}" for fault, count in soak.faults.items())
            + f" ({soak.terminated} backends terminated) in {samples[-1].at - began:.0f} s"
        ),
        leaked=leaked,
        recovery=f"slowest {max(soak.recoveries):.2f} s after a fault",
    )
    print(
        f"traced memory {samples[1].traced / 1e6:.2f} -> {samples[-1].traced / 1e6:.2f} MB "
        f"(peak {max(s.traced for s in steady) / 1e6:.2f}), RSS {samples[1].rss / 1e6:.1f} -> "
        f"{samples[-1].rss / 1e6:.1f} MB, tasks {min(s.tasks for s in steady)}-"
        f"{max(s.tasks for s in steady)}, pool size at most {max(s.size for s in samples)}, "
        f"sessions at most {most_sessions}, {len(samples)} samples"
    )

    assert tally.hung == 0, row
    assert leaked == 0, f"{stats}; the server showed {shown}, then {shown_after_close}"
    assert soak.dirty_handouts == 0, "a connection was handed out inside a transaction"
    # The load never touches a connection after giving it back, and the pool never says it did.
    assert (stats.stale_releases, stats.stale_uses) == (0, 0), stats
    assert soak.failed_between_faults == 0, row
    assert all(s.size <= MAX_SIZE for s in samples)
    assert most_sessions <= MAX_SIZE + ENDING_BACKENDS
    assert max(s.tasks for s in steady) <= WORKERS + 2 * MAX_SIZE + 10
    assert growth < MEMORY_GROWTH, f"traced memory grew by {growth} bytes"
