"""Connections and the pool's background tasks: connect, close and terminate, each bounded by
its timeout; the tasks that run them; the adoption of connects orphaned by a cancelled
``open()``; and the forced end of ``close()``.

Everything here is I/O or task handling. It reads the pool's books, but changes them only
through named steps: the books' own (``Books.fail_oldest_waiter``) and the pool's, which also
count and tell the circuit breaker (``Pool._give_up_slot`` and ``Pool._book_connected`` for a
connect, ``Pool._book_close`` and ``Pool._close_done`` for a polite close,
``Pool._return_to_pool``, ``Pool._abandon_in_use``).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Coroutine
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from ._calls import call_with_timeout, describe
from .errors import PoolConnectError

if TYPE_CHECKING:
    from ._books import Record
    from ._pool import Pool

__all__ = [
    "abandon_connects",
    "adopt_orphan",
    "cancel",
    "close",
    "close_in_background",
    "connect",
    "end_by_force",
    "spawn",
    "terminate_quietly",
]

C = TypeVar("C")

logger = logging.getLogger("aiodbpool")


# ---------------------------------------------------------------------- opening


async def connect(
    pool: Pool[C], *, refill: bool = False, probe: bool = False, demand: bool = False
) -> Record[C]:
    """Open one connection in a slot the caller reserved (``Books.reserve_slots``), booked in use.

    The new record is booked in use in the same step that frees its slot
    (``Pool._book_connected``), so it is counted in ``size`` at every moment; whoever asked for
    it then hands it out or returns it to the pool. ``refill``: a background refill, whose
    failure backs off (see ``Breaker.connect_failed``). ``probe``: the caller claimed the probe
    (see ``Breaker``). ``demand``: it was opened for the waiting acquirers (``Pool._grow``), so
    if it fails, the one waiting longest gets the error, as if it had tried the connect itself.
    """
    generation = pool._books.generation
    started = pool._clock()
    try:
        # cancel: the slot is freed (and the probe, if this is it); nothing is booked
        conn = await call_with_timeout(pool._driver.connect(), pool._options.connect_timeout)
        _refuse_if_in_transaction(pool, conn)
    except BaseException as error:
        pool._give_up_slot(probe=probe)
        if not isinstance(error, Exception):
            pool._use_free_room()
            raise
        pool._connect_failed(error, started, backs_off=refill or probe)
        failure = _connect_error(pool, error)
        if demand:
            pool._books.fail_oldest_waiter(failure)
        pool._use_free_room()
        raise failure from error
    return pool._book_connected(conn, generation, started, probe=probe)


def _connect_error(pool: Pool[Any], error: Exception) -> PoolConnectError:
    """The error an acquirer gets for a failed connect, ``error`` chained as its cause."""
    if isinstance(error, TimeoutError) and pool._options.connect_timeout is not None:
        reason = (
            f"connect timed out after {pool._options.connect_timeout:g}s (connect_timeout): "
            "check that the database is reachable, or raise connect_timeout if it is slow to "
            "accept connections"
        )
    elif isinstance(error, _LeftInTransaction):
        reason = str(error)
    else:
        reason = describe(error)
    failure = PoolConnectError(
        f"pool {pool._name!r} could not open a connection: {reason}", pool_name=pool._name
    )
    failure.__cause__ = error
    return failure


def _refuse_if_in_transaction(pool: Pool[C], conn: C) -> None:
    """Close a new connection that ``connect`` left inside a transaction, and raise.

    Lent as it is, its borrower's writes would land in that transaction and be rolled back
    at the release. Only a driver with ``transaction_status`` can be checked.
    """
    if pool._transaction_status is None:
        return
    status = pool._transaction_status(conn)
    if status == "idle":
        return
    if pool._terminate is not None:
        terminate_quietly(pool, conn)
    else:
        close_in_background(pool, conn)
    raise _LeftInTransaction(
        f"the new connection was left inside a transaction ({status}) by the driver's init "
        "callback (or connect): end it there with COMMIT or ROLLBACK"
    )


class _LeftInTransaction(Exception):
    """A new connection was inside a transaction; the connect fails with this as its cause."""


def abandon_connects(pool: Pool[C], connects: list[asyncio.Task[Record[C]]]) -> None:
    """Stop the connects of a cancelled ``open()``; any that opens all the same is adopted."""
    for task in connects:
        cancel(task)
        task.add_done_callback(partial(adopt_orphan, pool))  # in case it opened all the same


def adopt_orphan(pool: Pool[C], task: asyncio.Task[Record[C]]) -> None:
    """A connect of a cancelled ``open()`` has finished: keep its connection in the pool."""
    if task.cancelled() or task.exception() is not None:
        return  # connect() already freed the slot and counted the error
    pool._return_to_pool(task.result(), pool._clock())


# ---------------------------------------------------------------------- closing


def close_in_background(pool: Pool[C], conn: C) -> None:
    """Close ``conn`` politely in a background task, which keeps its slot until it ends."""
    pool._book_close()
    spawn(pool, close(pool, conn), "close")


async def close(pool: Pool[C], conn: C) -> None:
    """Close one connection in the background, terminating it if that fails."""
    try:
        # cancel: the connection is terminated if the driver can; the slot is freed
        await call_with_timeout(pool._driver.close(conn), pool._options.close_timeout)
    except BaseException as error:
        if pool._terminate is not None:
            terminate_quietly(pool, conn)
        if not isinstance(error, Exception):
            raise
        logger.warning("pool %r: closing a connection failed: %s", pool._name, describe(error))
    finally:
        pool._close_done()


def terminate_quietly(pool: Pool[C], conn: C) -> None:
    """End ``conn`` at once through the driver's ``terminate``; a failure is only logged."""
    assert pool._terminate is not None
    try:
        pool._terminate(conn)
    except Exception as error:  # a driver bug must not break the pool's bookkeeping
        logger.warning("pool %r: terminating a connection failed: %s", pool._name, describe(error))


async def end_by_force(pool: Pool[Any]) -> None:
    """The end of ``close()``: whatever remains (after its timeout, or if it was cancelled)
    goes now.

    Connects and closes that overran are cancelled (a cancelled close terminates its
    connection), then connections still held by callers are terminated
    (``Pool._abandon_in_use``). A caller that releases one later is told nothing: it was
    already closed.
    """
    for task in pool._tasks:
        cancel(task)
    pool._abandon_in_use()
    remaining = [task for task in pool._tasks if not task.done()]
    if pool._maintenance_task is not None:
        remaining.append(pool._maintenance_task)
    if remaining:
        # cancel: close() stops waiting; the tasks, cancelled above, end on their own
        await asyncio.wait(remaining, timeout=pool._options.close_timeout or 1.0)


# ---------------------------------------------------------------------- background tasks


def spawn(pool: Pool[Any], coro: Coroutine[Any, Any, Any], purpose: str) -> asyncio.Task[Any]:
    """Start a background task that the pool keeps track of until it ends."""
    task = asyncio.get_running_loop().create_task(coro, name=f"aiodbpool[{pool._name}] {purpose}")
    pool._tasks.add(task)
    task.add_done_callback(pool._tasks.discard)
    return task


def cancel(task: asyncio.Task[Any]) -> None:
    """Cancel one of the pool's background tasks so that its own clean-up runs.

    A task cancelled before its first step never runs its coroutine at all, not even a
    ``finally``: a connect would keep its slot, a close would leave its connection open. Such a
    task is cancelled one loop iteration later instead, once it has started.
    """
    coro = task.get_coro()
    if inspect.iscoroutine(coro) and inspect.getcoroutinestate(coro) == inspect.CORO_CREATED:
        task.get_loop().call_soon(task.cancel)
    else:
        task.cancel()
