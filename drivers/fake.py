"""An in-memory database driver for test suites: slow, failing and broken databases on demand,
and connections that speak the client API the application was written for.

A real database cannot be told "refuse the next two connections" or "stop answering pings", yet
those are exactly the cases a connection pool exists to survive. ``FakeDriver`` satisfies the
pool's driver contract (plus the optional ``terminate`` and ``transaction`` abilities) without any
server, and lets a test script every way a database misbehaves:

* **Latency**: each operation that talks to the server (connect, query, ping, close, and the
  rollback of a dirty connection) first waits its latency with ``asyncio.sleep``, so the pool's
  timeouts and cancellation interrupt it exactly as they would interrupt network I/O.
* **Scripted failures** (``fail_*``): decided when a call starts, raised once its latency has
  passed.
* **Stalls** (``stall_*``): the call waits until ``FakeDriver.heal``, like a black-holed
  server. A stall takes precedence over a scripted failure; a call released by ``heal`` then runs
  normally.
* **Broken connections** (``FakeDriver.break_connection``): the server side went away. Either
  the client noticed at once (``is_closed`` is true), or it did not and only the next I/O reveals
  it -- the silent death that validation on acquire exists to catch.

What statements return is scripted too (``FakeDriver.script``: by text, pattern or function),
and a strict driver refuses a statement no script answers, so that a test notices SQL it did not
expect.

The connections speak one of three client APIs, chosen with ``api``: the fake's own minimal one
(``FakeConnection``: ``execute``, ``fetch``, ``fetchval``, tuple rows), asyncpg's
(``FakeAsyncpgConnection``) or aiosqlite's (``FakeAiosqliteConnection``), so that an application
written for a real driver runs on the fake unchanged. Whatever the API, the state a test reads
and the failure scripting are the same.

This module holds the driver, its failure scripting and ``from_url``; the private modules beside
it hold the rest, one job each: ``_fake_base`` (the errors, and a connection's state),
``_fake_scripts`` (matching statements to scripts), ``_fake_asyncpg`` and ``_fake_aiosqlite``
(the two client APIs).

Two properties matter to the pool and are kept on purpose:

* **Zero cost when nothing is scripted.** With a latency of 0 and no stall, a call completes without
  suspending: it awaits nothing that yields to the event loop. ``reset`` of a clean connection does
  not await at all, which lets the pool see that the reset finished synchronously and skip arming a
  timeout -- and lets benchmarks measure the pool rather than the fake.
* **Cancellation is survivable.** A query cancelled during its latency leaves the connection
  usable. Its effect on the transaction state is applied only when the server "answers", so a
  ``COMMIT`` cancelled mid-flight leaves the connection inside its transaction, and the next
  ``reset`` must roll it back, as with a real server whose reply never arrived.

Stalls wait on an ``asyncio.Event`` created per stalled call inside the running loop, so a driver
may be created outside any loop and used under any asyncio-compatible loop (the default one or
uvloop).
"""

from __future__ import annotations

import asyncio
import math
import random
import re
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from types import TracebackType
from typing import (
    TYPE_CHECKING,
    Any,
    Final,
    Generic,
    Literal,
    NamedTuple,
    TypeAlias,
    cast,
    overload,
)
from urllib.parse import parse_qsl, urlsplit

from aiodbpool import Lease, TransactionStatus, guarded_statement, raw_connection
from aiodbpool.drivers._fake_aiosqlite import FakeAiosqliteConnection, FakeAiosqliteLease
from aiodbpool.drivers._fake_asyncpg import FakeAsyncpgConnection, FakeAsyncpgLease, FakeRecord
from aiodbpool.drivers._fake_base import (
    FakeConnectionBase,
    FakeConnectionError,
    FakeDatabaseError,
    FakeLeaseBase,
    Row,
    UnscriptedStatementError,
    closed_error,
)
from aiodbpool.drivers._fake_scripts import (
    NO_ROWS,
    Answer,
    FakeResult,
    Responder,
    Scripts,
    is_transaction_control,
    transaction_change,
)
from aiodbpool.redaction import redact_url

if TYPE_CHECKING:
    from typing_extensions import TypeVar
else:
    from typing import TypeVar

__all__ = [
    "FakeAiosqliteConnection",
    "FakeAsyncpgConnection",
    "FakeClock",
    "FakeConnection",
    "FakeConnectionError",
    "FakeDatabaseError",
    "FakeDriver",
    "FakeRecord",
    "FakeResult",
    "UnscriptedStatementError",
    "from_url",
]

for _public in (FakeAiosqliteConnection, FakeAsyncpgConnection, FakeRecord, FakeResult):
    _public.__module__ = "aiodbpool.drivers.fake"
del _public

_Api: TypeAlias = Literal["default", "asyncpg", "aiosqlite"]
"""The client API a driver's connections speak."""

_LATENCY_OPTIONS = (
    "connect_latency",
    "query_latency",
    "ping_latency",
    "reset_latency",
    "close_latency",
)


def _check_latency(name: str, value: object) -> float:
    """Return ``value`` as a latency in seconds, or raise naming the option it was given for."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds, got {type(value).__name__}")
    if not 0 <= value < math.inf:  # also rejects NaN, which compares false with everything
        raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value!r}")
    return float(value)


class _Latency:
    """A latency option of ``FakeDriver``, validated whenever it is set.

    Latencies may be changed in the middle of a test ("the database becomes slow"), so validation
    belongs to the attribute rather than only to the constructor.
    """

    __slots__ = ("_attr", "_name")

    def __set_name__(self, owner: type[object], name: str) -> None:
        self._name = name
        self._attr = f"_{name}"

    @overload
    def __get__(self, obj: None, owner: type[object] | None = None) -> _Latency: ...
    @overload
    def __get__(self, obj: FakeDriver[Any], owner: type[object] | None = None) -> float: ...
    def __get__(
        self, obj: FakeDriver[Any] | None, owner: type[object] | None = None
    ) -> _Latency | float:
        if obj is None:
            return self
        value: float = getattr(obj, self._attr)
        return value

    def __set__(self, obj: FakeDriver[Any], value: float) -> None:
        setattr(obj, self._attr, _check_latency(self._name, value))


class _FailureScript:
    """How many of the next calls of one operation fail, and with what error."""

    __slots__ = ("_error", "_remaining")

    def __init__(self) -> None:
        # Calls still to fail: 0 means none, None means every call until cleared.
        self._remaining: int | None = 0
        # The error to raise, or None for the operation's default error.
        self._error: BaseException | None = None

    @property
    def active(self) -> bool:
        """Whether the next call will fail."""
        return self._remaining is None or self._remaining > 0

    def set(self, n: int | None, error: BaseException | None, *, call: str) -> None:
        """Fail the next ``n`` calls (``None``: all of them), replacing any earlier script;
        ``call`` is the method that was called, named in errors."""
        if n is not None and n < 0:
            raise ValueError(
                f"{call}(): n must be >= 0, or None for every call until heal(); got {n!r}"
            )
        self._remaining = n
        self._error = error

    def clear(self) -> None:
        """Let every call succeed again."""
        self._remaining = 0
        self._error = None

    def take(self, default: Callable[[], BaseException]) -> BaseException | None:
        """Decide the fate of a call that starts now: the error it must raise, or None."""
        if self._remaining is None:
            pass
        elif self._remaining > 0:
            self._remaining -= 1
        else:
            return None
        if self._error is None:
            return default()
        # The same instance may be raised many times: drop the previous traceback so they do not
        # pile up.
        return self._error.with_traceback(None)


class _Stall:
    """Holds calls of one operation until released, like a server that never answers."""

    __slots__ = ("_events", "_remaining", "active")

    def __init__(self) -> None:
        # Whether new calls stall; for how many more calls (None: until released).
        self.active = False
        self._remaining: int | None = None
        # One event per call held right now; created inside the running loop, so the stall works
        # whichever loop the call runs in.
        self._events: set[asyncio.Event] = set()

    @property
    def held(self) -> int:
        """Calls held right now."""
        return len(self._events)

    def arm(self, n: int | None, *, call: str) -> None:
        """Stall the next ``n`` calls (None: every call until ``release``); ``call`` is the
        method that was called, named in errors."""
        if n is not None and n < 1:
            raise ValueError(
                f"{call}(): n must be at least 1, or None for every call until heal(); got {n!r}"
            )
        self.active = True
        self._remaining = n

    async def wait(self) -> None:
        """Wait until ``release``. Cancelling the caller simply ends the wait."""
        if self._remaining is not None:
            self._remaining -= 1
            self.active = self._remaining > 0
        event = asyncio.Event()
        self._events.add(event)
        try:
            await event.wait()
        finally:
            self._events.discard(event)

    def release(self) -> None:
        """Stop stalling new calls and let every held call proceed."""
        self.active = False
        for event in self._events:
            event.set()
        self._events.clear()


def _refused() -> BaseException:
    return FakeConnectionError("connection refused")


def _ping_failed() -> BaseException:
    return FakeConnectionError("ping failed")


def _reset_failed() -> BaseException:
    return FakeDatabaseError("reset failed")


class FakeConnection(FakeConnectionBase):
    """A connection of a ``FakeDriver`` with the fake's own minimal API (the default ``api``);
    made by ``FakeDriver.connect``, not by hand.

    Queries return scripted rows as tuples (see ``FakeDriver.script``) and are recorded in
    ``executed`` and in the driver's ``queries``. A statement is recorded when it is sent, so one
    that failed or was cancelled is recorded too.
    """

    __slots__ = ()

    async def execute(self, sql: str, *args: object) -> str:
        """Run a statement; return ``"OK"`` (or raise the exception scripted for ``sql``)."""
        await self._driver._query(self, sql, args)
        return "OK"

    async def fetch(self, sql: str, *args: object) -> list[Row]:
        """Run a query and return the rows scripted for ``sql`` (``[]`` when none are)."""
        result = await self._driver._query(self, sql, args)
        return list(result.rows)

    async def fetchval(self, sql: str, *args: object) -> object | None:
        """Run a query and return the first column of its first row, or None if there is none."""
        rows = (await self._driver._query(self, sql, args)).rows
        if rows and rows[0]:
            return rows[0][0]
        return None


class _FakeLease(FakeLeaseBase[FakeConnection]):
    """A ``FakeConnection`` as a pool lends it: its queries refuse once it is released, exactly as
    the real drivers' connections do, so a test suite catches a use after release.

    What a test reads to check what happened (``id``, ``closed``, ``broken``,
    ``in_transaction``, ``resets``, ``pings``, ``executed``) stays readable after the release:
    reading it sends nothing to the "server".
    """

    __slots__ = ()

    execute = guarded_statement("execute")
    fetch = guarded_statement("fetch")
    fetchval = guarded_statement("fetchval")


def _unlent(conn: object) -> FakeConnectionBase:
    """The connection behind ``conn``, which may be a lease, ended or not: for the driver's
    scripting and checks, which touch no lease's borrower."""
    if isinstance(conn, FakeLeaseBase):
        leased: FakeConnectionBase = conn._leased
        return leased
    assert isinstance(conn, FakeConnectionBase)
    return conn


class _Transaction(AbstractAsyncContextManager[Any]):
    """``BEGIN`` on entry; ``COMMIT`` on a clean exit, ``ROLLBACK`` when the block raised.

    When the block is cancelled (or interrupted by another ``BaseException``) nothing is sent: an
    await during cancellation could hang or swallow it, and the pool's ``reset`` rolls the still
    open transaction back when the connection is released. ``conn`` may be a lease, whose
    statements refuse after its release.
    """

    __slots__ = ("_begin", "_conn")

    def __init__(self, conn: Any, begin: str) -> None:
        self._conn = conn
        self._begin = begin

    async def __aenter__(self) -> Any:
        await self._conn.execute(self._begin)
        return self._conn

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            await self._conn.execute("COMMIT")
        elif isinstance(exc, Exception):
            await self._conn.execute("ROLLBACK")


@asynccontextmanager
async def _asyncpg_transaction(conn: Any) -> AsyncIterator[Any]:
    """The driver's transaction block for asyncpg's API: the connection's own, as the
    PostgreSQL driver's is (so a block nested in it is a savepoint)."""
    async with conn.transaction():
        yield conn


class _ApiParts(NamedTuple):
    """What makes one client API of the fake."""

    connection_class: type[FakeConnectionBase]
    lease_class: type[Lease[Any]]
    transaction: Callable[[Any], AbstractAsyncContextManager[Any]]
    """The driver's ``transaction(conn)`` for these connections."""


_APIS: Final[dict[str, _ApiParts]] = {
    "default": _ApiParts(FakeConnection, _FakeLease, lambda conn: _Transaction(conn, "BEGIN")),
    "asyncpg": _ApiParts(FakeAsyncpgConnection, FakeAsyncpgLease, _asyncpg_transaction),
    # The pool's SQLite driver begins its transactions with BEGIN IMMEDIATE.
    "aiosqlite": _ApiParts(
        FakeAiosqliteConnection,
        FakeAiosqliteLease,
        lambda conn: _Transaction(conn, "BEGIN IMMEDIATE"),
    ),
}

if TYPE_CHECKING:
    C = TypeVar("C", bound=FakeConnectionBase, default=FakeConnection)
else:  # A TypeVar default needs Python 3.13 at run time; only type checkers read it.
    C = TypeVar("C", bound=FakeConnectionBase)


class FakeDriver(Generic[C]):
    """A scriptable in-memory driver for the pool: inject it to simulate any database behaviour.

    ``api`` chooses what the connections speak: ``"default"`` (``FakeConnection``), ``"asyncpg"``
    (``FakeAsyncpgConnection``) or ``"aiosqlite"`` (``FakeAiosqliteConnection``). With
    ``strict``, a statement no script answers raises ``UnscriptedStatementError`` instead of
    returning no rows; transaction control needs no script. All latencies are in seconds and may
    be changed at any time, as may ``strict``. ``rng`` chooses the victim of
    ``break_random_connection``; pass a seeded ``random.Random`` for reproducible tests.
    """

    connect_latency = _Latency()
    """Seconds each ``connect`` takes."""
    query_latency = _Latency()
    """Seconds each statement (a query, or a round trip such as asyncpg's ``prepare``) takes."""
    ping_latency = _Latency()
    """Seconds each ``ping`` takes."""
    reset_latency = _Latency()
    """Seconds a ``reset`` takes to roll back a dirty connection (a clean one costs nothing)."""
    close_latency = _Latency()
    """Seconds each ``close`` takes (``terminate`` is instant)."""

    @overload
    def __init__(
        self: FakeDriver[FakeConnection],
        *,
        api: Literal["default"] = ...,
        strict: bool = ...,
        connect_latency: float = ...,
        query_latency: float = ...,
        ping_latency: float = ...,
        reset_latency: float = ...,
        close_latency: float = ...,
        rng: random.Random | None = ...,
    ) -> None: ...
    @overload
    def __init__(
        self: FakeDriver[FakeAsyncpgConnection],
        *,
        api: Literal["asyncpg"],
        strict: bool = ...,
        connect_latency: float = ...,
        query_latency: float = ...,
        ping_latency: float = ...,
        reset_latency: float = ...,
        close_latency: float = ...,
        rng: random.Random | None = ...,
    ) -> None: ...
    @overload
    def __init__(
        self: FakeDriver[FakeAiosqliteConnection],
        *,
        api: Literal["aiosqlite"],
        strict: bool = ...,
        connect_latency: float = ...,
        query_latency: float = ...,
        ping_latency: float = ...,
        reset_latency: float = ...,
        close_latency: float = ...,
        rng: random.Random | None = ...,
    ) -> None: ...
    @overload
    def __init__(
        self: FakeDriver[Any],
        *,
        api: str,
        strict: bool = ...,
        connect_latency: float = ...,
        query_latency: float = ...,
        ping_latency: float = ...,
        reset_latency: float = ...,
        close_latency: float = ...,
        rng: random.Random | None = ...,
    ) -> None: ...
    def __init__(
        self,
        *,
        api: str = "default",
        strict: bool = False,
        connect_latency: float = 0.0,
        query_latency: float = 0.0,
        ping_latency: float = 0.0,
        reset_latency: float = 0.0,
        close_latency: float = 0.0,
        rng: random.Random | None = None,
    ) -> None:
        parts = _APIS.get(api) if isinstance(api, str) else None
        if parts is None:
            raise ValueError(f"api must be one of {', '.join(map(repr, _APIS))}; got {api!r}")
        if not isinstance(strict, bool):
            raise TypeError(f"strict must be True or False, got {type(strict).__name__}")
        self.connect_latency = connect_latency
        self.query_latency = query_latency
        self.ping_latency = ping_latency
        self.reset_latency = reset_latency
        self.close_latency = close_latency
        self._rng = random.Random() if rng is None else rng
        self._api = cast(_Api, api)
        self._parts = parts
        # What connect() makes: the API's connection class (the type checker knows it as C).
        self._connection_class = cast(Callable[["FakeDriver[Any]", int], C], parts.connection_class)

        self.strict = strict
        """Whether a statement no script answers raises ``UnscriptedStatementError`` (else it
        returns no rows). Transaction control never needs a script."""

        # Connections the client has not closed, by id in opening order. Broken ones stay here
        # until closed: the pool still holds them and must close them.
        self._live: dict[int, C] = {}
        # The id of the last connection opened.
        self._last_id = 0
        # Counters, changed only by connect() and _mark_closed().
        self._connect_attempts = 0
        self._opened = 0
        self._closed = 0
        self._peak_live = 0
        # What the next calls of each operation do.
        self._connect_failures = _FailureScript()
        self._ping_failures = _FailureScript()
        self._reset_failures = _FailureScript()
        self._connect_stall = _Stall()
        self._ping_stall = _Stall()
        self._reset_stall = _Stall()
        # What statements return (see script()).
        self._scripts = Scripts()

        self.queries: list[tuple[int, str, Row]] = []
        """``(connection id, sql, args)`` of every statement sent on any connection, in order."""

    @property
    def api(self) -> _Api:
        """The client API the connections speak: ``"default"``, ``"asyncpg"`` or ``"aiosqlite"``."""
        return self._api

    @property
    def lease_class(self) -> type[Lease[Any]]:
        """What a pool lends: a guarded stand-in for the connection (see ``aiodbpool.Lease``),
        which refuses every statement after its release, as the real drivers' leases do."""
        return self._parts.lease_class

    # -- the driver contract ------------------------------------------------------------------

    async def connect(self) -> C:
        """Open a connection, after ``connect_latency``, unless scripted to fail or stall."""
        self._connect_attempts += 1
        if self._connect_stall.active:
            await self._connect_stall.wait()
        failure = self._connect_failures.take(_refused)
        if self.connect_latency > 0:
            await asyncio.sleep(self.connect_latency)
        if failure is not None:
            raise failure
        self._last_id += 1
        conn = self._connection_class(self, self._last_id)
        self._live[conn.id] = conn
        self._opened += 1
        self._peak_live = max(self._peak_live, len(self._live))
        return conn

    async def close(self, conn: C) -> None:
        """Close ``conn`` after ``close_latency``; closing a closed connection does nothing.

        If the call is cancelled during its latency the connection stays open, as a polite close
        that timed out would; ``terminate`` then closes it at once.
        """
        conn = raw_connection(conn)
        self._check_owner(conn)
        if conn._closed:
            return
        if self.close_latency > 0:
            await asyncio.sleep(self.close_latency)
        self._mark_closed(conn)

    async def ping(self, conn: C) -> None:
        """Check ``conn`` with a round trip of ``ping_latency``.

        Raises ``FakeConnectionError`` if the connection is closed or broken, or if a failure
        was scripted with ``fail_pings``. Sends no statement: no script is consulted.
        """
        conn = raw_connection(conn)
        self._check_owner(conn)
        conn._pings += 1
        if conn._closed:
            raise closed_error(conn)
        if self._ping_stall.active:
            await self._ping_stall.wait()
        failure = self._ping_failures.take(_ping_failed)
        if self.ping_latency > 0:
            await asyncio.sleep(self.ping_latency)
        self._check_alive(conn)
        if failure is not None:
            raise failure

    async def reset(self, conn: C) -> None:
        """Make ``conn`` clean: roll back its open transaction, if any.

        A clean connection costs nothing: unless a stall is scripted, the call returns without
        awaiting anything. A dirty one waits ``reset_latency`` and records ``ROLLBACK`` (no
        script is consulted). Raises ``FakeConnectionError`` if the connection is closed or
        broken, and ``FakeDatabaseError`` if a failure was scripted with ``fail_resets``.
        """
        if (
            not conn._in_transaction
            and conn._driver is self
            and not conn._closed
            and not conn._broken
            and not self._reset_stall.active
            and not self._reset_failures.active
        ):
            return  # the pool's fast path: clean, healthy, nothing scripted
        conn = raw_connection(conn)
        self._check_owner(conn)
        if conn._closed:
            raise closed_error(conn)
        if self._reset_stall.active:
            await self._reset_stall.wait()
        failure = self._reset_failures.take(_reset_failed)
        dirty = conn._in_transaction
        if dirty and self.reset_latency > 0:
            await asyncio.sleep(self.reset_latency)
        self._check_alive(conn)
        if failure is not None:
            raise failure
        if dirty:
            self._record(conn, "ROLLBACK", ())
            conn._in_transaction = False
            conn._resets += 1
            conn._forget_transaction()

    def is_closed(self, conn: C) -> bool:
        """Whether ``conn`` is closed, or broken in a way the client has noticed."""
        return conn._closed or conn._detected

    # -- optional abilities -------------------------------------------------------------------

    def transaction_status(self, conn: C) -> TransactionStatus:
        """``"in_transaction"`` between ``BEGIN`` and its end, else ``"idle"``."""
        return "in_transaction" if conn._in_transaction else "idle"

    def terminate(self, conn: C) -> None:
        """Close ``conn`` at once, without latency; closing a closed connection does nothing."""
        conn = raw_connection(conn)
        self._check_owner(conn)
        self._mark_closed(conn)

    def transaction(self, conn: C) -> AbstractAsyncContextManager[C]:
        """Run a block inside a transaction; the block gets ``conn``.

        With the default and aiosqlite APIs: ``BEGIN`` (``BEGIN IMMEDIATE`` for aiosqlite, as the
        SQLite driver does), then ``COMMIT``, or ``ROLLBACK`` when the block raised, re-raising
        its exception; a cancelled block sends nothing and leaves the connection inside its
        transaction, for ``reset`` to roll back. With asyncpg's API: the connection's own
        ``transaction()``, as the PostgreSQL driver does (rolled back on cancellation too, and a
        savepoint inside another block).
        """
        self._check_owner(conn)
        return self._parts.transaction(conn)

    # -- scripting ------------------------------------------------------------------------------

    def fail_next_connects(self, n: int = 1, error: BaseException | None = None) -> None:
        """Make the next ``n`` connects raise ``error`` (default: "connection refused")."""
        self._connect_failures.set(n, error, call="fail_next_connects")

    def fail_connects(self, error: BaseException | None = None) -> None:
        """Make every connect raise ``error`` (default: "connection refused") until ``heal``."""
        self._connect_failures.set(None, error, call="fail_connects")

    def stall_connects(self) -> None:
        """Make connects never return until ``heal``, like a black-holed server."""
        self._connect_stall.arm(None, call="stall_connects")

    def fail_pings(self, n: int | None = None) -> None:
        """Make the next ``n`` pings raise ``FakeConnectionError`` (None: all until heal)."""
        self._ping_failures.set(n, None, call="fail_pings")

    def stall_pings(self) -> None:
        """Make pings never return until ``heal``."""
        self._ping_stall.arm(None, call="stall_pings")

    def fail_resets(self, n: int | None = None) -> None:
        """Make the next ``n`` resets raise ``FakeDatabaseError`` (None: all until heal).

        This applies to every reset, clean connection or not.
        """
        self._reset_failures.set(n, None, call="fail_resets")

    def stall_resets(self, n: int | None = None) -> None:
        """Make the next ``n`` resets (None: all) never return until ``heal``, clean connection
        or not."""
        self._reset_stall.arm(n, call="stall_resets")

    def heal(self) -> None:
        """Undo every ``fail_*`` and ``stall_*``; stalled calls then proceed normally.

        Broken connections stay broken (their server is gone), and query scripts stay in place.
        """
        for failures in (self._connect_failures, self._ping_failures, self._reset_failures):
            failures.clear()
        for stall in (self._connect_stall, self._ping_stall, self._reset_stall):
            stall.release()

    def break_connection(self, conn: C, *, detected: bool = True) -> None:
        """Make the server side of ``conn`` go away: its queries and pings raise from now on.

        With ``detected``, the client notices at once and ``is_closed(conn)`` is true. Without it
        the death is silent: ``is_closed`` stays false until an I/O (query, ping, reset) fails --
        the case that validating idle connections must catch.
        """
        raw = _unlent(conn)
        self._check_owner(raw)
        raw._broken = True
        raw._detected = raw._detected or detected

    def break_random_connection(self, *, detected: bool = True) -> C | None:
        """Break one live, not yet broken connection chosen by ``rng``; return it (None if none)."""
        candidates = [conn for conn in self._live.values() if not conn._broken]
        if not candidates:
            return None
        conn = self._rng.choice(candidates)
        self.break_connection(conn, detected=detected)
        return conn

    @overload
    def script(self, statement: str | re.Pattern[str], answer: Answer | Responder) -> None: ...
    @overload
    def script(self, statement: Responder) -> None: ...
    def script(
        self,
        statement: str | re.Pattern[str] | Responder,
        answer: Answer | Responder | None = None,
    ) -> None:
        """Script what statements return: ``script(sql, answer)``, ``script(pattern, answer)``,
        or ``script(function)``.

        ``sql`` matches statements with the same text once whitespace, letter case and trailing
        semicolons outside quotes are set aside; a compiled ``re`` pattern matches statements it
        finds a match in (``pattern.search``). ``answer`` is rows (tuples, or dicts whose keys
        name the columns), a ``FakeResult`` (rows with column names, ``rowcount``,
        ``lastrowid``, ``status``), an exception to raise, or a function ``answer(sql, args)``
        returning one of those. A function scripted alone answers every statement it returns
        an answer for, and declines the others by returning None; it may keep state (rows an
        ``INSERT`` added, for a later ``SELECT``).

        Text scripts are tried first, then patterns and functions, the most recent first; a new
        script for the same text or pattern replaces the old one. A statement nothing answers
        returns no rows, or raises ``UnscriptedStatementError`` when the driver is ``strict``.
        Scripts apply to every statement, transaction control included (script ``"COMMIT"`` to
        fail a commit), but not to the driver's own ``ping`` and ``reset``.
        """
        self._scripts.add(statement, answer)

    # -- introspection --------------------------------------------------------------------------

    @property
    def opened(self) -> int:
        """Connections opened successfully so far."""
        return self._opened

    @property
    def closed(self) -> int:
        """Connections closed (by ``close`` or ``terminate``), each counted once."""
        return self._closed

    @property
    def connect_attempts(self) -> int:
        """Calls to ``connect``, successful or not (including stalled ones)."""
        return self._connect_attempts

    @property
    def live(self) -> int:
        """Connections open now (broken ones included until they are closed)."""
        return len(self._live)

    @property
    def peak_live(self) -> int:
        """The highest number of connections that were open at the same time."""
        return self._peak_live

    @property
    def connections(self) -> list[C]:
        """The live connections, in opening order (a copy)."""
        return list(self._live.values())

    @property
    def stalled(self) -> int:
        """Calls held by a stall right now; lets a test wait until a call is stuck."""
        return self._connect_stall.held + self._ping_stall.held + self._reset_stall.held

    def __repr__(self) -> str:
        text = "<FakeDriver"
        if self._api != "default":
            text += f" api={self._api}"
        if self.strict:
            text += " strict"
        text += f" live={self.live} opened={self._opened} closed={self._closed}"
        failing = [
            name
            for name, failures in (
                ("connect", self._connect_failures),
                ("ping", self._ping_failures),
                ("reset", self._reset_failures),
            )
            if failures.active
        ]
        stalled = [
            name
            for name, stall in (
                ("connect", self._connect_stall),
                ("ping", self._ping_stall),
                ("reset", self._reset_stall),
            )
            if stall.active
        ]
        if failing:
            text += f" failing={','.join(failing)}"
        if stalled:
            text += f" stalling={','.join(stalled)}"
        return text + ">"

    # -- internals: what the connections of every API call ---------------------------------------

    async def _query(self, conn: FakeConnectionBase, sql: str, args: Row) -> FakeResult:
        """Send one statement on ``conn`` and return its answer; the work behind every query."""
        if conn._closed:
            raise closed_error(conn)
        self._record(conn, sql, args)
        if self.query_latency > 0:
            # Cancelled here, the statement has no effect: the connection stays usable and keeps
            # its transaction state.
            await asyncio.sleep(self.query_latency)
        self._check_alive(conn)
        return self._answer(conn, sql, args)

    async def _query_many(
        self, conn: FakeConnectionBase, sql: str, arg_sets: list[Row]
    ) -> list[FakeResult]:
        """Send ``sql`` once per argument set in one round trip (``executemany``): each is
        recorded and answered as a statement of its own, in order, until one fails."""
        if conn._closed:
            raise closed_error(conn)
        for args in arg_sets:
            self._record(conn, sql, args)
        if self.query_latency > 0:
            await asyncio.sleep(self.query_latency)  # cancelled here: no effect, as _query
        self._check_alive(conn)
        return [self._answer(conn, sql, args) for args in arg_sets]

    async def _round_trip(self, conn: FakeConnectionBase) -> None:
        """A round trip that runs no statement (asyncpg's ``prepare``): ``query_latency``, then
        fail if the connection is closed or broken."""
        if conn._closed:
            raise closed_error(conn)
        if self.query_latency > 0:
            await asyncio.sleep(self.query_latency)  # cancelled here: nothing happened
        self._check_alive(conn)

    def _answer(self, conn: FakeConnectionBase, sql: str, args: Row) -> FakeResult:
        """The "server's" answer to a statement, applying its effect on the transaction state."""
        scripts = self._scripts
        answer = scripts.answer(sql, args) if scripts else None
        if answer is None:
            if self.strict and not is_transaction_control(sql):
                raise scripts.unscripted(sql, args)
            answer = NO_ROWS
        elif isinstance(answer, Exception):
            raise answer.with_traceback(None)
        change = transaction_change(sql)
        if change is not None:
            conn._in_transaction = change
        return answer

    def _record(self, conn: FakeConnectionBase, sql: str, args: Row) -> None:
        conn.executed.append((sql, args))
        self.queries.append((conn.id, sql, args))

    def _check_owner(self, conn: FakeConnectionBase) -> None:
        """Refuse a connection of another driver, whose id would mix up this driver's counts."""
        if conn._driver is not self:
            raise ValueError(
                f"{conn!r} belongs to another FakeDriver: pass a connection only to the driver "
                "that opened it"
            )

    def _check_alive(self, conn: FakeConnectionBase) -> None:
        """Raise if ``conn`` cannot do I/O; a failed I/O is how a silent break gets noticed."""
        if conn._closed:
            raise closed_error(conn)
        if conn._broken:
            conn._detected = True
            raise FakeConnectionError(f"connection {conn.id} lost: the server went away")

    def _mark_closed(self, conn: FakeConnectionBase) -> None:
        """Close ``conn`` for good; the one place ``live`` and ``closed`` change on closing."""
        if conn._closed:
            return
        conn._closed = True
        del self._live[conn.id]
        self._closed += 1


class FakeClock:
    """A clock that moves only when told to, for the pool's ``clock=`` option.

    Ages, idle times and lifetimes then advance by exactly what the test says, without sleeping.
    It never touches asyncio: it changes what the pool *reads* as the time, not when the event loop
    wakes sleeping tasks.
    """

    __slots__ = ("_now",)

    def __init__(self, start: float = 0.0) -> None:
        if math.isnan(start):
            raise ValueError("FakeClock(): start must be a number of seconds, not nan")
        self._now = float(start)

    def __call__(self) -> float:
        """The current time in seconds, as the pool reads it."""
        return self._now

    @property
    def now(self) -> float:
        """The current time in seconds."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Move the time forward by ``seconds``; a monotonic clock never goes back."""
        if not seconds >= 0:  # also rejects NaN
            raise ValueError(
                "FakeClock.advance(): seconds must be >= 0 (the clock never goes back), "
                f"got {seconds!r}"
            )
        self._now += seconds

    def __repr__(self) -> str:
        return f"FakeClock(now={self._now!r})"


_STRICT_VALUES: Final = {
    "1": True,
    "true": True,
    "yes": True,
    "0": False,
    "false": False,
    "no": False,
}
"""What the ``strict`` parameter of a ``fake://`` URL may say (in any case)."""


def from_url(url: str, **options: Any) -> FakeDriver[Any]:
    """Make a ``FakeDriver`` from a ``fake://`` URL, the entry point of ``create_pool``.

    Query parameters set latencies in seconds (``fake://?connect_latency=0.01``), the client API
    (``api=asyncpg`` or ``api=aiosqlite``) and strict mode (``strict=1``, or ``true``/``yes``;
    ``0``, ``false``, ``no`` turn it off). Keyword ``options`` (any ``FakeDriver`` argument)
    override them. The host and path are ignored. Raises ValueError for another scheme, and for
    an unknown, repeated or malformed parameter, naming it.
    """
    parts = urlsplit(url)
    if parts.scheme != "fake":
        raise ValueError(
            f"not a fake:// URL: {redact_url(url)!r} (expected fake://, or e.g. "
            "fake://?query_latency=0.01)"
        )
    known = (*_LATENCY_OPTIONS, "api", "strict")
    params: dict[str, Any] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name not in known:
            raise ValueError(f"unknown fake:// URL parameter {name!r}; known: {', '.join(known)}")
        if name in params:
            raise ValueError(f"fake:// URL parameter {name!r} is given more than once: keep one")
        params[name] = _url_value(name, value)
    params.update(options)
    return FakeDriver(**params)


def _url_value(name: str, value: str) -> object:
    """The value of the ``fake://`` URL parameter ``name``, or ValueError saying what it takes."""
    if name == "api":
        if value not in _APIS:
            raise ValueError(
                f"fake:// URL parameter 'api' must be one of {', '.join(_APIS)}; got {value!r}"
            )
        return value
    if name == "strict":
        flag = _STRICT_VALUES.get(value.lower())
        if flag is None:
            raise ValueError(f"fake:// URL parameter 'strict' must be 1 or 0; got {value!r}")
        return flag
    try:
        return float(value)
    except ValueError:
        raise ValueError(
            f"fake:// URL parameter {name!r} must be a number of seconds, got {value!r}"
        ) from None
