"""The wait queue: joining it, leaving it, and what a waiter weighs, for 1,000 to 100,000 waiters.

Measured through the pool, the way an application meets the queue: a ``Pool(FakeDriver(),
max_size=1, acquire_timeout=None)`` whose one connection is held, and N tasks that each
``await pool.acquire()`` and queue. Then all N are cancelled at once, newest first or oldest
first (a cancelled task group, a storm of client disconnects)::

    .venv/bin/python -m bench.waiters                       # N = 1,000, 10,000 and 100,000
    .venv/bin/python -m bench.waiters --sizes 1000,10000    # fewer, faster
    .venv/bin/python -m bench.waiters --json                # machine-readable

Columns, each the median of ``--rounds`` rounds (every round opens a new pool):

- **join**: microseconds per acquirer to get all N queued (creating N tasks, then until
  ``pool.stats().waiting == N``), divided by N. It includes each acquirer's task, as an
  application's acquire that has to wait pays for it.
- **leave**: microseconds per acquirer from the first ``cancel()`` until every task has ended
  (gathered), divided by N.
- **worst leave**: the longest time one waiter took to leave. The cancelled tasks resume one after
  the other in the same event-loop iteration, and each notes the time at which its cancellation
  reached it, so the gap between two consecutive notes is one waiter's way out through the pool
  (the first is timed from the end of the ``cancel()`` calls). A gap in which the garbage
  collector ran is left out: with thousands of tasks alive a collection takes milliseconds, and
  would hide what the queue itself costs. The collections have a column of their own.
- **stall**: the longest gap between two consecutive steps of a ticker task that yields with
  ``asyncio.sleep(0)`` while the waiters leave: how long any other task (a request being served)
  had to wait for its turn. The loop runs every cancellation it was handed in one iteration, so
  the stall is close to the whole burst's cost however the queue is built; what the queue
  decides is whether that cost grows with N (one leave, O(1)) or with N squared (a search).
- **gc ms**: the time the garbage collector ran while the waiters left: part of leave, and of
  the stall when it falls in the same loop iteration.
- **bytes/waiter**: memory allocated per queued acquirer, as ``tracemalloc`` counts it: its task,
  coroutine frames, future and its entry in the queue. Measured in a separate pass, since tracing
  slows everything down.

The garbage collector stays on, as in an application.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import gc
import json
import platform
import statistics
import sys
import time
import tracemalloc
from typing import Literal

import aiodbpool._waiters
from aiodbpool import Pool
from aiodbpool.drivers.fake import FakeConnection, FakeDriver

Order = Literal["newest first", "oldest first"]
ORDERS: tuple[Order, ...] = ("newest first", "oldest first")
SIZES = (1_000, 10_000, 100_000)


async def _acquirer(pool: Pool[FakeConnection], left_at: list[float]) -> None:
    """Wait in line for a connection; note when a cancellation reaches this task."""
    try:
        conn = await pool.acquire()
    except asyncio.CancelledError:
        left_at.append(time.perf_counter())
        raise
    await pool.release(conn)  # not reached here: the pool's only connection stays held


async def _queue_up(
    pool: Pool[FakeConnection], n: int, left_at: list[float]
) -> list[asyncio.Task[None]]:
    """Start ``n`` acquirers and return once all of them wait in the pool's queue."""
    tasks: list[asyncio.Task[None]] = [
        asyncio.create_task(_acquirer(pool, left_at)) for _ in range(n)
    ]
    for _ in range(100):  # they queue in their first step: one loop iteration
        if pool.stats().waiting == n:
            return tasks
        await asyncio.sleep(0)
    raise RuntimeError(f"{pool.stats().waiting} of {n} acquirers queued")


class _Collections:
    """The garbage collector's runs, as (start, end) times, while it is watched."""

    def __init__(self) -> None:
        self.runs: list[tuple[float, float]] = []
        self._started = 0.0
        gc.callbacks.append(self._note)

    def _note(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.runs.append((self._started, time.perf_counter()))

    def stop(self) -> None:
        gc.callbacks.remove(self._note)


def _worst_leave(notes: list[float], collections: list[tuple[float, float]]) -> float:
    """The longest gap between consecutive ``notes`` in which no collection started."""
    # A collection runs inside one step of one task, so it falls within a single gap.
    collected = {bisect.bisect_right(notes, start) - 1 for start, _ in collections}
    return max(
        (notes[i + 1] - notes[i] for i in range(len(notes) - 1) if i not in collected),
        default=0.0,
    )


class _Ticker:
    """A task that yields at every loop iteration and keeps the longest gap between its steps."""

    def __init__(self) -> None:
        self.longest = 0.0
        self._task = asyncio.create_task(self._tick())

    async def _tick(self) -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0)
            now = time.perf_counter()
            self.longest = max(self.longest, now - last)
            last = now

    async def stop(self) -> float:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        return self.longest


async def _round(n: int, order: Order) -> dict[str, float]:
    """One pool, ``n`` acquirers queued, then all cancelled in ``order``: the timings."""
    left_at: list[float] = []
    async with Pool(FakeDriver(), max_size=1, acquire_timeout=None) as pool:
        held = await pool.acquire()
        gc.collect()
        started = time.perf_counter()
        tasks = await _queue_up(pool, n, left_at)
        joined = time.perf_counter() - started

        leaving = tasks[::-1] if order == "newest first" else tasks
        # The gather's bookkeeping (a callback on each task) is made before the clock starts.
        ended = asyncio.gather(*tasks, return_exceptions=True)
        gc.collect()
        ticker = _Ticker()
        await asyncio.sleep(0)  # the ticker takes its first step
        collections = _Collections()
        started = time.perf_counter()
        for task in leaving:
            task.cancel()
        cancelled_at = time.perf_counter()
        await ended
        left = time.perf_counter() - started
        collections.stop()
        stall = await ticker.stop()

        if len(left_at) != n or pool.stats().waiting != 0:
            raise RuntimeError(
                f"{len(left_at)} of {n} acquirers left; {pool.stats().waiting} still wait"
            )
        worst = _worst_leave([cancelled_at, *left_at], collections.runs)
        await pool.release(held)
    return {
        "join_us": joined / n * 1e6,
        "leave_us": left / n * 1e6,
        "worst_leave_us": worst * 1e6,
        "stall_ms": stall * 1e3,
        "gc_ms": sum(end - start for start, end in collections.runs) * 1e3,
    }


async def _bytes_per_waiter(n: int) -> float:
    """Memory allocated per queued acquirer, task included, as tracemalloc counts it."""
    left_at: list[float] = []
    async with Pool(FakeDriver(), max_size=1, acquire_timeout=None) as pool:
        held = await pool.acquire()
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            tasks = await _queue_up(pool, n, left_at)
            after = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await pool.release(held)
    # The benchmark's own list of tasks is counted too: 8 bytes per waiter, taken off.
    return (after - before) / n - 8


def _measure(sizes: list[int], rounds: int) -> list[dict[str, object]]:
    results: list[dict[str, object]] = []
    with asyncio.Runner() as runner:
        runner.run(_round(100, "oldest first"))  # warm-up
        for n in sizes:
            memory = runner.run(_bytes_per_waiter(n))
            runs: dict[Order, list[dict[str, float]]] = {order: [] for order in ORDERS}
            for _ in range(rounds):
                for order in ORDERS:
                    runs[order].append(runner.run(_round(n, order)))
            for order in ORDERS:
                figures = {
                    key: statistics.median(run[key] for run in runs[order])
                    for key in runs[order][0]
                }
                results.append(
                    {
                        "waiters": n,
                        "order": order,
                        **figures,
                        "bytes_per_waiter": memory,
                        "runs": runs[order],
                    }
                )
    return results


def _sizes(text: str) -> list[int]:
    sizes = [int(part) for part in text.split(",") if part.strip()]
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"sizes must be positive integers, got {text!r}")
    return sizes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--sizes",
        type=_sizes,
        default=list(SIZES),
        help="waiters queued, comma-separated (default: 1000,10000,100000)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds per figure")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")

    results = _measure(args.sizes, args.rounds)
    queue = aiodbpool._waiters.__file__
    if args.json:
        machine = {"python": sys.version.split()[0], "platform": platform.platform()}
        print(json.dumps({"machine": machine, "queue": queue, "results": results}, indent=2))
        return 0
    print(f"aiodbpool wait queue, fake driver, Python {sys.version.split()[0]} ({queue})")
    print(
        f"{'waiters':>8}  {'order':<13}{'join us':>9}{'leave us':>10}{'worst leave us':>16}"
        f"{'stall ms':>10}{'gc ms':>8}{'bytes/waiter':>14}"
    )
    for row in results:
        print(
            f"{row['waiters']:>8,}  {row['order']:<13}{row['join_us']:>9.2f}"
            f"{row['leave_us']:>10.2f}{row['worst_leave_us']:>16.1f}{row['stall_ms']:>10.1f}"
            f"{row['gc_ms']:>8.1f}{row['bytes_per_waiter']:>14,.0f}"
        )
    print(
        "(join / leave: per acquirer, all N queued / all N cancelled at once; worst leave: the\n"
        " longest single waiter's way out, collections aside; stall: the longest the event loop\n"
        " ran without letting another task in; gc: collections while they left; medians of the\n"
        " rounds)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
