"""Property-based tests: a hypothesis state machine drives a real Pool over a FakeDriver.

Each run opens a pool and applies a random sequence of what applications and databases do to it:
acquire, release (clean, dirty, slowly, or a release that is then cancelled), cancel a waiting
acquirer at chosen moments, acquires that time out, broken connections, refused and stalled
connects, time passing, ``expire()``, ``resize()``, ``detach()`` and finally ``close()``. After
every step it checks the pool's books against what the test holds and what the driver has open.

Every lend is a lease: the machine keeps the leases it gave back (released or detached) and
uses them again at random, after their connection may have been lent to someone else. Such a
stale release or statement must be refused (``ValueError``, ``ConnectionReleased``), counted,
and change nothing: not the books, not the connection's next holder, not what was sent.

Determinism: the machine owns its event loop and runs it explicitly, a few iterations at a time,
until nothing moves any more. Ages are read from a :class:`FakeClock` that advances in whole
seconds, and the pool's random spreads are made irrelevant by choosing limits whose random windows
contain no whole second (see ``LIFETIME`` and ``BACKOFF``). Stalls (connects, pings) end only when
the test heals the driver. The few wall-clock waits (acquires given a tiny timeout, a release
whose rollback takes 2 ms, a close that gives up after 10 ms) cannot change what happens: every
other task is idle meanwhile. Acquire timeouts are checked with a margin of seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import pytest
import uvloop
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from aiodbpool import (
    ConnectionReleased,
    Pool,
    PoolClosed,
    PoolConnectError,
    PoolExhausted,
    PoolTimeout,
    raw_connection,
)
from aiodbpool.drivers.fake import FakeClock, FakeConnection, FakeConnectionError, FakeDriver

T = TypeVar("T")

LONG = 60.0
"""Timeout of the ordinary acquires: far longer than any run, so they never time out."""
TINY_TIMEOUTS = (0.0, 0.001, 0.005, 0.01)
"""Real-time timeouts of the acquires that are meant to time out (or succeed at once)."""
GRACE = 2.0
"""Real seconds an acquire may overrun its timeout before the test calls it stuck."""
LIFETIME = 3.95
"""max_lifetime: its random window [0.9 * 3.95, 3.95] holds no whole second, so a connection is
retired exactly when it is 4 seconds old, whatever the jitter."""
MAX_IDLE = 2.5
"""max_idle: idle connections above min_size are evicted once idle 3 whole seconds."""
BACKOFF = 1e5
"""backoff_initial and backoff_max: a failed background refill waits between BACKOFF / 2 and
BACKOFF clock seconds, so the retry happens exactly after a jump of FAR_FUTURE, never earlier. The
maintenance job sleeps that many real seconds, so it never wakes by itself during a run."""
FAR_FUTURE = 100_000
"""A clock jump past every lifetime, idle limit and backoff."""
MAINTENANCE_INTERVAL = 1e6
"""Background maintenance wakes only when the pool pokes it, never on a timer during a run."""
DRIVER_TIMEOUT = 1e4
"""connect_timeout, ping_timeout and reset_timeout: armed as usual, never reached, so a stalled
call ends only when the test heals the driver or cancels the call."""
SLOW_RESET = 0.002
"""Reset latency of a release that suspends and is waited for."""
CLOSE_AFTER = 10
"""Steps before close() may be chosen: closing ends the interesting part of a run."""
SETTLE_MIN = 10
SETTLE_QUIET = 5
SETTLE_MAX = 500

PICK = st.integers(min_value=0, max_value=99)
"""Chooses an element of a list: ``pick % len(list)``."""


@st.composite
def _sizes(draw: st.DrawFn) -> tuple[int, int]:
    max_size = draw(st.integers(min_value=1, max_value=3))
    min_size = draw(st.integers(min_value=0, max_value=min(max_size, 2)))
    return min_size, max_size


class _CountingClock:
    """A FakeClock that counts its reads: a pool with nothing to do must not read the time."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        return self.clock()


@dataclass(eq=False)
class _Acquirer:
    """An ``acquire`` running in its own task."""

    task: asyncio.Task[FakeConnection]
    timeout: float
    seq: int  # the order in which acquires started
    cancelled_by_test: bool = False
    revalidated: bool = False  # a validation failed meanwhile: it may have queued again


@dataclass(eq=False)
class _Release:
    """A ``release`` of a dirty connection, suspended in its reset."""

    conn: FakeConnection
    task: asyncio.Task[None]
    cancelled_by_test: bool = False


def _pick(items: list[T], pick: int) -> T:
    return items.pop(pick % len(items))


class PoolMachine(RuleBasedStateMachine):
    """A Pool over a FakeDriver, driven by random steps; its books are checked after each one."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = self.new_event_loop()
        self.loop_errors: list[dict[str, Any]] = []
        self.loop.set_exception_handler(lambda _loop, context: self.loop_errors.append(context))
        self.fake_clock = FakeClock()
        self.clock = _CountingClock(self.fake_clock)
        self.driver = FakeDriver()
        self.pool: Pool[FakeConnection] | None = None
        self.max_waiting: int | None = None
        self.max_uses: int | None = None
        self.always_validate = False  # validate_after_idle=0: every idle connection is pinged
        # What the test knows about each connection, by id: when it was opened (whole clock
        # seconds), how often it was handed out; and those live when expire() was called.
        self.born: dict[int, float] = {}
        self.uses: dict[int, int] = {}
        self.expired: set[int] = set()
        # What the test holds: leases acquired and not given back, acquires still running,
        # releases suspended in their reset, connections detached (the driver's own, as detach()
        # returned them) and not yet closed.
        self.held: list[FakeConnection] = []
        self.acquirers: list[_Acquirer] = []
        self.started = 0  # acquires started, numbering them
        self.releases: list[_Release] = []
        # connections whose release was cancelled while their reset goes on in the pool
        self.resetting: list[FakeConnection] = []
        self.detached: list[FakeConnection] = []
        # Leases the test released or detached while the pool was open: stale for good, even
        # once their connection is lent again. (Leases close() ended are not among them: a
        # release of those is accepted silently.)
        self.ended: list[FakeConnection] = []
        # What the pool's counters must say.
        self.acquired = 0
        self.timeouts = 0
        self.validation_failures = 0
        self.stale_releases = 0  # releases and detaches of an ended lease, refused
        self.stale_uses = 0  # statements through an ended lease, refused
        self.detached_closed = 0  # closed by the test, not the pool
        self.connect_failures_scripted = False  # PoolConnectError is a legitimate outcome
        self.pings_stalled = False  # acquirers may be stuck validating an idle connection
        self.shrunk = False  # resize() set max_size below the size at that moment
        self.opening_beyond = 0  # connects already under way when it did: they may finish
        self.closed = False
        self.runs = 0  # steps taken (each runs the loop once or more)

    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        return asyncio.new_event_loop()

    # -- running the loop ------------------------------------------------------------------------

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        self.runs += 1
        return self.loop.run_until_complete(coro)

    def step(self, action: Callable[[], object] | None = None) -> None:
        """Do ``action`` inside the loop (the pool's methods start tasks), then settle."""

        async def go() -> None:
            if action is not None:
                action()
            await self.settle()

        self.run(go())

    def _snapshot(self) -> tuple[object, ...]:
        assert self.pool is not None
        return (
            self.pool.stats(),
            self.clock.reads,
            self.driver.live,
            self.driver.opened,
            self.driver.closed,
            self.driver.stalled,
            len(asyncio.all_tasks(self.loop)),
            tuple(acquirer.task.done() for acquirer in self.acquirers),
            tuple(release.task.done() for release in self.releases),
        )

    async def settle(self) -> None:
        """Let every task run until nothing changes any more, then collect finished acquires.

        A pool that never goes quiet (something re-runs every loop iteration) fails here.
        """
        for _ in range(SETTLE_MIN):
            await asyncio.sleep(0)
        last = self._snapshot()
        quiet = 0
        for _ in range(SETTLE_MAX):
            await asyncio.sleep(0)
            now = self._snapshot()
            quiet = quiet + 1 if now == last else 0
            last = now
            if quiet >= SETTLE_QUIET:
                break
        else:
            pytest.fail(f"the event loop never went quiet: {self.pool!r} {self.driver!r}")
        self._collect()

    def _collect(self) -> None:
        """Take the results of finished acquires and releases, checking each outcome is allowed.

        Also checks that waiting is first come, first served: a queued acquirer is never
        overtaken by a younger one.
        """
        assert self.pool is not None
        for conn in self.driver.connections:  # connections open only while the clock stands
            self.born.setdefault(conn.id, self.fake_clock.now)
        stats = self.pool.stats()
        if stats.validation_failures != self.validation_failures:
            # An acquirer whose idle connection failed its ping goes back to the end of the line
            # (the slot it freed went to the oldest waiter): FIFO by age no longer applies to it.
            self.validation_failures = stats.validation_failures
            for acquirer in self.acquirers:
                acquirer.revalidated = True
        running: list[_Acquirer] = []
        served: list[_Acquirer] = []
        for acquirer in self.acquirers:
            task = acquirer.task
            if not task.done():
                running.append(acquirer)
                continue
            if task.cancelled():
                assert acquirer.cancelled_by_test, "an acquire was cancelled by nobody"
                continue
            error = task.exception()
            assert not acquirer.cancelled_by_test, f"an acquire swallowed its cancellation: {error}"
            if error is None or isinstance(error, PoolConnectError):
                served.append(acquirer)
            if error is None:
                self._check_handed_out(task.result())
            elif isinstance(error, PoolTimeout):
                assert acquirer.timeout < LONG, f"an acquire timed out early: {error}"
                self.timeouts += 1
            elif isinstance(error, PoolConnectError):
                assert self.connect_failures_scripted, f"unexpected: {error!r}"
            elif isinstance(error, PoolExhausted):
                assert self.max_waiting is not None, f"unexpected: {error!r}"
            elif isinstance(error, PoolClosed):
                assert self.closed, f"unexpected: {error!r}"
            else:
                raise error
        self.acquirers = running
        # Running acquires that are not queued connect or validate; they took a slot or an idle
        # connection when nobody was queued, so they are older than every queued one.
        queued = running[len(running) - stats.waiting :] if stats.waiting else []
        if not any(acquirer.revalidated for acquirer in running):
            for acquirer in served:
                overtaken = [other for other in queued if other.seq < acquirer.seq]
                assert not overtaken, f"a younger acquirer was served first: {stats}"
        if not self.driver._reset_stall.held:
            self.resetting.clear()  # their resets finished: the connections are the pool's
        in_flight: list[_Release] = []
        for release in self.releases:
            if not release.task.done():
                in_flight.append(release)
            elif release.task.cancelled():
                assert release.cancelled_by_test, "a release was cancelled by nobody"
            elif (error := release.task.exception()) is not None:
                raise error
        self.releases = in_flight

    def _check_handed_out(self, conn: FakeConnection) -> None:
        """A connection handed out must be fit for use: not known broken, not retired."""
        self.held.append(conn)
        self.acquired += 1
        self.uses[conn.id] = self.uses.get(conn.id, 0) + 1
        # raw_connection also checks that the lease is live: a fresh one, not an ended one.
        assert not self.driver.is_closed(raw_connection(conn)), f"handed out {conn!r}"
        assert conn.id not in self.expired, f"handed out {conn!r} after expire()"
        age = self.fake_clock.now - self.born.get(conn.id, self.fake_clock.now)
        assert age < math.ceil(LIFETIME), f"handed out {conn!r} at age {age}"
        if self.max_uses is not None:
            assert self.uses[conn.id] <= self.max_uses, f"{conn!r} used past max_uses"
        if self.always_validate:
            assert not conn.broken, f"handed out {conn!r} without validating it"

    def spawn_acquire(self, timeout: float) -> _Acquirer:
        """Start an acquire in a task (call inside the loop)."""
        assert self.pool is not None
        # acquire() returns an awaitable context manager, not a coroutine: ensure_future wraps it.
        task = asyncio.ensure_future(self.pool.acquire(timeout=timeout))
        self.started += 1
        acquirer = _Acquirer(task, timeout, seq=self.started)
        self.acquirers.append(acquirer)
        return acquirer

    def is_open(self) -> bool:
        return self.pool is not None and not self.closed

    # -- set-up ------------------------------------------------------------------------------------

    @initialize(
        sizes=_sizes(),
        validate_after_idle=st.sampled_from([0.0, 1.5, None]),
        max_uses=st.sampled_from([None, 2, 3]),
        max_waiting=st.sampled_from([None, 1, 3]),
        open_fails_first=st.booleans(),
    )
    def open_pool(
        self,
        sizes: tuple[int, int],
        validate_after_idle: float | None,
        max_uses: int | None,
        max_waiting: int | None,
        open_fails_first: bool,
    ) -> None:
        """Open the pool; when min_size > 0 the first ``open()`` may fail and leave it unopened."""
        min_size, max_size = sizes
        self.max_waiting = max_waiting
        self.max_uses = max_uses
        self.always_validate = validate_after_idle == 0.0
        self.pool = Pool(
            self.driver,
            name="machine",
            min_size=min_size,
            max_size=max_size,
            acquire_timeout=LONG,
            max_waiting=max_waiting,
            max_idle=MAX_IDLE,
            max_lifetime=LIFETIME,
            max_uses=max_uses,
            validate_after_idle=validate_after_idle,
            connect_timeout=DRIVER_TIMEOUT,
            ping_timeout=DRIVER_TIMEOUT,
            reset_timeout=DRIVER_TIMEOUT,
            maintenance_interval=MAINTENANCE_INTERVAL,
            backoff_initial=BACKOFF,
            backoff_max=BACKOFF,
            clock=self.clock,
        )

        async def open_it() -> None:
            assert self.pool is not None
            if open_fails_first and min_size:
                self.driver.fail_next_connects(1)
                with pytest.raises(PoolConnectError):
                    await self.pool.open()
                await self.settle()
                assert self.pool.stats().size == 0
                assert self.driver.live == 0
                assert not self.pool.closed  # it may be opened again
            await self.pool.open()
            await self.settle()

        self.run(open_it())

    # -- acquiring ---------------------------------------------------------------------------------

    # Hypothesis favours the rules that take the fewest arguments (and, among those, the first
    # by name), so the most useful step, acquire, takes none.

    @precondition(is_open)
    @rule()
    def acquire(self) -> None:
        self.step(lambda: self.spawn_acquire(LONG))

    @precondition(is_open)
    @rule(timeout=st.sampled_from(TINY_TIMEOUTS))
    def acquire_with_tiny_timeout(self, timeout: float) -> None:
        """Such an acquire gets a connection at once or fails, and never outlives its deadline.

        A positive timeout is used only when the acquire must queue: were it to open a
        connection, the connect and the timer would race, and the run would not replay alike.
        A zero timeout expires at the first suspension, whatever the loop's speed.
        """
        assert self.pool is not None
        stats = self.pool.stats()
        if stats.idle or stats.size < stats.max_size:
            timeout = 0.0

        async def go() -> None:
            acquirer = self.spawn_acquire(timeout)
            await asyncio.sleep(timeout * 2)
            await asyncio.wait([acquirer.task], timeout=GRACE)
            assert acquirer.task.done(), f"an acquire outlived its {timeout}s timeout"
            await self.settle()

        self.run(go())

    @precondition(lambda self: self.acquirers)
    @rule(pick=PICK)
    def cancel_an_acquire(self, pick: int) -> None:
        acquirer = self.acquirers[pick % len(self.acquirers)]
        acquirer.cancelled_by_test = acquirer.task.cancel()
        self.step()

    @precondition(lambda self: self.is_open() and self.held)
    @rule(
        action=st.sampled_from(["release", "release_dirty", "release_broken", "detach"]),
        conn_pick=PICK,
        victim=st.sampled_from(["oldest", "second", "newest"]),
        iterations=st.integers(min_value=0, max_value=3),
    )
    def hand_off_then_cancel(
        self, action: str, conn_pick: int, victim: str, iterations: int
    ) -> None:
        """Cancel a waiter right after it was handed a connection (or room), before it ran.

        First, acquires are started until two are pending (while the pool has room they just
        take connections). Then a connection is freed: it, or room for a new one, goes to the
        oldest waiter at once. The chosen acquirer is cancelled after ``iterations`` loop
        iterations (0: before it ran; more: while it opens its connection, or after).
        """
        pool = self.pool
        assert pool is not None

        async def go() -> None:
            for _ in range(2 * pool.stats().max_size + 2):
                if len(self.acquirers) >= 2:
                    break
                self.spawn_acquire(LONG)
                await self.settle()
            conn = _pick(self.held, conn_pick)
            # None of these suspends: the freed connection or slot is offered synchronously.
            if action == "detach":
                self.detached.append(pool.detach(conn))
            else:
                if action == "release_dirty":
                    with contextlib.suppress(FakeConnectionError):
                        await conn.execute("BEGIN")
                elif action == "release_broken":
                    self.driver.break_connection(conn, detected=True)
                await pool.release(conn)
            self.ended.append(conn)
            for _ in range(iterations):
                await asyncio.sleep(0)
            if self.acquirers:
                index = {"oldest": 0, "second": 1, "newest": -1}[victim]
                acquirer = self.acquirers[min(index, len(self.acquirers) - 1)]
                acquirer.cancelled_by_test = acquirer.task.cancel()
            await self.settle()

        self.run(go())

    # -- using and returning -----------------------------------------------------------------------

    @precondition(lambda self: self.held)
    @rule(pick=PICK)
    def release(self, pick: int) -> None:
        """Give a connection back; once the pool is closed (which terminated it), the release
        is accepted silently and changes nothing."""
        conn = _pick(self.held, pick)

        async def go() -> None:
            assert self.pool is not None
            before = self.pool.stats()
            await self.pool.release(conn)
            if self.closed:
                assert self.pool.stats() == before
            else:
                self.ended.append(conn)
            await self.settle()

        self.run(go())

    @precondition(lambda self: self.is_open() and self.held)
    @rule(pick=PICK, mode=st.sampled_from(["instant", "slow", "stuck"]))
    def release_dirty(self, pick: int, mode: str) -> None:
        """Release inside a transaction: the reset must roll back, possibly suspending."""
        conn = _pick(self.held, pick)

        async def go() -> None:
            assert self.pool is not None
            with contextlib.suppress(FakeConnectionError):
                await conn.execute("BEGIN")
            self.ended.append(conn)  # from the release on, even while it is under way
            if mode == "instant":
                await self.pool.release(conn)
            else:
                if mode == "slow":
                    self.driver.reset_latency = SLOW_RESET
                else:
                    self.driver.stall_resets(1)  # until the test lets the resets finish
                task = asyncio.ensure_future(self.pool.release(conn))
                await asyncio.sleep(0)  # the release starts, and sleeps in its reset
                self.driver.reset_latency = 0.0
                if mode == "slow":
                    await task
                else:
                    self.releases.append(_Release(conn, task))
            await self.settle()

        self.run(go())

    @precondition(lambda self: self.releases)
    @rule(pick=PICK)
    def cancel_a_release(self, pick: int) -> None:
        """A release cancelled in its reset: the releasing task ends, the reset goes on in the
        pool's own task (as under anyio, whose cancelled scope would cancel it at every await)."""
        release = self.releases[pick % len(self.releases)]
        release.cancelled_by_test = release.task.cancel()
        self.step()
        assert release.task.cancelled()
        assert not release.conn.closed or self.closed  # (a released lease still says)
        if not self.closed:
            self.resetting.append(release.conn)

    @precondition(lambda self: self.resetting or self.releases)
    @rule()
    def stuck_resets_finish(self) -> None:
        """The resets under way complete: their connections rejoin the pool (or, once it is
        closing, are closed)."""
        self.driver._reset_stall.release()

        async def go() -> None:
            await self.settle()
            assert not self.releases, "a release still runs after its reset finished"
            self.resetting.clear()

        self.run(go())

    @precondition(lambda self: self.is_open() and (self.releases or self.detached))
    @rule(pick=PICK)
    def release_twice_is_refused(self, pick: int) -> None:
        """A connection being released (its lease), or detached (the driver's connection that
        detach() returned), is no longer the caller's to release or detach."""
        releasing = [release.conn for release in self.releases]
        conns = releasing + self.detached
        conn = conns[pick % len(conns)]
        # The lease of a release under way is stale; a detached connection is simply foreign.
        stale = pick % len(conns) < len(releasing)
        why = "this connection: it was already released" if stale else "FakeConnection object"

        async def go() -> None:
            assert self.pool is not None
            with pytest.raises(ValueError, match=f"cannot release {why}"):
                await self.pool.release(conn)
            with pytest.raises(ValueError, match=f"cannot detach {why}"):
                self.pool.detach(conn)
            if stale:
                self.stale_releases += 2
            await self.settle()

        self.run(go())

    def _stale_lease(self, pick: int, relent: bool) -> FakeConnection:
        """An ended lease; with ``relent``, one whose connection is lent again now, if any."""
        held = {conn.id for conn in self.held}
        choices = [conn for conn in self.ended if conn.id in held] if relent else []
        choices = choices or self.ended
        return choices[pick % len(choices)]

    @precondition(lambda self: self.ended)
    @rule(pick=PICK, relent=st.booleans(), detach=st.booleans())
    def release_a_stale_lease(self, pick: int, relent: bool, detach: bool) -> None:
        """Release or detach again a lease given back earlier, whose connection may be lent to
        someone else by now (or being reset, or closed): refused, and counted, and nothing else
        changes; above all, the connection's current holder keeps it."""
        pool = self.pool
        assert pool is not None
        stale = self._stale_lease(pick, relent)
        holders = [conn for conn in self.held if conn.id == stale.id]

        async def give_back() -> None:
            if detach:
                pool.detach(stale)
            else:
                await pool.release(stale)  # refused before it suspends: no other task runs

        async def go() -> None:
            before = pool.stats()
            with pytest.raises(ValueError, match=r"this connection: it was already (released|det)"):
                await give_back()
            self.stale_releases += 1
            assert pool.stats() == replace(before, stale_releases=before.stale_releases + 1)
            if not self.closed:
                for holder in holders:  # still lent, under the holder's own lease
                    assert raw_connection(holder).id == stale.id
            await self.settle()

        self.run(go())

    @precondition(lambda self: self.ended)
    @rule(pick=PICK, relent=st.booleans(), method=st.sampled_from(["execute", "fetch", "fetchval"]))
    def use_a_stale_lease(self, pick: int, relent: bool, method: str) -> None:
        """A statement through a lease given back earlier is refused and sends nothing, on the
        connection (whoever holds it now) or anywhere else."""
        stale = self._stale_lease(pick, relent)

        async def go() -> None:
            sent, queries = list(stale.executed), len(self.driver.queries)
            statement = getattr(stale, method)  # fetched after the end: refuses when called
            with pytest.raises(ConnectionReleased, match="cannot use this connection: it was"):
                await statement("INSERT INTO t VALUES (1)")
            self.stale_uses += 1
            assert stale.executed == sent
            assert len(self.driver.queries) == queries
            await self.settle()

        self.run(go())

    @precondition(lambda self: self.held)
    @rule(pick=PICK)
    def use_a_connection(self, pick: int) -> None:
        conn = self.held[pick % len(self.held)]

        async def go() -> None:
            if self.closed:  # close() terminated it, which ended its lease
                sent = list(conn.executed)
                with pytest.raises(ConnectionReleased, match="was closed and terminated it"):
                    await conn.execute("SELECT 1")
                self.stale_uses += 1
                assert conn.executed == sent
            else:
                try:
                    await conn.execute("SELECT 1")
                except FakeConnectionError:
                    assert conn.broken or conn.closed
            await self.settle()

        self.run(go())

    @precondition(lambda self: self.is_open() and self.held)
    @rule(pick=PICK)
    def detach(self, pick: int) -> None:
        pool = self.pool
        assert pool is not None
        conn = _pick(self.held, pick)

        def detach() -> None:
            own = raw_connection(conn)
            assert pool.detach(conn) is own  # the driver's connection, not the lease
            self.detached.append(own)
            self.ended.append(conn)

        self.step(detach)

    @precondition(lambda self: self.detached)
    @rule(pick=PICK)
    def close_a_detached_connection(self, pick: int) -> None:
        conn = _pick(self.detached, pick)

        async def go() -> None:
            await self.driver.close(conn)
            self.detached_closed += 1
            await self.settle()

        self.run(go())

    # -- the database misbehaves -------------------------------------------------------------------

    @precondition(lambda self: self.is_open() and self.driver.live)
    @rule(pick=PICK, detected=st.booleans())
    def break_a_connection(self, pick: int, detected: bool) -> None:
        """The server side of a connection (held, idle, being released...) goes away."""
        candidates = [conn for conn in self.driver.connections if not conn.broken]
        if candidates:
            conn = candidates[pick % len(candidates)]
            self.driver.break_connection(conn, detected=detected)
        self.step()

    @precondition(is_open)
    @rule(
        event=st.sampled_from(
            [
                "refuse_a_connect",
                "refuse_3_connects",
                "refuse_connects",
                "stall_connects",
                "fail_a_ping",
                "stall_pings",
                "fail_a_reset",
                "heal",
            ]
        )
    )
    def database(self, event: str) -> None:
        """The database refuses or stalls connects, fails or stalls pings, fails resets, or heals.

        A stalled call waits until ``heal``, which also clears every scripted failure.
        """
        driver = self.driver
        if event.startswith("refuse"):
            self.connect_failures_scripted = True
        if event == "refuse_a_connect":
            driver.fail_next_connects(1)
        elif event == "refuse_3_connects":
            driver.fail_next_connects(3)
        elif event == "refuse_connects":
            driver.fail_connects()
        elif event == "stall_connects":
            driver.stall_connects()
        elif event == "fail_a_ping":
            driver.fail_pings(1)
        elif event == "stall_pings":
            self.pings_stalled = True  # acquirers validating an idle connection are stuck
            driver.stall_pings()
        elif event == "fail_a_reset":
            driver.fail_resets(1)
        else:
            self.pings_stalled = False
            driver.heal()
        self.step()

    # -- time and administration -------------------------------------------------------------------

    @precondition(is_open)
    @rule(seconds=st.sampled_from([1, 2, 3, FAR_FUTURE]))
    def advance_clock(self, seconds: int) -> None:
        self.fake_clock.advance(seconds)
        self.step()

    @precondition(is_open)
    @rule()
    def expire(self) -> None:
        """Every connection open now is retired: idle ones now, ones in use when released, so
        none is handed out again.

        Except one being validated: it is in use, so it may still be handed out once (the
        connects under way are treated alike). Those cannot be told from the idle ones here, so
        only the connections the test holds are followed while a validation is under way.
        """
        assert self.pool is not None
        lent = self.held + [release.conn for release in self.releases] + self.resetting
        validating = self.pool.stats().in_use > len(lent)
        self.expired.update(conn.id for conn in (lent if validating else self.driver.connections))
        self.step(self.pool.expire)

    @precondition(is_open)
    @rule(
        change=st.sampled_from([-1, -2, 1, 2]),
        min_size=st.integers(min_value=0, max_value=2),
        busy=st.booleans(),
    )
    def resize(self, change: int, min_size: int, busy: bool) -> None:
        """Set max_size to the current size plus ``change`` (1 to 4).

        Shrinking below the connections in use, or growing while acquirers wait, is where
        resize has work to do; with ``busy``, acquires first take every connection there is.
        """
        pool = self.pool
        assert pool is not None

        async def go() -> None:
            for _ in range(4):
                stats = pool.stats()
                if not busy or self.acquirers or stats.in_use >= stats.max_size:
                    break
                self.spawn_acquire(LONG)
                await self.settle()
            stats = pool.stats()
            max_size = min(max(stats.size + change, 1), 4)
            if max_size < stats.size:
                self.shrunk = True
                self.opening_beyond = stats.opening
            pool.resize(min_size=min(min_size, max_size), max_size=max_size)
            await self.settle()

        self.run(go())

    @precondition(lambda self: self.is_open() and self.runs >= CLOSE_AFTER)
    @rule(
        mode=st.sampled_from(["cancelled", "forced", "graceful"]),
        timeout=st.sampled_from([0.0, 0.01]),
        dirty=st.booleans(),
        pick=PICK,
        iterations=st.integers(min_value=1, max_value=3),
    )
    def close(
        self,
        mode: str,
        timeout: float,
        dirty: bool,
        pick: int,
        iterations: int,
    ) -> None:
        """Close the pool; waiters fail at once, and the run ends with the pool's clean-up.

        * graceful: the connections come back (clean, or ``dirty`` ones that need a rollback),
          and stalled connects and pings finish, while close waits;
        * forced: close gives up on them after ``timeout`` and terminates them (an acquirer
          stuck in a stalled ping is left to find that out when the ping returns);
        * cancelled: close itself is cancelled (a shutdown deadline) while it waits, and a held
          connection comes back in that very loop iteration, after the cancellation.
        """
        pool = self.pool
        assert pool is not None

        async def go() -> None:
            if mode == "forced":
                await pool.close(timeout)
                self.closed = True
                await self.settle()
                return
            closing = asyncio.ensure_future(pool.close(timeout=LONG))
            for _ in range(iterations):
                await asyncio.sleep(0)
            self.closed = True
            if mode == "cancelled":
                closing.cancel()
                if self.held:
                    await pool.release(_pick(self.held, pick))
                await asyncio.wait([closing])
            else:
                self.pings_stalled = False
                self.driver.heal()
                await self.settle()  # healed: the stuck resets finish
                self.resetting.clear()
                while self.held:
                    conn = _pick(self.held, pick)
                    if dirty:
                        with contextlib.suppress(FakeConnectionError):
                            await conn.execute("BEGIN")
                    await pool.release(conn)
                    self.ended.append(conn)
                    await asyncio.sleep(0)
                await self.settle()
                assert closing.done(), f"close() still waits, with nothing in use: {pool!r}"
                await closing
            await self.settle()

        self.run(go())
        assert pool.closed
        # Only acquirers validating a connection in a stalled ping may still run.
        assert len(self.acquirers) <= self.driver.stalled, "acquires still running after close()"
        assert pool.stats().size == 0, pool.stats()
        assert all(conn.closed for conn in self.held)
        assert all(release.conn.closed for release in self.releases)
        assert all(conn.closed for conn in self.resetting)
        self.resetting.clear()
        assert self.driver.live == len(self.detached), self.driver

    @precondition(lambda self: self.closed)
    @rule(timeout=st.sampled_from([None, 0.0, LONG]), context_manager=st.booleans())
    def acquire_after_close(self, timeout: float | None, context_manager: bool) -> None:
        pool = self.pool
        assert pool is not None

        async def use_a_connection() -> None:
            async with pool.acquire(timeout=timeout):
                pytest.fail("acquired from a closed pool")

        async def go() -> None:
            with pytest.raises(PoolClosed):
                await (use_a_connection() if context_manager else pool.acquire(timeout=timeout))
            await pool.close()  # closing again does nothing
            await self.settle()

        self.run(go())

    # -- invariants ----------------------------------------------------------------------------

    @invariant()
    def the_pool_books_hold(self) -> None:
        if self.pool is None:
            return
        errors = self.pool._invariant_errors()
        if self.shrunk:
            # Connects under way when resize() shrank the pool cannot be taken back; they are
            # checked by size_stays_within_max_size. (The pool's self-check reports them.)
            errors = [error for error in errors if not error.startswith("opening connections")]
        assert errors == []

    @invariant()
    def size_stays_within_max_size(self) -> None:
        """Over max_size only after a resize down, and then nothing new opens beyond it."""
        if self.pool is None:
            return
        stats = self.pool.stats()
        if stats.size <= stats.max_size:
            self.shrunk = False
            self.opening_beyond = 0
        assert self.shrunk or stats.size <= stats.max_size, stats
        if not (
            self.closed
            or self.held
            or self.releases
            or self.resetting
            or self.acquirers
            or stats.opening
        ):
            assert stats.size <= stats.max_size, stats  # the excess retired on its return
        if stats.size > stats.max_size:
            assert stats.opening <= self.opening_beyond, stats
            self.opening_beyond = stats.opening

    @invariant()
    def the_test_holds_what_the_pool_lends(self) -> None:
        if self.pool is None:
            return
        stats = self.pool.stats()
        lent = self.held + [release.conn for release in self.releases] + self.resetting
        # No connection is held twice (two live leases), or both held and detached.
        assert len({conn.id for conn in lent + self.detached}) == len(lent) + len(self.detached)
        # Besides what the test holds, the pool lends only connections being validated by an
        # acquirer stuck in a stalled ping; stalled pings and connects are all that is stalled.
        validating = stats.in_use - len(lent)
        if self.closed:
            assert stats.in_use == 0
            assert all(conn.closed for conn in lent)
        else:
            assert validating >= 0, (stats, lent)
            assert self.pings_stalled or validating == 0, (stats, lent)
            stalled_resets = self.driver._reset_stall.held  # the releases under way
            assert stalled_resets <= len(self.releases) + len(self.resetting)
            assert stats.opening + validating + stalled_resets == self.driver.stalled, (
                stats,
                self.driver,
            )
            assert all(not conn.closed for conn in lent)
        # Acquires still running wait in line, for a stalled connect, or for a stalled ping.
        assert stats.waiting <= len(self.acquirers) <= stats.waiting + self.driver.stalled, stats

    @invariant()
    def every_open_connection_is_accounted_for(self) -> None:
        if self.pool is None:
            return
        stats = self.pool.stats()
        assert stats.closing == 0, stats  # closes take no time: none is left once quiet
        live = {conn.id for conn in self.driver.connections}
        assert all(conn.id in live for conn in self.detached)
        if not self.closed:
            assert all(conn.id in live for conn in self.held)
        assert self.driver.live == stats.idle + stats.in_use + stats.closing + len(self.detached), (
            stats,
            self.driver,
            self.detached,
        )

    @invariant()
    def the_counters_count(self) -> None:
        if self.pool is None:
            return
        stats = self.pool.stats()
        assert stats.created == self.driver.opened, (stats, self.driver)
        assert stats.closed == self.driver.closed - self.detached_closed, (stats, self.driver)
        assert stats.acquired == self.acquired, stats
        assert stats.timeouts == self.timeouts, stats
        assert stats.stale_releases == self.stale_releases, stats
        assert stats.stale_uses == self.stale_uses, stats

    # -- clean-up ----------------------------------------------------------------------------------

    def teardown(self) -> None:
        try:
            if self.pool is not None:
                self.run(self._give_everything_back())
        finally:
            self._close_loop()

    async def _give_everything_back(self) -> None:
        """Every permit comes back, and closing leaks nothing."""
        pool = self.pool
        assert pool is not None
        self.pings_stalled = False
        self.driver.heal()
        self.driver.reset_latency = 0.0
        await self.settle()
        for acquirer in self.acquirers:
            acquirer.cancelled_by_test = acquirer.task.cancel() or acquirer.cancelled_by_test
        for release in self.releases:
            release.cancelled_by_test = release.task.cancel() or release.cancelled_by_test
        await self.settle()
        while self.held:
            await pool.release(self.held.pop())
        await self.settle()
        stats = pool.stats()
        assert (stats.waiting, stats.opening, stats.in_use) == (0, 0, 0), stats
        assert stats.size <= stats.max_size, stats  # any excess after a resize retired on return
        # Nothing is in use, so closing needs no waiting, only a few loop iterations.
        closing = asyncio.ensure_future(pool.close(timeout=LONG))
        self.closed = True
        await self.settle()
        assert closing.done(), f"close() hangs with nothing in use: {pool.stats()}"
        await closing
        assert pool.stats().size == 0
        assert self.driver.live == len(self.detached)
        assert pool.stats().closed == self.driver.closed - self.detached_closed
        while self.detached:
            await self.driver.close(self.detached.pop())
        assert self.driver.live == 0
        assert self.driver.opened == self.driver.closed
        assert self.loop_errors == []

    def _close_loop(self) -> None:
        loop = self.loop
        try:
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            if tasks:
                loop.run_until_complete(asyncio.wait(tasks))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()


class UvloopPoolMachine(PoolMachine):
    """The same machine on uvloop's event loop."""

    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        return loop


_IN_CI = os.environ.get("CI", "").lower() == "true"

# Profiles of this file only, applied to its two test cases: loading a profile would change every
# hypothesis test in the session. About 8 s locally and 20 s in CI (40 s under coverage) on two
# cores, both event loops together.
settings.register_profile(
    "pool-properties", max_examples=100, stateful_step_count=30, deadline=None
)
settings.register_profile(
    "pool-properties-ci", max_examples=250, stateful_step_count=30, deadline=None
)
_SETTINGS = settings.get_profile("pool-properties-ci" if _IN_CI else "pool-properties")

TestPoolProperties = PoolMachine.TestCase
TestPoolProperties.settings = _SETTINGS
TestPoolPropertiesUvloop = UvloopPoolMachine.TestCase
TestPoolPropertiesUvloop.settings = _SETTINGS
