"""The workloads W1-W4 (PostgreSQL, every contender) and W6 (SQLite), measured in this process.

* W1: acquire + release with no statement, one task: microseconds per cycle, the pool's own
  cost plus whatever it sends to the server on release.
* W2: acquire + ``SELECT 1`` + release, one task: microseconds per operation.
* W3: the same with 100 tasks sharing ``pool_size`` connections: operations per second, and
  the 50th and 99th percentile of each operation's latency, *including the wait for a
  connection*. A pool that lets newcomers cut in line shows it in p99.
* W4: a 5 ms statement (``pg_sleep``) with 50 tasks: the pool under a slow query.
* W6: SQLite, a row read by primary key: through aiodbpool, against a connection opened per
  use; one task (microseconds per operation) and 10 tasks (operations per second).

Single-task workloads run for a fixed time rather than a fixed count, so the slow contenders
(connect per use) finish in the same time as the fast ones.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiosqlite

from aiodbpool import create_pool

from .contenders import Contender
from .results import Measurement

__all__ = ["W3_TASKS", "W4_TASKS", "W6_TASKS", "concurrent", "single", "sqlite_workload"]

W3_TASKS = 100
W4_TASKS = 50
W6_TASKS = 10
W6_ROWS = 1000


async def single(contender: Contender, statement: bool, seconds: float) -> float:
    """W1 (``statement`` False) or W2: microseconds per cycle, one task, for ``seconds``."""
    borrow = contender.borrow
    select_one = contender.select_one
    cycles = 0
    started = time.perf_counter()
    deadline = started + seconds
    while True:
        async with borrow() as conn:
            if statement:
                await select_one(conn)
        cycles += 1
        if time.perf_counter() >= deadline:
            break
    return (time.perf_counter() - started) / cycles * 1e6


async def concurrent(
    contender: Contender, tasks: int, seconds: float, slow: bool
) -> tuple[float, float, float]:
    """W3 (``slow`` False: ``SELECT 1``) or W4 (``pg_sleep``) with ``tasks`` tasks for
    ``seconds``: operations per second, p50 and p99 latency in milliseconds."""
    run = contender.sleep if slow else contender.select_one
    return await _load(lambda: _borrowing(contender, run), tasks, seconds)


async def _borrowing(contender: Contender, run: Callable[[Any], Awaitable[None]]) -> None:
    async with contender.borrow() as conn:
        await run(conn)


async def _load(
    operation: Callable[[], Awaitable[None]], tasks: int, seconds: float
) -> tuple[float, float, float]:
    """Run ``operation`` in a loop on ``tasks`` tasks until ``seconds`` have passed; each
    latency runs from the call to its end (waiting for a connection included)."""
    latencies: list[float] = []
    started = time.perf_counter()
    deadline = started + seconds

    async def worker() -> None:
        clock = time.perf_counter
        while (began := clock()) < deadline:
            await operation()
            latencies.append(clock() - began)

    await asyncio.gather(*(worker() for _ in range(tasks)))
    elapsed = time.perf_counter() - started
    centiles = statistics.quantiles(latencies, n=100, method="inclusive")
    return len(latencies) / elapsed, centiles[49] * 1e3, centiles[98] * 1e3


# ---------------------------------------------------------------------- W6: SQLite


async def sqlite_workload(directory: Path, seconds: float, repeats: int) -> list[Measurement]:
    """W6: aiodbpool's SQLite driver against ``aiosqlite.connect`` per use, on one file."""
    path = directory / "w6.db"
    async with aiosqlite.connect(path) as setup:
        await setup.execute("PRAGMA journal_mode=WAL")
        await setup.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, title TEXT NOT NULL)")
        await setup.executemany(
            "INSERT INTO notes (id, title) VALUES (?, ?)",
            [(n, f"note {n}") for n in range(1, W6_ROWS + 1)],
        )
        await setup.commit()
    pool = create_pool(f"sqlite:///{path}", min_size=W6_TASKS, max_size=W6_TASKS)
    counter = iter(range(1 << 62))

    async def read_row(conn: aiosqlite.Connection) -> None:
        row_id = next(counter) % W6_ROWS + 1
        async with conn.execute("SELECT title FROM notes WHERE id = ?", (row_id,)) as cursor:
            await cursor.fetchone()

    async def pooled() -> None:
        async with pool.acquire() as conn:
            await read_row(conn)

    async def per_use() -> None:
        async with aiosqlite.connect(path) as conn:
            await read_row(conn)

    measured = {
        "aiodbpool (SQLite)": (pooled, Measurement("W6", "aiodbpool (SQLite)")),
        "no pool (connect per use)": (per_use, Measurement("W6", "no pool (connect per use)")),
    }
    async with pool:
        for operation, _ in measured.values():  # warm up
            await _load(operation, 1, seconds / 4)
        for _ in range(repeats):
            for operation, measurement in measured.values():
                one_task, _, _ = await _load(operation, 1, seconds)
                rate, p50, p99 = await _load(operation, W6_TASKS, seconds)
                measurement.add(us_per_op=1e6 / one_task, ops_per_s=rate, p50_ms=p50, p99_ms=p99)
    return [measurement for _, measurement in measured.values()]
