"""The pool's exceptions: few, and each one means a different thing for the caller to do.

Every error carries the name of the pool it came from (``pool_name``), so a service with several
pools can tell them apart in logs and error responses. When a driver call caused the error, the
driver's exception is chained as ``__cause__``.
"""

from __future__ import annotations

__all__ = ["PoolClosed", "PoolConnectError", "PoolError", "PoolExhausted", "PoolTimeout"]


class PoolError(Exception):
    """Base class of every error the pool raises about its own state."""

    def __init__(self, message: str, *, pool_name: str | None = None) -> None:
        super().__init__(message)
        self.pool_name = pool_name


class PoolTimeout(PoolError, TimeoutError):
    """Acquire waited past its timeout: the pool is busy; retry later or shed the request."""


class PoolClosed(PoolError):
    """The pool is not open (closing, closed, or never opened); no connection can be had."""


class PoolExhausted(PoolError):
    """Too many acquirers are already waiting (``max_waiting``); refused without waiting."""


class PoolConnectError(PoolError):
    """Opening a database connection failed; the driver's exception is the ``__cause__``."""


for _error in (PoolError, PoolTimeout, PoolClosed, PoolExhausted, PoolConnectError):
    _error.__module__ = "aiodbpool"
del _error
