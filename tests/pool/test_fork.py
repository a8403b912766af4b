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


def _child_closes(pool: Pool[FakeConnection], report: Connection) -> None:
    """In the child: close the parent's pool, and report what the driver was asked to close."""
    asyncio.run(pool.close())
    driver = pool.driver
    assert isinstance(driver, FakeDriver)
    report.send((pool.closed, driver.closed, pool.stats().size))


async def test_close_in_a_forked_child_forgets_the_parents_connections() -> None:
    """A child's ``close()`` (a worker's shutdown) must not end the parent's sessions: the
    connections are the parent's sockets, and a polite close would say goodbye on them."""
    async with Pool(FakeDriver(), name="app", min_size=2) as pool:
        async with pool.acquire():
            receiving, sending = _fork().Pipe(duplex=False)
            child = _fork().Process(target=_child_closes, args=(pool, sending))
            child.start()
            closed, driver_closes, size = await asyncio.to_thread(receiving.recv)
            await asyncio.to_thread(child.join, 30)

        assert child.exitcode == 0
        assert closed  # the child's copy of the pool is closed...
        assert driver_closes == 0  # ...without a word to the driver about the parent's sockets
        assert size == 0
        # The parent's pool is untouched.
        assert pool.stats().size == 2
        async with pool.acquire():
            pass
