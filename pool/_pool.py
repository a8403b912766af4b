"""The pool: its public API, and the acquire and release paths that make it a pool.

How to read this module
-----------------------
Start with ``_books.py``: every connection the pool knows of is a ``Record`` filed in the
*books* (``Pool._books``) -- idle, in use (and lent, by the handle its borrower holds), or a slot
counted as opening or closing -- and the acquirers waiting for one stand in line there. The
books' size *is* the semaphore: a slot is reserved before a connect starts and given back when
the connection is closed. Each change of the books is a named synchronous step of ``Books``.

This module is the one that awaits. Acquire then release read from top to bottom below, from
``_Acquire`` (what ``pool.acquire()`` returns) to ``_grow`` (new connections for the line):
each step is an await -- a ping, a reset, a wait in line -- plus one named change of the books,
so no other task can observe a half-made change. Every await says in a ``# cancel:`` comment
what a cancellation there leaves behind. Then come open, close, resize, expire, detach, stats
and repr; then the steps the other modules call, and the checks.

The fast path (``Pool._take_idle``, and a release whose ``reset`` does no I/O) runs without
suspending, without creating tasks and without locks; its one allocation is the lease (see
``lease.py``): with a driver that supports them, the caller gets a fresh ``Lease`` standing in
for the connection, and the books know the lease, not the connection, so a release through a
handle that is not the current lease changes nothing. Everything that waits -- connecting,
pinging, resetting a dirty connection, waiting in line -- is the slow path.

Five jobs live in modules of their own: the books (``_books.py``); when a connect may start
while connects fail (the circuit breaker, the backoff and the probe: ``_breaker.py``, held as
``Pool._breaker``); capturing and printing where a connection was acquired, for leak reports
(``_leaks.py``); the connections themselves -- connect, close and terminate with their timeouts,
the background tasks, the adoption of orphaned connects, the forced end of ``close()``
(``_connections.py``); and the background maintenance, its loop and its round (evict, retire,
refill, report leaks: ``_maintenance.py``). The options are checked once, into one frozen
``PoolOptions`` (``_options.py``). docs/how-it-works.md draws the states and lists the order in
which to read all of them.
"""

from __future__ import annotations

import asyncio
import enum
import gc
import logging
import math
import os
import random
import warnings
import weakref
from _thread import get_ident
from collections.abc import Awaitable, Callable, Coroutine, Generator, Iterable, Sequence
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Generic, Literal, Protocol, TypeVar

from . import _connections, _options, events
from ._books import GROWTH_AT_ONCE, Books, Record, Removal
from ._breaker import Backoff, Breaker
from ._calls import begin, call_with_timeout, describe
from ._clock import Clock
from ._leaks import capture_stack, where_acquired
from ._maintenance import one_round, run_maintenance
from ._options import PoolOptions
from .driver import Driver, SupportsAclose, SupportsInterrupt, SupportsTransactionStatus
from .errors import PoolClosed, PoolConnectError, PoolError, PoolExhausted, PoolTimeout
from .histogram import _Recorder
from .lease import Lease, raw_connection
from .stats import Counters, PoolStats

__all__ = ["Pool"]

C = TypeVar("C")

logger = logging.getLogger("aiodbpool")

LIFETIME_JITTER: Final = 0.1
"""Each connection's lifetime is shortened by a random fraction up to this, so connections opened
together do not all retire (and reconnect) at the same moment."""

_POOL_FRAMES_ON_ACQUIRE: Final = 3
"""The pool's own frames between ``_hand_out``'s capture of the acquiring stack (for
``leak_timeout``) and the code that acquired: ``_hand_out``, ``_take_idle`` or
``_acquire_slowly``, and ``_Acquire.__await__``. Leak reports leave them out."""


class _RunsStatements(Protocol):
    """A connection with asyncpg's statement methods, which the pool's one-line statements
    (``pool.fetchval(...)`` and the like) run."""

    @property
    def execute(self) -> Callable[..., Awaitable[Any]]: ...
    @property
    def executemany(self) -> Callable[..., Awaitable[Any]]: ...
    @property
    def fetch(self) -> Callable[..., Awaitable[Any]]: ...
    @property
    def fetchrow(self) -> Callable[..., Awaitable[Any]]: ...
    @property
    def fetchval(self) -> Callable[..., Awaitable[Any]]: ...


_S = TypeVar("_S", bound=_RunsStatements)
"""A connection type with asyncpg's statement methods (for ``self`` of the one-liners: ``Pool``
is invariant in its connection type, so the bound is what lets ``Pool[asyncpg.Connection]``
in)."""


class _State(enum.Enum):
    """The pool's own life: new -> open -> closing -> closed (docs/how-it-works.md draws it)."""

    NEW = "new"  # constructed, not opened yet
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


class _Acquire(Generic[C]):
    """What ``pool.acquire()`` returns: awaitable, and an async context manager.

    ``await pool.acquire()`` runs ``__await__``. ``async with pool.acquire() as conn`` awaits
    the object returned by ``__aenter__`` -- this same object -- and releases on exit. When an
    idle connection is ready, ``__await__`` returns it without ever suspending: no task, no
    future, no lock (``Pool._take_idle``); otherwise it waits (``Pool._acquire_slowly``).
    """

    __slots__ = ("_awaited", "_conn", "_pool", "_timeout")

    def __init__(self, pool: Pool[C], timeout: float | None) -> None:
        self._pool = pool
        self._timeout = timeout
        # One object, one connection: entered twice, the first exit would release the
        # connection the second user still holds (and the pool lend it to a third).
        self._awaited = False

    def __await__(self) -> Generator[Any, None, C]:
        if self._awaited:
            raise RuntimeError(
                "this pool.acquire() was already awaited or entered: call pool.acquire() "
                "once for each connection"
            )
        self._awaited = True
        conn = self._pool._take_idle()
        if conn is None:
            conn = yield from self._pool._acquire_slowly(self._timeout).__await__()
        self._conn = conn
        return conn

    if TYPE_CHECKING:
        # What type checkers see: the async context manager protocol as typeshed spells it, so
        # pool.acquire() fits AbstractAsyncContextManager[C] (AsyncExitStack, helpers typed
        # with it). At run time neither makes a coroutine on the fast path: __aenter__ returns
        # this object, whose await gives the same C, and __aexit__ releases at once and returns
        # a future already done, whose await never suspends.
        async def __aenter__(self) -> C: ...

        async def __aexit__(
            self,
            exc_type: type[BaseException] | None,
            exc: BaseException | None,
            tb: TracebackType | None,
        ) -> None: ...

    else:

        def __aenter__(self):
            return self

        def __aexit__(self, exc_type, exc, tb):
            # Pool.release without its coroutine (see Pool._release_now).
            pool = self._pool
            finishing = pool._release_now(self._conn)
            return pool._released if finishing is None else finishing


class Pool(Generic[C]):
    """An asyncio pool of database connections, generic in the driver's connection type ``C``.

    Open it with ``async with pool:`` (or ``await pool.open()`` and ``await pool.close()``), then
    borrow connections with ``async with pool.acquire() as conn:``. A connection obtained with
    ``conn = await pool.acquire()`` must be given back with ``await pool.release(conn)``.

    Sizes: at most ``max_size`` connections exist at once (open, opening or closing); the pool
    keeps at least ``min_size`` open, refilling in the background. Durations are in seconds; where
    ``None`` is allowed it means "no limit" or "never".

    Args:
        driver: Opens, checks, cleans and closes connections (see ``aiodbpool.Driver``).
        name: Shown in ``repr``, logs, stats and errors.
        min_size: Connections kept open even when idle.
        max_size: Upper bound on connections.
        acquire_timeout: Default limit for one ``acquire`` (waiting, validating and connecting
            together). ``None``: wait as long as it takes.
        max_waiting: Acquirers allowed to queue; one more fails at once with ``PoolExhausted``.
        max_idle: Idle connections above ``min_size`` are closed after this long unused.
        max_lifetime: Connections are retired after this age (minus up to 10% random spread).
        max_uses: Connections are retired after this many acquisitions.
        validate_after_idle: A connection idle at least this long is pinged before it is handed
            out. ``0``: always; ``None``: never.
        connect_timeout: Limit for opening one connection.
        ping_timeout: Limit for one validation ping.
        reset_timeout: Limit for cleaning a returned connection; on timeout it is discarded.
        close_timeout: Limit for closing one connection politely; then it is terminated.
        leak_timeout: Log a warning, with the stack that acquired it, for a connection held longer.
        maintenance_interval: How often the background job looks at idle connections; at least
            0.01 (10 ms), enough for tests, where a shorter period would only burn CPU.
        backoff_initial: First delay before retrying after a failed connect (background refills
            and circuit-breaker probes).
        backoff_max: Longest delay between those attempts.
        breaker_threshold: Consecutive failed connects that open the circuit breaker: then an
            acquirer that needs a new connection fails at once with ``PoolConnectError``, and one
            probe at a time, spaced by the backoff, tests the database until a connect succeeds.
            Idle connections are still handed out. ``None`` turns the breaker off.
        clock: Zero-argument callable returning monotonic seconds; tests inject a manual clock.
            It is called once when the pool is built, so a wrong one fails there.
        close_driver: When the pool closes, also release the driver's own resources
            (``await driver.aclose()``, for a driver that has it, such as SQLite's shared
            in-memory database). ``create_pool`` sets it: the driver it makes belongs to the pool.
        setup: ``async def setup(conn)``, run on every lend with what the borrower gets, before
            ``acquire()`` returns it (asyncpg's ``setup``): to set a session variable per
            request, say. It runs within the acquire's timeout; if it raises, the connection is
            discarded and the error goes to the acquirer. A pool with a setup has no fast path:
            every lend awaits it.
        check: ``async def check(conn)``, which raises if the driver's connection is not fit to
            lend, run instead of the driver's ``ping`` whenever a connection is validated (see
            ``validate_after_idle``; ``0`` checks every lend, as psycopg_pool's ``check``
            does). A connection that fails it is discarded, and another one tried.
        reconnect_timeout: How long connects may fail in a row, with no success, before
            ``reconnect_failed`` is told.
        reconnect_failed: ``reconnect_failed(pool)``, called once per outage, from the
            background job, when connects have failed for ``reconnect_timeout`` seconds
            (psycopg_pool's): to alert, or to stop a process that cannot work. An error in it
            is logged; it must not block.
    """

    def __init__(
        self,
        driver: Driver[C],
        *,
        name: str = "default",
        min_size: int = 0,
        max_size: int = 10,
        acquire_timeout: float | None = 30.0,
        max_waiting: int | None = None,
        max_idle: float | None = 600.0,
        max_lifetime: float | None = 3600.0,
        max_uses: int | None = None,
        validate_after_idle: float | None = 1.0,
        connect_timeout: float | None = 10.0,
        ping_timeout: float | None = 5.0,
        reset_timeout: float | None = 5.0,
        close_timeout: float | None = 5.0,
        leak_timeout: float | None = None,
        maintenance_interval: float = 1.0,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        breaker_threshold: int | None = 5,
        clock: Clock | None = None,
        close_driver: bool = False,
        setup: Callable[[C], Awaitable[None]] | None = None,
        check: Callable[[C], Coroutine[Any, Any, None]] | None = None,
        reconnect_timeout: float = 300.0,
        reconnect_failed: Callable[[Pool[C]], None] | None = None,
    ) -> None:
        options = PoolOptions.check(
            driver,
            name=name,
            min_size=min_size,
            max_size=max_size,
            acquire_timeout=acquire_timeout,
            max_waiting=max_waiting,
            max_idle=max_idle,
            max_lifetime=max_lifetime,
            max_uses=max_uses,
            validate_after_idle=validate_after_idle,
            connect_timeout=connect_timeout,
            ping_timeout=ping_timeout,
            reset_timeout=reset_timeout,
            close_timeout=close_timeout,
            leak_timeout=leak_timeout,
            maintenance_interval=maintenance_interval,
            backoff_initial=backoff_initial,
            backoff_max=backoff_max,
            breaker_threshold=breaker_threshold,
            clock=clock,
            close_driver=close_driver,
            setup=setup,
            check=check,
            reconnect_timeout=reconnect_timeout,
            reconnect_failed=reconnect_failed,
        )

        # Configuration, fixed for the pool's life: the checked options, in one frozen object.
        self._options: Final = options
        self._driver: Final = driver
        # Copies of options, read as one attribute lookup rather than two: the name, in every
        # message and log line; the rest, on the fast path of acquire and release.
        self._name: Final = options.name
        self._clock: Final = options.clock
        self._validate_after_idle: Final = options.validate_after_idle
        # How long an idle connection may have waited to be lent on the fast path: as long as it
        # needs no validation, unless there is a setup hook to await (then never: -inf).
        self._fast_within: Final = (
            options.validate_after_idle if options.setup is None else -math.inf
        )
        self._setup: Final = options.setup
        self._check_hook: Final = options.connection_check  # None: validate with the ping
        self._max_uses: Final = options.max_uses
        self._leak_timeout: Final = options.leak_timeout
        self._rng = random.Random()
        # Looked up once: optional driver abilities (see aiodbpool.SupportsTerminate).
        self._terminate = getattr(driver, "terminate", None)
        self._interrupt = driver.interrupt if isinstance(driver, SupportsInterrupt) else None
        self._is_closed = driver.is_closed
        self._lease_class = _lease_class_of(driver)
        self._transaction_status = (
            driver.transaction_status if isinstance(driver, SupportsTransactionStatus) else None
        )

        # Mutable state. The books -- every connection, every slot, every waiter -- change only
        # through their own named steps (_books.py); the rest through the methods below.
        self._books: Final[Books[C]] = Books(options.min_size, options.max_size)
        self._state = _State.NEW
        self._counters = Counters()
        # Durations per bucket, for stats() and metrics. Acquires on the fast path wait no
        # time and are not recorded one by one: stats() adds them to the first wait bucket.
        self._create_time = _Recorder()  # successful connects
        self._wait_time = _Recorder()  # acquires that took the slow path
        self._use_time = _Recorder()  # from hand-out to release
        # Connects failed in a row, the circuit breaker they open, the backoff that spaces the
        # background's attempts, and the one probe at a time while connects fail.
        self._breaker = Breaker(
            options.breaker_threshold,
            Backoff(options.backoff_initial, options.backoff_max, self._rng),
        )
        self._tasks: set[asyncio.Task[Any]] = set()  # background connects and closes
        self._maintenance_task: asyncio.Task[None] | None = None
        self._wakeup: asyncio.Event | None = None  # pokes the maintenance job
        self._drained: asyncio.Event | None = None  # set when a closing pool holds nothing
        self._closed_event: asyncio.Event | None = None  # set when close() has finished
        self._close_requested = False  # close() was called: a failing open() must not undo it
        self._opened: asyncio.Future[None] | None = None  # done when the last open() finished
        self._loop: asyncio.AbstractEventLoop | None = None
        # What `async with pool.acquire()` awaits at its exit once the release is done: a
        # future already done, made when the pool opens (awaiting one never suspends, and costs
        # less than any coroutine); until then, an awaitable that does nothing.
        self._released: Awaitable[None] = _NothingToAwait()
        # The thread running that loop, and its is_running(). The fast paths check both, which
        # costs far less than asyncio.get_running_loop(): a thread runs one loop at a time, so
        # if the pool's loop is running and this is its thread, the running loop is the pool's.
        # (Two loops in one thread, one after the other -- asyncio.run() twice, a test
        # framework's loop per test -- fail the second check.) Either failing sends the call to
        # the slow path, which checks the loop itself and explains. In a forked child the
        # thread is cleared (_after_fork_in_child), since the child's thread id is the same.
        self._thread: int | None = None
        self._loop_running: Callable[[], bool] = _never
        self._pid = os.getpid()  # the process that opened the pool (set again by open())
        # Who is told of each event (see add_listener); a tuple, replaced whole on each change,
        # so that a listener may add or remove listeners while it is being called.
        self._listeners: tuple[events.Listener, ...] = ()
        self._failed_listeners: list[events.Listener] = []  # each has been logged once
        # The callback of every lease's weak reference; it holds the pool weakly too.
        self._on_lease_collected = _lease_collector(weakref.ref(self))
        _POOLS.add(self)

    # ------------------------------------------------------------------ acquiring

    def acquire(self, timeout: float | None = None) -> _Acquire[C]:
        """Borrow a connection: ``async with pool.acquire() as conn:`` or ``await pool.acquire()``.

        Waits at most ``timeout`` seconds (``None``: the pool's ``acquire_timeout``) for waiting in
        line, validating and connecting together, then raises ``PoolTimeout``. Raises
        ``PoolConnectError`` at once if a new connection was needed and could not be opened,
        ``PoolExhausted`` if ``max_waiting`` acquirers already wait, and ``PoolClosed``
        if the pool is not open. After ``await pool.acquire()`` you must ``await pool.release()``.
        """
        if timeout is not None:
            _options.check_seconds("timeout", timeout, allow_zero=True)
        return _Acquire(self, timeout)

    def _take_idle(self) -> C | None:
        """The fast path: hand out the most recently released idle connection if it is ready.

        Returns None when the slow path must run: no idle connection, or the top one needs a
        ping, is too old, or is closed. A non-empty ``idle`` implies an empty line of waiters
        (releases serve waiters first), so taking one here never jumps the line.
        """
        idle = self._books.idle
        if not idle:
            return None
        record = idle[-1]
        now = self._clock()
        try:
            unfit = (
                now - record.released_at >= self._fast_within
                or now >= record.retire_at
                or self._is_closed(record.conn)
                or get_ident() != self._thread  # another loop: the slow path explains
                or not self._loop_running()
            )
        except Exception:  # the driver's is_closed() failed: the slow path discards it
            return None
        if unfit:
            return None
        # (Positional arguments: a keyword costs more than the books' step it selects.)
        return self._hand_out(record, now, True)  # taken off idle in the same step

    async def _acquire_slowly(self, timeout: float | None) -> C:
        """The slow path: wait in line, validate or connect, all within one deadline."""
        self._check_open()
        self._check_loop()
        limit = self._options.acquire_timeout if timeout is None else timeout
        started = self._clock()
        deadline = asyncio.timeout(limit)
        try:
            # cancel: none: entering and leaving a timeout never suspend
            async with deadline:
                # cancel: _obtain gives back, or discards, what it took for this caller
                record = await self._obtain()
                now = self._clock()
                if self._state is not _State.OPEN:
                    # The pool closed while this acquirer was connecting: the connection goes
                    # back (and is closed), the caller gets the same error as any acquirer of a
                    # closed pool.
                    self._return_to_pool(record, now)
                    self._check_open()
                waited = now - started
                self._counters.count_wait(waited)
                self._wait_time.record(waited)
                conn = self._hand_out(record, now, wait=waited)
                if self._setup is not None:
                    # cancel: the lend ends and the connection is discarded (_set_up)
                    await self._set_up(conn)
        except TimeoutError:
            if not deadline.expired():
                raise
            self._counters.timeouts += 1
            if self._listeners:
                self._emit(events.TimedOut(self._name, self._clock() - started))
            books = self._books
            raise PoolTimeout(
                f"pool {self._name!r} could not provide a connection within {limit:g}s "
                f"(size={books.size()}, max_size={books.max_size}, "
                f"waiting={len(books.waiters)}): raise max_size if the database allows more "
                "connections, release connections sooner, or pass a longer timeout "
                "(acquire(timeout=...) or the pool's acquire_timeout)",
                pool_name=self._name,
            ) from None
        return conn

    async def _set_up(self, conn: C) -> None:
        """Run the ``setup`` hook on a connection just lent. If it fails or is cancelled (the
        acquire's deadline, or the caller), the lend ends and the connection is discarded: the
        hook may have left it anywhere."""
        assert self._setup is not None
        try:
            await self._setup(conn)  # cancel: the lend ends, the connection is discarded
        except BaseException:
            record = self._books.end_lend(id(conn))
            if record is not None:  # (else close() ended it meanwhile)
                if self._lease_class is not None:
                    lease: Lease[Any] = conn  # type: ignore[assignment]  # what _hand_out lent
                    leftover = lease._end("released")
                    if leftover is not None:
                        leftover.close()  # the connection is discarded: nothing to wait for
                self._unbook_and_close(record, "discarded", hard=True)
            raise

    async def _obtain(self) -> Record[C]:
        """Get a usable connection record, already booked in use."""
        books = self._books
        had_its_turn = False
        while True:
            self._check_open()
            if books.idle:
                record = books.take_top_idle()
                # cancel: the connection being validated is discarded
                if await self._validate_or_discard(record):
                    return record
                # The connection was discarded; if this acquirer has to wait now, it waits at
                # the head of the line, ahead of acquirers that arrived while it validated.
                had_its_turn = True
                continue
            breaker = self._breaker
            if (
                books.has_room()
                and breaker.is_open()
                and not breaker.may_probe_for_waiters(self._clock())
            ):
                raise self._breaker_error()  # a new connection is needed, and none may open
            max_waiting = self._options.max_waiting
            if max_waiting is not None and books.queued_beyond_room() >= max_waiting:
                self._counters.exhausted += 1
                if self._listeners:
                    self._emit(events.Exhausted(self._name, len(books.waiters)))
                raise PoolExhausted(
                    f"pool {self._name!r} already has {len(books.waiters)} acquirers waiting "
                    f"(max_waiting={max_waiting}): raise max_waiting or max_size, or shed load "
                    "before acquiring (the FastAPI integration answers 503)",
                    pool_name=self._name,
                )
            # Wait in line for whichever comes first: a returned connection, or a new one that
            # _grow opens for the line (an acquirer that had its turn goes back to the head).
            ticket = books.join_line(first=had_its_turn)
            self._grow()
            # cancel: Waiters.take hands back a connection that arrived too late; a connect
            # under way goes on, and its connection serves the next waiter or joins the pool.
            return await books.waiters.take(ticket, self._give_back)  # fresh: no ping needed

    async def _validate_or_discard(self, record: Record[C], *, always: bool = False) -> bool:
        """Check an idle connection taken by the slow path (or by ``check()``, which validates
        ``always``): return True if it may be lent, or discard it (unbook and close it) and
        return False."""
        now = self._clock()
        if self._known_closed(record.conn):
            self._unbook_and_close(record, "discarded")
            return False
        if now >= record.retire_at:
            self._unbook_and_close(record, "evicted_lifetime")
            return False
        if not always and now - record.released_at < self._validate_after_idle:
            return True
        validate = self._driver.ping if self._check_hook is None else self._check_hook
        try:
            # cancel: a ping interrupted by the deadline or the caller leaves the connection in
            # an unknown state, so it is discarded like a failed one.
            await call_with_timeout(validate(record.conn), self._options.ping_timeout)
        except BaseException as error:
            self._counters.validation_failures += 1
            self._unbook_and_close(record, "discarded", hard=True)
            if not isinstance(error, Exception):
                raise
            logger.info(
                "pool %r: idle connection failed its ping and was discarded: %s",
                self._name,
                describe(error),
            )
            return False
        if self._clock() >= record.retire_at:
            # The ping took so long that the connection's lifetime ended meanwhile.
            self._unbook_and_close(record, "evicted_lifetime")
            return False
        return True

    def _hand_out(self, record: Record[C], now: float, idle: bool = False, wait: float = 0.0) -> C:
        """Lend a record to a caller: the top idle one (``idle``, the fast path), or one booked
        in use, which took the acquire ``wait`` seconds. Under a new lease, if the driver has
        them (the caller's type checker sees the driver's connection type all the same)."""
        lease_class = self._lease_class
        held: object
        if lease_class is None:
            handle: object = record.conn
            held = handle
        else:
            handle = lease_class(record.conn, self)
            # Held weakly: a lease whose holder drops it without a release is collected, and
            # the callback gives its slot back (_lease_collected).
            held = weakref.ref(handle, self._on_lease_collected)
        if idle:
            self._books.lend_idle(record, id(handle), held, now)
        else:
            self._books.lend(record, id(handle), held, now)
        counters = self._counters
        counters.acquired += 1
        record.lend = counters.acquired
        if self._leak_timeout is not None:
            record.acquired_stack = capture_stack(_POOL_FRAMES_ON_ACQUIRE)
            record.leak_reported = False
        if self._listeners:
            self._emit(events.Acquired(self._name, record.lend, wait))
        return handle  # type: ignore[return-value]  # a Lease[C] stands in for a C

    def _give_back(self, record: Record[C]) -> None:
        """Return a connection that its acquirer can no longer use (it timed out or was
        cancelled just after the hand-off)."""
        self._return_to_pool(record, self._clock())

    # ------------------------------------------------------------------ releasing

    async def release(self, conn: C) -> None:
        """Give a connection back. It is reset (its transaction rolled back) before reuse.

        The lease ends at once: ``conn`` refuses any further use. If the reset fails or times
        out, the connection is discarded instead. Releasing a connection this pool did not hand
        out, or one already given back (a second release, or a handle kept from an earlier
        acquire), raises ``ValueError`` and changes nothing. (With a driver that has no leases,
        the pool can tell a stale handle only while its connection is not lent again.)
        """
        finishing = self._release_now(conn)
        if finishing is not None:
            # cancel: the releasing task stops waiting; the reset goes on and returns the
            # connection (it runs in a task of the pool's own, shielded)
            await finishing

    def _release_now(self, conn: C) -> asyncio.Future[None] | None:
        """All of ``release`` that does not wait: end the lend, reset the connection and return
        it to the pool. Return None when that is done -- a clean reset, the fast path -- or what
        to await when the reset waits on the server: it then goes on in a task of the pool's own.
        ``_Acquire.__aexit__`` calls this directly, so the fast path creates no coroutine."""
        books = self._books
        if (get_ident() != self._thread or not self._loop_running()) and id(conn) in books.lent:
            # (A handle not lent out is refused below, whatever the loop.)
            self._refuse_release_from_elsewhere(conn)
        record = books.end_lend(id(conn))
        if record is None:
            if self._terminated_while_lent(conn):
                return None  # close() already terminated it
            raise self._refused_handle(conn, "release")
        # What the borrower left behind (statements still running, listeners): usually None.
        leftover = None
        if self._lease_class is not None:
            lease: Lease[Any] = conn  # type: ignore[assignment]  # what _hand_out lent
            leftover = lease._end("released")
        raw = record.conn
        now = self._clock()
        held = now - record.acquired_at
        self._use_time.record(held)
        if self._listeners:
            self._emit(events.Released(self._name, record.lend, held))
        unfinished: Awaitable[None] | None
        try:
            if self._interrupt is not None and _being_cancelled():
                # The borrower was cancelled, maybe while a statement of its own still runs.
                self._interrupt(raw)
            if leftover is None:
                unfinished = begin(self._driver.reset(raw))
            else:
                unfinished = self._settle_then_reset(leftover, raw)
        except BaseException as error:
            self._reset_failed(record, error)
            if not isinstance(error, Exception):
                raise
            return None
        if unfinished is None:
            self._return_to_pool(record, now)  # nothing awaited since end_lend: still booked
            return None
        # The connection was dirty and the reset waits on the server. It goes on in a task of
        # the pool's own, so that it completes (within reset_timeout) even when the releasing
        # task is cancelled -- which under anyio, as in FastAPI and Starlette, means every await
        # left in a cancelled scope: awaited directly, the rollback would be cancelled too, and
        # every cancelled borrower's connection thrown away. The releaser awaits it shielded.
        finishing = _connections.spawn(self, self._finish_reset(record, unfinished, now), "reset")
        return asyncio.shield(finishing)

    async def _finish_reset(
        self, record: Record[C], unfinished: Awaitable[None], started: float
    ) -> None:
        """Await the rest of a reset begun at ``started`` within ``reset_timeout``, then pool the
        connection or, if the reset failed, discard it. Never raises: it runs as a task nobody
        else awaits."""
        try:
            # cancel: none: entering and leaving a timeout never suspend
            async with asyncio.timeout(self._options.reset_timeout):
                # cancel: only close() cancels this task; the connection is discarded
                await unfinished
        except BaseException as error:
            if self._listeners:
                self._emit(events.Reset(self._name, self._clock() - started, ok=False))
            self._reset_failed(record, error)
            if not isinstance(error, (Exception, asyncio.CancelledError)):
                raise
            return
        if self._listeners:
            self._emit(events.Reset(self._name, self._clock() - started, ok=True))
        if self._books.still_booked(record):  # (close() may have terminated it meanwhile)
            self._return_to_pool(record, self._clock())  # idle from now: the reset took time

    async def _settle_then_reset(self, leftover: Coroutine[Any, Any, None], conn: C) -> None:
        """Finish what a borrower left behind on ``conn``, then reset it."""
        # cancel: only reset_timeout or close() cancel this task (the releasing task's own
        # cancellation does not reach it); the pool discards the connection.
        await leftover
        await self._driver.reset(conn)  # cancel: the same

    def _reset_failed(self, record: Record[C], error: BaseException) -> None:
        """A reset raised, timed out or was cancelled: the connection must not be reused.

        A connection the server or the network closed while it was lent fails its reset too;
        that is expected after an outage, so it is logged at INFO rather than as a warning.
        """
        closed = self._known_closed(record.conn)
        self._unbook_and_close(record, "discarded", hard=True)
        if not isinstance(error, Exception):
            return
        if closed:
            logger.info(
                "pool %r: connection came back closed, discarded: %s", self._name, describe(error)
            )
        else:
            logger.warning(
                "pool %r: reset failed, connection discarded: %s", self._name, describe(error)
            )

    def _return_to_pool(self, record: Record[C], now: float) -> None:
        """A connection booked in use is available again: give it to a waiter, or park it idle.

        It is closed instead if it must not be reused: the pool is closing, it reached its
        lifetime or use count (``expire()`` marks connections by setting their ``retire_at`` to
        minus infinity), the driver says it is closed, or ``resize()`` shrank the pool below
        its size.
        """
        books = self._books
        try:
            retire = (
                self._state is not _State.OPEN
                or now >= record.retire_at
                or record.uses >= self._max_uses
                or self._is_closed(record.conn)
                or (books.shrinking and books.still_shrinking())
            )
        except Exception:  # the driver's is_closed() failed: costs nothing until it does
            retire = True
        if retire:
            self._retire(record)
            return
        books.hand_over_or_park(record, now)

    def _retire(self, record: Record[C]) -> None:
        """Close a returning connection that must not be reused, counting why."""
        reason: Removal
        if self._state is not _State.OPEN:
            reason = "closed"
        elif self._known_closed(record.conn):
            reason = "discarded"
        else:
            reason = "evicted_lifetime"
        self._unbook_and_close(record, reason)

    # ------------------------------------------------------------------ letting go, growing

    def _unbook_and_close(self, record: Record[C], reason: Removal, *, hard: bool = False) -> None:
        """Take a record booked in use off the books and close its connection
        (``_close_unbooked``), then let the room it frees be used.

        If ``close()`` gave up waiting and already terminated it (while it was being validated,
        reset or handed to a waiter), there is nothing left to do (``Books.unbook``).
        """
        if self._books.unbook(record):
            self._close_unbooked(record, reason, hard=hard)
            self._use_free_room()

    def _close_unbooked(self, record: Record[C], reason: Removal, *, hard: bool = False) -> None:
        """Close a connection already taken off the books, counting why.

        A polite close runs in the background and keeps the slot (``closing``) until it ends.
        ``hard`` is for connections in an unknown state (a failed reset or ping): they are
        terminated at once if the driver can, rather than closed politely, which frees the slot
        at once; the caller then lets it be used (``_use_free_room``).
        """
        self._count_removal(reason)
        if hard and self._terminate is not None:
            _connections.terminate_quietly(self, record.conn)
            self._count_closed()
            return
        _connections.close_in_background(self, record.conn)

    def _count_removal(self, reason: Removal) -> None:
        """Count a connection the pool lets go, under its reason, and report it."""
        self._counters.count_removal(reason)
        if self._listeners:
            self._emit(events.Removed(self._name, reason))

    def _count_closed(self) -> None:
        """Count a connection closed (politely or terminated), and report it."""
        self._counters.closed += 1
        if self._listeners:
            self._emit(events.Closed(self._name))

    def _use_free_room(self) -> None:
        """Let room the pool may have now be used: after it lost a connection or a slot, or its
        bounds changed (``resize`` grows it too). Opens connections for the waiters (``_grow``)
        and asks the maintenance job to refill below ``min_size``; a closing pool that holds
        nothing any more wakes ``close()``."""
        books = self._books
        if self._state is _State.OPEN:
            self._grow()
            if books.size() < books.min_size and self._wakeup is not None:
                self._wakeup.set()
        elif self._state is _State.CLOSING and self._drained is not None and not books.size():
            self._drained.set()

    def _grow(self) -> None:
        """Open connections in the background for waiters that the connects under way will not
        serve, at most ``GROWTH_AT_ONCE`` at a time and within ``max_size``.

        A waiter takes whichever connection comes first, a returned one or a new one, so a burst
        of short uses served by returning connections opens few new ones; the new ones that
        arrive after the burst join the pool (and ``max_idle`` closes them if they stay unused).
        While the circuit breaker is open, only a probe may connect: a waiter that could only be
        served by a new connection fails at once instead.
        """
        books = self._books
        while self._state is _State.OPEN and books.waiters_unserved():
            breaker = self._breaker
            probe = breaker.is_open()
            if probe:
                if not breaker.may_probe_for_waiters(self._clock()):
                    books.fail_oldest_waiter(self._breaker_error())
                    continue
                breaker.claim_probe_for_waiters()
            elif books.opening >= GROWTH_AT_ONCE:
                return
            books.reserve_slots()
            _connections.spawn(self, self._grow_one(probe=probe), "connect")

    async def _grow_one(self, *, probe: bool) -> None:
        """One connect of ``_grow``: its connection goes to the oldest waiter, or joins the pool."""
        try:
            # cancel: only close() cancels it; connect() frees the slot
            record = await _connections.connect(self, probe=probe, demand=True)
        except PoolConnectError:
            return  # the oldest waiter got the error (and the log is the acquirer's to write)
        # Straight to the oldest waiter, as it is: new, so not to be checked again, and to be
        # used once even if expire() or a resize() down marked it for retirement meanwhile.
        if not (self._state is _State.OPEN and self._books.hand_over(record)):
            self._return_to_pool(record, self._clock())
        self._grow()  # the demand may have outgrown the connects still under way

    # ------------------------------------------------------------------ life cycle

    async def __aenter__(self) -> Pool[C]:
        await self.open()  # cancel: open() undoes itself; the pool stays unopened
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()  # cancel: the pool closes all the same, ending what is left by force

    async def open(self, wait: bool = True, timeout: float | None = None) -> None:
        """Open the pool and its ``min_size`` connections.

        With ``wait=True`` (the default) this returns once ``min_size`` connections are open, and
        raises ``PoolConnectError`` if they cannot be opened, leaving the pool unopened so
        that ``open()`` may be tried again. With ``wait=False`` it returns at once and the
        connections are opened in the background. Opening an open pool does nothing; an
        ``open()`` called while another one is still opening waits for it, and shares its outcome.

        ``timeout`` (with ``wait=True``): instead of failing at the first connect that fails,
        try the failed ones again, spaced by the backoff (``backoff_initial``, ``backoff_max``),
        for up to ``timeout`` seconds in all; if ``min_size`` connections are still missing
        then, raise ``PoolConnectError`` with the last connect error as its cause (or
        ``PoolTimeout`` if no connect even finished), leaving the pool unopened. For a service
        that may start before its database, as psycopg_pool's ``open(wait=True, timeout=...)``.
        """
        limit = None if timeout is None else _options.check_seconds("timeout", timeout)
        if self._state is _State.OPEN:
            self._check_loop()
            # cancel: only this caller stops waiting
            await self._opened_by_another(wait, limit)
            return
        if self._state is not _State.NEW:
            raise PoolClosed(
                f"pool {self._name!r} is closed and cannot be reopened: create a new pool for "
                "each start instead (an app that starts more than once, e.g. once per test, "
                "creates its pools when it starts: with FastAPI, pass lifespan() a function "
                "that creates the pool, lifespan(lambda: create_pool(url)), not the pool)",
                pool_name=self._name,
            )
        self._loop = asyncio.get_running_loop()
        self._thread = get_ident()
        self._loop_running = self._loop.is_running
        self._pid = os.getpid()
        self._state = _State.OPEN
        released = self._loop.create_future()
        released.set_result(None)
        self._released = released
        self._wakeup = asyncio.Event()
        self._drained = asyncio.Event()
        self._closed_event = asyncio.Event()
        opened = self._opened = self._loop.create_future()
        if wait and self._books.min_size:
            try:
                # cancel: the connects stop, what opened is closed; the pool stays unopened
                await self._fill_at_open(self._books.min_size, limit)
            except BaseException as error:
                if isinstance(error, Exception):
                    opened.set_exception(error)
                    opened.exception()  # nobody else may be waiting: not an unretrieved error
                else:
                    opened.cancel()  # a concurrent open() tries again on its own
                raise
        opened.set_result(None)
        # Started after the first connections exist, so it does not open them a second time.
        self._maintenance_task = self._loop.create_task(
            run_maintenance(
                weakref.ref(self), one_round, self._wakeup, self._options.maintenance_interval
            ),
            name=f"aiodbpool[{self._name}] maintenance",
        )
        logger.debug("pool %r opened", self._name)

    async def _opened_by_another(self, wait: bool, timeout: float | None) -> None:
        """Wait for an ``open()`` still filling the pool, and share its outcome: its error if it
        failed, or a try of our own if it was cancelled."""
        opened = self._opened
        if opened is None or opened.done():
            return
        try:
            # cancel: only this caller's wait ends; the other open() goes on (shielded)
            await asyncio.shield(opened)
        except asyncio.CancelledError:
            if not opened.cancelled() or _being_cancelled():
                raise
            # (The other open() was cancelled, not this one: try again.)
            # cancel: open() undoes itself; the pool stays unopened
            await self.open(wait, timeout)

    async def _fill_at_open(self, count: int, timeout: float | None) -> None:
        """Open ``count`` connections at once. Without ``timeout``, the first failure closes
        them all and is raised; with it, the connects that failed are tried again, spaced by
        the backoff, until all are open or ``timeout`` seconds have passed."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        backoff = Backoff(self._options.backoff_initial, self._options.backoff_max, self._rng)
        failures: list[BaseException] = []
        missing = count
        while missing:
            try:
                # cancel: the connects stop, what opened is closed; the pool stays unopened
                failures = await self._open_connections(missing, deadline)
                out_of_time = False
            except TimeoutError:  # the deadline passed while connects were still under way
                out_of_time = True
            if out_of_time:
                # Raised here, not in the except block: the error's cause is the last connect
                # error, and "from None" there would have erased it.
                raise self._not_opened(count, missing, timeout, failures)
            if not failures:
                return
            missing = len(failures)
            delay = backoff.failed(self._clock())
            if deadline is None:
                await self._undo_open()  # cancel: _shut_down ends what is left by force
                raise failures[0]
            if loop.time() + delay >= deadline:
                await self._undo_open()  # cancel: _shut_down ends what is left by force
                raise self._not_opened(count, missing, timeout, failures)
            try:
                await asyncio.sleep(delay)  # cancel: what opened is closed; stays unopened
            except BaseException:
                await self._undo_open()  # cancel: _shut_down ends what is left by force
                raise

    async def _open_connections(self, count: int, deadline: float | None) -> list[BaseException]:
        """Start ``count`` connects at once and wait for them (until ``deadline``, by the loop's
        clock); pool those that open and return the errors of the others. If the wait is
        cancelled or the deadline passes, the connects stop, what opened is closed, and the pool
        is left unopened before the cancellation (or ``TimeoutError``) goes on."""
        self._books.reserve_slots(count)
        connects = [
            _connections.spawn(self, _connections.connect(self), "connect") for _ in range(count)
        ]
        try:
            # cancel: none: entering and leaving a timeout never suspend
            async with asyncio.timeout_at(deadline):
                # Shielded: gather would cancel the connects even before they start, and a
                # connect that never ran never frees its slot. If open() is cancelled, cancel()
                # stops them instead, and connect() frees their slots.
                # cancel: the connects stop; any that opens anyway is closed (adopt_orphan)
                results = await asyncio.gather(
                    *map(asyncio.shield, connects), return_exceptions=True
                )
        except BaseException:
            _connections.abandon_connects(self, connects)
            await self._undo_open()  # cancel: _shut_down ends what is left by force
            raise
        now = self._clock()
        for result in results:
            if isinstance(result, Record):
                self._return_to_pool(result, now)
        return [result for result in results if isinstance(result, BaseException)]

    def _not_opened(
        self, count: int, missing: int, timeout: float | None, failures: list[BaseException]
    ) -> PoolError:
        """The error of an ``open(timeout=...)`` that ran out of time ``missing`` connections
        short of ``count``: the last connect error, if any connect failed."""
        where = (
            f"pool {self._name!r} opened {count - missing} of its {count} connections "
            f"(min_size) within {timeout:g}s (open(timeout=...))"
        )
        if not failures:
            return PoolTimeout(
                f"{where}: the connects did not finish; raise the timeout, or check that the "
                "database is reachable (connect_timeout bounds each connect)",
                pool_name=self._name,
            )
        last = failures[-1]
        cause = last.__cause__ if isinstance(last, PoolConnectError) else last
        error = PoolConnectError(
            f"{where}: {describe(cause) if isinstance(cause, Exception) else last}; check the "
            "database URL, the password and that the database is reachable",
            pool_name=self._name,
        )
        error.__cause__ = cause
        return error

    async def _undo_open(self) -> None:
        """Close what a failed or cancelled open() opened, and leave the pool unopened -- or
        closed, if close() was called meanwhile (and wake a close() waiting for that)."""
        assert self._closed_event is not None
        try:
            # cancel: it ends what is left by force
            await self._shut_down(self._options.close_timeout)
        finally:
            if self._close_requested:
                self._state = _State.CLOSED
                self._closed_event.set()
            else:
                self._state = _State.NEW

    async def close(self, timeout: float = 10.0) -> None:
        """Close the pool; safe to call more than once, and on a pool never opened.

        New acquires fail with ``PoolClosed`` at once, and so does every acquirer already
        waiting. Idle connections are closed; connections in use are closed as they come back.
        Whatever is still in use after ``timeout`` seconds is terminated. A connection released
        after that is ignored (it was already closed). In a child process forked from the one
        that opened the pool, the connections are the parent's: they are forgotten, not closed.
        """
        limit = _options.check_seconds("timeout", timeout, allow_zero=True)
        if self._state is _State.NEW:
            self._state = _State.CLOSED
            return
        if self._pid != os.getpid():
            self._forget_inherited()
            return
        if self._state is not _State.CLOSED:
            self._check_loop("close")
        self._close_requested = True
        if self._state is not _State.OPEN:
            if self._closed_event is not None:
                # cancel: only this caller stops waiting for the close() of another task
                await self._closed_event.wait()
            return
        assert self._closed_event is not None
        try:
            await self._shut_down(limit)  # cancel: it ends what is left by force
            if self._options.close_driver and isinstance(self._driver, SupportsAclose):
                # cancel: the driver's resources may stay open; the pool is closed all the same
                await self._close_driver_resources()
        finally:
            self._state = _State.CLOSED
            self._breaker.forget_last_error()
            self._closed_event.set()
        logger.debug("pool %r closed", self._name)

    async def _shut_down(self, timeout: float | None) -> None:
        """Close every connection: politely within ``timeout``, then by force."""
        assert self._drained is not None
        books = self._books
        self._state = _State.CLOSING
        books.fail_all_waiters(
            lambda: PoolClosed(
                f"pool {self._name!r} was closed while this acquirer waited for a connection "
                "(close() fails the acquirers still waiting)",
                pool_name=self._name,
            )
        )
        if self._maintenance_task is not None:
            self._maintenance_task.cancel()
        for record in books.take_all_idle():
            self._close_unbooked(record, "closed")
        if books.lent and self._lease_class is not None and timeout != 0:
            # A lease held only by garbage (a reference cycle) would be waited for until the
            # timeout: collect it now, and its slot is reclaimed. (With no time to wait,
            # whatever is still lent is terminated at once anyway.)
            gc.collect()
        self._use_free_room()
        try:
            # Wait for connections in use to come back and for opens and closes to finish.
            # cancel: none: entering and leaving a timeout never suspend
            async with asyncio.timeout(timeout):
                # cancel: the finally below ends what is left by force
                await self._drained.wait()
        except TimeoutError:
            logger.warning(
                "pool %r: close() waited %ss; ending what is left: %s",
                self._name,
                timeout,
                self._unfinished(),
            )
        finally:
            # Whatever remains (after the timeout, or if close itself was cancelled) goes now.
            # cancel: close() stops waiting; the tasks, cancelled there, end on their own
            await _connections.end_by_force(self)

    def _unfinished(self) -> str:
        """What keeps close() waiting, for its log line: ``2 in use, 1 connect, 1 close``."""
        books = self._books
        counts = (
            (len(books.in_use), "in use", "in use"),
            (books.opening, "connect", "connects"),
            (books.closing, "close", "closes"),
        )
        return ", ".join(f"{n} {one if n == 1 else many}" for n, one, many in counts if n)

    def _forget_inherited(self) -> None:
        """``close()`` in a forked child: close the child's copy of the pool without a word to
        the driver.

        Its connections are the parent's (the same sockets, the same sessions): a polite close
        would end the parent's sessions, so the child only forgets them. Its tasks and futures
        belong to the parent's event loop, which does not run in the child: nothing here awaits.
        """
        self._books.forget_all()
        self._state = _State.CLOSED

    async def _close_driver_resources(self) -> None:
        """``driver.aclose()`` after the last connection closed; a failure is only logged, since
        the pool itself closed fine."""
        assert isinstance(self._driver, SupportsAclose)
        try:
            # cancel: the driver's aclose() is cancelled; the pool is closed all the same
            await call_with_timeout(self._driver.aclose(), self._options.close_timeout)
        except Exception as error:
            logger.warning(
                "pool %r: closing the driver's resources failed: %s", self._name, describe(error)
            )

    # ------------------------------------------------------------------ one-line statements

    async def execute(self: Pool[_S], query: str, *args: Any, timeout: float | None = None) -> str:
        """Run one statement on a connection borrowed for it, and give the connection back:
        ``await conn.execute(query, *args, timeout=timeout)`` inside ``async with
        pool.acquire() as conn``. For drivers whose connections have asyncpg's API (asyncpg,
        the fake driver's ``api="asyncpg"``); the others raise ``TypeError``.

        ``timeout`` bounds the statement, as the driver reads it; the borrow itself waits at
        most the pool's ``acquire_timeout``. Each call borrows anew: statements that must share
        a transaction or a session need one ``acquire()`` around them.
        """
        # cancel: _run_one gives the connection back, reset
        result: str = await self._run_one("execute", query, *args, timeout=timeout)
        return result

    async def executemany(
        self: Pool[_S],
        command: str,
        args: Iterable[Sequence[Any]],
        *,
        timeout: float | None = None,
    ) -> None:
        """``conn.executemany(command, args, timeout=timeout)`` on a borrowed connection (see
        ``execute``)."""
        await self._run_one("executemany", command, args, timeout=timeout)  # cancel: as execute

    async def fetch(
        self: Pool[_S], query: str, *args: Any, timeout: float | None = None
    ) -> list[Any]:
        """``conn.fetch(query, *args, timeout=timeout)`` on a borrowed connection: every row
        (see ``execute``)."""
        # cancel: as execute
        rows: list[Any] = await self._run_one("fetch", query, *args, timeout=timeout)
        return rows

    async def fetchrow(
        self: Pool[_S], query: str, *args: Any, timeout: float | None = None
    ) -> Any | None:
        """``conn.fetchrow(query, *args, timeout=timeout)`` on a borrowed connection: the first
        row, or None (see ``execute``)."""
        return await self._run_one("fetchrow", query, *args, timeout=timeout)  # cancel: as execute

    async def fetchval(
        self: Pool[_S],
        query: str,
        *args: Any,
        column: int = 0,
        timeout: float | None = None,
    ) -> Any:
        """``conn.fetchval(query, *args, column=column, timeout=timeout)`` on a borrowed
        connection: one value of the first row, or None (see ``execute``)."""
        # cancel: as execute
        return await self._run_one("fetchval", query, *args, column=column, timeout=timeout)

    async def _run_one(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Borrow a connection, run its ``method``, give it back (even if cancelled)."""
        # cancel: the borrowed connection goes back, reset, as at the end of any async with
        async with self.acquire() as conn:
            run = getattr(conn, method, None)
            if run is None:
                raise TypeError(
                    f"pool.{method}() runs the connection's own {method}(), and the connections "
                    f"of pool {self._name!r} ({type(raw_connection(conn)).__name__}) have none: "
                    "acquire a connection and use its own API"
                )
            # cancel: the statement is cancelled as in any borrower's hands; the release resets
            return await run(*args, **kwargs)

    async def check(self) -> int:
        """Validate every idle connection now, one at a time, with the ``check`` hook or the
        driver's ping, and discard those that fail (new ones replace them as needed, as after
        any discard); return how many were discarded. As psycopg_pool's ``check()``: after a
        network change, or before a burst that should meet no dead connection."""
        self._check_open()
        self._check_loop()
        discarded = 0
        for record in list(self._books.idle):
            if not self._books.take_idle_to_check(record):
                continue  # lent or closed meanwhile
            # cancel: the connection being checked is discarded, the others stay idle
            if await self._validate_or_discard(record, always=True):
                self._return_to_pool(record, self._clock())
            else:
                discarded += 1
        return discarded

    # ------------------------------------------------------------------ resize, expire, detach

    def resize(self, min_size: int | None = None, max_size: int | None = None) -> None:
        """Change ``min_size`` and/or ``max_size`` while the pool runs.

        Growing lets waiters open connections at once. Shrinking closes excess idle connections
        now, and excess connections in use when they come back; nothing new opens until the pool
        is under the new bound. A pool not opened yet takes the sizes for when it opens; a
        closed pool refuses with ``PoolClosed``.
        """
        books = self._books
        new_min = books.min_size if min_size is None else min_size
        new_max = books.max_size if max_size is None else max_size
        _options.check_count("min_size", new_min, minimum=0)
        _options.check_count("max_size", new_max, minimum=1)
        _options.check_sizes(new_min, new_max)
        if self.closed:
            raise PoolClosed(
                f"cannot resize pool {self._name!r}: it is closed (resize a pool between open() "
                "and close())",
                pool_name=self._name,
            )
        if self._state is _State.OPEN:
            self._check_loop()
        for record in books.resize(new_min, new_max):
            self._close_unbooked(record, "evicted_lifetime")
        self._use_free_room()

    def expire(self) -> None:
        """Retire every current connection: idle ones now, ones in use when they are released.

        New connections replace them as needed. Use it after rotating credentials or a failover,
        when existing connections point at the old server or identity.
        """
        if self._state is _State.OPEN:
            self._check_loop()
        for record in self._books.expire():
            self._close_unbooked(record, "evicted_lifetime")
        self._use_free_room()

    def detach(self, conn: C) -> C:
        """Take an acquired connection out of the pool for good, and free its slot.

        Returns the driver's own connection, which the caller now owns and must close; ``conn``
        itself, the lease, ends and refuses further use like a released one. For connections
        with a long-lived purpose (a LISTEN loop, a replication stream) that should not count
        against the pool.
        """
        books = self._books
        if self._state is _State.OPEN and id(conn) in books.lent:
            self._check_loop()
        record = books.end_lend(id(conn))
        if record is None:
            raise self._refused_handle(conn, "detach")
        if self._lease_class is not None:
            lease: Lease[Any] = conn  # type: ignore[assignment]  # what _hand_out lent
            lease._end("detached")
        books.unbook(record)
        self._use_free_room()
        return record.conn

    # ------------------------------------------------------------------ what it looks like

    def stats(self) -> PoolStats:
        """A frozen snapshot of the pool's gauges and counters."""
        books = self._books
        counters = self._counters
        return PoolStats(
            name=self._name,
            size=books.size(),
            idle=len(books.idle),
            in_use=len(books.in_use),
            opening=books.opening,
            closing=books.closing,
            waiting=len(books.waiters),
            min_size=books.min_size,
            max_size=books.max_size,
            acquired=counters.acquired,
            waited=counters.waited,
            timeouts=counters.timeouts,
            created=counters.created,
            closed=counters.closed,
            connect_errors=counters.connect_errors,
            validation_failures=counters.validation_failures,
            discarded=counters.discarded,
            evicted_idle=counters.evicted_idle,
            evicted_lifetime=counters.evicted_lifetime,
            wait_time_total=counters.wait_time_total,
            wait_time_max=counters.wait_time_max,
            stale_releases=counters.stale_releases,
            stale_uses=counters.stale_uses,
            reclaimed=counters.reclaimed,
            breaker_open=self._breaker.is_open(),
            connect_errors_in_a_row=self._breaker.errors_in_a_row,
            breaker_rejections=self._breaker.rejections,
            exhausted=counters.exhausted,
            create_time=self._create_time.snapshot(),
            wait_time=self._wait_time.snapshot(
                extra_in_first_bucket=counters.acquired - counters.waited
            ),
            use_time=self._use_time.snapshot(),
        )

    @property
    def name(self) -> str:
        """The pool's name."""
        return self._name

    @property
    def driver(self) -> Driver[C]:
        """The driver the pool opens connections with."""
        return self._driver

    @property
    def closed(self) -> bool:
        """True once ``close()`` has started."""
        return self._state in (_State.CLOSING, _State.CLOSED)

    def __repr__(self) -> str:
        books = self._books
        return (
            f"<Pool {self._name!r} {self._state.value} size={books.size()} "
            f"idle={len(books.idle)} in_use={len(books.in_use)} waiting={len(books.waiters)} "
            f"max={books.max_size}>"
        )

    def __del__(self) -> None:
        if getattr(self, "_state", None) is not _State.OPEN:
            return
        warnings.warn(
            f"pool {self._name!r} was garbage-collected while open: use `async with pool:` "
            "or call `await pool.close()`",
            ResourceWarning,
            source=self,
            stacklevel=1,
        )
        task = self._maintenance_task
        if task is not None and not task.get_loop().is_closed():
            task.cancel()

    # ------------------------------------------------------------------ listening to it

    def add_listener(self, listener: events.Listener) -> Callable[[], None]:
        """Call ``listener`` with every event of the pool from now on (see ``aiodbpool.events``);
        return a function that removes it.

        The listener runs synchronously, in the task that caused the event, so it must be quick
        and must not block. If it raises, the error is logged once and the pool goes on. Adding
        the same listener twice makes it hear each event twice.
        """
        if not callable(listener):
            raise TypeError(
                f"add_listener() takes a callable of one event, got {listener!r} (see "
                "aiodbpool.events)"
            )
        self._listeners = (*self._listeners, listener)
        return partial(self.remove_listener, listener)

    def remove_listener(self, listener: events.Listener) -> None:
        """Stop calling ``listener`` (once, if it was added more than once); a listener that is
        not there is ignored, so removing twice is harmless."""
        listeners = list(self._listeners)
        for index, present in enumerate(listeners):
            if present is listener or present == listener:
                del listeners[index]
                self._listeners = tuple(listeners)
                return

    def _emit(self, event: events.PoolEvent) -> None:
        """Tell every listener of ``event``; a listener that raises is logged once, then its
        errors are ignored, so that it never breaks the step that reported the event."""
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:
                if any(failed is listener for failed in self._failed_listeners):
                    continue
                self._failed_listeners.append(listener)
                logger.warning(
                    "pool %r: the event listener %r raised on %s; its later errors are not logged",
                    self._name,
                    listener,
                    type(event).__name__,
                    exc_info=True,
                )

    # ------------------------------------------------------------------ steps for _connections

    def _give_up_slot(self, *, probe: bool) -> None:
        """A connect failed or was cancelled (``_connections.connect``): give its slot back (and
        the probe, if it was one), counting the error."""
        if probe:
            self._breaker.probe_ended()
        self._books.give_up_slot()
        self._counters.connect_errors += 1

    def _book_connected(
        self, conn: C, generation: int, started: float, *, probe: bool
    ) -> Record[C]:
        """A connect begun at ``started`` in ``generation`` succeeded: its slot becomes its
        record, booked in use (``Books.book_connected``), and the probe, if it was one, ended."""
        if probe:
            self._breaker.probe_ended()
        now = self._clock()
        lifetime = self._options.max_lifetime * (1.0 - LIFETIME_JITTER * self._rng.random())
        record = self._books.book_connected(conn, generation, now, lifetime)
        self._counters.created += 1
        self._create_time.record(now - started)
        if self._listeners:
            self._emit(events.Connected(self._name, now - started))
        if self._breaker.connect_succeeded():
            logger.info("pool %r: a connect succeeded; circuit breaker closed", self._name)
            if self._listeners:
                self._emit(events.BreakerClosed(self._name))
        return record

    def _book_close(self) -> None:
        """A polite close is about to start in the background: it keeps its slot until it ends
        (``_close_done``)."""
        self._books.start_close()

    def _close_done(self) -> None:
        """A background close ended, whether it closed politely or terminated: free its slot."""
        self._books.close_done()
        self._count_closed()
        self._use_free_room()

    def _abandon_in_use(self) -> None:
        """Take every connection still in use off the books and terminate it (the forced end
        of ``close()``): a lease says "closed" from now on; a connection lent without one is
        remembered by the books, so that its late release is ignored."""
        for record, lease in self._books.abandon_in_use():
            if lease is not None:
                lease._end("closed")  # its release, if it comes, is ignored
            self._close_unbooked(record, "closed", hard=True)

    # ------------------------------------------------------------------ steps for _maintenance

    def _is_open(self) -> bool:
        """Whether the pool is open (not new, closing or closed): the maintenance round runs
        only then."""
        return self._state is _State.OPEN

    def _close_idle(self, chosen: list[tuple[Record[C], Removal]]) -> None:
        """Take the chosen idle connections off the books and close them, each counted under
        its reason; the others stay idle in their order."""
        self._books.take_idle_records(record for record, _ in chosen)
        for record, reason in chosen:
            self._close_unbooked(record, reason)

    def _close_oldest_idle(self, reason: Removal) -> None:
        """Take the idle connection released longest ago off the books and close it."""
        self._close_unbooked(self._books.take_oldest_idle(), reason)

    # ------------------------------------------------------------------ the circuit breaker

    def _connect_failed(self, error: Exception, started: float, *, backs_off: bool) -> None:
        """Count a failed connect begun at ``started`` (see ``Breaker.connect_failed``), say so
        if it opened the circuit breaker, and let the maintenance job schedule the next probe."""
        breaker = self._breaker
        now = self._clock()
        if self._listeners:
            self._emit(events.ConnectFailed(self._name, now - started, error))
        if breaker.connect_failed(error, now, backs_off=backs_off):
            logger.warning(
                "pool %r: %d connects failed in a row; circuit breaker open: acquirers that need "
                "a new connection fail at once until a probe connects: %s",
                self._name,
                breaker.errors_in_a_row,
                describe(error),
            )
            if self._listeners:
                self._emit(events.BreakerOpened(self._name, breaker.errors_in_a_row, error))
        if self._wakeup is not None and breaker.is_open():
            self._wakeup.set()  # the maintenance job schedules the next probe

    def _breaker_error(self) -> PoolConnectError:
        """Refuse an acquirer that needs a new connection while the breaker is open."""
        breaker = self._breaker
        wait = breaker.refuse(self._clock())
        cause = breaker.last_error
        error = PoolConnectError(
            f"pool {self._name!r} is not opening connections: the last "
            f"{breaker.errors_in_a_row} connects failed (circuit breaker open, next probe in "
            f"{wait:.2f}s; check that the database is up and accepts the pool's connections)"
            + (f": {describe(cause)}" if cause is not None else ""),
            pool_name=self._name,
        )
        error.__cause__ = cause
        return error

    # ------------------------------------------------------------------ lends that end elsewhere

    def _lease_collected(self, ref: weakref.ref[Any]) -> None:
        """A lease was garbage-collected while lent: its holder dropped it without a release.
        Called by the weak reference's callback, in whichever thread dropped the lease."""
        self._in_own_loop(partial(self._reclaim, ref))

    def _reclaim(self, ref: weakref.ref[Any], loop_gone: bool) -> None:
        """Take back the slot of a lease collected while lent, and close its connection (its
        borrower may have left it anywhere: inside a transaction, mid-statement)."""
        record = next((rec for rec in self._books.in_use.values() if rec.handle is ref), None)
        if record is None:
            return  # close() ended it meanwhile
        self._books.unlend(record)
        logger.warning(
            "pool %r: a connection was garbage-collected without being released; the pool "
            "closed it and took its slot back. Release every connection (`async with "
            "pool.acquire()` does). %s",
            self._name,
            where_acquired(record.acquired_stack),
        )
        self._let_go(record, "reclaimed", loop_gone)

    def _refuse_release_from_elsewhere(self, conn: object) -> None:
        """Refuse a release from another event loop or a forked child, and never pool the
        connection again: it may have been used from that loop, which leaves it broken."""
        try:
            self._check_loop()
        except RuntimeError:
            if self._pid == os.getpid():  # (a forked child's copy of the books is left alone)
                self._in_own_loop(partial(self._drop_released_elsewhere, id(conn)))
            raise

    def _drop_released_elsewhere(self, key: int, loop_gone: bool) -> None:
        """End the lend of a connection released from another loop, and let it go."""
        record = self._books.lent.get(key)
        if record is None:
            return  # given back in the pool's own loop meanwhile, or closed
        holder = self._books.unlend(record)
        if isinstance(holder, Lease):
            leftover = holder._end("released")
            if leftover is not None:
                leftover.close()  # its statements ran in the other loop: nothing to wait for
        self._let_go(record, "discarded", loop_gone)

    def _in_own_loop(self, step: Callable[[bool], None]) -> None:
        """Run ``step``, a change of the books asked for from anywhere, where the books change:
        at once in the pool's own loop; soon in it, from another thread; or at once with
        ``loop_gone`` true if that loop has ended (or this is a forked child), when the
        connections went with it and records are only forgotten."""
        loop = self._loop
        if get_ident() == self._thread and self._loop_running():
            step(False)
        elif loop is not None and not loop.is_closed() and self._pid == os.getpid():
            loop.call_soon_threadsafe(step, False)
        else:
            step(True)

    def _let_go(
        self, record: Record[C], reason: Literal["discarded", "reclaimed"], loop_gone: bool
    ) -> None:
        """Close an unlent record's connection, whose lend ended without a release; after the
        pool's loop has ended, only unbook it: the connection ended with the loop."""
        if not loop_gone:
            self._unbook_and_close(record, reason, hard=True)
            return
        self._books.unbook(record)
        self._count_removal(reason)

    # ------------------------------------------------------------------ checks

    def _check_open(self) -> None:
        if self._state is _State.OPEN:
            return
        if self._state is _State.NEW:
            raise PoolClosed(
                f"pool {self._name!r} is not open: use `async with pool:` or "
                "`await pool.open()` before acquiring",
                pool_name=self._name,
            )
        raise PoolClosed(
            f"pool {self._name!r} is closed: acquire before close(), or create a new pool",
            pool_name=self._name,
        )

    def _check_loop(self, action: Literal["use", "close"] = "use") -> None:
        """Refuse a call from an event loop other than the pool's, or from a forked child: its
        connections, futures and tasks belong to the loop (and process) that opened it."""
        if self._pid != os.getpid():
            raise RuntimeError(
                f"pool {self._name!r} was opened in the parent of this forked process; its "
                "connections belong to the parent (create and open the pool in each worker "
                "process, e.g. in the app's lifespan)"
            )
        loop = self._loop
        if loop is None or asyncio._get_running_loop() is loop:
            return
        if loop.is_closed():
            where = (
                "another event loop, which has ended (asyncio.run() returned, or a test's loop "
                "was torn down), and its connections ended with it"
            )
        else:
            where = "another event loop"
        if action == "close":
            advice = "close it in the loop that opened it, before that loop ends"
        else:
            advice = (
                "a pool belongs to the loop that opened it: create one pool per loop, e.g. in "
                "the app's lifespan, per worker thread, or in a test fixture with the same "
                "loop scope as the tests"
            )
        raise RuntimeError(f"pool {self._name!r} was opened in {where}; {advice}")

    def _known_closed(self, conn: C) -> bool:
        """``driver.is_closed(conn)``, where a driver bug must not cost a slot: if it raises,
        the connection's state is unknown, so it counts as closed (and is discarded)."""
        try:
            return self._is_closed(conn)
        except Exception as error:
            logger.warning(
                "pool %r: the driver's is_closed() raised, so the connection is treated as "
                "closed: %s",
                self._name,
                describe(error),
            )
            return True

    def _terminated_while_lent(self, conn: object) -> bool:
        """Whether ``close()`` terminated ``conn`` while it was lent: its release is too late,
        and harmless."""
        if isinstance(conn, Lease):
            return conn._lender is self and conn._given_back_after_close()
        return self._books.forget_abandoned(id(conn))

    def _refused_handle(self, conn: object, action: str) -> ValueError:
        """The error for a release or detach of something this pool has not lent out now."""
        books = self._books
        if isinstance(conn, Lease) and conn._lender is self:
            self._counters.stale_releases += 1
            return ValueError(
                f"cannot {action} this connection: it was already {conn._ending} (a second "
                "release, or a handle kept from an earlier acquire); nothing was changed"
            )
        record = books.in_use.get(id(conn))
        if record is not None and record.conn is conn and record.handle is not None:
            return ValueError(
                f"cannot {action} the driver's own connection: {action} the object that "
                "pool.acquire() returned"
            )
        if any(idle.conn is conn for idle in books.idle) or (
            record is not None and record.conn is conn
        ):
            self._counters.stale_releases += 1
            return ValueError(
                f"cannot {action} a connection already released to {self!r}: {action} each "
                "acquired connection once (`async with pool.acquire()` does it for you)"
            )
        return ValueError(
            f"cannot {action} {conn.__class__.__name__} object: it was not acquired from "
            f"{self!r} (or it was detached, or already released); {action} a connection "
            "to the pool that lent it"
        )

    def _count_stale_use(self) -> None:
        """A lease refused a use after its end (see ``Lease._refusal``)."""
        self._counters.stale_uses += 1

    def _invariant_errors(self) -> list[str]:
        """Describe every broken invariant of the books and the breaker (empty when all hold).
        Used by tests."""
        errors = self._books.invariant_errors(
            accepting=self._state is _State.OPEN, closed=self._state is _State.CLOSED
        )
        probes, opening = self._breaker.probes, self._books.opening
        if not 0 <= probes <= min(1, opening):
            errors.append(f"{probes} probes under way, {opening} connects opening")
        return errors


_POOLS: weakref.WeakSet[Pool[Any]] = weakref.WeakSet()
"""Every pool of this process not yet garbage-collected, for ``_after_fork_in_child``."""


def _after_fork_in_child() -> None:
    """Run in a child process right after ``fork()``.

    The child inherits every pool, with the parent's connections (the same sockets) and the
    parent's random state. Clearing the thread id sends the child's first acquire or release to
    the slow path, which refuses it (``_check_loop``); reseeding makes lifetime and backoff
    jitter differ between worker processes forked from one parent.
    """
    for pool in list(_POOLS):
        pool._thread = None
        pool._rng.seed()


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _lease_class_of(driver: object) -> type[Lease[Any]] | None:
    """The driver's ``lease_class`` (see ``aiodbpool.SupportsLease``), checked; None without."""
    lease_class = getattr(driver, "lease_class", None)
    if lease_class is None:
        return None
    if not (isinstance(lease_class, type) and issubclass(lease_class, Lease)):
        raise TypeError(
            f"driver {type(driver).__name__} has a lease_class that is not aiodbpool.Lease or a "
            f"subclass of it: {lease_class!r} (subclass aiodbpool.Lease, or remove lease_class "
            "to lend the connections themselves)"
        )
    return lease_class


def _lease_collector(pool_ref: weakref.ref[Pool[Any]]) -> Callable[[weakref.ref[Any]], None]:
    """The callback of a pool's weak references to its leases. It reaches the pool through a weak
    reference too: the pool holds the leases' references, which hold this callback."""

    def lease_collected(lease_ref: weakref.ref[Any]) -> None:
        pool = pool_ref()
        if pool is not None:
            pool._lease_collected(lease_ref)

    return lease_collected


class _NothingToAwait:
    """An awaitable that finishes at once, for ``Pool._released`` before the pool opens."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        return
        yield  # (a generator that ends at once)


def _never() -> bool:
    """The loop check of a pool not opened yet: no loop of its own runs."""
    return False


def _being_cancelled() -> bool:
    """Whether the current task has been asked to cancel (as opposed to seeing a cancelled
    future it awaited)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
