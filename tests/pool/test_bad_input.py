"""Bad input at the public entry points: a clear error, and the pool left exactly as it was.

What the neighbouring files check already is not repeated here: typical bad values of each option
(``test_config.py``), malformed URLs (``test_url.py`` and the drivers' tests), foreign and double
releases and detaches (``test_release.py``), acquiring from a pool never opened or closed
(``test_acquire.py``, ``test_lifecycle.py``). This file adds:

* every option of ``Pool`` and ``create_pool`` against an oracle, over generated values and
  combinations: a pool is made exactly when the oracle says the values are valid, and otherwise
  a ``ValueError`` names an offending option;
* URLs that are not strings at all;
* bad timeouts of ``acquire`` and ``close`` that leave the pool open and serving;
* a pool whose connections are all lent, asked for one from a second event loop in another
  thread: a clear ``RuntimeError`` at once, while the pool goes on serving in its own loop;
* a state machine that mixes valid and invalid calls in random order on a ``Pool(FakeDriver())``:
  each invalid call raises its documented error and leaves the pool's stats exactly as they
  were, and the pool's books balance after every step.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Coroutine
from dataclasses import replace
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any, TypeVar

import pytest
import uvloop
from helpers import check_books, run_in_a_new_loop_of_the_same_kind, wait_for_waiters
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from aiodbpool import Pool, PoolClosed, PoolTimeout, create_pool, raw_connection
from aiodbpool._options import MIN_MAINTENANCE_INTERVAL
from aiodbpool.drivers.fake import FakeClock, FakeConnection, FakeDriver

T = TypeVar("T")

NAN, INF = math.nan, math.inf

# ------------------------------------------------------------------ options against an oracle

COUNTS: dict[str, tuple[int, bool]] = {
    "min_size": (0, False),
    "max_size": (1, False),
    "max_waiting": (0, True),
    "max_uses": (1, True),
    "breaker_threshold": (1, True),
}
"""Whole-number options: the least value allowed, and whether None is."""

SECONDS: dict[str, tuple[bool, bool]] = {
    "acquire_timeout": (True, False),
    "connect_timeout": (True, False),
    "ping_timeout": (True, False),
    "reset_timeout": (True, False),
    "close_timeout": (True, False),
    "leak_timeout": (True, False),
    "max_idle": (True, False),
    "max_lifetime": (True, False),
    "validate_after_idle": (True, True),
    "maintenance_interval": (False, False),
    "backoff_initial": (False, False),
    "backoff_max": (False, False),
}
"""Options in seconds: whether None is allowed, and whether zero is."""

DEFAULTS: dict[str, Any] = {
    "min_size": 0,
    "max_size": 10,
    "backoff_initial": 0.5,
    "backoff_max": 30.0,
}
"""The defaults of the options that are checked against each other."""

ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-3, max_value=12),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(min_value=-2.0, max_value=40.0),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["1", "", b"1", [1], (), Decimal("1"), Fraction(1, 2), 1j]),
)
"""Values of every kind an option might be given by mistake, and valid ones among them.

(Integers stay within a float's range: see ``_valid``.)"""


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _valid_value(name: str, value: object) -> bool:
    if name in COUNTS:
        least, none_allowed = COUNTS[name]
        if value is None:
            return none_allowed
        return isinstance(value, int) and not isinstance(value, bool) and value >= least
    none_allowed, zero_allowed = SECONDS[name]
    if value is None:
        return none_allowed
    if not _is_number(value):
        return False
    seconds = float(value)  # type: ignore[arg-type]
    if name == "maintenance_interval" and seconds < MIN_MAINTENANCE_INTERVAL:
        return False  # a floor, not only "more than zero"
    return math.isfinite(seconds) and (seconds > 0 or (zero_allowed and seconds == 0))


def _valid(options: dict[str, Any]) -> bool:
    """Whether ``Pool`` must accept these options: each one valid, and the pairs in order."""
    if not all(_valid_value(name, value) for name, value in options.items()):
        return False
    merged = {**DEFAULTS, **options}
    return bool(
        merged["min_size"] <= merged["max_size"]
        and merged["backoff_initial"] <= merged["backoff_max"]
    )


@settings(max_examples=400, deadline=None)
@given(
    options=st.dictionaries(
        st.sampled_from(sorted([*COUNTS, *SECONDS])), ANY_VALUE, min_size=1, max_size=3
    )
)
def test_pool_and_create_pool_accept_exactly_the_valid_options(options: dict[str, Any]) -> None:
    makers: list[Callable[[], Pool[Any]]] = [
        lambda: Pool(FakeDriver(), **options),
        lambda: create_pool("fake://", **options),
    ]
    for make in makers:
        if _valid(options):
            stats = make().stats()
            assert (stats.min_size, stats.max_size) == (
                options.get("min_size", DEFAULTS["min_size"]),
                options.get("max_size", DEFAULTS["max_size"]),
            )
            continue
        with pytest.raises(ValueError, match="|".join(options)):
            make()


@pytest.mark.parametrize(
    "url", [None, 42, Path("app.db"), bytearray(b"fake://"), ["fake://"], b"fake://"]
)
def test_a_url_of_the_wrong_type_is_refused_naming_the_type(url: object) -> None:
    with pytest.raises(TypeError, match=f"url must be a string, got {type(url).__name__}"):
        create_pool(url)  # type: ignore[arg-type]


def test_a_malformed_postgres_host_is_refused_before_any_connect() -> None:
    with pytest.raises(ValueError, match="IPv6") as refused:
        create_pool("postgresql://app:hunter2@[::1/app")
    assert "hunter2" not in str(refused.value)


# ------------------------------------------------------------------ bad timeouts of a running pool

BAD_TIMEOUTS: list[object] = [-1, -1e-9, NAN, INF, -INF, True, False, "1", b"1", [1], Decimal("1")]
"""Never a valid ``timeout`` for ``acquire`` or ``close``."""


@pytest.mark.parametrize("timeout", BAD_TIMEOUTS, ids=repr)
async def test_a_bad_acquire_timeout_is_refused_and_the_pool_serves_on(timeout: object) -> None:
    async with Pool(FakeDriver(), min_size=1, clock=FakeClock()) as pool:
        before = pool.stats()

        with pytest.raises(ValueError, match="timeout"):
            pool.acquire(timeout=timeout)  # type: ignore[arg-type]

        assert pool.stats() == before
        async with pool.acquire(timeout=1) as conn:
            assert await conn.execute("SELECT 1") == "OK"


@pytest.mark.parametrize("timeout", [*BAD_TIMEOUTS, None], ids=repr)
async def test_a_bad_close_timeout_is_refused_and_the_pool_stays_open(timeout: object) -> None:
    async with Pool(FakeDriver(), min_size=1, clock=FakeClock()) as pool:
        held = await pool.acquire()
        before = pool.stats()

        with pytest.raises(ValueError, match="timeout"):
            await pool.close(timeout=timeout)  # type: ignore[arg-type]

        assert not pool.closed
        assert pool.stats() == before
        await pool.release(held)
        async with pool.acquire(timeout=1) as conn:
            assert conn.id == held.id
    assert pool.closed


# ------------------------------------------------------------------ another event loop


async def test_a_pool_used_from_another_threads_loop_says_so_and_serves_on_at_home() -> None:
    """Opened in this loop, asked for a connection from a loop in another thread while its only
    connection is in use: a RuntimeError at once that says why, and nothing changes here."""
    home = asyncio.get_running_loop()
    async with Pool(FakeDriver(), max_size=1, clock=FakeClock()) as pool:
        held = await pool.acquire()
        before = pool.stats()

        async def acquire_there() -> None:
            await pool.acquire(timeout=30)

        async def use_there() -> None:
            async with pool.acquire(timeout=30):
                pytest.fail("lent a connection to another event loop")

        for attempt in (acquire_there, use_there):
            with pytest.raises(RuntimeError, match="opened in another event loop") as refused:
                await asyncio.to_thread(run_in_a_new_loop_of_the_same_kind, home, attempt)
            assert "one pool per loop" in str(refused.value)
            assert pool.stats() == before

        waiter = asyncio.ensure_future(pool.acquire(timeout=30))
        await wait_for_waiters(pool, 1)
        await pool.release(held)
        again = await waiter
        assert again.id == held.id
        await pool.release(again)
        check_books(pool)


async def test_an_idle_connection_is_not_lent_to_another_threads_loop() -> None:
    """The fast path too: with a ready idle connection, a loop in another thread is refused."""
    home = asyncio.get_running_loop()
    async with Pool(FakeDriver(), min_size=1, clock=FakeClock()) as pool:
        before = pool.stats()
        assert before.idle == 1

        async def acquire_there() -> None:
            await pool.acquire(timeout=30)

        with pytest.raises(RuntimeError, match="opened in another event loop"):
            await asyncio.to_thread(run_in_a_new_loop_of_the_same_kind, home, acquire_there)
        assert pool.stats() == before
        async with pool.acquire() as conn:
            assert await conn.execute("SELECT 1") == "OK"


async def test_a_release_to_a_pool_never_opened_is_refused_as_not_acquired_from_it() -> None:
    pool = Pool(FakeDriver(), name="lazy")
    async with Pool(FakeDriver(), name="other") as other:
        foreign = await other.acquire()
        before = pool.stats()
        try:
            with pytest.raises(ValueError, match="cannot release FakeConnection object: it was"):
                await pool.release(foreign)
            assert pool.stats() == before
        finally:
            await other.release(foreign)


@pytest.mark.parametrize("option", ["acquire_timeout", "connect_timeout", "max_idle"])
def test_an_integer_too_large_for_a_float_is_refused_naming_the_option(option: str) -> None:
    with pytest.raises(ValueError, match=f"{option} must be a finite number of seconds"):
        Pool(FakeDriver(), **{option: 10**400})  # type: ignore[arg-type]


async def test_an_acquire_timeout_too_large_for_a_float_is_refused() -> None:
    async with Pool(FakeDriver()) as pool:
        with pytest.raises(ValueError, match="timeout must be a finite number of seconds"):
            pool.acquire(timeout=10**400)


# ------------------------------------------------------------------ random valid and invalid calls

MACHINE_TIMEOUT = 30.0
"""Timeout of the acquires that are expected to succeed: they never wait for it."""
CLOSE_AFTER = 15
"""Steps before close() may be chosen: a closed pool has few valid calls left."""

BAD_SIZES: list[tuple[object, object]] = [
    (-1, None),
    (None, 0),
    (None, -3),
    (None, NAN),
    (None, INF),
    (None, 1.5),
    (None, True),
    (False, None),
    ("1", None),
    (None, b"2"),
    (2.0, 3),
    (3, 2),
]
"""``resize(min_size, max_size)`` calls that are refused whatever the pool's current sizes."""

NOT_CONNECTIONS: list[object] = [None, 0, "conn", object()]


class BadInputMachine(RuleBasedStateMachine):
    """A pool over a FakeDriver, given valid and invalid calls in random order.

    An invalid call must raise its documented error before it changes anything: the stats taken
    just before and just after it are equal, with no loop iteration between them.
    """

    def __init__(self) -> None:
        super().__init__()
        self.loop = self.new_event_loop()
        self.loop_errors: list[dict[str, Any]] = []
        self.loop.set_exception_handler(lambda _loop, context: self.loop_errors.append(context))
        self.driver = FakeDriver()
        self.pool: Pool[FakeConnection] = Pool(
            self.driver,
            name="bad-input",
            max_size=2,
            acquire_timeout=MACHINE_TIMEOUT,
            clock=FakeClock(),  # time stands still: no connection ages
            maintenance_interval=1e6,
        )
        # Connections of another pool, never this pool's to release or detach.
        self.other_pool: Pool[FakeConnection] = Pool(FakeDriver(), name="other")
        self.foreign: list[FakeConnection] = []
        self.held: list[FakeConnection] = []  # leases acquired and not given back
        # Leases released or detached: stale for good, even once their connection is lent again.
        self.given_back: list[FakeConnection] = []
        self.abandoned: list[FakeConnection] = []  # held when close() terminated them
        self.released_after_close: list[FakeConnection] = []  # abandoned, then released
        self.opened = False
        self.closed = False
        self.steps = 0

    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        return asyncio.new_event_loop()

    # -- running the loop ------------------------------------------------------------------------

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        self.steps += 1
        return self.loop.run_until_complete(coro)

    async def settle(self) -> None:
        """Let the pool's background closes and refills run until nothing changes any more."""
        last = None
        quiet = 0
        for _ in range(200):
            await asyncio.sleep(0)
            now = (self.pool.stats(), self.driver.live, len(asyncio.all_tasks()))
            quiet = quiet + 1 if now == last else 0
            last = now
            if quiet >= 3:
                return
        pytest.fail(f"the pool never went quiet: {self.pool!r}")

    def refused(
        self,
        error: type[Exception],
        match: str,
        call: Callable[[], Coroutine[Any, Any, None]],
        *,
        stale: bool = False,
    ) -> None:
        """Run an invalid ``call``: it raises ``error``, and the pool's stats do not move, but
        for ``stale_releases``, which counts one more if ``stale`` (a release or detach of a
        connection the pool lent and got back)."""

        async def go() -> None:
            before = self.pool.stats()
            shown = repr(self.pool)
            with pytest.raises(error, match=match):
                await call()
            after = replace(before, stale_releases=before.stale_releases + int(stale))
            assert self.pool.stats() == after
            assert repr(self.pool) == shown
            await self.settle()
            assert self.pool.stats() == after  # and nothing was set in motion either

        self.run(go())

    def is_open(self) -> bool:
        return self.opened and not self.closed

    def not_open(self) -> bool:
        return not self.is_open()

    # -- set-up ----------------------------------------------------------------------------------

    @initialize(open_now=st.booleans(), min_size=st.integers(min_value=0, max_value=2))
    def set_up(self, open_now: bool, min_size: int) -> None:
        async def go() -> None:
            await self.other_pool.open()
            self.foreign.append(await self.other_pool.acquire())
            self.pool.resize(min_size=min_size)
            if open_now:
                await self.pool.open()
                self.opened = True
            await self.settle()

        self.run(go())

    # -- valid calls -----------------------------------------------------------------------------

    @precondition(lambda self: not self.opened and not self.closed)
    @rule()
    def open(self) -> None:
        async def go() -> None:
            await self.pool.open()
            self.opened = True
            await self.settle()

        self.run(go())

    @precondition(is_open)
    @rule()
    def acquire(self) -> None:
        """Take a connection when one can be had at once; otherwise a zero timeout runs out."""

        async def go() -> None:
            stats = self.pool.stats()
            if stats.idle or stats.size < stats.max_size:
                conn = await self.pool.acquire(timeout=MACHINE_TIMEOUT)
                assert conn.id not in [held.id for held in self.held]
                assert all(conn is not stale for stale in self.given_back)  # a new lease
                self.held.append(conn)
            else:
                with pytest.raises(PoolTimeout):
                    await self.pool.acquire(timeout=0)
            await self.settle()

        self.run(go())

    @precondition(lambda self: self.held and not self.closed)
    @rule(pick=st.integers(min_value=0, max_value=9), detach=st.booleans())
    def give_back(self, pick: int, detach: bool) -> None:
        conn = self.held.pop(pick % len(self.held))

        async def go() -> None:
            if detach:
                own = raw_connection(conn)
                assert self.pool.detach(conn) is own  # the driver's connection, not the lease
                await self.driver.close(own)
            else:
                await self.pool.release(conn)
            self.given_back.append(conn)
            await self.settle()

        self.run(go())

    @precondition(lambda self: self.abandoned)
    @rule()
    def release_after_close(self) -> None:
        """A connection close() terminated while it was held may still be released: silently,
        and nothing changes."""
        conn = self.abandoned.pop()

        async def go() -> None:
            before = self.pool.stats()
            await self.pool.release(conn)
            assert self.pool.stats() == before
            self.released_after_close.append(conn)
            await self.settle()

        self.run(go())

    @precondition(lambda self: not self.closed)
    @rule(min_size=st.integers(min_value=0, max_value=3), max_size=st.integers(1, 3))
    def resize(self, min_size: int, max_size: int) -> None:
        min_size = min(min_size, max_size)

        async def go() -> None:
            self.pool.resize(min_size=min_size, max_size=max_size)
            stats = self.pool.stats()
            assert (stats.min_size, stats.max_size) == (min_size, max_size)
            await self.settle()

        self.run(go())

    @precondition(is_open)
    @rule()
    def expire(self) -> None:
        async def go() -> None:
            self.pool.expire()
            await self.settle()

        self.run(go())

    @precondition(lambda self: not self.closed and self.steps >= CLOSE_AFTER)
    @rule(timeout=st.sampled_from([0, 0.0, 0.001, 5]))
    def close(self, timeout: float) -> None:
        """Close; connections still held are terminated at once (a zero timeout) or, with time
        to spare, given back while close waits."""

        async def go() -> None:
            closing = asyncio.ensure_future(self.pool.close(timeout=0 if self.held else timeout))
            await asyncio.wait([closing], timeout=MACHINE_TIMEOUT)
            assert closing.done(), f"close() hangs: {self.pool!r}"
            await closing
            self.closed = True
            if self.opened:
                self.abandoned.extend(self.held)
                assert all(conn.closed for conn in self.held)
            self.held.clear()
            await self.settle()

        self.run(go())

    # -- invalid calls ---------------------------------------------------------------------------

    @rule(close=st.booleans(), timeout=st.sampled_from(BAD_TIMEOUTS))
    def call_with_a_bad_timeout(self, close: bool, timeout: object) -> None:
        async def call() -> None:
            if close:
                await self.pool.close(timeout=timeout)  # type: ignore[arg-type]
            else:
                await self.pool.acquire(timeout=timeout)  # type: ignore[arg-type]

        self.refused(ValueError, "timeout must be", call)

    @precondition(not_open)
    @rule(timeout=st.sampled_from([None, 0, 1.0]), context_manager=st.booleans())
    def acquire_from_a_pool_not_open(self, timeout: float | None, context_manager: bool) -> None:
        async def call() -> None:
            if context_manager:
                async with self.pool.acquire(timeout=timeout):
                    pytest.fail("acquired from a pool that is not open")
            await self.pool.acquire(timeout=timeout)

        self.refused(PoolClosed, "closed" if self.closed else "not open", call)

    @precondition(lambda self: self.closed)
    @rule()
    def reopen(self) -> None:
        self.refused(PoolClosed, "cannot be reopened", self.pool.open)

    @precondition(lambda self: self.closed)
    @rule(min_size=st.integers(min_value=0, max_value=3), max_size=st.integers(3, 5))
    def resize_a_closed_pool(self, min_size: int, max_size: int) -> None:
        async def call() -> None:
            self.pool.resize(min_size=min_size, max_size=max_size)

        self.refused(PoolClosed, "cannot resize", call)

    @precondition(not_open)
    @rule()
    def expire_a_pool_not_open(self) -> None:
        """Nothing to retire: accepted, and nothing changes."""

        async def go() -> None:
            before = self.pool.stats()
            self.pool.expire()
            await self.settle()
            assert self.pool.stats() == before

        self.run(go())

    @rule(
        kind=st.sampled_from(["foreign", "given back", "driver's own", "not a connection"]),
        pick=st.integers(min_value=0, max_value=9),
        detach=st.booleans(),
    )
    def give_back_what_is_not_ours(self, kind: str, pick: int, detach: bool) -> None:
        """Release or detach a connection of another pool, one already given back or detached
        (whose connection may be lent again by now), the driver's own connection behind a lease
        or an idle one, or something that is no connection at all."""
        candidates: dict[str, list[object]] = {
            "foreign": list(self.foreign),
            "given back": list(self.given_back),
            "driver's own": list(self.driver.connections),
            "not a connection": NOT_CONNECTIONS,
        }
        choices = candidates[kind] or NOT_CONNECTIONS
        conn: Any = choices[pick % len(choices)]
        assert conn not in self.held
        assert conn not in self.abandoned
        match = f"cannot {'detach' if detach else 'release'}"
        stale = False  # only a connection this pool lent and got back is a stale release
        if kind == "given back" and self.given_back:
            match += " this connection: it was already (released|detached)"
            stale = True
        elif kind == "driver's own" and self.driver.connections:
            if any(conn is raw_connection(held) for held in self.held):
                match += " the driver's own connection"  # only its lease gives it back
            else:
                match += " a connection already released"  # idle: the pool's already
                stale = True

        async def call() -> None:
            if detach:
                self.pool.detach(conn)
            else:
                await self.pool.release(conn)

        self.refused(ValueError, match, call, stale=stale)

    @precondition(lambda self: self.abandoned or self.released_after_close)
    @rule(pick=st.integers(min_value=0, max_value=9))
    def detach_after_close(self, pick: int) -> None:
        """A connection close() terminated while it was held (released since or not) is no
        longer the pool's."""
        choices = self.abandoned + self.released_after_close
        conn = choices[pick % len(choices)]

        async def call() -> None:
            self.pool.detach(conn)

        self.refused(
            ValueError,
            "cannot detach this connection: it was already (closed|released after close)",
            call,
            stale=True,
        )

    @rule(sizes=st.sampled_from([*BAD_SIZES, "max below min", "min above max"]))
    def resize_with_bad_sizes(self, sizes: tuple[object, object] | str) -> None:
        """Sizes refused whatever the current ones, or one bound moved past the other one."""
        stats = self.pool.stats()
        min_size: object
        max_size: object
        if sizes == "max below min" and stats.min_size > 1:
            min_size, max_size = None, stats.min_size - 1
        elif isinstance(sizes, str):
            min_size, max_size = stats.max_size + 1, None
        else:
            min_size, max_size = sizes

        async def call() -> None:
            self.pool.resize(min_size=min_size, max_size=max_size)  # type: ignore[arg-type]

        self.refused(ValueError, "min_size|max_size", call)

    # -- after every step ------------------------------------------------------------------------

    @invariant()
    def the_books_balance(self) -> None:
        check_books(self.pool)
        stats = self.pool.stats()
        assert stats.in_use == (0 if self.closed else len(self.held)), stats
        assert stats.waiting == 0, stats
        if self.closed:
            assert stats.size == 0, stats
        elif not self.held:
            # Above max_size only after a resize() down, while connections lent before it are
            # still out.
            assert stats.size <= stats.max_size, stats
        assert self.driver.live == stats.idle + stats.in_use + stats.closing, self.driver
        assert self.loop_errors == []

    def teardown(self) -> None:
        async def close_everything() -> None:
            await self.pool.close(timeout=0)
            for conn in self.foreign:
                await self.other_pool.release(conn)
            await self.other_pool.close()
            await self.settle()
            assert self.pool.stats().size == 0
            assert self.driver.live == 0

        try:
            self.run(close_everything())
        finally:
            self.loop.close()


class UvloopBadInputMachine(BadInputMachine):
    """The same machine on uvloop's event loop."""

    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        return loop


_MACHINE_SETTINGS = settings(max_examples=80, stateful_step_count=40, deadline=None)

TestBadInputMachine = BadInputMachine.TestCase
TestBadInputMachine.settings = _MACHINE_SETTINGS
TestBadInputMachineUvloop = UvloopBadInputMachine.TestCase
TestBadInputMachineUvloop.settings = _MACHINE_SETTINGS
