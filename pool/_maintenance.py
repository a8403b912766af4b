"""The pool's background job: evict idle connections, retire old ones, refill to ``min_size``.

The job is a small loop that wakes every ``maintenance_interval`` seconds, or at once when the
pool asks (a connection was lost below ``min_size``, the pool was resized), and calls the pool's
synchronous ``_maintain()`` step, which decides and starts the work. The job holds only a *weak*
reference to the pool between runs: a pool that the application forgot (and never closed) can
still be garbage-collected, and its job then ends by itself at the next wake-up.

``Backoff`` spaces out refill attempts while the database refuses connections, so a pool
does not hammer a database that is restarting.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import weakref
from typing import Protocol

__all__ = ["Backoff", "run_maintenance"]

logger = logging.getLogger("aiodbpool")


class _Maintainable(Protocol):
    def _maintain(self) -> float | None:
        """Do one round of maintenance; return seconds until the next, or None to stop."""
        ...


class Backoff:
    """Exponential backoff with jitter for reconnect attempts.

    After the n-th consecutive failure the next attempt waits ``initial * 2**(n-1)`` seconds, capped
    at ``maximum``, of which a random half is kept ("equal jitter"): many pools that lost the same
    database do not all retry at the same instant.
    """

    __slots__ = ("_initial", "_maximum", "_rng", "failed_at", "failures", "not_before")

    def __init__(self, initial: float, maximum: float, rng: random.Random | None = None) -> None:
        self._initial = initial
        self._maximum = maximum
        self._rng = rng or random.Random()
        self.failures = 0
        """Consecutive failed attempts."""
        self.not_before = -math.inf
        """The clock reading before which no new attempt should start."""
        self.failed_at = -math.inf
        """When the last attempt failed."""

    @property
    def initial(self) -> float:
        """The delay after a first failure (``backoff_initial``)."""
        return self._initial

    def failed(self, now: float) -> float:
        """Record a failed attempt at ``now``; return the delay before the next one."""
        # (The exponent is capped: 2.0**1024 overflows, and a long outage gets that far.)
        ceiling = min(self._maximum, self._initial * 2.0 ** min(self.failures, 64))
        delay = ceiling / 2 + self._rng.uniform(0, ceiling / 2)
        self.failures += 1
        self.not_before = now + delay
        self.failed_at = now
        return delay

    def succeeded(self) -> None:
        """Record a successful attempt: the next failure starts from the initial delay again."""
        self.failures = 0
        self.not_before = -math.inf
        self.failed_at = -math.inf


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
            async with asyncio.timeout(delay):
                await wakeup.wait()
        except TimeoutError:
            pass
