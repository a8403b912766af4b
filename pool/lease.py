"""Leases: every lend of a connection is an object of its own, so a stale handle can do no harm.

A pool that lends the driver's connection object itself cannot tell the borrower who holds it now
from one who held it earlier and kept the reference: both hold the same object. A second release
(in ``except`` and again in ``finally``), a statement sent after the release, or a transaction
block that ends after it would then act on the *next* borrower's session: roll back their
transaction half-way, or write inside it.

So a pool whose driver supports it lends a *lease* instead: a small object made for this one
lend, which stands in for the connection (every attribute and method is forwarded to it) for as
long as the lend lasts. Release ends the lease, and from then on it refuses everything:

* releasing it again raises ``ValueError``, and the connection's current holder is untouched
  (the pool compares leases, not connections);
* a statement through it raises ``ConnectionReleased`` and sends nothing;
* what the driver ties to the lease (a transaction, a cursor, a prepared statement made through
  it) refuses too.

``Lease`` works for any connection class, forwarding attribute by attribute. A driver opts in by
naming a subclass as its ``lease_class`` (see ``aiodbpool.SupportsLease``); the subclass adds
methods made by ``guarded_statement`` and ``guarded_method``, so that a method fetched before the
release (``run = conn.execute``) still refuses after it, and so that the lease knows which of its
statements are still running when it ends. A connection released while one of them runs is not
lent again until they have finished (or it is discarded). The subclass may also undo, when the
lease ends, what the borrower left on the connection that must not reach the next one
(``Lease._left_behind``: the PostgreSQL driver drops the borrower's notification listeners).

The cost is one object per lend and a function call per statement: see docs/benchmarks.md.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, ClassVar, Final, Generic, Literal, TypeVar

from .errors import ConnectionReleased

if TYPE_CHECKING:
    from ._pool import Pool

__all__ = ["Lease", "guarded_attribute", "guarded_method", "guarded_statement", "raw_connection"]

C = TypeVar("C")

Ending = Literal["released", "detached", "closed", "released after close"]
"""How a lease ended: given back with ``release``, taken out with ``detach``, or ended by
``close()`` terminating the connection while it was still lent (and then given back)."""


class Lease(Generic[C]):
    """A connection as one borrower holds it: good from ``acquire`` until ``release``.

    It forwards every attribute read to the driver's connection, and ``isinstance(lease, Conn)``
    is true for the connection's class ``Conn``, so code written for the driver's connection
    works unchanged (``type(lease)`` names the lease class, though). Attributes the borrower may
    set are named by the driver's subclass with ``guarded_attribute``. Once the lease has ended
    -- by ``release``, ``detach``, or ``close()`` terminating the connection -- it refuses every
    use with ``ConnectionReleased``, and ``raw_connection`` refuses to unwrap it.

    The pool makes one for each lend, as ``lease_class(connection, pool)`` (see
    ``SupportsLease``); nothing else should. Used as it is, it checks each attribute as it is
    looked up. A driver's subclass adds methods made by ``guarded_statement``,
    ``guarded_method`` and ``guarded_attribute``, and may override the hooks below
    (``released_error``, ``_stop_statements``, ``_left_behind``); the methods it calls are
    ``_live``, ``_start``, ``_finish`` and ``_undo_at_release``. See docs/writing-a-driver.md.
    """

    # (__weakref__: the pool holds a lent lease weakly, to notice one dropped without a release.)
    __slots__ = (
        "__weakref__",
        "_all_done",
        "_ending",
        "_leased",
        "_lender",
        "_statements",
        "_undo_actions",
    )
    _leased: C
    _lender: Pool[Any]
    _ending: Ending | None
    _statements: int
    _all_done: asyncio.Future[None] | None
    _undo_actions: list[Callable[[C], Awaitable[None] | None]] | None

    released_error: ClassVar[type[ConnectionReleased]] = ConnectionReleased
    """The exception a use after the end raises; a driver may name a subclass that is also its
    library's own error for a misused connection (asyncpg's ``InterfaceError``)."""

    def __init__(self, connection: C, pool: Pool[Any]) -> None:
        self._leased = connection
        self._lender = pool
        self._ending = None  # an Ending once the lease has ended
        self._statements = 0  # statements begun through the lease and not yet finished
        self._all_done = None  # set when the last one finishes, if the pool waits for it
        self._undo_actions = None  # what to undo at the release (see _undo_at_release)

    # -- what a borrower sees -------------------------------------------------------------------

    def __getattr__(self, name: str) -> Any:
        # Called only for names the lease lacks, that is, everything the connection has.
        if name in _OWN:
            raise AttributeError(name)  # a half-made lease (no slot set yet): never forward
        if self._ending is None:
            return getattr(self._leased, name)
        if name.startswith("__"):
            raise AttributeError(name)  # probes such as copy's and pickle's get the usual answer
        raise self._refusal()

    # No __setattr__ forwarding: it would make every write of the lease's own fields (several on
    # each lend) several times slower. A driver's lease names the connection's settable
    # attributes with guarded_attribute instead.

    @property  # type: ignore[misc]  # deliberately shadows object.__class__, as mock does
    def __class__(self) -> type[Any]:
        """The connection's class, so that ``isinstance(lease, Conn)`` holds; ``type(lease)``
        still names the lease class."""
        return type(self._leased)

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(dir(self._leased)))

    def __reduce_ex__(self, protocol: Any) -> Any:
        raise TypeError("a lent connection cannot be copied or pickled: it stands for one lend")

    def __repr__(self) -> str:
        state = "" if self._ending is None else f" ({self._ending})"
        return f"<lease{state} of {self._leased!r} from pool {self._lender.name!r}>"

    # -- what driver subclasses use -------------------------------------------------------------

    def _live(self) -> C:
        """The connection, while the lease lasts; after its end, raise ``ConnectionReleased``."""
        if self._ending is None:
            return self._leased
        raise self._refusal()

    def _start(self) -> C:
        """Begin a statement: the connection to run it on, with the statement counted as running
        until ``_finish``. Raises ``ConnectionReleased`` after the end."""
        if self._ending is not None:
            raise self._refusal()
        self._statements += 1
        return self._leased

    def _finish(self) -> None:
        """A statement begun with ``_start`` has finished (or failed, or was cancelled)."""
        running = self._statements - 1
        self._statements = running
        settled = self._all_done
        if not running and settled is not None and not settled.done():
            settled.set_result(None)

    def _undo_at_release(self, action: Callable[[C], Awaitable[None] | None]) -> None:
        """Have ``action(connection)`` run when the lease ends by a release: for state the
        borrower added on the client side (a listener) that must not reach the next borrower.

        An action that returns an awaitable is awaited after the lease's statements have
        finished; actions run in the reverse order of their registration.
        """
        undo = self._undo_actions
        if undo is None:
            self._undo_actions = [action]
        else:
            undo.append(action)

    def _stop_statements(self, connection: C) -> None:
        """Ask ``connection`` to stop the statements still running through the lease, which is
        being released; the pool then waits for them to end. Never blocks. The default does
        nothing: the pool waits for them to finish (or discards the connection at
        ``reset_timeout``)."""

    def _left_behind(self, connection: C) -> Coroutine[Any, Any, None] | None:
        """Undo what the borrower left on ``connection`` that must not reach the next borrower.

        Called once, when the lease ends by a release, after it has begun refusing. Does what can
        be done at once, and returns a coroutine for what must wait on the connection (the pool
        awaits it within ``reset_timeout``, once the lease's statements have finished, and
        discards the connection if it fails), or None. This runs the ``_undo_at_release``
        actions; a driver's subclass may do more.
        """
        undo = self._undo_actions
        if not undo:
            return None
        waits = [wait for action in reversed(undo) if (wait := action(connection)) is not None]
        return _await_in_order(waits) if waits else None

    # -- what the pool uses ---------------------------------------------------------------------

    def _end(self, how: Ending) -> Coroutine[Any, Any, None] | None:
        """End the lease: from now on it refuses everything. For the pool only.

        On a release, return what the pool must await before it resets the connection: waiting
        for statements still running through the lease (a release from another task, or after a
        cancellation the borrower caught), then the subclass's ``_left_behind``. None -- the
        usual case -- means the borrower left cleanly and nothing needs awaiting.
        """
        self._ending = how
        if how != "released":
            return None  # detached: all of it is the caller's now; closed: the connection is gone
        if self._statements:
            self._stop_statements(self._leased)
            return self._settle()
        return self._left_behind(self._leased)

    async def _settle(self) -> None:
        """Wait for the lease's running statements to finish, then undo what they left."""
        settled: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._all_done = settled
        # cancel: the release's reset_timeout ran out, or close() ended the pool's reset task
        # (the pool runs this in a task of its own, so the releasing task's cancellation never
        # reaches here); the pool then discards the connection, which ends the statements too.
        await settled
        cleanup = self._left_behind(self._leased)
        if cleanup is not None:
            await cleanup  # cancel: as above, the pool discards the connection

    def _given_back_after_close(self) -> bool:
        """A release of a lease that ``close()`` ended: accepted once (the connection is gone
        already), so True the first time and False after."""
        if self._ending != "closed":
            return False
        self._ending = "released after close"
        return True

    def _refusal(self) -> ConnectionReleased:
        """The error for a use after the end, counted in the pool's ``stale_uses``."""
        pool = self._lender
        pool._count_stale_use()
        if self._ending == "detached":
            why = f"it was detached from pool {pool.name!r}: use the connection detach() returned"
        elif self._ending in ("closed", "released after close"):
            why = f"pool {pool.name!r} was closed and terminated it"
        else:
            why = (
                f"it was released back to pool {pool.name!r}: acquire a connection again "
                "(a cursor, transaction or statement made through it ends with it too)"
            )
        return self.released_error(f"cannot use this connection: {why}", pool_name=pool.name)


_OWN: Final = frozenset(Lease.__slots__)
"""The lease's own slots; every other attribute is the connection's (see ``Lease.__getattr__``)."""


async def _await_in_order(waits: list[Awaitable[None]]) -> None:
    """Await each of ``waits``; if one fails, close the rest (no "never awaited" warnings)."""
    for index, wait in enumerate(waits):
        try:
            await wait  # cancel: the waits after it are closed; the pool discards the connection
        except BaseException:
            for rest in waits[index + 1 :]:
                if isinstance(rest, Coroutine):
                    rest.close()
            raise


def raw_connection(conn: C) -> C:
    """The driver's own connection behind a lent one, for a library that needs the real object.

    ``conn`` is what ``pool.acquire()`` gave; for a driver without leases it is already the
    driver's connection and comes back unchanged. Raises ``ConnectionReleased`` if the lease has
    ended.

    The raw connection is not guarded: what is done through it after the release acts on the
    connection's next borrower, and statements run through it are not waited for at the release.
    Use it only while the lease lasts, and never keep it past the release. Give the pool back
    the lease, not the raw connection: ``release`` and ``detach`` refuse the latter.
    """
    if isinstance(conn, Lease):
        return conn._live()  # type: ignore[no-any-return]
    return conn


def guarded_statement(name: str) -> Callable[..., Coroutine[Any, Any, Any]]:
    """A ``Lease`` method that awaits the connection's coroutine method ``name``.

    For a driver's lease subclass: ``execute = guarded_statement("execute")``. The method
    refuses after the end like every use, even when it was fetched before (``run =
    conn.execute``), and the statement counts as running until it finishes, so that a release in
    the meantime waits for it before the connection is reset.
    """

    async def statement(self: Lease[Any], /, *args: Any, **kwargs: Any) -> Any:
        conn = self._start()
        try:
            # cancel: the driver's statement is cancelled, as if called directly; it stops
            # counting as running, so a release no longer waits for it
            return await getattr(conn, name)(*args, **kwargs)
        finally:
            self._finish()

    statement.__name__ = statement.__qualname__ = name
    return statement


def guarded_method(name: str) -> Callable[..., Any]:
    """A ``Lease`` method that calls the connection's plain (not ``async``) method ``name``.

    For a driver's lease subclass: ``cursor = guarded_method("cursor")``. The check happens at
    the call, so that a method fetched before the release refuses after it. Nothing is counted
    as running: use ``guarded_statement`` for coroutine methods.
    """

    def method(self: Lease[Any], /, *args: Any, **kwargs: Any) -> Any:
        return getattr(self._live(), name)(*args, **kwargs)

    method.__name__ = method.__qualname__ = name
    return method


def guarded_attribute(name: str) -> property:
    """A ``Lease`` property that reads and sets the connection's attribute ``name`` while the
    lease lasts (``conn.row_factory = ...``), and refuses after its end."""

    def get(self: Lease[Any]) -> Any:
        return getattr(self._live(), name)

    def set_(self: Lease[Any], value: Any) -> None:
        setattr(self._live(), name, value)

    return property(get, set_, doc=f"The connection's ``{name}``, while the lease lasts.")
