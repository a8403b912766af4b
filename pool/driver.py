"""The contract between the pool and a database client library.

A driver is any object with the five methods of ``Driver``; no base class is needed. The pool
only ever talks to a database through these methods, which is what keeps ``aiodbpool`` itself free
of any database dependency.

Six abilities are optional, each its own small protocol so the required contract stays small:

* ``SupportsTerminate``: a synchronous hard close, used when a polite ``close`` timed out or a
  connection is in an unknown state (a ``reset`` that failed or was interrupted).
* ``SupportsTransaction``: an async context manager that commits on success and rolls back on
  error; integrations use it to offer "a connection inside a transaction" for every driver.
* ``SupportsAclose``: releases what the driver holds besides its connections (SQLite's shared
  in-memory database); a pool created with ``close_driver=True`` calls it when it closes.
* ``SupportsLease``: the pool lends a guarded stand-in (``aiodbpool.Lease``) instead of the
  connection itself, so a handle kept past its release can never act on the next borrower's
  session. Without it the pool lends the driver's object, and cannot tell a stale handle from
  the current one.
* ``SupportsTransactionStatus``: says, without a round trip, whether a connection is idle or
  inside a transaction; the pool refuses a new connection that ``connect`` (an ``init``
  callback) left inside one.
* ``SupportsInterrupt``: stops a statement that a cancelled borrower may have left running
  (SQLite's statements run on in their thread after the task that sent them was cancelled).
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any, Literal, Protocol, TypeAlias, TypeVar, runtime_checkable

from .lease import Lease

__all__ = [
    "Driver",
    "SupportsAclose",
    "SupportsInterrupt",
    "SupportsLease",
    "SupportsTerminate",
    "SupportsTransaction",
    "SupportsTransactionStatus",
    "TransactionStatus",
]

C = TypeVar("C")
C_contra = TypeVar("C_contra", contravariant=True)


@runtime_checkable
class Driver(Protocol[C]):
    """What the pool needs from a database client: open, close, check and clean a connection.

    ``C`` is the driver's own connection type. The pool hands out these objects, or leases that
    stand in for them (``SupportsLease``), so user code keeps the full, typed API of the client
    library. The pool's own calls below always get the driver's object itself.
    """

    async def connect(self) -> C:
        """Open a new connection. Raise any exception if it cannot be opened."""
        ...

    async def close(self, conn: C) -> None:
        """Close ``conn`` politely. The pool bounds this call by its ``close_timeout``."""
        ...

    async def ping(self, conn: C) -> None:
        """Check that ``conn`` still works with a cheap round trip; raise if it does not."""
        ...

    async def reset(self, conn: C) -> None:
        """Make a returned connection clean for its next user (roll back an open transaction).

        Called on every release, so it should return *without awaiting anything* when the
        connection is already clean: the pool then skips the cost of arming a timeout. Raise to
        have the connection discarded instead of reused. A reset that waits runs on in a task of
        the pool's own, shielded from the releasing task's cancellation and bounded by
        ``reset_timeout``: so it must not decide anything from ``asyncio.current_task()``
        (what a cancelled borrower left running is ``SupportsInterrupt``'s business).
        """
        ...

    def is_closed(self, conn: C) -> bool:
        """Say whether ``conn`` is known to be closed. Cheap and local: no I/O."""
        ...


@runtime_checkable
class SupportsTerminate(Protocol[C_contra]):
    """A driver that can close a connection at once, without talking to the server."""

    def terminate(self, conn: C_contra) -> None:
        """Drop ``conn`` immediately (close its socket); never blocks, never raises."""
        ...


@runtime_checkable
class SupportsTransaction(Protocol[C_contra]):
    """A driver that can run a block of work inside a database transaction."""

    def transaction(self, conn: C_contra) -> AbstractAsyncContextManager[object]:
        """Return a context manager that begins a transaction on entry and commits on a clean
        exit or rolls back when the block raises."""
        ...


@runtime_checkable
class SupportsAclose(Protocol):
    """A driver that holds resources of its own, beyond the connections it opened."""

    async def aclose(self) -> None:
        """Release them; the driver opens no connection afterwards. Safe to call twice."""
        ...


@runtime_checkable
class SupportsInterrupt(Protocol[C_contra]):
    """A driver whose statements go on running after the task that sent them was cancelled.

    asyncpg cancels a statement on the server itself when its task is cancelled; an SQLite
    statement runs on in the connection's thread. The pool cannot see that: it only knows that
    the task giving the connection back is being cancelled (``asyncio`` or anyio cancellation,
    e.g. a request whose client went away). It then calls ``interrupt``, before ``reset``.
    """

    def interrupt(self, conn: C_contra) -> None:
        """Stop whatever ``conn`` may still be running for its cancelled borrower, so that the
        ``reset`` that follows can wait for it and leave the connection clean (or raise). Never
        blocks, never raises; does nothing when nothing runs."""
        ...


TransactionStatus: TypeAlias = Literal["idle", "in_transaction", "failed"]
"""Where a connection stands between statements: outside any transaction, inside one, or inside
one that failed and only accepts a rollback (a driver that cannot tell the last two apart says
``"in_transaction"``)."""


@runtime_checkable
class SupportsTransactionStatus(Protocol[C_contra]):
    """A driver that knows, without asking the server, whether a connection is in a transaction.

    The pool asks after every ``connect``. A new connection that is not ``"idle"`` (say, an
    ``init`` callback began a transaction and did not end it) is closed, never lent, and the
    connect fails with ``PoolConnectError``.
    """

    def transaction_status(self, conn: C_contra) -> TransactionStatus:
        """The status the client library last saw (asyncpg's ``is_in_transaction``, sqlite3's
        ``in_transaction``, psycopg's ``info.transaction_status``). Local: no I/O."""
        ...


@runtime_checkable
class SupportsLease(Protocol):
    """A driver whose connections the pool lends through a guarded stand-in, one per lend.

    With it, ``pool.acquire()`` gives a new ``lease_class(connection, pool)`` each time, and
    ``release`` ends it: a second release, or one through a handle kept from an earlier lend,
    raises ``ValueError`` and leaves the next borrower alone, and any use after the release
    raises ``ConnectionReleased``. Without it the pool lends the driver's object itself, and
    cannot tell a stale handle from the current one. See docs/writing-a-driver.md.
    """

    lease_class: type[Lease[Any]]
    """``aiodbpool.Lease`` itself (each attribute checked as it is looked up), or a subclass
    whose methods are made by ``guarded_statement`` and ``guarded_method``, so that a method
    fetched before the release refuses after it and running statements are waited for."""
