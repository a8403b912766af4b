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
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import asyncpg

from aiodbpool import PoolError

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
