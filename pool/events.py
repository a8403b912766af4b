"""What happens in a pool, as events a listener can watch.

``pool.add_listener(listener)`` registers any callable that takes one event; it returns a
function that removes it again. A listener runs synchronously, in the task that caused the event,
at the moment it happens: an ``Acquired`` event reaches it in the acquiring task, before
``acquire()`` returns. So a listener must be quick and must not block: to do I/O with an event,
hand it to a queue or a task of your own. The context of that task is the caller's, so a
listener can attribute the event to the request being served (``contextvars``).

A listener that raises is logged once, with its traceback, and its later errors are ignored: a
bug in a listener never breaks the pool. With no listener, the pool builds no event at all, and
the fast path costs one test more per acquire and per release.

Every event names its pool (``pool``, the pool's name). Durations are in seconds, measured with
the pool's clock. Each event is a small frozen dataclass; ``PoolEvent`` is their union, so a
listener written with ``match`` can be checked for every kind by a type checker::

    from aiodbpool.events import Acquired, PoolEvent, TimedOut

    def log_slow_waits(event: PoolEvent) -> None:
        match event:
            case Acquired(wait=wait) if wait > 0.1:
                print(f"waited {wait:.3f}s for a connection of {event.pool}")
            case TimedOut():
                print(f"an acquire of {event.pool} timed out")
            case _:
                pass
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeAlias

__all__ = [
    "Acquired",
    "BreakerClosed",
    "BreakerOpened",
    "Closed",
    "ConnectFailed",
    "Connected",
    "Exhausted",
    "Listener",
    "PoolEvent",
    "Released",
    "Removed",
    "Reset",
    "TimedOut",
]


@dataclass(frozen=True, slots=True)
class Connected:
    """A new connection opened (for a waiting acquirer, a refill, or ``open()``)."""

    pool: str
    duration: float
    """How long the connect took, the driver's ``connect`` and its checks together."""


@dataclass(frozen=True, slots=True)
class ConnectFailed:
    """A connect failed or timed out (a cancelled connect is not an event)."""

    pool: str
    duration: float
    """How long it tried."""
    error: Exception
    """What the driver raised (``TimeoutError`` after ``connect_timeout``)."""


@dataclass(frozen=True, slots=True)
class Acquired:
    """A connection was lent: ``acquire()`` is about to return it."""

    pool: str
    lend: int
    """The lend's number in this pool (1, 2, ...): its ``Released`` event carries the same."""
    wait: float
    """How long the acquire took: ``0.0`` when an idle connection was ready (the fast path),
    else the wait in line, the ping or the connect, together."""


@dataclass(frozen=True, slots=True)
class Released:
    """A lent connection was given back (by ``release()``, or the end of ``async with``); its
    reset follows."""

    pool: str
    lend: int
    """The number of the lend that ends (see ``Acquired.lend``)."""
    held: float
    """How long its borrower held it."""


@dataclass(frozen=True, slots=True)
class Reset:
    """The reset of a returned connection had to wait on the server (it was left dirty, for
    example in a transaction that needed a rollback) and has finished. A clean connection's
    reset costs no round trip and makes no event."""

    pool: str
    duration: float
    """How long the reset waited."""
    ok: bool
    """False if it failed or timed out: the connection was then discarded (a ``Removed``
    event with reason ``"discarded"`` follows)."""


Reason: TypeAlias = Literal["closed", "discarded", "evicted_idle", "evicted_lifetime", "reclaimed"]
"""Why a connection was let go: each reason but ``"closed"`` is the ``PoolStats`` counter that
counts it (see ``Removed``)."""


@dataclass(frozen=True, slots=True)
class Removed:
    """The pool let a connection go; its close follows (``Closed``)."""

    pool: str
    reason: Reason
    """``"discarded"``: it was in an unknown state or broken (a failed reset or ping, closed by
    the server, released from another event loop); ``"evicted_idle"``: unused for ``max_idle``;
    ``"evicted_lifetime"``: past ``max_lifetime`` or ``max_uses``, marked by ``expire()``, or in
    excess after a ``resize()`` down; ``"reclaimed"``: its lease was garbage-collected without a
    release; ``"closed"``: the pool is closing."""


@dataclass(frozen=True, slots=True)
class Closed:
    """A connection the pool let go is closed (politely, or terminated), and its slot free."""

    pool: str


@dataclass(frozen=True, slots=True)
class TimedOut:
    """An acquire gave up after its timeout with ``PoolTimeout``."""

    pool: str
    waited: float
    """How long it waited (its timeout, give or take the clock's resolution)."""


@dataclass(frozen=True, slots=True)
class Exhausted:
    """An acquire was refused at once with ``PoolExhausted``: ``max_waiting`` acquirers already
    waited."""

    pool: str
    waiting: int
    """Acquirers in line when it was refused."""


@dataclass(frozen=True, slots=True)
class BreakerOpened:
    """Connects failed ``breaker_threshold`` times in a row: the circuit breaker opened, and
    acquirers that need a new connection fail at once until a probe connects."""

    pool: str
    errors_in_a_row: int
    error: Exception
    """The last connect error."""


@dataclass(frozen=True, slots=True)
class BreakerClosed:
    """A connect succeeded while the circuit breaker was open: it closed."""

    pool: str


PoolEvent: TypeAlias = (
    Connected
    | ConnectFailed
    | Acquired
    | Released
    | Reset
    | Removed
    | Closed
    | TimedOut
    | Exhausted
    | BreakerOpened
    | BreakerClosed
)
"""Every kind of event a pool reports."""

Listener: TypeAlias = Callable[[PoolEvent], None]
"""What ``Pool.add_listener`` takes: a callable of one event, returning nothing."""
