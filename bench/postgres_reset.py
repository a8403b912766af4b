"""What the PostgreSQL driver's two reset modes cost, on a real server.

``reset="transaction"`` (the default) sends nothing when a released connection is clean;
``reset="full"`` runs asyncpg's full reset (``RESET ALL``, ``UNLISTEN *``, ...) on every
release. Measured per cycle, with one task and one connection:

* acquire + release, no statement;
* acquire + ``SELECT 1`` + release;
* ``SELECT 1`` on one asyncpg connection used directly, the lower bound.

Uses the server at ``$AIODBPOOL_BENCH_DSN`` if set, otherwise starts a throwaway one (see
``bench/server.py``)::

    .venv/bin/python -m bench.postgres_reset            # a table
    .venv/bin/python -m bench.postgres_reset --json     # machine-readable
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable

import asyncpg

from aiodbpool import Pool, create_pool

from .server import postgres

Cycle = Callable[[int], Awaitable[None]]


async def _pooled_cycle(pool: Pool[asyncpg.Connection], query: bool) -> Cycle:
    async def cycle(n: int) -> None:
        for _ in range(n):
            async with pool.acquire() as conn:
                if query:
                    await conn.fetchval("SELECT 1")

    return cycle


async def _run(dsn: str, cycles: int, rounds: int) -> dict[str, list[float]]:
    """Every contender once per round, in turn, so a machine that speeds up or slows down
    during the run affects them all alike."""
    by_reset = {
        reset: create_pool(dsn, reset=reset, max_size=1, validate_after_idle=None)
        for reset in ("transaction", "full")
    }
    raw = await asyncpg.connect(dsn)

    async def raw_cycle(n: int) -> None:
        for _ in range(n):
            await raw.fetchval("SELECT 1")

    contenders: dict[str, Cycle] = {}
    for reset, pool in by_reset.items():
        await pool.open()
        contenders[f'acquire + release, reset="{reset}"'] = await _pooled_cycle(pool, False)
    for reset, pool in by_reset.items():
        contenders[f'acquire + SELECT 1 + release, reset="{reset}"'] = await _pooled_cycle(
            pool, True
        )
    contenders["SELECT 1 on a raw asyncpg connection"] = raw_cycle
    results: dict[str, list[float]] = {name: [] for name in contenders}
    try:
        for cycle in contenders.values():
            await cycle(cycles // 10)  # warm up: connect, fill statement caches
        for _ in range(rounds):
            for name, cycle in contenders.items():
                started = time.perf_counter()
                await cycle(cycles)
                results[name].append((time.perf_counter() - started) / cycles * 1e6)
    finally:
        await raw.close()
        for pool in by_reset.values():
            await pool.close()
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=2000, help="cycles per round")
    parser.add_argument("--rounds", type=int, default=7, help="rounds; the median is reported")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    with postgres() as server:
        results = asyncio.run(_run(server.dsn, args.cycles, args.rounds))
    summary = {
        name: {"median_us": statistics.median(values), "min_us": min(values), "max_us": max(values)}
        for name, values in results.items()
    }
    if args.json:
        json.dump(summary, sys.stdout, indent=2)
        print()
        return
    width = max(map(len, summary))
    print(f"{'us per cycle (median, min..max)':<{width}}")
    for name, row in summary.items():
        print(
            f"{name:<{width}}  {row['median_us']:8.1f}  ({row['min_us']:.1f}..{row['max_us']:.1f})"
        )


if __name__ == "__main__":
    main()
