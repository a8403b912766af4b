"""FakePool: a pool on the fake driver that keeps its driver and clock typed."""

from __future__ import annotations

from typing import Any

from aiodbpool import Pool
from aiodbpool.drivers.fake import FakeClock, FakeConnection, FakeDriver

__all__ = ["FakePool"]


class FakePool(Pool[FakeConnection]):
    """A :class:`~aiodbpool.Pool` on a :class:`~aiodbpool.drivers.fake.FakeDriver` that reads the
    time from a :class:`~aiodbpool.drivers.fake.FakeClock`: what the ``fake_pool`` fixture gives a
    test.

    A test scripts the database through :attr:`driver` and moves the pool's time with
    :attr:`clock`, both typed as the fake's own classes::

        pool = FakePool(max_size=2)
        pool.driver.fail_next_connects(1)
        pool.clock.advance(60)

    Args:
        driver: The fake database; a new ``FakeDriver()`` when omitted.
        clock: The time the pool reads (ages, idle times, lifetimes); a new ``FakeClock()``, at
            0.0, when omitted. It never makes the event loop wake sleeping tasks sooner.
        **options: Any other option of :class:`~aiodbpool.Pool` (``max_size``,
            ``acquire_timeout``, ...).
    """

    def __init__(
        self,
        driver: FakeDriver | None = None,
        *,
        clock: FakeClock | None = None,
        **options: Any,
    ) -> None:
        self._fake_driver = FakeDriver() if driver is None else driver
        self._fake_clock = FakeClock() if clock is None else clock
        super().__init__(self._fake_driver, clock=self._fake_clock, **options)

    @property
    def driver(self) -> FakeDriver:
        """The fake database: script failures, latencies and rows on it."""
        return self._fake_driver

    @property
    def clock(self) -> FakeClock:
        """The pool's clock: ``clock.advance(seconds)`` ages every connection at once."""
        return self._fake_clock
