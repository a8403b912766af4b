"""The pool's background job: the loop, and one round of it (evict, retire, refill, report leaks).

The loop (``run_maintenance``) wakes every ``maintenance_interval`` seconds, or at once when the
pool asks (a connection was lost below ``min_size``, the pool was resized, a connect failed while
the circuit breaker is open), and runs one round (``one_round``). The loop holds only a *weak*
reference to the pool between rounds: a pool that the application forgot (and never closed) can
still be garbage-collected, and its job then ends by itself at the next wake-up.

A round is synchronous, like every change of the books: it decides what to close and how many
connections to open, and starts that work in the pool's background tasks. It reads the pool's
books, but changes them only through named steps: the books' own (``Books.reserve_slots``) and
the pool's, which also close and count (``Pool._close_idle``, ``Pool._close_oldest_idle``,
``Pool._return_to_pool``).

While the database refuses connections, the round's refills are spaced out by the backoff of
``_breaker.py``, so a pool does not hammer a database that is restarting.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from ._calls import describe
from ._connections import connect, spawn
from ._leaks import format_stack
from .errors import PoolConnectError

if TYPE_CHECKING:
    from ._books import Record, Removal
    from ._pool import Pool

__all__ = ["one_round", "run_maintenance"]

logger = logging.getLogger("aiodbpool")

P = TypeVar("P")


async def run_maintenance(
    pool_ref: weakref.ref[P],
    round_of: Callable[[P], float | None],
    wakeup: asyncio.Event,
    retry_delay: float,
) -> None:
    """Run ``round_of(pool)`` until it returns None (the pool closed) or the pool is collected.

    ``round_of`` returns the seconds until the next round (the pool passes ``one_round``; the
    loop is generic so that it holds nothing but the weak reference, and can be tested alone).
    ``retry_delay`` is the pause after a round that failed unexpectedly.
    """
    while True:
        pool = pool_ref()
        if pool is None:
            return
        wakeup.clear()  # cleared before the round, so a request made during it is not lost
        try:
            delay = round_of(pool)
        except Exception:
            # A bug here must not silently end maintenance for the pool's whole life.
            logger.exception("aiodbpool: a maintenance round failed; retrying next round")
            delay = retry_delay
        del pool  # sleep without keeping the pool alive
        if delay is None:
            return
        try:
            # cancel: none: entering and leaving a timeout never suspend
            async with asyncio.timeout(delay):
                await wakeup.wait()  # cancel: the job ends; between rounds it holds nothing
        except TimeoutError:
            pass


def one_round(pool: Pool[Any]) -> float | None:
    """One round of background maintenance; returns seconds until the next round, or None once
    the pool is no longer open.

    Decides synchronously which connections to close and how many to open, and starts that
    work in background tasks.
    """
    if not pool._is_open():
        return None
    now = pool._clock()
    _evict_idle(pool, now)
    leak_timeout = pool._options.leak_timeout
    if leak_timeout is not None:
        _report_leaks(pool, now, leak_timeout)
    _refill(pool, now)
    _report_outage(pool, now)
    delay = pool._options.maintenance_interval
    breaker = pool._breaker
    wait = breaker.backoff_left(now)
    books = pool._books
    wants_probe = books.size() < books.min_size or breaker.is_open()
    if wait and wants_probe:
        # Wake up for the next attempt. (Once it is due, _refill has just started it, or one
        # is under way: its failure wakes the job, so there is no reason to come back early.)
        delay = min(delay, wait)
    return delay


def _evict_idle(pool: Pool[Any], now: float) -> None:
    """Drop idle connections the driver knows are closed (after a server restart they would
    count toward the size until someone acquired them), close those past their lifetime, and
    those idle too long above min_size. No round trip: ``is_closed`` is local."""

    def reason_to_close(record: Record[Any]) -> Removal | None:
        if pool._known_closed(record.conn):
            return "discarded"
        if now >= record.retire_at:
            return "evicted_lifetime"
        return None

    books = pool._books
    pool._close_idle(
        [(record, reason) for record in books.idle if (reason := reason_to_close(record))]
    )
    # The least recently used are at the left; never go below min_size for idleness
    # (connections already closing do not count: they are on their way out).
    while (
        books.idle
        and now - books.idle[0].released_at >= pool._options.max_idle
        and books.size() - books.closing > books.min_size
    ):
        pool._close_oldest_idle("evicted_idle")


def _report_leaks(pool: Pool[Any], now: float, leak_timeout: float) -> None:
    """Log, once per lend, each connection held longer than ``leak_timeout``, with the stack
    that acquired it. (The mark it leaves is a note on the record, not a change of the books.)"""
    for record in pool._books.in_use.values():
        stack = record.acquired_stack
        if stack is None or record.leak_reported or now - record.acquired_at < leak_timeout:
            continue
        record.leak_reported = True
        logger.warning(
            "pool %r: a connection has been held for %.1fs (leak_timeout=%gs); it was "
            "acquired at:\n%s",
            pool.name,
            now - record.acquired_at,
            leak_timeout,
            format_stack(stack),
        )


def _report_outage(pool: Pool[Any], now: float) -> None:
    """Tell ``reconnect_failed``, once per outage, that connects have failed for
    ``reconnect_timeout`` seconds; an error in it is logged, and the round goes on."""
    hook = pool._options.reconnect_failed
    if hook is None or not pool._breaker.outage_to_report(now, pool._options.reconnect_timeout):
        return
    logger.warning(
        "pool %r: connects have failed for %gs (reconnect_timeout); calling reconnect_failed",
        pool.name,
        pool._options.reconnect_timeout,
    )
    try:
        hook(pool)
    except Exception:
        logger.exception("pool %r: the reconnect_failed hook raised", pool.name)


def _refill(pool: Pool[Any], now: float) -> None:
    """Open connections up to min_size; one probe at a time while the backoff is active.

    While the circuit breaker is open, probe even at or above min_size: the first connect
    that succeeds closes the breaker.
    """
    books = pool._books
    missing = books.min_size - books.size()
    if pool._breaker.is_open() and books.has_room():
        missing = max(missing, 1)
    count, probe = pool._breaker.claim_refills(missing, now)
    for _ in range(count):
        books.reserve_slots()
        spawn(pool, _refill_one(pool, probe=probe), "refill")


async def _refill_one(pool: Pool[Any], *, probe: bool) -> None:
    """One background refill: connect in the slot ``_refill`` reserved, then pool the
    connection; a failure is logged with the delay before the next try."""
    try:
        # cancel: only close() cancels it; connect() frees the slot
        record = await connect(pool, refill=True, probe=probe)
    except PoolConnectError as error:
        logger.warning(
            "pool %r: background connect failed (%d in a row), next try in %.2fs: %s",
            pool.name,
            pool._breaker.errors_in_a_row,
            pool._breaker.backoff_left(pool._clock()),
            describe(error.__cause__ or error),
        )
        return
    pool._return_to_pool(record, pool._clock())
