"""What every client API of the fake driver shares: its errors, and a connection's state.

``FakeDriver`` lends connections that speak one of three client APIs: its own minimal one,
asyncpg's or aiosqlite's (see ``aiodbpool.drivers.fake``). Whatever the API, the driver keeps the
same state for each connection -- open, closed or broken, inside a transaction or not, the
statements it sent -- and a test reads it the same way (``conn.id``, ``conn.executed``). That
state lives here, in the base class of every API's connection, so that the driver's failure
scripting (latency, failures, stalls, broken connections) works on all of them alike.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from aiodbpool import Lease

if TYPE_CHECKING:
    from aiodbpool.drivers.fake import FakeDriver

# Shared with the fake's other modules; the public names are re-exported by
# aiodbpool.drivers.fake.
__all__ = [
    "FakeConnectionBase",
    "FakeConnectionError",
    "FakeDatabaseError",
    "FakeLeaseBase",
    "Row",
    "UnscriptedStatementError",
    "closed_error",
]

Row = tuple[object, ...]
"""One result row, or the arguments of one statement."""


class FakeDatabaseError(Exception):
    """An error the fake database reported, such as a failed ``reset``."""


class FakeConnectionError(FakeDatabaseError):
    """The fake connection could not be opened, is closed, or lost its server."""


class UnscriptedStatementError(FakeDatabaseError):
    """A strict ``FakeDriver`` was sent a statement that no script answers.

    ``sql`` and ``params`` are the statement and its arguments; ``closest`` the scripted
    statements that look most like it, as they were scripted, closest first.
    """

    def __init__(self, message: str, *, sql: str, params: Row, closest: tuple[str, ...]) -> None:
        super().__init__(message)
        self.sql = sql
        self.params = params
        self.closest = closest


for _error in (FakeDatabaseError, FakeConnectionError, UnscriptedStatementError):
    _error.__module__ = "aiodbpool.drivers.fake"
del _error


class FakeConnectionBase:
    """A connection as the fake server sees it, whatever client API it speaks.

    Only its ``FakeDriver`` changes the fields below; the subclass of each API adds the
    methods an application calls, and sends every statement through the driver.
    """

    __slots__ = (
        "_broken",
        "_closed",
        "_detected",
        "_driver",
        "_id",
        "_in_transaction",
        "_pings",
        "_resets",
        "executed",
    )

    def __init__(self, driver: FakeDriver[Any], conn_id: int) -> None:
        # The driver that opened this connection; it alone changes the fields below.
        self._driver = driver
        # 1, 2, 3... in the order the driver opened its connections.
        self._id = conn_id
        # Closed by the client (close or terminate).
        self._closed = False
        # The server side went away (break_connection).
        self._broken = False
        # The client knows it is broken: set at once by a detected break, or by the first I/O.
        self._detected = False
        # Between BEGIN and COMMIT/ROLLBACK, as answered by the server.
        self._in_transaction = False
        # Resets that rolled back a transaction.
        self._resets = 0
        # Ping calls, whatever their outcome.
        self._pings = 0
        self.executed: list[tuple[str, Row]] = []
        """``(sql, args)`` of every statement sent on this connection, in order."""

    @property
    def id(self) -> int:
        """The connection's number, 1, 2, 3... in the order its driver opened them."""
        return self._id

    @property
    def closed(self) -> bool:
        """Whether the client closed the connection (``close`` or ``terminate``)."""
        return self._closed

    @property
    def broken(self) -> bool:
        """Whether the server side went away (see ``FakeDriver.break_connection``)."""
        return self._broken

    @property
    def in_transaction(self) -> bool:
        """Whether a transaction is open: after ``BEGIN``, until ``COMMIT`` or ``ROLLBACK``."""
        return self._in_transaction

    @property
    def resets(self) -> int:
        """How many ``reset`` calls rolled back a transaction (resets of a clean one do nothing)."""
        return self._resets

    @property
    def pings(self) -> int:
        """How many times ``ping`` was called on this connection, whatever the outcome."""
        return self._pings

    def _check_usable(self) -> None:
        """Raise if the client closed the connection: for work done on the client side alone,
        such as reading rows a cursor already holds."""
        if self._closed:
            raise closed_error(self)

    def _forget_transaction(self) -> None:
        """The driver's ``reset`` rolled back the open transaction: forget what the client API
        remembers of it (asyncpg's transaction blocks). Nothing to forget by default."""

    def __repr__(self) -> str:
        if self._closed:
            state = "closed"
        elif self._broken:
            state = "broken" if self._detected else "broken (undetected)"
        else:
            state = "open"
        if self._in_transaction:
            state += " in_transaction"
        return f"<{type(self).__name__} {self._id} {state}>"


def closed_error(conn: FakeConnectionBase) -> FakeConnectionError:
    """The error for I/O on a connection the client closed."""
    return FakeConnectionError(f"connection {conn.id} is closed")


_C = TypeVar("_C", bound=FakeConnectionBase)


def _readable_after_release(name: str) -> property:
    """A connection attribute that a test may read through a lease even after its end: reading
    it asks nothing of the "server"."""
    return property(
        lambda lease: getattr(lease._leased, name),
        doc=f"The connection's ``{name}``, readable after the release too.",
    )


class FakeLeaseBase(Lease[_C]):
    """What the lease of every API shares: what a test reads to check what happened (``id``,
    ``closed``, ``broken``, ``in_transaction``, ``resets``, ``pings``, ``executed``) stays
    readable after the release, since reading it sends nothing to the "server"."""

    __slots__ = ()

    id = _readable_after_release("id")
    closed = _readable_after_release("closed")
    broken = _readable_after_release("broken")
    in_transaction = _readable_after_release("in_transaction")
    resets = _readable_after_release("resets")
    pings = _readable_after_release("pings")
    executed = _readable_after_release("executed")
