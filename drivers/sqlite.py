"""The SQLite driver: pooled ``aiosqlite`` connections to a database file or a shared memory one.

SQLite is a library, not a server: each ``aiosqlite.Connection`` owns a worker thread that runs
its statements one at a time, in the order they were queued. What a pool of them needs, and what
this module does about it:

* **One writer at a time.** A file database is opened in WAL mode, so readers never block the
  writer nor each other, and with a busy timeout, so a writer that finds the write lock taken
  waits for it instead of failing with "database is locked".
* **Autocommit.** Connections are opened with ``isolation_level=None``: a statement outside an
  explicit transaction commits at once. ``reset`` rolls back only a transaction the user opened
  and left open, so returning a connection never silently drops a write.
* **Transactions that do not deadlock.** ``SQLiteDriver.transaction`` starts with ``BEGIN
  IMMEDIATE``: it takes the write lock first (waiting for it within the busy timeout), so a
  transaction that reads then writes cannot fail halfway because another writer committed.
* **A shared in-memory database.** ``:memory:`` would give each connection its own empty
  database. The driver opens ``file:/<unique name>?vfs=memdb`` instead: one database shared by
  every connection of the driver, with SQLite's normal locking, so the busy timeout applies. (A
  shared-cache memory database would also be shared, but its table locks ignore the busy timeout:
  concurrent writers fail at once with "database table is locked".) A memory database lives only
  while a connection to it is open, and the pool may close all of its connections when they are
  idle; the driver therefore holds one more connection, outside the pool, for its own lifetime
  (see ``SQLiteDriver.aclose``).
* **A lease per lend.** What ``pool.acquire()`` gives stands in for the ``aiosqlite.Connection``
  (``isinstance`` holds, every method and attribute works) until the release; after it, every
  use raises ``ConnectionReleased`` and queues nothing on the connection's thread. Cursors made
  through it (``execute``, ``cursor``, ...) refuse too, and so does ``transaction``.
  ``aiodbpool.raw_connection(conn)`` gives the ``aiosqlite.Connection`` itself.
* **Connects given up on.** A connect that the pool cancels (``connect_timeout``) may still be
  opening the file in its thread, waiting for a lock: the open stops waiting, and whatever it
  opened is closed; ``aclose`` waits for such opens, so no file handle outlives the driver.
* **Cancellation.** Cancelling a task does not stop the statement it was waiting for: that keeps
  running in the connection's thread, and may even open a transaction after the task moved on
  (a ``BEGIN`` that was waiting for the lock). So when a statement's task is cancelled, or a
  connection is released while one of its statements still runs (a release from another task),
  the driver interrupts the running statement (``sqlite3_interrupt``), and the release queues a
  rollback behind whatever is still queued; the connection is reused only once a statement has
  run on it again, else the pool replaces it. This holds also when the task caught its
  cancellation and went on before releasing, and when the connection is given back by a task
  being cancelled (the pool then calls ``interrupt``; see ``aiodbpool.SupportsInterrupt``). The
  rollback itself runs in the pool's own task, so an anyio cancel scope that cancels its task
  at every await does not cancel the rollback too.
"""

from __future__ import annotations

import asyncio
import math
import os
import sqlite3
import threading
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Final
from urllib.parse import parse_qsl, unquote, urlsplit

import aiosqlite

from aiodbpool import (
    ConnectionReleased,
    Lease,
    TransactionStatus,
    guarded_attribute,
    guarded_statement,
    raw_connection,
)
from aiodbpool.url import redact_url

__all__ = ["MEMORY", "SQLiteDriver", "from_url"]

MEMORY: Final = ":memory:"
"""The ``database`` that names the driver's shared in-memory database."""

_JOURNAL_MODES: Final = ("wal", "delete", "truncate", "persist", "memory", "off")
_SYNCHRONOUS_LEVELS: Final = ("off", "normal", "full", "extra")
_TRANSACTION_MODES: Final = ("immediate", "deferred", "exclusive")
_OPEN_MODES: Final = ("rwc", "rw", "ro")

_JOURNAL_RETRY_DELAY: Final = 0.005
"""Seconds between attempts to switch a new file's journal mode while another connection does."""

_LOCK_WAIT_SLICE: Final = 0.05
"""Longest wait for a lock, in seconds, between two checks that the connect still wants the open."""

_ITER_CHUNK_SIZE: Final = 64
"""Rows fetched per trip to the worker thread when iterating a cursor (aiosqlite's default)."""

_URL_FORMS: Final = "sqlite:///relative/path.db, sqlite:////absolute/path.db or sqlite:///:memory:"

_Init = Callable[[aiosqlite.Connection], Awaitable[object]]
"""An async callback run with each new connection, e.g. to register functions."""


@dataclass(frozen=True, slots=True)
class _Settings:
    """Everything the worker thread needs to open and configure one sqlite3 connection."""

    uri: str
    busy_timeout: float
    pragmas: tuple[tuple[str, str], ...]  # (name, value), applied in this order


def _open(settings: _Settings, abandoned: Callable[[], bool]) -> sqlite3.Connection:
    """Open and configure a sqlite3 connection; runs in the aiosqlite worker thread that uses it.

    Done in one trip to the thread rather than one per pragma. ``isolation_level=None`` is what
    makes the connection autocommit (see the module docstring). ``check_same_thread=False`` lets
    the event loop's thread close a connection whose connect was cancelled just after the open
    (see ``_Opener``); aiosqlite still runs every statement in the worker thread. ``abandoned``
    tells whether the connect gave up, so that a wait for a lock can stop early.
    """
    raw = sqlite3.connect(
        settings.uri,
        uri=True,
        timeout=settings.busy_timeout,
        isolation_level=None,
        check_same_thread=False,
    )
    try:
        for name, value in settings.pragmas:
            if name == "journal_mode":
                _set_journal_mode(raw, value, settings.busy_timeout, abandoned)
            else:
                raw.execute(f"PRAGMA {name}={value}").close()
    except BaseException:
        raw.close()
        raise
    return raw


def _set_journal_mode(
    raw: sqlite3.Connection, mode: str, busy_timeout: float, abandoned: Callable[[], bool]
) -> None:
    """Switch the file's journal mode, waiting up to ``busy_timeout`` for other connections.

    This is where an open waits when another connection, or another process, holds a lock on
    the file. The wait is cut into slices (``_LOCK_WAIT_SLICE``): SQLite's busy handler cannot
    be interrupted, and without the slices a connect the pool gave up on (``connect_timeout``)
    would keep its thread and file handles for the whole ``busy_timeout``.

    The switch needs the file to itself, and SQLite answers "database is locked" at once,
    without its busy handler, when another connection is switching too: several connections
    opened together on a new file (a pool filling up, several worker processes starting) would
    fail. The mode is stored in the file, so this only happens until one switch has succeeded.
    """
    deadline = time.monotonic() + busy_timeout
    try:
        while True:
            _set_busy_timeout(raw, min(_LOCK_WAIT_SLICE, deadline - time.monotonic()))
            try:
                raw.execute(f"PRAGMA journal_mode={mode}").close()
                return
            except sqlite3.OperationalError as error:
                if "locked" not in str(error) or time.monotonic() >= deadline or abandoned():
                    raise
            time.sleep(_JOURNAL_RETRY_DELAY)  # in the connection's own worker thread
    finally:
        _set_busy_timeout(raw, busy_timeout)


def _set_busy_timeout(raw: sqlite3.Connection, seconds: float) -> None:
    """How long ``raw``'s statements wait for a lock before "database is locked"."""
    raw.execute(f"PRAGMA busy_timeout={max(0, round(seconds * 1000))}").close()


class _OpenAbandoned(Exception):
    """Raised in the worker thread by an open whose connect gave up; nobody receives it."""


class _Opener:
    """The connector given to ``aiosqlite.Connection``: opens the connection in the worker
    thread, and hands it over only to a connect that still wants it.

    The pool's ``connect_timeout`` cancels a connect while its thread may still be opening the
    file (waiting for a lock, up to ``busy_timeout``). aiosqlite then queues "close and stop"
    behind the open, but that closes only a connection aiosqlite took, and a cancelled connect
    took none: what the open returns would stay open, with its file handles, until the garbage
    collector found it, which a traceback holding the opener can put off forever. So the
    hand-over is decided under a lock, and whichever side comes second closes the connection:
    the open (in the worker thread) closes one it finishes after the connect gave up, and
    ``abandon`` (in the event loop's thread) closes one handed over just before the connect was
    cancelled.

    The driver keeps the handle to interrupt a statement from the event loop's thread
    (``sqlite3.Connection.interrupt`` is the one call SQLite allows from another thread).
    """

    __slots__ = ("_abandoned", "_ended", "_lock", "_opening", "_settings", "raw")

    def __init__(self, settings: _Settings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._abandoned = False  # the connect gave up on this open
        self._opening = False  # the worker thread is opening the file
        # Resolved once an open the connect gave up on is over (see abandon()).
        self._ended: asyncio.Future[None] | None = None
        self.raw: sqlite3.Connection | None = None  # the connection, once handed over

    def __call__(self) -> sqlite3.Connection:
        """Open the connection, in the worker thread, unless the connect gave up first."""
        if not self._begin():
            raise _OpenAbandoned("the connect gave up before the open began")
        try:
            raw = _open(self._settings, self._given_up)
            if self._hand_over(raw):
                return raw
            raw.close()
            raise _OpenAbandoned("the connect gave up while the file was being opened")
        finally:
            self._finish()

    def abandon(self) -> asyncio.Future[None] | None:
        """Give up on the open, in the event loop's thread, after the connect failed or was
        cancelled; does not wait for the worker thread.

        Returns a future resolved when an open under way is over and closed what it opened, or
        None if no open is under way (an open not begun yet will not open anything).
        """
        with self._lock:
            self._abandoned = True
            raw, self.raw = self.raw, None
            if self._opening:
                self._ended = asyncio.get_running_loop().create_future()
            ended = self._ended
        if raw is not None:
            raw.close()  # the worker thread is done with it: aiosqlite never took it
        return ended

    def _given_up(self) -> bool:
        return self._abandoned

    def _begin(self) -> bool:
        """Whether to open the file (in the worker thread): not for a connect that gave up."""
        with self._lock:
            self._opening = not self._abandoned
            return self._opening

    def _hand_over(self, raw: sqlite3.Connection) -> bool:
        """Give ``raw`` to the connect, unless it gave up meanwhile (in the worker thread)."""
        with self._lock:
            if self._abandoned:
                return False
            self.raw = raw
            return True

    def _finish(self) -> None:
        """Mark the open over (in the worker thread) and tell whoever waits for it."""
        with self._lock:
            self._opening = False
            ended, self._ended = self._ended, None
        if ended is not None:
            with suppress(RuntimeError):  # the event loop is closed: nobody waits any more
                ended.get_loop().call_soon_threadsafe(_resolve, ended)


def _resolve(future: asyncio.Future[None]) -> None:
    """Mark an abandoned open over, in the event loop's thread."""
    if not future.done():
        future.set_result(None)


class _SQLiteLease(Lease[aiosqlite.Connection]):
    """An ``aiosqlite.Connection`` as the pool lends it, for one borrower.

    aiosqlite's own methods (all but ``close``) run here with the lease as ``self``. Each of them
    reaches the connection's thread through ``_execute`` alone, which the lease guards and counts,
    and the cursors they make keep the lease as their connection: so a method fetched before the
    release, or a cursor made during the lend, refuses after it like the lease itself. A test
    checks the list against aiosqlite's public methods.
    """

    __slots__ = ()

    backup = aiosqlite.Connection.backup
    # Not aiosqlite's own close: it assigns the connection's own attributes, which a lease
    # does not forward.
    close = guarded_statement("close")
    commit = aiosqlite.Connection.commit
    create_function = aiosqlite.Connection.create_function
    cursor = aiosqlite.Connection.cursor
    enable_load_extension = aiosqlite.Connection.enable_load_extension
    execute = aiosqlite.Connection.execute
    execute_fetchall = aiosqlite.Connection.execute_fetchall
    execute_insert = aiosqlite.Connection.execute_insert
    executemany = aiosqlite.Connection.executemany
    executescript = aiosqlite.Connection.executescript
    interrupt = aiosqlite.Connection.interrupt
    iterdump = aiosqlite.Connection.iterdump
    load_extension = aiosqlite.Connection.load_extension
    rollback = aiosqlite.Connection.rollback
    set_authorizer = aiosqlite.Connection.set_authorizer
    set_progress_handler = aiosqlite.Connection.set_progress_handler
    set_trace_callback = aiosqlite.Connection.set_trace_callback
    # Settable attributes (the others are read through the lease's attribute forwarding).
    isolation_level = guarded_attribute("isolation_level")
    row_factory = guarded_attribute("row_factory")
    text_factory = guarded_attribute("text_factory")

    async def _execute(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``fn`` in the connection's thread, as aiosqlite does, while the lease lasts."""
        conn = self._start()
        try:
            return await conn._execute(fn, *args, **kwargs)  # type: ignore[no-untyped-call]
        except BaseException as error:
            if not isinstance(error, Exception):
                # Cancelled while the thread may still run ``fn``: stop it, and have the
                # release roll back behind whatever is still queued.
                self._stop_statements(conn)
            raise
        finally:
            self._finish()

    def _stop_statements(self, connection: aiosqlite.Connection) -> None:
        driver = self._lender.driver
        if isinstance(driver, SQLiteDriver):
            driver._interrupt(connection)


class SQLiteDriver:
    """Pooled ``aiosqlite`` connections to one SQLite database (a file, or shared memory).

    Every option is keyword-only, and each can also be given to ``create_pool`` (or, except
    ``init``, as a query parameter of the ``sqlite://`` URL).

    Args:
        database: Path of the database file (relative paths are resolved against the current
            directory when the driver is made), or ``":memory:"`` for one in-memory database
            shared by all the driver's connections and kept for the driver's lifetime.
        mode: ``"rwc"`` read-write, creating the file if needed; ``"rw"`` read-write, the file
            must exist; ``"ro"`` read-only (no pragma that writes is applied). Files only.
        journal_mode: ``PRAGMA journal_mode`` for a file database: ``"wal"`` lets readers work
            while one writer writes. Memory databases always keep their journal in memory.
        synchronous: ``PRAGMA synchronous``. ``None``: ``"normal"`` under WAL (safe against
            application crashes; a power loss may undo the last commits), else SQLite's default
            (``"full"``).
        busy_timeout: Seconds a statement waits for a lock held by another connection before it
            fails with "database is locked".
        foreign_keys: ``PRAGMA foreign_keys``: enforce ``REFERENCES`` constraints.
        transaction_mode: How ``transaction`` begins: ``"immediate"`` takes the write lock at
            once; ``"deferred"`` only at the first write, so a transaction that read first can
            fail with "database is locked" when another writer committed in between;
            ``"exclusive"`` also keeps readers out (in WAL mode it is the same as immediate).
        init: ``async def init(conn)`` run with each new connection after the pragmas, e.g. to
            register functions or set ``row_factory``. If it raises, the connect fails.
    """

    lease_class: ClassVar[type[Lease[aiosqlite.Connection]]] = _SQLiteLease
    """What a pool lends: a guarded stand-in for the connection (see the module docstring)."""

    def __init__(
        self,
        database: str | os.PathLike[str],
        *,
        mode: str = "rwc",
        journal_mode: str = "wal",
        synchronous: str | None = None,
        busy_timeout: float = 5.0,
        foreign_keys: bool = True,
        transaction_mode: str = "immediate",
        init: _Init | None = None,
    ) -> None:
        path = os.fspath(database)
        if not isinstance(path, str):
            raise TypeError(f"database must be a path or {MEMORY!r}, got {database!r}")
        if not path:
            raise ValueError(f"database must be a file path or {MEMORY!r}, got an empty string")
        mode = _choice("mode", mode, _OPEN_MODES)
        journal_mode = _choice("journal_mode", journal_mode, _JOURNAL_MODES)
        if synchronous is not None:
            synchronous = _choice("synchronous", synchronous, _SYNCHRONOUS_LEVELS)
        if isinstance(busy_timeout, bool) or not isinstance(busy_timeout, int | float):
            raise TypeError(f"busy_timeout must be a number of seconds, got {busy_timeout!r}")
        if not 0 <= busy_timeout < math.inf:  # also rejects NaN
            raise ValueError(
                f"busy_timeout must be a finite number of seconds >= 0, got {busy_timeout!r}"
            )
        if not isinstance(foreign_keys, bool):
            raise TypeError(f"foreign_keys must be True or False, got {foreign_keys!r}")
        transaction_mode = _choice("transaction_mode", transaction_mode, _TRANSACTION_MODES)
        if init is not None and not callable(init):
            raise TypeError(f"init must be an async function taking a connection, got {init!r}")

        memory = path == MEMORY
        pragmas: list[tuple[str, str]] = []
        if memory:
            if mode != "rwc":
                raise ValueError(
                    f"mode={mode!r} does not apply to {MEMORY!r} (files only): leave mode out, "
                    "or open a file"
                )
            # A name of our own, starting with "/": memdb shares it within this process.
            uri = f"file:/aiodbpool-{uuid.uuid4().hex}?vfs=memdb"
        else:
            path = os.path.abspath(path)
            # Path.as_uri escapes "?", "#" and "%", which would otherwise end the path.
            uri = f"{Path(path).as_uri()}?mode={mode}"
            if mode != "ro":
                pragmas.append(("journal_mode", journal_mode))
                if synchronous is None and journal_mode == "wal":
                    synchronous = "normal"
                if synchronous is not None:
                    pragmas.append(("synchronous", synchronous))
        pragmas.append(("foreign_keys", "on" if foreign_keys else "off"))
        self._memory: Final = memory
        self._database: Final = path
        self._mode: Final = mode
        self._settings: Final = _Settings(uri, float(busy_timeout), tuple(pragmas))
        self._begin: Final = f"BEGIN {transaction_mode.upper()}"
        self._init: Final = init

        # The sqlite3 connection under each aiosqlite connection this driver opened, for
        # interrupting it. Weak keys: a connection the pool forgot does not stay alive here.
        self._raw: weakref.WeakKeyDictionary[aiosqlite.Connection, sqlite3.Connection] = (
            weakref.WeakKeyDictionary()
        )
        # Connections whose statement was interrupted and which have not yet run a statement
        # since: until they do, a pending interrupt could fail their next user's statement.
        self._interrupted: weakref.WeakSet[aiosqlite.Connection] = weakref.WeakSet()
        # The connection that keeps the memory database alive, and the finalizer that closes it
        # when the driver is collected or aclose() is called (opened by the first connect).
        self._keepalive: weakref.finalize[[], SQLiteDriver] | None = None
        # One future per open still under way in a worker thread after its connect gave up,
        # resolved when it has closed what it opened; aclose() waits for them.
        self._opens_given_up: set[asyncio.Future[None]] = set()
        self._closed = False  # aclose() was called

    # -- the driver contract --------------------------------------------------------------------

    async def connect(self) -> aiosqlite.Connection:
        """Open a configured connection, then run ``init`` with it."""
        if self._closed:
            raise RuntimeError(
                f"{self!r} is closed: aclose() released its database; make a new SQLiteDriver"
            )
        if self._memory and self._keepalive is None:
            self._keep_memory_database()
        opener = _Opener(self._settings)
        try:
            # cancel: aiosqlite stops the thread once the open is over, and drops what it
            # opened; _give_up_open makes sure that is closed, whenever the open finishes.
            conn = await aiosqlite.Connection(opener, _ITER_CHUNK_SIZE)
        except BaseException:
            self._give_up_open(opener)
            raise
        assert opener.raw is not None
        self._raw[conn] = opener.raw
        if self._init is not None:
            try:
                await self._init(conn)
            except BaseException:
                self.terminate(conn)  # also on cancellation: the thread must not outlive us
                raise
        return conn

    async def close(self, conn: aiosqlite.Connection) -> None:
        """Close ``conn`` after the statements already queued on it.

        Built on ``conn.stop()`` rather than ``conn.close()``: when the pool's close timeout
        cancels ``conn.close()``, that method waits again for the worker thread in a ``finally``,
        so a stuck statement would hold the pool past its timeout. Cancelled here, the close
        simply stops waiting, and the pool terminates the connection.
        """
        if self.is_closed(conn):
            return
        stopped = conn.stop()  # never blocks: queues "close the connection, end the thread"
        assert stopped is not None  # a future of the running loop: None only outside any loop
        await stopped

    async def ping(self, conn: aiosqlite.Connection) -> None:
        """Run ``SELECT 1`` (one trip to the thread; the cursor is read to the end)."""
        await conn.execute_fetchall("SELECT 1")

    async def reset(self, conn: aiosqlite.Connection) -> None:
        """Make ``conn`` clean for its next user; returns without awaiting when it already is.

        Clean means: no transaction open, and no interrupt whose outcome is unknown (the pool
        calls ``interrupt`` first for a connection given back by a cancelled task). Otherwise the
        transaction is rolled back; the rollback is queued behind anything still running, so
        whatever that opens is undone too. A closed connection is left to ``is_closed``. The
        pool runs a reset that waits in a task of its own, so nothing here may depend on the
        task that released the connection.
        """
        dirty = _in_transaction(conn)
        if dirty is None:
            return  # closed: the pool asks is_closed next and discards it
        if not dirty and not (self._interrupted and conn in self._interrupted):
            return
        # Cancellation safety: if the reset is cancelled or times out here, the pool discards
        # the connection with terminate(); nothing is half-changed on the event loop's side.
        await self._settle(conn)

    def is_closed(self, conn: aiosqlite.Connection) -> bool:
        """Whether ``conn`` is closed; local: aiosqlite drops its sqlite3 connection on closing."""
        return _in_transaction(conn) is None

    def transaction_status(self, conn: aiosqlite.Connection) -> TransactionStatus:
        """``"in_transaction"`` between ``BEGIN`` and its end, else ``"idle"`` (SQLite has no
        failed-transaction state: a failed statement leaves its transaction usable)."""
        return "in_transaction" if _in_transaction(conn) else "idle"

    # -- optional abilities ---------------------------------------------------------------------

    def interrupt(self, conn: aiosqlite.Connection) -> None:
        """Stop the statement a cancelled borrower may have left running in ``conn``'s thread.

        The pool calls it when the task giving ``conn`` back is being cancelled: its statement
        (sent through the raw connection, or one whose cancellation the lease did not see) runs
        on in the thread otherwise. ``conn`` is then marked, so the ``reset`` that follows rolls
        back behind it and checks that the connection runs statements again.
        """
        self._interrupt(conn)

    def terminate(self, conn: aiosqlite.Connection) -> None:
        """Close ``conn`` at once: interrupt its running statement and stop its thread.

        Never blocks and never raises. Without the interrupt, a long query would keep running
        (and keep the process from exiting: aiosqlite's thread is not a daemon) until it ended.
        A wait for a lock is not interrupted by SQLite; it ends within ``busy_timeout``.
        """
        self._interrupt(conn)
        conn.stop()  # queues "close and end the thread" behind what runs; never blocks

    def transaction(
        self, conn: aiosqlite.Connection
    ) -> AbstractAsyncContextManager[aiosqlite.Connection]:
        """Run a block inside a transaction: ``BEGIN IMMEDIATE`` (see ``transaction_mode``),
        then ``COMMIT`` on success, or ``ROLLBACK`` when the block raises.

        If the block is cancelled, its running statement is interrupted and the transaction
        rolled back before the cancellation goes on. The block's exception is re-raised; a
        ``COMMIT`` that fails is rolled back and its error raised. If ``BEGIN`` itself fails
        (the write lock stayed taken past ``busy_timeout``: "database is locked"; or a
        transaction is already open), its error is raised and nothing is rolled back.
        """
        return self._transaction(conn)

    # -- the driver's own resources -------------------------------------------------------------

    async def aclose(self) -> None:
        """Release the in-memory database, and refuse to open connections from now on.

        A memory database lives while a connection to it is open; the driver keeps one open,
        outside the pool, so that the data survives the pool closing idle connections. It is
        released here, or when the driver is garbage-collected, or at interpreter exit. A pool
        made by ``create_pool`` (or with ``close_driver=True``) calls this when it closes; call
        it yourself, after closing the pool, for a driver you made. It first waits for the opens
        still under way in their threads after their connect gave up (``connect_timeout``), so no
        file handle outlives it (such an open gives up waiting for a lock within a fraction of a
        second). Safe to call twice.
        """
        self._closed = True
        loop = asyncio.get_running_loop()
        # Not those of another event loop, now closed: nothing would ever resolve them.
        given_up = {ended for ended in self._opens_given_up if ended.get_loop() is loop}
        try:
            if given_up:
                # cancel: only stops waiting; each open still closes what it opened.
                await asyncio.wait(given_up)
        finally:
            if self._keepalive is not None:
                self._keepalive()

    @property
    def database(self) -> str:
        """The absolute path of the database file, or ``":memory:"``."""
        return self._database

    @property
    def uri(self) -> str:
        """The URI SQLite opens; ``sqlite3.connect(driver.uri, uri=True)`` reaches the same
        database, including the memory one from elsewhere in this process."""
        return self._settings.uri

    def __repr__(self) -> str:
        text = f"<SQLiteDriver {self._database!r}"
        if self._mode != "rwc":
            text += f" mode={self._mode}"
        if self._closed:
            text += " closed"
        return text + ">"

    # -- internals ------------------------------------------------------------------------------

    def _keep_memory_database(self) -> None:
        """Open the connection that keeps the memory database alive; closed by ``aclose``.

        A plain sqlite3 connection that never runs a statement: it holds no lock, and opening
        or closing a memory database does no I/O, so this may run in the event loop's thread
        (and close from a finalizer, in any thread).
        """
        keepalive = sqlite3.connect(self._settings.uri, uri=True, check_same_thread=False)
        self._keepalive = weakref.finalize(self, keepalive.close)

    def _give_up_open(self, opener: _Opener) -> None:
        """Make sure what a failed or cancelled connect's thread opens is closed (``_Opener``),
        and let ``aclose`` wait for an open still under way."""
        ended = opener.abandon()
        if ended is not None:
            self._opens_given_up.add(ended)
            ended.add_done_callback(self._opens_given_up.discard)

    def _interrupt(self, conn: aiosqlite.Connection) -> None:
        """Abort the statement running in ``conn``'s thread, if any; never blocks or raises.

        ``sqlite3_interrupt`` does nothing when no statement runs, but while a cursor is left
        half-read the interrupt stays pending and fails the next statements too: so ``conn``
        is marked until ``_settle`` proves a statement runs again. A lent connection whose
        lease has ended is left alone: it may be another borrower's by now.
        """
        try:
            conn = raw_connection(conn)
        except ConnectionReleased:
            return
        self._interrupted.add(conn)
        raw = self._raw.get(conn)
        if raw is None:
            return  # not opened by this driver
        with suppress(sqlite3.ProgrammingError):  # the thread already closed it: nothing runs
            raw.interrupt()

    async def _settle(self, conn: aiosqlite.Connection) -> None:
        """Roll back ``conn``'s transaction, and clear the mark of an interrupt.

        The rollback is queued behind any statement still running or queued, so it also undoes
        a ``BEGIN`` that a cancelled task left behind. Raises if the connection cannot be used
        again; the pool then discards it.
        """
        await conn.rollback()
        raw = raw_connection(conn)
        if raw in self._interrupted:
            await self.ping(conn)  # fails while an interrupt is still pending
            self._interrupted.discard(raw)

    @asynccontextmanager
    async def _transaction(self, conn: aiosqlite.Connection) -> AsyncIterator[aiosqlite.Connection]:
        try:
            await conn.execute(self._begin)
        except BaseException as error:
            if not isinstance(error, Exception):
                # Cancelled while BEGIN was queued or waiting for the lock: it may still open a
                # transaction after this task moved on.
                await self._abandon(conn)
            raise  # an Exception: BEGIN failed, no transaction was opened by this block
        try:
            yield conn
            await conn.commit()
        except BaseException as error:
            if isinstance(error, Exception):
                await conn.rollback()
            else:
                await self._abandon(conn)
            raise

    async def _abandon(self, conn: aiosqlite.Connection) -> None:
        """Undo the work of a cancelled transaction block before the cancellation goes on.

        Its running statement is interrupted and the transaction rolled back. If that fails,
        the error is not raised in place of the cancellation: ``conn`` stays marked, so ``reset``
        tries again when it is released, and the pool discards it if that fails too.
        """
        self._interrupt(conn)
        with suppress(sqlite3.Error, ValueError, ConnectionReleased):
            await self._settle(conn)


def _choice(name: str, value: object, choices: tuple[str, ...]) -> str:
    """``value`` lower-cased if it is one of ``choices``, else an error naming the option."""
    if isinstance(value, str) and value.lower() in choices:
        return value.lower()
    raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def _in_transaction(conn: aiosqlite.Connection) -> bool | None:
    """``conn.in_transaction``, or None once ``conn`` is closed (aiosqlite then raises)."""
    try:
        return conn.in_transaction
    except (ValueError, sqlite3.ProgrammingError):
        return None


_FLAGS: Final = {"1": True, "true": True, "on": True, "yes": True}
_FLAGS.update({"0": False, "false": False, "off": False, "no": False})


def _flag(text: str) -> bool:
    """A boolean URL parameter: 1/0, true/false, on/off or yes/no."""
    try:
        return _FLAGS[text.lower()]
    except KeyError:
        raise ValueError(text) from None


_URL_PARAMETERS: Final[dict[str, Callable[[str], object]]] = {
    "mode": str,
    "journal_mode": str,
    "synchronous": str,
    "busy_timeout": float,
    "foreign_keys": _flag,
    "transaction_mode": str,
}
_DRIVER_OPTIONS: Final = (*_URL_PARAMETERS, "init")
_URL_VALUES: Final = {
    "busy_timeout": "a number of seconds, such as 5",
    "foreign_keys": "1/0, true/false, on/off or yes/no",
}
"""What the URL parameters that can fail to convert take, for their errors."""


def from_url(url: str, **options: Any) -> SQLiteDriver:
    """Make a ``SQLiteDriver`` from a ``sqlite://`` URL, the entry point of ``create_pool``.

    ``sqlite:///relative/app.db`` (relative to the current directory), ``sqlite:////abs/app.db``
    or ``sqlite:///:memory:``. Query parameters set options (``?mode=ro&busy_timeout=10``);
    keyword ``options`` (any ``SQLiteDriver`` option) override them. Raises ValueError for
    a malformed URL or parameter, TypeError for an unknown option, naming it.
    """
    parts = urlsplit(url)
    shown = redact_url(url)
    if parts.scheme != "sqlite":
        raise ValueError(f"not a sqlite:// URL: {shown!r}; expected {_URL_FORMS}")
    if parts.netloc:
        raise ValueError(
            f"sqlite URL {shown!r} names a host ({redact_url(parts.netloc)!r}), but SQLite opens "
            f"local files: use {_URL_FORMS}"
        )
    if parts.fragment:
        raise ValueError(
            f"sqlite URL {shown!r} has a #fragment: write a '#' in the file name as %23; "
            f"expected {_URL_FORMS}"
        )
    path = unquote(parts.path)
    if not path.startswith("/") or path == "/":
        raise ValueError(f"sqlite URL {shown!r} names no database; expected {_URL_FORMS}")
    params: dict[str, Any] = {}
    for name, text in parse_qsl(parts.query, keep_blank_values=True):
        convert = _URL_PARAMETERS.get(name)
        if convert is None:
            raise ValueError(
                f"unknown sqlite:// URL parameter {name!r}; known: {', '.join(_URL_PARAMETERS)}"
            )
        if name in params:
            raise ValueError(f"sqlite:// URL parameter {name!r} is given more than once: keep one")
        try:
            params[name] = convert(text)
        except ValueError:
            raise ValueError(
                f"sqlite:// URL parameter {name}={text!r} is not valid: give "
                f"{_URL_VALUES.get(name, 'another value')}"
            ) from None
    for name in options:
        if name not in _DRIVER_OPTIONS:
            raise TypeError(
                f"unknown option {name!r} for a sqlite:// pool: it is neither an option of "
                f"aiodbpool.Pool nor of the SQLite driver ({', '.join(_DRIVER_OPTIONS)})"
            )
    params.update(options)
    return SQLiteDriver(path[1:], **params)
