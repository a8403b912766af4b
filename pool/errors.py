"""The pool's exceptions: few, and each one means a different thing for the caller to do.

Every error carries the name of the pool it came from (``pool_name``), so a service with several
pools can tell them apart in logs and error responses. When a driver call caused the error, the
driver's exception is chained as ``__cause__``.
"""

from __future__ import annotations

__all__ = [
    "ConnectionReleased",
    "PoolClosed",
    "PoolConnectError",
    "PoolError",
    "PoolExhausted",
    "PoolTimeout",
    "RedactedError",
]


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


class ConnectionReleased(Exception):
    """A lent connection was used after its lease ended: a bug in the calling code.

    The lease ended with ``release`` or ``detach`` (the bug: the caller kept the connection), or
    when ``close()`` terminated the connection under its holder at shutdown. Nothing was sent to
    the database, and the connection's next borrower is untouched; the pool counts these in
    ``PoolStats.stale_uses``. Not a ``PoolError``: the pool is fine, and a web integration
    answers it as the bug it is (500), not as an outage (503), except during a shutdown. A
    driver may raise a subclass that is also its library's own error for the same mistake
    (``aiodbpool.drivers.postgres.ReleasedConnectionError`` is an ``asyncpg.InterfaceError``).
    """

    def __init__(self, message: str, *, pool_name: str | None = None) -> None:
        super().__init__(message)
        self.pool_name = pool_name


class RedactedError(Exception):
    """An error whose text quoted a secret and could not be scrubbed in place, shown with the
    secret replaced by ``***``.

    A driver scrubs its errors before they leave it (``aiodbpool.redaction.Secrets.scrub_error``),
    so a password never reaches a message, a log or a traceback. Most errors are scrubbed in
    place and keep their type; this one stands in for the rest. ``original_type`` names the
    replaced error's type; the traceback is the original's.
    """

    def __init__(self, message: str, *, original_type: str) -> None:
        super().__init__(message)
        self.original_type = original_type


for _error in (
    PoolError,
    PoolTimeout,
    PoolClosed,
    PoolExhausted,
    PoolConnectError,
    ConnectionReleased,
    RedactedError,
):
    _error.__module__ = "aiodbpool"
del _error
