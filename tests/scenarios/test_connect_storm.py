"""Scenario: a connect storm. The database refuses connections for ten seconds while a pool with
``min_size=2`` runs and clients keep asking for connections.

What must hold: the pool does not hammer the refusing database. Its background refill backs
off (exponentially, with jitter), and once the circuit breaker is open the clients fail at once
with ``PoolConnectError`` instead of each trying a connect of its own. When the database is back,
the pool serves again within about one backoff delay and refills to ``min_size`` by itself, and
it holds exactly the sessions the server shows.

The refusal is real: the server is stopped (``pg_ctl stop -m fast``), so its port refuses TCP.
Connects are counted by a wrapper around the PostgreSQL driver, which notes for each one whether
the pool's background refill made it or an acquirer did.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from functools import partial

import asyncpg
import pytest
from helpers import check_books, wait_until
from tally import POSTGRES_OUTAGE_ERRORS, Tally, sessions_settled

from aiodbpool import Pool, PoolConnectError
from aiodbpool.drivers.postgres import PostgresDriver
from aiodbpool.integrations.testing import PostgresServer

OUTAGE = 10.0
"""How long the database refuses connections, in seconds."""

MIN_SIZE = 2
MAX_SIZE = 5
CLIENTS = 10
CONNECT_TIMEOUT = 5.0
BACKOFF_INITIAL = 0.5
BACKOFF_MAX = 4.0
BREAKER_THRESHOLD = 5

OPERATION_BOUND = CONNECT_TIMEOUT + 10.0
"""No single operation may take longer than this, outage or not: past it, it counts as hung."""

CLIENT_PAUSE = 0.02
"""A client waits this long after a failed request before its next one, as real clients do;
without it a client whose acquire fails without suspending would never let the loop run."""


@dataclass(frozen=True, slots=True)
class _Connect:
    """One connect the pool started."""

    at: float
    background: bool
    """Made by the pool's background refill (or its breaker probe), not for an acquirer."""


class _CountingDriver:
    """The PostgreSQL driver, noting when each connect starts and which task started it."""

    def __init__(self, inner: PostgresDriver) -> None:
        self._inner = inner
        self.connects: list[_Connect] = []

    async def connect(self) -> asyncpg.Connection:
        task = asyncio.current_task()
        # The pool names its background connects "aiodbpool[<pool>] refill".
        background = task is not None and task.get_name().endswith(" refill")
        self.connects.append(_Connect(time.monotonic(), background))
        return await self._inner.connect()

    async def close(self, conn: asyncpg.Connection) -> None:
        await self._inner.close(conn)

    async def ping(self, conn: asyncpg.Connection) -> None:
        await self._inner.ping(conn)

    async def reset(self, conn: asyncpg.Connection) -> None:
        await self._inner.reset(conn)  # returns without suspending when the inner one does

    def is_closed(self, conn: asyncpg.Connection) -> bool:
        return self._inner.is_closed(conn)

    def terminate(self, conn: asyncpg.Connection) -> None:
        self._inner.terminate(conn)

    def during(self, start: float, end: float, *, background: bool | None = None) -> int:
        """Connects started between ``start`` and ``end`` (only background ones, or only the
        acquirers', when ``background`` says so)."""
        return sum(
            start <= connect.at <= end and background in (None, connect.background)
            for connect in self.connects
        )


@dataclass(frozen=True, slots=True)
class _Request:
    """One client request: acquire, ``SELECT 1``, release."""

    began: float
    ended: float
    error: BaseException | None
    breaker_was_open: bool

    @property
    def succeeded(self) -> bool:
        return self.error is None


def _most_attempts(window: float, initial: float, maximum: float) -> int:
    """The most connects one-at-a-time backoff lets start within ``window`` seconds: the first at
    once, then each after the shortest delay the jitter allows (half of ``initial * 2**(n-1)``,
    capped at ``maximum``)."""
    attempts, elapsed, failures = 1, 0.0, 0
    while True:
        elapsed += min(maximum, initial * 2.0**failures) / 2
        failures += 1
        if elapsed > window:
            return attempts
        attempts += 1


async def _select_one(pool: Pool[asyncpg.Connection], failure: list[BaseException]) -> None:
    """One request; its error, if any, is also put in ``failure``."""
    try:
        async with pool.acquire() as conn:
            await conn.fetchval("SELECT 1")
    except Exception as error:
        failure.append(error)
        raise


@pytest.mark.slow
async def test_a_ten_second_refusal_is_met_with_backoff_and_the_pool_recovers(
    postgres_server: PostgresServer,
) -> None:
    app_name = f"aiodbpool-connect-storm-{uuid.uuid4().hex[:12]}"
    driver = _CountingDriver(
        PostgresDriver(postgres_server.dsn, server_settings={"application_name": app_name})
    )
    pool = Pool(
        driver,
        name="connect-storm",
        min_size=MIN_SIZE,
        max_size=MAX_SIZE,
        acquire_timeout=CONNECT_TIMEOUT,
        connect_timeout=CONNECT_TIMEOUT,
        backoff_initial=BACKOFF_INITIAL,
        backoff_max=BACKOFF_MAX,
        breaker_threshold=BREAKER_THRESHOLD,
    )
    tally = Tally("connect storm", allowed=POSTGRES_OUTAGE_ERRORS)
    requests: list[_Request] = []
    stop = asyncio.Event()

    async def client() -> None:
        while not stop.is_set():
            began = time.monotonic()
            breaker_was_open = pool.stats().breaker_open
            failure: list[BaseException] = []
            await tally.run(partial(_select_one, pool, failure), bound=OPERATION_BOUND)
            error = failure[0] if failure else None
            requests.append(_Request(began, time.monotonic(), error, breaker_was_open))
            if error is not None:
                await asyncio.sleep(CLIENT_PAUSE)

    async with pool:
        clients = [asyncio.create_task(client()) for _ in range(CLIENTS)]
        try:
            await wait_until(lambda: tally.succeeded >= 100, timeout=15, message="warm-up")
            stop_began = time.monotonic()
            try:
                await asyncio.to_thread(postgres_server.stop)
                refusing_since = time.monotonic()
                await wait_until(
                    lambda: pool.stats().breaker_open, timeout=OUTAGE, message="breaker open"
                )
                breaker_opened = time.monotonic()
                # The outage itself: its length is the scenario's, nothing waits on it.
                await asyncio.sleep(refusing_since + OUTAGE - time.monotonic())
            finally:
                await asyncio.to_thread(postgres_server.start)
            server_back = time.monotonic()
            during_outage = pool.stats()

            await wait_until(
                lambda: any(r.succeeded and r.ended >= server_back for r in requests),
                timeout=OPERATION_BOUND,
                message="a request succeeds after the server is back",
            )
            first_success = min(r.ended for r in requests if r.succeeded and r.ended >= server_back)
            await wait_until(
                lambda: pool.stats().idle + pool.stats().in_use >= MIN_SIZE,
                timeout=OPERATION_BOUND,
                message="min_size connections open again",
            )
            refilled = time.monotonic()
        finally:
            stop.set()
            await asyncio.gather(*clients)

        # The books once the clients are gone, and the server agrees with them.
        await wait_until(
            lambda: pool.stats().opening == 0 and pool.stats().closing == 0,
            message="no connect or close under way",
        )
        stats = pool.stats()
        check_books(pool)
        shown = await sessions_settled(postgres_server, app_name, stats.size)
    shown_after_close = await sessions_settled(postgres_server, app_name, 0)

    window = server_back - stop_began
    connects = driver.during(stop_began, server_back)
    background = driver.during(stop_began, server_back, background=True)
    acquirer_connects = connects - background
    outage_requests = [r for r in requests if stop_began <= r.began <= server_back]
    rejected_fast = [
        r for r in outage_requests if r.breaker_was_open and isinstance(r.error, PoolConnectError)
    ]
    slowest_rejection = max((r.ended - r.began for r in rejected_fast), default=0.0)
    leaked = stats.in_use + stats.opening + abs(shown - stats.size) + shown_after_close
    tally.report(
        faults=(
            f"server stopped {refusing_since - stop_began:.1f} s + refused {OUTAGE:.0f} s; "
            f"{connects} connects in {window:.1f} s ({background} background), "
            f"{len(outage_requests)} requests, {during_outage.breaker_rejections} rejected by "
            "the breaker"
        ),
        leaked=leaked,
        recovery=(
            f"first acquire {first_success - server_back:.2f} s, min_size "
            f"{refilled - server_back:.2f} s after the server was back"
        ),
    )
    print(
        f"breaker open {breaker_opened - refusing_since:.2f} s after the port closed; slowest "
        f"rejection {slowest_rejection * 1000:.1f} ms; connects during the outage: {background} "
        f"background, {acquirer_connects} for acquirers"
    )

    assert tally.hung == 0
    assert leaked == 0, f"stats {stats}; the server showed {shown}, then {shown_after_close}"
    # Backoff, not spinning: one probe at a time, spaced by the backoff. The refill starts with
    # the min_size connects it lost at once, then probes no faster than the shortest jitter
    # allows; acquirers may try only until the breaker opens (one connect each in the slots
    # free), then only as a probe themselves, one at a time and at most one per BACKOFF_INITIAL.
    probes = _most_attempts(window, BACKOFF_INITIAL, BACKOFF_MAX)
    assert background <= MIN_SIZE - 1 + probes, f"{background} background connects in {window}s"
    acquirer_probes = window / BACKOFF_INITIAL + 1
    assert connects <= BREAKER_THRESHOLD + MAX_SIZE + MIN_SIZE - 1 + probes + acquirer_probes
    assert len(outage_requests) > 20 * connects  # the clients kept asking all along
    # With the breaker open, acquirers failed at once rather than after a connect of their own.
    assert during_outage.breaker_rejections > 0
    assert len(rejected_fast) > 100
    assert slowest_rejection < CONNECT_TIMEOUT / 10
    # Acquirers recover within BACKOFF_INITIAL of the server's return, whatever the background's
    # backoff has grown to (with room for a busy machine); the refill within one backoff delay.
    assert first_success - server_back < BACKOFF_INITIAL + 2.5
    assert refilled - server_back < BACKOFF_MAX + 4
    # The first success reset the breaker and the backoff.
    assert not stats.breaker_open
    assert stats.connect_errors_in_a_row == 0
