"""The pool's background job: evict idle connections, retire old ones, refill to ``min_size``.

The job is a small loop that wakes every ``maintenance_interval`` seconds, or at once when the
pool asks (a connection was lost below ``min_size``, the pool was resized), and calls the pool's
synchronous ``_maintain()`` step, which decides and starts the work. The job holds only a *weak*
reference to the pool between runs: a pool that the application forgot (and never closed) can
still be garbage-collected, and its job then ends by itself at the next wake-up.

While the database refuses connections, the round's refills are spaced out by the backoff of
``_breaker.py``, so a pool does not hammer a database that is restarting.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Protocol

__all__ = ["run_maintenance"]

logger = logging.getLogger("aiodbpool")


class _Maintainable(Protocol):
    def _maintain(self) -> float | None:
        """Do one round of maintenance; return seconds until the next, or None to stop."""
        ...


async def run_maintenance(
    pool_ref: weakref.ref[_Maintainable], wakeup: asyncio.Event, retry_delay: float
) -> None:
    """Run the pool's maintenance until the pool closes or is garbage-collected.

    ``retry_delay`` is the pause after a round that failed unexpectedly.
    """
    while True:
        pool = pool_ref()
        if pool is None:
            return
        wakeup.clear()  # cleared before the round, so a request made during it is not lost
        try:
            delay = pool._maintain()
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
