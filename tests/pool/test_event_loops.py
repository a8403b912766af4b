"""One pool, two event loops in one thread: ``asyncio.run()`` twice, or a test framework's loop per
test sharing a module-level pool. A pool belongs to the loop that opened it; every path -- the
fast ones too -- says so with the same ``RuntimeError``, and a connection given back from another
loop is never lent again."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
import pytest
import uvloop
from helpers import acquire, check_books, run_in_a_new_loop_of_the_same_kind, wait_until

from aiodbpool import Pool, create_pool
from aiodbpool.drivers.fake import FakeConnection, FakeDriver

T = TypeVar("T")

LoopFactory = Callable[[], asyncio.AbstractEventLoop]

LOOPS = pytest.mark.parametrize(
    "new_loop", [asyncio.new_event_loop, uvloop.new_event_loop], ids=["asyncio", "uvloop"]
)

REFUSED = "opened in another event loop"


def _run(loop: asyncio.AbstractEventLoop, work: Awaitable[T]) -> T:
    return loop.run_until_complete(work)


async def _borrow_and_return(pool: Pool[Any]) -> None:
    async with pool.acquire(timeout=5):
        pass


@LOOPS
def test_a_warm_pool_refuses_the_next_loop_on_its_fast_path(new_loop: LoopFactory) -> None:
    """The first loop opened the pool and left an idle connection; the second loop, in the same
    thread, is refused before anything is handed out, whether the first loop has ended or not."""
    first, second = new_loop(), new_loop()
    pool: Pool[FakeConnection] = Pool(FakeDriver(), min_size=1, validate_after_idle=None)
    try:
        _run(first, pool.open())
        _run(first, _borrow_and_return(pool))
        assert pool.stats().idle == 1

        with pytest.raises(RuntimeError, match=REFUSED) as refused:
            _run(second, _borrow_and_return(pool))
        assert "one pool per loop" in str(refused.value)
        first.close()
        with pytest.raises(RuntimeError, match=f"{REFUSED}, which has ended"):
            _run(second, _borrow_and_return(pool))

        stats = pool.stats()
        assert (stats.idle, stats.in_use, stats.acquired) == (1, 0, 1)
    finally:
        first.close()
        second.close()


@LOOPS
def test_a_cold_pool_refuses_another_loop_before_connecting(new_loop: LoopFactory) -> None:
    """No idle connection, so the other loop's acquire would open one: it is refused at once,
    before any connect, and the pool still closes from its own loop."""
    pool: Pool[FakeConnection] = Pool(FakeDriver())
    home, other = new_loop(), new_loop()
    try:
        _run(home, pool.open())
        started = time.monotonic()

        with pytest.raises(RuntimeError, match=REFUSED):
            _run(other, acquire(pool))

        assert time.monotonic() - started < 5
        assert pool.stats().size == 0
        _run(home, pool.close())
    finally:
        home.close()
        other.close()


@LOOPS
def test_close_from_the_next_loop_says_what_to_do(new_loop: LoopFactory) -> None:
    first, second = new_loop(), new_loop()
    pool: Pool[FakeConnection] = Pool(FakeDriver(), min_size=1)
    try:
        _run(first, pool.open())
        with pytest.raises(RuntimeError, match="close it in the loop that opened it"):
            _run(second, pool.close())
        assert not pool.closed
        _run(first, pool.close())  # the home loop still can
        assert repr(pool).startswith("<Pool 'default' closed")
        _run(second, pool.close())  # and closing a closed pool is a no-op from anywhere
    finally:
        first.close()
        second.close()


@LOOPS
def test_open_resize_and_expire_from_the_next_loop_are_refused(new_loop: LoopFactory) -> None:
    first, second = new_loop(), new_loop()
    pool: Pool[FakeConnection] = Pool(FakeDriver(), min_size=1)

    async def resize() -> None:
        pool.resize(max_size=3)

    async def expire() -> None:
        pool.expire()

    try:
        _run(first, pool.open())
        for attempt in (pool.open, resize, expire):
            with pytest.raises(RuntimeError, match=REFUSED):
                _run(second, attempt())
        assert pool.stats().max_size == 10
        assert pool.stats().idle == 1
        _run(first, pool.close())
    finally:
        first.close()
        second.close()


@LOOPS
def test_a_release_from_the_next_loop_never_pools_the_connection_again(
    new_loop: LoopFactory,
) -> None:
    """Acquired in the first loop and kept past its end, then given back from the second: refused,
    and the connection (bound to the ended loop) is forgotten rather than lent again."""
    first, second = new_loop(), new_loop()
    pool: Pool[FakeConnection] = Pool(FakeDriver(), max_size=2)
    try:
        _run(first, pool.open())
        kept = _run(first, pool.acquire())
        first.close()

        with pytest.raises(RuntimeError, match=f"{REFUSED}, which has ended"):
            _run(second, pool.release(kept))

        stats = pool.stats()
        assert (stats.in_use, stats.idle, stats.discarded) == (0, 0, 1)
        with pytest.raises(ValueError, match="already released"):
            _run(second, pool.release(kept))
        check_books(pool)
    finally:
        first.close()
        second.close()


async def test_a_release_from_another_threads_loop_is_refused_and_the_connection_dropped() -> None:
    """The pool's loop still runs elsewhere: it drops the connection itself (the books change only
    in the pool's loop), and frees the slot."""
    home = asyncio.get_running_loop()
    async with Pool(FakeDriver(), max_size=1) as pool:
        held = await pool.acquire()

        async def release_there() -> None:
            await pool.release(held)

        with pytest.raises(RuntimeError, match=REFUSED):
            await asyncio.to_thread(run_in_a_new_loop_of_the_same_kind, home, release_there)

        await wait_until(lambda: pool.stats().in_use == 0)
        assert pool.stats().discarded == 1
        with pytest.raises(ValueError, match="already released"):
            await pool.release(held)
        async with pool.acquire(timeout=5) as conn:
            assert conn is not held
        check_books(pool)


def test_postgres_pool_shared_by_two_asyncio_runs_refuses_the_second(postgres_url: str) -> None:
    """What users hit with asyncpg: without the check, the second run got an idle connection bound
    to the first loop ("attached to a different loop"), and it went back to the idle stack."""
    pool = create_pool(postgres_url, min_size=1, max_size=2)

    async def first_run() -> None:
        await pool.open()
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT 1") == 1

    async def second_run() -> None:
        async with pool.acquire(timeout=5) as conn:
            await conn.fetchval("SELECT 1")

    asyncio.run(first_run())
    for _ in range(2):
        with pytest.raises(RuntimeError, match=f"{REFUSED}, which has ended") as refused:
            asyncio.run(second_run())
        assert not isinstance(refused.value, asyncpg.InterfaceError)
    assert pool.stats().idle == 1
    with pytest.raises(RuntimeError, match="close it in the loop that opened it"):
        asyncio.run(pool.close())
