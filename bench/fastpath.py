"""The pool's own overhead: microseconds per acquire + release on the fast path.

Uses the fake driver, so no database is involved: what is measured is the pool alone (the
connection is idle and clean, so ``reset`` does no I/O). Run it before and after any change to
``pool/``::

    .venv/bin/python -m bench.fastpath            # both event loops
    .venv/bin/python -m bench.fastpath --json     # machine-readable

Each figure is the median of several rounds; the spread (min..max) shows how noisy the machine was.
The "floor" row is what CPython itself costs for the same shape of code: a list pop and append
behind ``async with`` on an object whose ``__aenter__`` returns an awaitable that is already
done. No pool can be cheaper; the ratio row says how many floors one cycle of the pool costs.
The "coroutine floor" row is the same pool written the plain way, as a reader would write it
first: ``acquire()`` makes an object whose ``async def __aenter__`` pops and whose ``async def
__aexit__`` appends, so each cycle makes that object and two coroutines.
The last two rows show why ``release`` arms its ``reset_timeout`` only when ``reset`` actually
waits: wrapping every clean reset in ``asyncio.timeout`` costs a large share of the pool's cycle.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable

from aiodbpool import Pool
from aiodbpool._calls import begin
from aiodbpool.drivers.fake import FakeConnection, FakeDriver

Cycle = Callable[[Pool[FakeConnection], int], Awaitable[None]]


class _FloorPool:
    """The least an async pool can do per lend: pop an idle connection from a list behind
    ``async with``, append it back at the exit, awaiting nothing that suspends.

    ``__aenter__`` and ``__aexit__`` return futures that are already done (made once): awaiting
    one returns its result without suspending, the cheapest awaitable asyncio has.
    """

    def __init__(self) -> None:
        self._idle: list[object] = [object()]
        self._held: object = None
        loop = asyncio.get_running_loop()
        self._entered: asyncio.Future[object] = loop.create_future()
        self._entered.set_result(self._idle[0])
        self._exited: asyncio.Future[None] = loop.create_future()
        self._exited.set_result(None)

    def __aenter__(self) -> asyncio.Future[object]:
        self._held = self._idle.pop()
        return self._entered

    def __aexit__(self, *exc_info: object) -> asyncio.Future[None]:
        self._idle.append(self._held)
        return self._exited


async def _with_context_manager(pool: Pool[FakeConnection], cycles: int) -> None:
    for _ in range(cycles):
        async with pool.acquire():
            pass


async def _with_await(pool: Pool[FakeConnection], cycles: int) -> None:
    for _ in range(cycles):
        conn = await pool.acquire()
        await pool.release(conn)


class _CoroutineFloorPool:
    """The floor written the plain way: one context-manager object per lend, ``async def``
    methods (two coroutines per cycle)."""

    def __init__(self) -> None:
        self.idle: list[object] = [object()]

    def acquire(self) -> _CoroutineFloorLend:
        return _CoroutineFloorLend(self)


class _CoroutineFloorLend:
    __slots__ = ("_conn", "_pool")

    def __init__(self, pool: _CoroutineFloorPool) -> None:
        self._pool = pool
        self._conn: object = None

    async def __aenter__(self) -> object:
        self._conn = self._pool.idle.pop()
        return self._conn

    async def __aexit__(self, *exc_info: object) -> None:
        self._pool.idle.append(self._conn)


async def _empty_loop(pool: Pool[FakeConnection], cycles: int) -> None:
    for _ in range(cycles):
        pass


async def _floor(pool: Pool[FakeConnection], cycles: int) -> None:
    floor = _FloorPool()
    for _ in range(cycles):
        async with floor:
            pass


async def _coroutine_floor(pool: Pool[FakeConnection], cycles: int) -> None:
    floor = _CoroutineFloorPool()
    for _ in range(cycles):
        async with floor.acquire():
            pass


async def _measure(cycle: Cycle, cycles: int, rounds: int) -> list[float]:
    """Microseconds per cycle, one figure per round, after a warm-up round."""
    async with Pool(FakeDriver(), max_size=1, validate_after_idle=None) as pool:
        await cycle(pool, cycles // 10)
        results = []
        for _ in range(rounds):
            started = time.perf_counter()
            await cycle(pool, cycles)
            results.append((time.perf_counter() - started) / cycles * 1e6)
        return results


async def _clean_reset_bounded_by_asyncio_timeout(driver: FakeDriver, cycles: int) -> None:
    conn = await driver.connect()
    for _ in range(cycles):
        async with asyncio.timeout(5.0):
            await driver.reset(conn)


async def _clean_reset_bounded_lazily(driver: FakeDriver, cycles: int) -> None:
    # What Pool.release does: the timer is armed only if the reset suspends.
    conn = await driver.connect()
    for _ in range(cycles):
        unfinished = begin(driver.reset(conn))
        if unfinished is not None:
            async with asyncio.timeout(5.0):
                await unfinished


async def _measure_reset(
    bound: Callable[[FakeDriver, int], Awaitable[None]], cycles: int, rounds: int
) -> list[float]:
    results = []
    for _ in range(rounds):
        started = time.perf_counter()
        await bound(FakeDriver(), cycles)
        results.append((time.perf_counter() - started) / cycles * 1e6)
    return results


def _run(loop_name: str, cycles: int, rounds: int) -> dict[str, dict[str, float]]:
    if loop_name == "uvloop":
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    else:
        runner = asyncio.Runner()
    report: dict[str, dict[str, float]] = {}
    with runner:
        baseline = statistics.median(runner.run(_measure(_empty_loop, cycles, rounds)))
        for label, cycle in (
            ("async with", _with_context_manager),
            ("await", _with_await),
            ("floor", _floor),
            ("coroutine floor", _coroutine_floor),
        ):
            figures = runner.run(_measure(cycle, cycles, rounds))
            report[label] = {
                "median_us": statistics.median(figures) - baseline,
                "min_us": min(figures) - baseline,
                "max_us": max(figures) - baseline,
            }
        report["ratio"] = _ratio(report["async with"], report["floor"])
        report["coroutine ratio"] = _ratio(report["async with"], report["coroutine floor"])
        # The cost that bounding a clean reset by reset_timeout would add, and what it costs as
        # the pool does it.
        for label, bound in (
            ("reset+timeout", _clean_reset_bounded_by_asyncio_timeout),
            ("reset lazily", _clean_reset_bounded_lazily),
        ):
            figures = runner.run(_measure_reset(bound, cycles, rounds))
            report[label] = {
                "median_us": statistics.median(figures),
                "min_us": min(figures),
                "max_us": max(figures),
            }
    return report


def _ratio(pool: dict[str, float], floor: dict[str, float]) -> dict[str, float]:
    """How many floors one ``async with`` cycle of the pool costs (median over median; the
    spread pairs the fastest with the fastest and the slowest with the slowest)."""
    return {
        "median_us": pool["median_us"] / floor["median_us"],
        "min_us": pool["min_us"] / floor["min_us"],
        "max_us": pool["max_us"] / floor["max_us"],
    }


def cycle_times(cycles: int, rounds: int) -> list[float]:
    """Microseconds per ``async with pool.acquire()`` cycle on the default event loop, one
    figure per round, the empty loop's own cost taken off: for the peer comparison's report."""
    with asyncio.Runner() as runner:
        baseline = statistics.median(runner.run(_measure(_empty_loop, cycles, rounds)))
        return [t - baseline for t in runner.run(_measure(_with_context_manager, cycles, rounds))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--cycles", type=int, default=100_000, help="cycles per round")
    parser.add_argument("--rounds", type=int, default=7, help="rounds per figure")
    parser.add_argument("--loop", choices=["asyncio", "uvloop", "both"], default="both")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)

    loops = ["asyncio", "uvloop"] if args.loop == "both" else [args.loop]
    results = {name: _run(name, args.cycles, args.rounds) for name in loops}
    if args.json:
        machine = {"python": sys.version.split()[0], "platform": platform.platform()}
        print(json.dumps({"machine": machine, "results": results}, indent=2))
        return 0
    print(f"aiodbpool fast path, fake driver, Python {sys.version.split()[0]}")
    print(f"{'loop':<8} {'form':<16} {'us/cycle':>9} {'spread':>14}")
    for loop_name, report in results.items():
        for label, figures in report.items():
            spread = f"{figures['min_us']:.2f}..{figures['max_us']:.2f}"
            print(f"{loop_name:<8} {label:<16} {figures['median_us']:>9.2f} {spread:>14}")
    print(
        "(async with / await: one acquire + release cycle; floor: a list pop and append behind\n"
        " async with, CPython's least; coroutine floor: the same with async def methods and an\n"
        " object per lend; ratios: async with / each floor, in floors, not microseconds;\n"
        " reset+timeout vs reset lazily: a clean reset wrapped in asyncio.timeout on every\n"
        " release, versus the timer armed only when the reset waits, as the pool does)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
