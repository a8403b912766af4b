"""Bookkeeping for the reliability scenarios: every operation is counted by how it ended.

A scenario runs many operations while it injects faults. Each one must end in one of two ways:
it succeeds, or it fails *cleanly* (with an error the scenario allows, such as ``PoolError``
or the driver's "connection lost") within its bound. An operation still running after its bound
is counted as *hung*, and every scenario asserts there are none.

At the end a scenario reports one row: faults injected, operations attempted, succeeded, failed
cleanly, hung, connections leaked, and the recovery time. With ``-s`` the row is printed; if
the environment variable ``AIODBPOOL_SCENARIO_REPORT`` names a file, the row is appended to it
as a Markdown table row.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from faultproxy import FaultProxy
from helpers import check_books, wait_until

from aiodbpool import Pool, PoolError, PoolStats
from aiodbpool.drivers.postgres import PostgresDriver
from aiodbpool.integrations.testing import PostgresServer

REPORT_VARIABLE = "AIODBPOOL_SCENARIO_REPORT"

POSTGRES_OUTAGE_ERRORS: tuple[type[BaseException], ...] = (
    PoolError,
    asyncpg.PostgresConnectionError,  # SQLSTATE class 08
    asyncpg.OperatorInterventionError,  # SQLSTATE class 57: admin shutdown, terminated backend
    asyncpg.InterfaceError,  # includes "connection was closed in the middle of operation"
    # asyncpg's error for a statement sent on a connection whose server has just said FATAL
    # while asyncpg has not yet read the socket's end: "another operation is in progress".
    asyncpg.InternalClientError,
    ConnectionError,
)
"""What an operation on PostgreSQL may fail with while the server is away: the pool's errors,
or the driver's "the connection broke" errors. Anything else (or a hang) is a bug."""

NETWORK_ERRORS: tuple[type[BaseException], ...] = (
    PoolError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,  # ConnectionDoesNotExistError: "connection was closed in the middle"
    asyncpg.InternalClientError,
    ConnectionError,
)
"""What an operation may fail with while the network is broken (the server itself is fine): the
pool's errors, or asyncpg's "the connection broke" errors. Anything else, or a hang, is a bug."""

OPERATION_BOUND = 10.0
"""No single operation may take longer than this, fault or not: past it, it counts as hung."""

MARGIN = 3.0
"""Added to a configured timeout for the latest an operation bounded by it may end, on a loaded
machine."""

TIMER_SLACK = 0.05
"""How much earlier than asked a timer may seem to fire, measured with ``time.monotonic()``
(uvloop reads its clock once per loop iteration)."""


def unique_app_name(scenario: str) -> str:
    """A name of the scenario's own for its sessions on the shared server."""
    return f"aiodbpool-{scenario}-{uuid.uuid4().hex[:12]}"


def proxied_pool(
    fault_proxy: FaultProxy,
    postgres_server: PostgresServer,
    app_name: str,
    server_settings: dict[str, str] | None = None,
    **options: Any,
) -> Pool[asyncpg.Connection]:
    """A pool connecting through the fault proxy; its sessions are named ``app_name`` on the
    server."""
    driver = PostgresDriver(
        fault_proxy.dsn_for(postgres_server.dsn),
        server_settings={"application_name": app_name, **(server_settings or {})},
    )
    return Pool(driver, name=app_name, **options)


HEADER = (
    "| scenario | faults injected | attempted | succeeded | failed cleanly | hung | leaked "
    "| recovery |\n| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"
)


@dataclass
class Tally:
    """How the operations of one scenario ended."""

    scenario: str
    allowed: tuple[type[BaseException], ...]
    """Errors that count as failing cleanly; any other error fails the test at once."""
    attempted: int = 0
    succeeded: int = 0
    failed_cleanly: int = 0
    hung: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    """Clean failures by error type, for the report."""

    async def run(self, operation: Callable[[], Awaitable[object]], *, bound: float) -> bool:
        """Run one operation within ``bound`` seconds; return whether it succeeded."""
        self.attempted += 1
        deadline = asyncio.timeout(bound)
        try:
            async with deadline:
                await operation()
        except TimeoutError as error:
            if deadline.expired():
                self.hung += 1
                return False
            if not isinstance(error, self.allowed):
                raise  # a timeout of the operation's own (PoolTimeout is one), not allowed here
            self._failed_cleanly(error)
            return False
        except self.allowed as error:
            self._failed_cleanly(error)
            return False
        self.succeeded += 1
        return True

    def _failed_cleanly(self, error: BaseException) -> None:
        self.failed_cleanly += 1
        self.errors[type(error).__name__] += 1

    def report(self, *, faults: str, leaked: int, recovery: str) -> str:
        """The scenario's row of the reliability table; printed, and appended to the report."""
        kinds = ", ".join(f"{name} {count}" for name, count in self.errors.most_common())
        failed = f"{self.failed_cleanly}" + (f" ({kinds})" if kinds else "")
        row = (
            f"| {self.scenario} | {faults} | {self.attempted} | {self.succeeded} | {failed} "
            f"| {self.hung} | {leaked} | {recovery} |"
        )
        print(f"\n{row}")
        path = os.environ.get(REPORT_VARIABLE)
        if path:
            with open(path, "a", encoding="utf-8") as report:
                report.write(row + "\n")
        return row


async def select_one(pool: Pool[asyncpg.Connection], timeout: float | None = None) -> None:
    """Borrow a connection (within ``timeout``, or the pool's own) and run ``SELECT 1`` on it."""
    async with pool.acquire(timeout) as conn:
        assert await conn.fetchval("SELECT 1") == 1


async def timed(operation: Callable[[], Awaitable[object]], took: list[float]) -> None:
    """Run ``operation``, appending how long it took (whether it succeeded or not)."""
    began = time.monotonic()
    try:
        await operation()
    finally:
        took.append(time.monotonic() - began)


# ------------------------------------------------------------------ what the server shows

SETTLE = 15.0
"""Seconds allowed for the server's sessions to match the pool's (a backend ends a moment after
its client's socket closes)."""


async def server_sessions(postgres_server: PostgresServer, app_name: str) -> int:
    """The server's sessions named ``app_name``, counted over its Unix socket (so never through
    a fault proxy)."""
    sessions, _ = await server_view(postgres_server.admin_dsn, app_name)
    return sessions


async def server_view(dsn: str, app_name: str, running: str | None = None) -> tuple[int, int]:
    """The server's sessions named ``app_name``, and how many of them are running a statement
    (only ``running``, if given), as seen over a connection of its own to ``dsn``."""
    monitor = await asyncpg.connect(dsn)
    try:
        row = await monitor.fetchrow(
            "SELECT count(*) AS sessions, count(*) FILTER (WHERE state = 'active' "
            "AND ($2::text IS NULL OR query = $2)) AS active "
            "FROM pg_stat_activity WHERE application_name = $1",
            app_name,
            running,
        )
        assert row is not None
        return row["sessions"], row["active"]
    finally:
        await monitor.close()


async def server_shows(
    dsn: str,
    app_name: str,
    wanted: Callable[[tuple[int, int]], bool],
    *,
    running: str | None = None,
    timeout: float = SETTLE,
) -> tuple[int, int]:
    """:func:`server_view` once ``wanted`` holds for it, or after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not wanted(view := await server_view(dsn, app_name, running)):
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    return view


async def sessions_settled(
    postgres_server: PostgresServer, app_name: str, expected: int, timeout: float = SETTLE
) -> int:
    """The server's sessions of ``app_name`` once they number ``expected``, or after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while (count := await server_sessions(postgres_server, app_name)) != expected:
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    return count


async def settled_books(
    pool: Pool[Any], postgres_server: PostgresServer, app_name: str
) -> tuple[PoolStats, int]:
    """The pool's stats once no connect or close is under way, and the sessions the server shows
    once they match the pool's size (or after :data:`SETTLE` seconds)."""
    await wait_until(
        lambda: pool.stats().opening == 0 and pool.stats().closing == 0,
        timeout=SETTLE,
        message="no connect or close under way",
    )
    stats = pool.stats()
    check_books(pool)
    return stats, await sessions_settled(postgres_server, app_name, stats.size)


def unaccounted(stats: PoolStats, shown: int, shown_after_close: int) -> int:
    """Connections unaccounted for: still in use or opening, the server's sessions that the pool
    does not hold, and sessions left once the pool is closed."""
    return stats.in_use + stats.opening + abs(shown - stats.size) + shown_after_close


@dataclass(frozen=True)
class Restart:
    """What ``restart_under_load`` saw: when the server was restarted and back, the first
    operation served after that, and when each failed operation began."""

    restart_began: float
    server_back: float
    first_success: float
    failures: list[float]

    @property
    def recovery(self) -> float:
        """Seconds from the server's return to the first operation served."""
        return self.first_success - self.server_back

    @property
    def restart_ms(self) -> float:
        return (self.server_back - self.restart_began) * 1000

    def failures_after_recovery(self) -> list[float]:
        """Operations begun after the pool served again that failed: there should be none."""
        return [began for began in self.failures if began > self.first_success]


async def restart_under_load(
    server: PostgresServer,
    tally: Tally,
    operation: Callable[[], Awaitable[None]],
    *,
    clients: int = 50,
    bound: float = 20.0,
) -> Restart:
    """Scenario: ``clients`` tasks run ``operation`` in a loop (each bounded by ``bound``
    seconds, counted in ``tally``) while ``server`` restarts: 200 operations before, the restart,
    then on until 200 more have been served after the first one that succeeded again."""
    successes: list[float] = []  # when each successful operation ended
    failures: list[float] = []  # when each failed operation began
    warmed_up = asyncio.Event()
    served_again = asyncio.Event()
    stop = asyncio.Event()
    server_back = float("inf")

    async def client() -> None:
        while not stop.is_set():
            began = time.monotonic()
            succeeded = await tally.run(operation, bound=bound)
            if succeeded:
                successes.append(time.monotonic())
                if successes[-1] > server_back:
                    served_again.set()
            else:
                failures.append(began)
            if tally.attempted >= 200:
                warmed_up.set()
            if not succeeded:
                await asyncio.sleep(0.01)  # a client backs off a little after an error

    running = [asyncio.ensure_future(client()) for _ in range(clients)]
    try:
        await warmed_up.wait()
        restart_began = time.monotonic()
        await asyncio.to_thread(server.restart)
        server_back = time.monotonic()
        async with asyncio.timeout(30):
            await served_again.wait()
        served_before = len(successes)
        await wait_until(lambda: len(successes) >= served_before + 200, timeout=30)
    finally:
        stop.set()
        await asyncio.gather(*running)
    first_success = min(when for when in successes if when > server_back)
    return Restart(restart_began, server_back, first_success, failures)
