"""The SQLite driver leaves nothing behind: no file handle, thread, task or traceback outlives the
connects the pool gave up on, or the pool's ``close()``.

A connect that the pool's ``connect_timeout`` cancels is not over in the connection's worker
thread, which goes on opening the file (waiting for a lock, up to ``busy_timeout``). These tests
make that happen for real, with a lock held by another process (:class:`LockedByAnotherProcess`),
and look for what is left from outside the driver: the process's descriptors that point at the
database, aiosqlite's threads, the event loop's tasks. The garbage collector is off while they
run: what the driver opened must be closed by the driver, not found some day by the collector
(which an exception's traceback holding it can put off forever).
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from helpers import acquire, wait_until
from sqlite_helpers import (
    LockedByAnotherProcess,
    fetch_value,
    file_handles,
    wait_for_worker_threads,
    worker_threads,
)

from aiodbpool import Pool, PoolConnectError
from aiodbpool import create_pool as _create_pool
from aiodbpool.drivers.sqlite import SQLiteDriver

GIVE_UP_AFTER = 0.2
"""The pool's ``connect_timeout`` while the file is locked: every connect times out."""

LONG_WAIT = 60.0
"""A ``busy_timeout`` far longer than any bound these tests wait for a thread to end."""


def create_pool(url: str, **options: Any) -> Pool[aiosqlite.Connection]:
    """``aiodbpool.create_pool``, typed for this driver's connections."""
    pool: Pool[aiosqlite.Connection] = _create_pool(url, **options)
    return pool


@pytest.fixture(autouse=True)
def _no_garbage_collection() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@pytest.fixture(autouse=True)
async def _every_connection_is_closed_in_the_end() -> AsyncIterator[None]:
    before = worker_threads()
    yield
    await wait_for_worker_threads(before)


def other_tasks() -> set[asyncio.Task[Any]]:
    """The event loop's unfinished tasks, but the test's own."""
    return asyncio.all_tasks() - {asyncio.current_task()}


async def fail_to_acquire(pool: Pool[aiosqlite.Connection], count: int) -> None:
    """Make ``count`` acquires at once, and check that each of them failed to connect."""
    results = await asyncio.gather(*(acquire(pool) for _ in range(count)), return_exceptions=True)
    assert all(isinstance(result, PoolConnectError) for result in results), results


# ------------------------------------------------------------------ connects given up on


async def test_connects_given_up_on_close_what_they_open_once_the_lock_is_released(
    tmp_path: Path,
) -> None:
    # The scenario of the report: 10 handles to the file and 9 threads were left.
    path = tmp_path / "app.db"
    threads_before = worker_threads()
    tasks_before = other_tasks()
    with LockedByAnotherProcess(path) as lock:
        pool = create_pool(f"sqlite:///{path}", max_size=4, connect_timeout=GIVE_UP_AFTER)
        await pool.open()
        for _ in range(3):
            await fail_to_acquire(pool, 4)
        lock.release()  # the opens still under way get the file now
        await pool.close()
    assert file_handles(path) == []
    assert other_tasks() - tasks_before == set()
    await wait_for_worker_threads(threads_before)
    assert file_handles(path) == []


async def test_an_open_abandoned_while_the_lock_stays_taken_stops_waiting_for_it(
    tmp_path: Path,
) -> None:
    # With busy_timeout=60 the opens would wait a minute for the lock: nobody wants them.
    path = tmp_path / "app.db"
    threads_before = worker_threads()
    with LockedByAnotherProcess(path):
        pool = create_pool(
            f"sqlite:///{path}", max_size=4, connect_timeout=GIVE_UP_AFTER, busy_timeout=LONG_WAIT
        )
        async with pool:
            await fail_to_acquire(pool, 4)
        assert file_handles(path) == []
        await wait_for_worker_threads(threads_before, timeout=LONG_WAIT / 6)


async def test_aclose_waits_until_the_opens_given_up_on_closed_what_they_opened(
    tmp_path: Path,
) -> None:
    path = tmp_path / "app.db"
    driver = SQLiteDriver(path, busy_timeout=LONG_WAIT)
    with LockedByAnotherProcess(path):
        connecting = asyncio.ensure_future(driver.connect())
        await wait_until(lambda: file_handles(path), message="the worker thread opened the file")
        connecting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await connecting
        await driver.aclose()
        assert file_handles(path) == []


async def test_a_connect_cancelled_after_its_open_finished_closes_the_connection(
    tmp_path: Path,
) -> None:
    # The timeout can cancel a connect after the thread has handed the open connection over but
    # before the connect resumed to take it. The coroutine is driven by hand, as the pool's
    # call_with_timeout does, to cancel it exactly then.
    path = tmp_path / "app.db"
    threads_before = worker_threads()
    connecting = SQLiteDriver(path).connect()
    handed_over = connecting.send(None)  # the future aiosqlite waits on while the thread opens
    await wait_until(handed_over.done, message="the worker thread handed the connection over")
    with pytest.raises(asyncio.CancelledError):
        connecting.throw(asyncio.CancelledError())
    assert handed_over.result() is not None  # still holds the sqlite3 connection
    await wait_for_worker_threads(threads_before)
    assert file_handles(path) == []


async def test_the_handles_of_the_pools_connections_are_seen_and_closed_with_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "app.db"
    async with create_pool(f"sqlite:///{path}", max_size=2) as pool:
        async with pool.acquire() as first, pool.acquire() as second:
            assert await fetch_value(first, "SELECT 1") == 1
            assert await fetch_value(second, "SELECT 2") == 2
        assert file_handles(path) != []
    assert file_handles(path) == []


# ------------------------------------------------------------------ init


async def test_a_failing_init_leaves_no_thread_and_no_handle(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    threads_before = worker_threads()

    async def init(conn: aiosqlite.Connection) -> None:
        raise LookupError("no such extension")

    with pytest.raises(LookupError):
        await SQLiteDriver(path, init=init).connect()
    await wait_for_worker_threads(threads_before)
    assert file_handles(path) == []


async def test_a_cancelled_init_leaves_no_thread_and_no_handle(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    threads_before = worker_threads()
    started = asyncio.Event()

    async def init(conn: aiosqlite.Connection) -> None:
        started.set()
        await asyncio.Event().wait()

    connecting = asyncio.ensure_future(SQLiteDriver(path, init=init).connect())
    await started.wait()
    connecting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await connecting
    await wait_for_worker_threads(threads_before)
    assert file_handles(path) == []


# ------------------------------------------------------------------ the pool's last error


async def test_the_pool_drops_its_last_connect_error_once_a_connect_succeeds(
    tmp_path: Path,
) -> None:
    # The error's traceback holds the frames of the failed connect, and what they refer to.
    path = tmp_path / "app.db"
    with LockedByAnotherProcess(path) as lock:
        async with create_pool(f"sqlite:///{path}", busy_timeout=0) as pool:
            with pytest.raises(PoolConnectError, match="database is locked"):
                await pool.acquire()
            lock.release()
            async with pool.acquire() as conn:
                assert await fetch_value(conn, "SELECT 1") == 1
            assert pool._breaker.last_error is None
