"""A pool in a forked child process: refused with a clear error, and its jitter reseeded.

Servers with several worker processes (gunicorn ``--preload``, ``multiprocessing`` with the fork
start method) copy every pool of the parent into each child: the same sockets, the same thread
id, the same random state. A child that borrowed the parent's connection would share its socket,
and children with the parent's random state would all reconnect at the same moments.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from multiprocessing.connection import Connection
from multiprocessing.context import ForkContext

from aiodbpool import Pool
from aiodbpool.drivers.fake import FakeConnection, FakeDriver


def _fork() -> ForkContext:
    return multiprocessing.get_context("fork")


def _child_acquires(pool: Pool[FakeConnection], report: Connection) -> None:
    """In the child: try the parent's pool (whose idle connection is fresh, so the fast path
    would take it), and send back what happened, and the pool's next random number."""

    async def use() -> str:
        try:
            async with pool.acquire():
                return "acquired the parent's connection"
        except RuntimeError as error:
            return str(error)

    report.send((asyncio.run(use()), pool._rng.random()))


async def test_a_forked_child_cannot_use_the_parents_pool() -> None:
    async with Pool(FakeDriver(), name="app", min_size=1) as pool:
        async with pool.acquire():
            pass  # now idle and fresh: the fast path would hand it out at once
        receiving, sending = _fork().Pipe(duplex=False)
        child = _fork().Process(target=_child_acquires, args=(pool, sending))
        child.start()
        outcome, child_random = await asyncio.to_thread(receiving.recv)
        await asyncio.to_thread(child.join, 30)

        assert child.exitcode == 0
        assert "pool 'app' was opened in the parent of this forked process" in outcome
        # Reseeded in the child: its jitter is not the parent's.
        assert child_random != pool._rng.random()
        # The parent goes on as before, on the fast path.
        async with pool.acquire() as conn:
            assert conn.id == 1
        assert pool.stats().created == 1
