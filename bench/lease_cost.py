"""What a lease costs: microseconds per lend and per statement, on the fake driver.

Every lend makes one ``aiodbpool.Lease``, and every statement through it passes its guard (is the
lease still live; count the statement as running). With the fake driver nothing else happens --
no I/O, no latency -- so the differences below are the guard alone::

    .venv/bin/python -m bench.lease_cost

Rows: an acquire + release cycle with the fake driver's lease and with the same driver lending
its connections bare (no ``lease_class``); a statement through the lease and on the bare
connection. Each figure is the median of several rounds, with the spread (min..max).
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable

from aiodbpool import Pool, raw_connection
from aiodbpool.drivers.fake import FakeConnection, FakeDriver

ROUNDS = 7
CYCLES = 20_000


class _BareFakeDriver(FakeDriver):
    """The fake driver without leases: the pool lends its connections themselves."""

    lease_class = None  # type: ignore[assignment]


async def _lends(pool: Pool[FakeConnection], cycles: int) -> None:
    for _ in range(cycles):
        async with pool.acquire():
            pass


async def _statements(conn: FakeConnection, cycles: int) -> None:
    for _ in range(cycles):
        await conn.execute("SELECT 1")


async def _rounds(run: Callable[[int], Awaitable[None]]) -> list[float]:
    await run(CYCLES // 10)  # warm up
    timings = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        await run(CYCLES)
        timings.append((time.perf_counter() - started) / CYCLES * 1e6)
    return timings


async def _measure() -> list[tuple[str, list[float]]]:
    rows = []
    for name, driver in (("lend, leased", FakeDriver()), ("lend, bare", _BareFakeDriver())):
        async with Pool(driver, max_size=1) as pool:

            async def lends(cycles: int, pool: Pool[FakeConnection] = pool) -> None:
                await _lends(pool, cycles)

            rows.append((name, await _rounds(lends)))
    async with Pool(FakeDriver(), max_size=1) as pool, pool.acquire() as lease:
        bare = raw_connection(lease)

        async def through_the_lease(cycles: int) -> None:
            await _statements(lease, cycles)

        async def on_the_connection(cycles: int) -> None:
            await _statements(bare, cycles)

        rows.append(("statement, leased", await _rounds(through_the_lease)))
        rows.append(("statement, bare", await _rounds(on_the_connection)))
    return rows


def main() -> int:
    print(f"lease cost, fake driver, Python {sys.version.split()[0]}")
    print(f"{'what':<20}{'us':>8}  spread")
    for name, timings in asyncio.run(_measure()):
        median = statistics.median(timings)
        print(f"{name:<20}{median:>8.2f}  {min(timings):.2f}..{max(timings):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
