"""Helpers shared by the pool's tests: waiting on conditions, a counting clock, a minimal driver.

Tests never sleep a fixed time to let something happen: they wait until a condition holds
(:func:`wait_until`), or until the pool's background job has run a few more rounds
(:func:`maintenance_rounds`, which counts the reads of an injected :class:`CountingClock`).
"""

from __future__ import annotations

import asyncio
import inspect
import os
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import pytest
import uvloop

from aiodbpool import Pool
from aiodbpool.drivers.fake import FakeClock

__all__ = [
    "CountingClock",
    "MinimalConn",
    "MinimalDriver",
    "TerminatingDriver",
    "acquire",
    "check_books",
    "maintenance_rounds",
    "maintenance_tasks",
    "needs_program",
    "run_in_a_new_loop_of_the_same_kind",
    "wait_for_waiters",
    "wait_until",
]

C = TypeVar("C")


def needs_program(found: object, program: str, package: str) -> None:
    """Skip the test when ``program`` (from Debian's ``package``, which ``.ci/run`` installs) is
    missing: ``found`` is where it was looked up, None if not found. Under ``CI=true`` the test
    fails instead, since CI must run every test."""
    if found is not None:
        return
    message = f"needs {program} (Debian package {package!r}; .ci/run installs it)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}, and CI must run every test", pytrace=False)
    pytest.skip(message)


async def wait_until(
    predicate: Callable[[], object], timeout: float = 5.0, *, message: str | None = None
) -> None:
    """Poll ``predicate`` with short sleeps until it is true; fail clearly after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(
                f"condition still false after {timeout}s: {message or _describe(predicate)}",
                pytrace=False,
            )
        await asyncio.sleep(0.001)


def finishes_at_once(awaitable: Awaitable[object]) -> bool:
    """Whether a coroutine completes on its first step, that is without awaiting anything (no
    I/O, no timer); it is closed either way."""
    coroutine: Any = awaitable
    try:
        coroutine.send(None)
    except StopIteration:
        return True
    coroutine.close()
    return False


def _describe(predicate: Callable[[], object]) -> str:
    try:
        return inspect.getsource(predicate).strip()
    except (OSError, TypeError):
        return repr(predicate)


async def acquire(pool: Pool[C], timeout: float | None = None) -> C:
    """``await pool.acquire(timeout)`` as a coroutine, for ``asyncio.create_task``."""
    return await pool.acquire(timeout)


async def wait_for_waiters(pool: Pool[Any], count: int) -> None:
    """Wait until exactly ``count`` acquirers are queued in ``pool``."""
    await wait_until(
        lambda: pool.stats().waiting == count, message=f"{count} acquirers waiting in {pool!r}"
    )


def check_books(pool: Pool[Any]) -> None:
    """Assert that the pool's books balance (every invariant of ``_invariant_errors`` holds)."""
    stats = pool.stats()
    assert stats.size == stats.idle + stats.in_use + stats.opening + stats.closing
    assert pool._invariant_errors() == []


def maintenance_tasks() -> list[asyncio.Task[Any]]:
    """The pools' maintenance jobs running in this event loop (found by their task names)."""
    return [
        task
        for task in asyncio.all_tasks()
        if task.get_name().startswith("aiodbpool[") and task.get_name().endswith("maintenance")
    ]


class CountingClock:
    """A :class:`FakeClock` that counts how often the pool reads it.

    The maintenance job reads the clock once per round, so a test can wait for "three more rounds"
    (:func:`maintenance_rounds`) to prove that something did *not* happen, without sleeping. Set
    ``error`` to make the next reads raise it.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._clock = FakeClock(start)
        self.reads = 0
        self.error: Exception | None = None

    def __call__(self) -> float:
        self.reads += 1
        if self.error is not None:
            raise self.error
        return self._clock()

    @property
    def now(self) -> float:
        return self._clock.now

    def advance(self, seconds: float) -> None:
        self._clock.advance(seconds)


async def maintenance_rounds(clock: CountingClock, rounds: int = 3) -> None:
    """Wait until the pool has read ``clock`` ``rounds`` more times: that many maintenance rounds
    when nothing else is using the pool."""
    target = clock.reads + rounds
    await wait_until(lambda: clock.reads >= target, message=f"{rounds} more maintenance rounds")


class MinimalConn:
    """The connection of :class:`MinimalDriver`."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.closed = False
        self.terminated = False

    def __repr__(self) -> str:
        return f"<MinimalConn {self.number}{' closed' if self.closed else ''}>"


class MinimalDriver:
    """A driver with exactly the five methods of the contract, and no base class.

    Knobs: ``refuse`` makes connects fail; ``stall_closes`` makes closes wait forever (a server
    that never answers), until the pool gives up on them; ``close_error`` makes closes raise;
    ``reset_gate`` makes resets wait until the event is set, then succeed whatever happened.
    """

    def __init__(self) -> None:
        self.opened: list[MinimalConn] = []
        self.refuse = False
        self.stall_closes = False
        self.close_error: Exception | None = None
        self.reset_gate: asyncio.Event | None = None

    async def connect(self) -> MinimalConn:
        if self.refuse:
            raise ConnectionRefusedError("minimal: connection refused")
        conn = MinimalConn(len(self.opened) + 1)
        self.opened.append(conn)
        return conn

    async def close(self, conn: MinimalConn) -> None:
        if self.stall_closes:
            await asyncio.get_running_loop().create_future()  # never resolved
        if self.close_error is not None:
            raise self.close_error
        conn.closed = True

    async def ping(self, conn: MinimalConn) -> None:
        if conn.closed:
            raise ConnectionError("minimal: closed")

    async def reset(self, conn: MinimalConn) -> None:
        if self.reset_gate is not None:
            await self.reset_gate.wait()

    def is_closed(self, conn: MinimalConn) -> bool:
        return conn.closed

    @property
    def live(self) -> int:
        """Connections opened and not closed."""
        return sum(not conn.closed for conn in self.opened)


class TerminatingDriver(MinimalDriver):
    """:class:`MinimalDriver` plus the optional ``terminate``; ``terminate_error`` makes it raise
    (a driver bug the pool must survive)."""

    def __init__(self) -> None:
        super().__init__()
        self.terminate_error: Exception | None = None

    def terminate(self, conn: MinimalConn) -> None:
        if self.terminate_error is not None:
            raise self.terminate_error
        conn.closed = True
        conn.terminated = True


def run_in_a_new_loop_of_the_same_kind(
    home: asyncio.AbstractEventLoop, coro: Callable[[], Coroutine[Any, Any, C]]
) -> C:
    """Run ``coro()`` to completion in a new event loop of the same kind as ``home`` (asyncio's
    own, or uvloop's), in the calling worker thread: for ``asyncio.to_thread``."""
    assert threading.current_thread() is not threading.main_thread()
    loop = uvloop.new_event_loop() if isinstance(home, uvloop.Loop) else asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro())
    finally:
        loop.close()
