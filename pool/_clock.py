"""Where the pool reads the time.

The pool never calls ``time.monotonic`` directly: it reads a *clock*, any zero-argument callable
returning seconds. Production uses the monotonic clock; tests pass a manual clock (such as
``aiodbpool.drivers.fake.FakeClock``) and move time forward by hand, so ages, lifetimes and backoff
delays can be tested without sleeping.

The clock measures the pool's bookkeeping only. Waiting itself (acquire timeouts, the maintenance
task's pauses) uses the event loop's timers, because only the loop can wake a sleeping task.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["Clock", "monotonic"]

Clock = Callable[[], float]
"""A source of monotonic time in seconds."""

monotonic: Clock = time.monotonic
"""The clock used unless another one is injected."""
