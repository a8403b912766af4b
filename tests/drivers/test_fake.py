"""The fake driver on its own: every scripted behaviour, checked directly against the driver.

Nothing here waits on the wall clock to decide an outcome: blocked calls are detected by the
driver's ``stalled`` count, and latencies are either tiny (the call must merely complete) or huge
(a short ``asyncio.timeout`` must interrupt it).
"""

from __future__ import annotations

import asyncio
import random
import traceback
from collections.abc import Awaitable, Callable, Coroutine
from importlib.metadata import entry_points
from typing import Any

import pytest
from helpers import finishes_at_once

from aiodbpool import Driver, SupportsTerminate, SupportsTransaction
from aiodbpool.drivers.fake import (
    FakeClock,
    FakeConnection,
    FakeConnectionError,
    FakeDatabaseError,
    FakeDriver,
    from_url,
)

LONG = 60.0
"""A latency no test waits out: a short timeout must interrupt it."""
SHORT = 0.001
"""A latency a test waits out; only completion is checked, never the elapsed time."""
TIMEOUT = 0.01
"""How long a test lets a call hang before interrupting it."""

LATENCIES = ["connect_latency", "query_latency", "ping_latency", "reset_latency", "close_latency"]


def _loop_factories() -> list[Callable[[], asyncio.AbstractEventLoop]]:
    factories: list[Callable[[], asyncio.AbstractEventLoop]] = [asyncio.new_event_loop]
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is not available on Windows
        return factories
    factories.append(uvloop.new_event_loop)
    return factories


async def _until(condition: Callable[[], bool]) -> None:
    """Let other tasks run until ``condition`` holds; fail if it never does."""
    for _ in range(100):
        if condition():
            return
        await asyncio.sleep(0)
    pytest.fail("condition never became true")


def _completes_without_suspending(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run ``coro`` one step; it must finish in that step. Return its result."""
    with pytest.raises(StopIteration) as finished:
        coro.send(None)
    return finished.value.value


# -- the contract -------------------------------------------------------------------------------


def test_satisfies_the_driver_protocols() -> None:
    driver: Driver[FakeConnection] = FakeDriver()
    terminate: SupportsTerminate[FakeConnection] = FakeDriver()
    transaction: SupportsTransaction[FakeConnection] = FakeDriver()
    assert isinstance(driver, Driver)
    assert isinstance(terminate, SupportsTerminate)
    assert isinstance(transaction, SupportsTransaction)


def test_errors_are_public_and_related() -> None:
    assert issubclass(FakeConnectionError, FakeDatabaseError)
    assert issubclass(FakeDatabaseError, Exception)
    assert FakeDatabaseError.__module__ == "aiodbpool.drivers.fake"
    assert FakeConnectionError.__module__ == "aiodbpool.drivers.fake"


# -- options ------------------------------------------------------------------------------------


@pytest.mark.parametrize("option", LATENCIES)
@pytest.mark.parametrize("value", [-1.0, float("nan"), float("inf")])
def test_invalid_latency_is_refused_by_name(option: str, value: float) -> None:
    options: dict[str, Any] = {option: value}
    with pytest.raises(ValueError, match=option):
        FakeDriver(**options)


@pytest.mark.parametrize("value", ["0.1", True, None])
def test_latency_of_the_wrong_type_is_refused(value: object) -> None:
    with pytest.raises(TypeError, match="query_latency"):
        FakeDriver(query_latency=value)  # type: ignore[call-overload]


def test_latency_can_change_and_is_validated_again() -> None:
    driver = FakeDriver(ping_latency=1)
    assert driver.ping_latency == 1.0
    assert isinstance(driver.ping_latency, float)
    driver.ping_latency = 0.5
    assert driver.ping_latency == 0.5
    with pytest.raises(ValueError, match="ping_latency"):
        driver.ping_latency = -0.5
    assert driver.ping_latency == 0.5


def test_latency_on_the_class_is_the_descriptor_for_documentation_tools() -> None:
    descriptor = FakeDriver.connect_latency
    assert hasattr(descriptor, "__set__")
    assert descriptor.__doc__


# -- connect ------------------------------------------------------------------------------------


async def test_connect_numbers_connections_and_counts_them() -> None:
    driver = FakeDriver()
    first = await driver.connect()
    second = await driver.connect()
    assert (first.id, second.id) == (1, 2)
    assert (driver.opened, driver.connect_attempts, driver.live, driver.peak_live) == (2, 2, 2, 2)
    assert driver.connections == [first, second]
    assert not first.closed
    assert not first.broken
    assert not first.in_transaction
    assert (first.resets, first.pings, first.executed) == (0, 0, [])


async def test_connections_is_a_copy() -> None:
    driver = FakeDriver()
    conn = await driver.connect()
    driver.connections.clear()
    assert driver.connections == [conn]


async def test_peak_live_remembers_the_highest_count() -> None:
    driver = FakeDriver()
    conns = [await driver.connect() for _ in range(3)]
    for conn in conns[:2]:
        await driver.close(conn)
    await driver.connect()
    assert (driver.live, driver.peak_live, driver.opened, driver.closed) == (2, 3, 4, 2)


async def test_fail_next_connects_refuses_then_recovers() -> None:
    driver = FakeDriver()
    driver.fail_next_connects(2)
    for _ in range(2):
        with pytest.raises(FakeConnectionError, match="connection refused"):
            await driver.connect()
    conn = await driver.connect()
    assert conn.id == 1
    assert (driver.connect_attempts, driver.opened, driver.live) == (3, 1, 1)


async def test_fail_next_connects_defaults_to_one() -> None:
    driver = FakeDriver()
    driver.fail_next_connects()
    with pytest.raises(FakeConnectionError):
        await driver.connect()
    await driver.connect()


async def test_fail_next_connects_raises_the_given_error_without_piling_up_tracebacks() -> None:
    driver = FakeDriver()
    error = OSError("network unreachable")
    driver.fail_next_connects(3, error)
    depths = []
    for _ in range(3):
        with pytest.raises(OSError, match="network unreachable") as caught:
            await driver.connect()
        assert caught.value is error
        depths.append(len(traceback.extract_tb(caught.value.__traceback__)))
    assert depths[0] == depths[1] == depths[2]


async def test_a_new_failure_script_replaces_the_previous_one() -> None:
    driver = FakeDriver()
    driver.fail_next_connects(5)
    driver.fail_next_connects(0)
    await driver.connect()
    driver.fail_connects()
    driver.fail_next_connects(1)
    with pytest.raises(FakeConnectionError):
        await driver.connect()
    await driver.connect()


def test_negative_failure_count_is_refused() -> None:
    driver = FakeDriver()
    with pytest.raises(ValueError, match="n must be"):
        driver.fail_next_connects(-1)
    with pytest.raises(ValueError, match="n must be"):
        driver.fail_pings(-1)
    with pytest.raises(ValueError, match="n must be"):
        driver.fail_resets(-1)


async def test_fail_connects_lasts_until_heal() -> None:
    driver = FakeDriver()
    driver.fail_connects(TimeoutError("no route"))
    for _ in range(5):
        with pytest.raises(TimeoutError, match="no route"):
            await driver.connect()
    driver.heal()
    await driver.connect()
    assert (driver.connect_attempts, driver.opened) == (6, 1)


async def test_failing_connect_waits_its_latency_first() -> None:
    driver = FakeDriver(connect_latency=LONG)
    driver.fail_next_connects()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(TIMEOUT):
            await driver.connect()
    # The attempt that was scripted to fail is spent, even though it was interrupted.
    driver.connect_latency = 0
    await driver.connect()


async def test_stall_connects_hangs_until_timeout() -> None:
    driver = FakeDriver()
    driver.stall_connects()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(TIMEOUT):
            await driver.connect()
    assert (driver.stalled, driver.connect_attempts, driver.opened) == (0, 1, 0)


async def test_heal_releases_stalled_connects() -> None:
    driver = FakeDriver()
    driver.stall_connects()
    tasks = [asyncio.create_task(driver.connect()) for _ in range(2)]
    await _until(lambda: driver.stalled == 2)
    assert not any(task.done() for task in tasks)
    driver.heal()
    conns = await asyncio.gather(*tasks)
    assert sorted(conn.id for conn in conns) == [1, 2]
    assert driver.stalled == 0
    # New connects no longer stall.
    _completes_without_suspending(driver.connect())


async def test_a_stall_takes_precedence_over_a_failure_and_heal_clears_both() -> None:
    driver = FakeDriver()
    driver.fail_connects()
    driver.stall_connects()
    task = asyncio.create_task(driver.connect())
    await _until(lambda: driver.stalled == 1)
    driver.heal()
    conn = await task
    assert conn.id == 1


# -- zero cost and latency ----------------------------------------------------------------------


async def test_calls_without_latency_complete_without_suspending() -> None:
    driver = FakeDriver()
    conn = _completes_without_suspending(driver.connect())
    assert isinstance(conn, FakeConnection)
    _completes_without_suspending(driver.ping(conn))
    assert _completes_without_suspending(conn.execute("BEGIN")) == "OK"
    assert _completes_without_suspending(conn.fetch("SELECT 1")) == []
    assert _completes_without_suspending(conn.fetchval("SELECT 1")) is None
    _completes_without_suspending(driver.reset(conn))  # dirty: rolls back without latency
    assert conn.resets == 1
    _completes_without_suspending(driver.close(conn))
    assert conn.closed


async def test_clean_reset_completes_without_suspending() -> None:
    driver = FakeDriver(reset_latency=LONG)
    conn = await driver.connect()
    coro = driver.reset(conn)
    with pytest.raises(StopIteration):
        coro.send(None)
    assert conn.resets == 0
    assert conn.executed == []


async def test_latency_makes_each_call_suspend_and_then_complete() -> None:
    driver = FakeDriver(
        connect_latency=SHORT,
        query_latency=SHORT,
        ping_latency=SHORT,
        reset_latency=SHORT,
        close_latency=SHORT,
    )
    assert not finishes_at_once(driver.connect())
    conn = await driver.connect()
    assert not finishes_at_once(driver.ping(conn))
    await driver.ping(conn)
    assert not finishes_at_once(conn.execute("SELECT 1"))
    await conn.execute("BEGIN")
    assert not finishes_at_once(driver.reset(conn))
    await driver.reset(conn)
    assert (conn.in_transaction, conn.resets) == (False, 1)
    assert not finishes_at_once(driver.close(conn))
    await driver.close(conn)
    assert conn.closed


@pytest.mark.parametrize(
    ("option", "call"),
    [
        ("connect_latency", lambda d, c: d.connect()),
        ("query_latency", lambda d, c: c.fetch("SELECT 1")),
        ("ping_latency", lambda d, c: d.ping(c)),
        ("close_latency", lambda d, c: d.close(c)),
    ],
)
async def test_latency_is_interrupted_by_a_timeout(
    option: str, call: Callable[[FakeDriver, FakeConnection], Awaitable[object]]
) -> None:
    driver = FakeDriver()
    conn = await driver.connect()
    setattr(driver, option, LONG)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(TIMEOUT):
            await call(driver, conn)
    # The connection survived the interrupted call.
    assert not driver.is_closed(conn)
    assert driver.live == 1


async def test_dirty_reset_latency_is_interrupted_by_a_timeout() -> None:
    driver = FakeDriver(reset_latency=LONG)
    conn = await driver.connect()
    await conn.execute("BEGIN")
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(TIMEOUT):
            await driver.reset(conn)
    assert conn.in_transaction
    assert conn.resets == 0


# -- close and terminate ------------------------------------------------------------------------


async def test_close_and_terminate_are_idempotent_and_counted_once() -> None:
    driver = FakeDriver(close_latency=LONG)
    first = await driver.connect()
    second = await driver.connect()
    driver.terminate(first)
    driver.terminate(first)
    await driver.close(first)  # already closed: returns at once despite the latency
    driver.close_latency = 0
    await driver.close(second)
    await driver.close(second)
    driver.terminate(second)
    assert first.closed
    assert second.closed
    assert driver.is_closed(first)
    assert (driver.closed, driver.live, driver.connections) == (2, 0, [])


async def test_a_close_interrupted_by_timeout_leaves_the_connection_for_terminate() -> None:
    driver = FakeDriver(close_latency=LONG)
    conn = await driver.connect()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(TIMEOUT):
            await driver.close(conn)
    assert not conn.closed
    driver.terminate(conn)
    assert (conn.closed, driver.closed, driver.live) == (True, 1, 0)


async def test_a_closed_connection_refuses_io() -> None:
    driver = FakeDriver()
    conn = await driver.connect()
    await driver.close(conn)
    with pytest.raises(FakeConnectionError, match="closed"):
        await conn.execute("SELECT 1")
    with pytest.raises(FakeConnectionError, match="closed"):
        await driver.ping(conn)
    with pytest.raises(FakeConnectionError, match="closed"):
        await driver.reset(conn)
    assert conn.executed == []
    assert driver.queries == []


@pytest.mark.parametrize(
    ("option", "call"),
    [
        ("query_latency", lambda d, c: c.execute("SELECT 1")),
        ("ping_latency", lambda d, c: d.ping(c)),
        ("reset_latency", lambda d, c: d.reset(c)),
    ],
)
async def test_a_connection_terminated_during_a_call_fails_that_call(
    option: str, call: Callable[[FakeDriver, FakeConnection], Awaitable[object]]
) -> None:
    driver = FakeDriver()
    conn = await driver.connect()
    await conn.execute("BEGIN")  # so that reset has something to roll back
    setattr(driver, option, SHORT)
    task = asyncio.ensure_future(call(driver, conn))
    await asyncio.sleep(0)  # the call is now waiting out its latency
    driver.terminate(conn)
    with pytest.raises(FakeConnectionError, match="closed"):
        await task


def test_a_connection_of_another_driver_is_refused() -> None:
    driver = FakeDriver()
    other = FakeDriver()
    conn = asyncio.run(other.connect())
    with pytest.raises(ValueError, match="another FakeDriver"):
        driver.terminate(conn)
    with pytest.raises(ValueError, match="another FakeDriver"):
        driver.break_connection(conn)
    with pytest.raises(ValueError, match="another FakeDriver"):
        driver.transaction(conn)
    for call in (driver.close, driver.ping, driver.reset):
        with pytest.raises(ValueError, match="another FakeDriver"):
            asyncio.run(call(conn))
    assert (other.live, other.closed) == (1, 0)


# -- ping ---------------------------------------------------------------------------------------


async def test_ping_counts_every_call() -> None:
    driver = FakeDriver()
    conn = await driver.connect()
    await driver.ping(conn)
    driver.fail_pings(1)
    with pytest.raises(FakeConnectionError):
        await driver.ping(conn)
    assert conn.pings == 2


async def test_fail_pings_fails_the_next_n() -> None:
    driver = FakeDriver()
    conn = await driver.connect()
    driver.fail_pings(2)
    for _ in range(2):
        with pytest.raises(FakeConnectionError, match="ping failed"):
            await driver.ping(conn)
    await driver.ping(conn)
    # A failed ping does not close or break the connection by itself.
    assert not driver.is_closed(conn)
    assert not conn.broken


async def test_fail_pings_without_count_lasts_until_heal() -> None:
    driver = FakeDriver()
    conn = await driver.connect()
    driver.fail_pings()
    for _ in range(3):
        with pytest.raises(FakeConnectionError):
            await driver.ping(conn)
    driver.heal()
    await driver.ping(conn)


async def test_stall_pings_until_timeout_or_heal() -> None:
    driver = FakeDriver()
    conn = await driver.connect()
    driver.stall_pings()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(TIMEOUT):
            await driver.ping(conn)
    task = asyncio.create_task(driver.ping(conn))
    await _until(lambda: driver.stalled == 1)
    driver.heal()
    await task
    assert conn.pings == 2


# -- reset --------------------------------------------------------------------------------------


async def test_reset_rolls_back_a_dirty_connection() -> None:
    driver = FakeDriver()
    conn = await driver.connect()
    await conn.execute("BEGIN")
    await conn.execute("INSERT INTO t VALUES ($1)", 1)
    await driver.reset(conn)
    assert not conn.in_transaction
    assert conn.resets == 1
    assert conn.executed[-1] == ("ROLLBACK", ())
    assert driver.queries[-1] == (conn.id, "ROLLBACK", ())
    await driver.reset(conn)  # now clean: nothing more happens
    assert conn.resets == 1
    assert len(conn.executed) == 3


@pytest.mark.parametrize("dirty", [False, True])
async def test_fail_resets_fails_clean_and_dirty_connections(dirty: bool) -> None:
    driver = FakeDriver()
    conn = await driver.connect()
    if dirty:
        await conn.execute("BEGIN")
    driver.fail_resets(1)
    with pytest.raises(FakeDatabaseError, match="reset failed") as caught:
        await driver.reset(conn)
    assert not isinstance(caught.value, FakeConnectionError)
    assert conn.in_transaction == dirty  # a failed reset changed nothing
    await driver.reset(conn)
    assert not conn.in_transaction


async def test_fail_resets_without_count_lasts_until_heal() -> None:
    driver = FakeDriver()
    conn = await driver.connect()
    driver.fail_resets()
    for _ in range(3):
        with pytest.raises(FakeDatabaseError):
            await driver.reset(conn)
    driver.heal()
    await driver.reset(conn)


@pytest.mark.parametrize("dirty", [False, True])
async def test_stall_resets_applies_to_clean_and_dirty_connections(dirty: bool) -> None:
    driver = FakeDriver()
    conn = await driver.connect()
    if dirty:
        await conn.execute("BEGIN")
    driver.stall_resets()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(TIMEOUT):
            await driver.reset(conn)
    assert conn.in_transaction == dirty
    task = asyncio.create_task(driver.reset(conn))
    await _until(lambda: driver.stalled == 1)
    driver.heal()
    await task
    assert not conn.in_transaction
    assert conn.resets == int(dirty)


async def test_stall_resets_with_a_count_stalls_only_that_many() -> None:
    driver = FakeDriver()
    conn = await driver.connect()
    with pytest.raises(ValueError, match="at least 1"):
        driver.stall_resets(0)
    driver.stall_resets(1)
    held = asyncio.create_task(driver.reset(conn))
    await _until(lambda: driver.stalled == 1)
    await driver.reset(conn)  # the next one is not held
    assert not held.done()
    driver.heal()
    await held


@pytest.mark.parametrize("dirty", [False, True])
async def test_reset_of_a_broken_connection_raises_and_reveals_the_break(dirty: bool) -> None:
    driver = FakeDriver()
    conn = await driver.connect()
    if dirty:
        await conn.execute("BEGIN")
    driver.break_connection(conn, detected=False)
    with pytest.raises(FakeConnectionError, match="lost"):
        await driver.reset(conn)
    assert driver.is_closed(conn)


async def test_reset_of_a_broken_clean_connection_raises_without_suspending() -> None:
    driver = FakeDriver()
    conn = await driver.connect()
    driver.break_connection(conn)
    with pytest.raises(FakeConnectionError):
        driver.reset(conn).send(None)


# -- broken connections -------------------------------------------------------------------------


async def test_a_detected_break_closes_the_connection_at_once() -> None:
    driver = FakeDriver()
    conn = await driver.connect()
    driver.break_connection(conn)
    assert conn.broken
    assert driver.is_closed(conn)
    assert not conn.closed  # the client still has to close it
    assert driver.live == 1
    with pytest.raises(FakeConnectionError, match="lost"):
        await conn.fetch("SELECT 1")
    with pytest.raises(FakeConnectionError, match="lost"):
        await driver.ping(conn)
    await driver.close(conn)
    assert (driver.live, driver.closed) == (0, 1)


@pytest.mark.parametrize(
    "reveal",
    [
        lambda d, c: d.ping(c),
        lambda d, c: c.execute("SELECT 1"),
        lambda d, c: c.fetchval("SELECT 1"),
    ],
)
async def test_a_silent_break_shows_only_after_io(
    reveal: Callable[[FakeDriver, FakeConnection], Awaitable[object]],
) -> None:
    driver = FakeDriver()
    conn = await driver.connect()
    driver.break_connection(conn, detected=False)
    assert conn.broken
    assert not driver.is_closed(conn)
    with pytest.raises(FakeConnectionError, match="lost"):
        await reveal(driver, conn)
    assert driver.is_closed(conn)


async def test_a_break_during_a_query_fails_it() -> None:
    driver = FakeDriver(query_latency=SHORT)
    conn = await driver.connect()
    task = asyncio.create_task(conn.execute("SELECT 1"))
    await asyncio.sleep(0)
    driver.break_connection(conn, detected=False)
    with pytest.raises(FakeConnectionError, match="lost"):
        await task


async def test_a_detected_break_is_not_undone_by_a_silent_one() -> None:
    driver = FakeDriver()
    conn = await driver.connect()
    driver.break_connection(conn)
    driver.break_connection(conn, detected=False)
    assert driver.is_closed(conn)


async def test_break_random_connection_is_reproducible_with_a_seeded_rng() -> None:
    picks = []
    for _ in range(2):
        driver = FakeDriver(rng=random.Random(42))
        for _ in range(10):
            await driver.connect()
        victims = [driver.break_random_connection() for _ in range(3)]
        picks.append([victim.id for victim in victims if victim is not None])
    assert picks[0] == picks[1]
    assert len(set(picks[0])) == 3  # never the same connection twice


async def test_break_random_connection_skips_broken_and_closed_ones() -> None:
    driver = FakeDriver()
    first, second, third = [await driver.connect() for _ in range(3)]
    driver.break_connection(first)
    await driver.close(second)
    victim = driver.break_random_connection(detected=False)
    assert victim is third
    assert third.broken
    assert not driver.is_closed(third)
    assert driver.break_random_connection() is None


async def test_break_random_connection_without_connections_returns_none() -> None:
    assert FakeDriver().break_random_connection() is None


# -- queries ------------------------------------------------------------------------------------


async def test_queries_are_recorded_in_order_with_their_arguments() -> None:
    driver = FakeDriver()
    first = await driver.connect()
    second = await driver.connect()
    assert await first.execute("INSERT INTO t VALUES ($1, $2)", 1, "a") == "OK"
    await second.fetch("SELECT * FROM t WHERE id = $1", 1)
    await first.fetchval("SELECT count(*) FROM t")
    assert driver.queries == [
        (1, "INSERT INTO t VALUES ($1, $2)", (1, "a")),
        (2, "SELECT * FROM t WHERE id = $1", (1,)),
        (1, "SELECT count(*) FROM t", ()),
    ]
    assert first.executed == [
        ("INSERT INTO t VALUES ($1, $2)", (1, "a")),
        ("SELECT count(*) FROM t", ()),
    ]
    assert second.executed == [("SELECT * FROM t WHERE id = $1", (1,))]


async def test_scripted_rows_are_returned() -> None:
    driver = FakeDriver()
    rows: list[tuple[object, ...]] = [(1, "ann"), (2, "bob")]
    driver.script("SELECT id, name FROM users", rows)
    conn = await driver.connect()
    result = await conn.fetch("SELECT id, name FROM users")
    assert result == [(1, "ann"), (2, "bob")]
    assert await conn.fetchval("SELECT id, name FROM users") == 1
    # Neither the caller's list nor the result is shared with the script.
    rows.clear()
    result.clear()
    assert await conn.fetch("SELECT id, name FROM users") == [(1, "ann"), (2, "bob")]
    # Only the exact text matches.
    assert await conn.fetch("select id, name from users") == []


async def test_fetchval_without_a_value_is_none() -> None:
    driver = FakeDriver()
    driver.script("SELECT nothing", [])
    driver.script("SELECT empty_row", [()])
    conn = await driver.connect()
    assert await conn.fetchval("SELECT nothing") is None
    assert await conn.fetchval("SELECT empty_row") is None


async def test_a_scripted_exception_is_raised_and_a_new_script_replaces_it() -> None:
    driver = FakeDriver()
    error = FakeDatabaseError("relation does not exist")
    driver.script("SELECT * FROM missing", error)
    conn = await driver.connect()
    for call in (conn.execute, conn.fetch, conn.fetchval):
        with pytest.raises(FakeDatabaseError) as caught:
            await call("SELECT * FROM missing")
        assert caught.value is error
    driver.script("SELECT * FROM missing", [(1,)])
    assert await conn.fetchval("SELECT * FROM missing") == 1
    # The connection stays usable after a failed statement.
    assert not driver.is_closed(conn)


@pytest.mark.parametrize(
    ("sql", "after"),
    [
        ("BEGIN", True),
        ("begin", True),
        ("BEGIN;", True),
        ("  BEGIN IMMEDIATE", True),
        ("BEGIN TRANSACTION ISOLATION LEVEL SERIALIZABLE", True),
        ("start transaction", True),
        ("SELECT 1", None),
        ("", None),
        ("START", None),
        ("COMMIT", False),
        ("commit;", False),
        ("END", False),
        ("ROLLBACK", False),
        ("abort", False),
        ("ROLLBACK TO SAVEPOINT sp", None),
        ("ROLLBACK TRANSACTION TO SAVEPOINT sp", None),
    ],
)
@pytest.mark.parametrize("before", [False, True])
async def test_transaction_state_follows_the_statements(
    sql: str, after: bool | None, before: bool
) -> None:
    driver = FakeDriver()
    conn = await driver.connect()
    if before:
        await conn.execute("BEGIN")
    await conn.execute(sql)
    assert conn.in_transaction is (before if after is None else after)


async def test_a_cancelled_commit_leaves_the_transaction_open_for_reset() -> None:
    driver = FakeDriver()
    conn = await driver.connect()
    await conn.execute("BEGIN")
    driver.query_latency = LONG
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(TIMEOUT):
            await conn.execute("COMMIT")
    assert (conn.in_transaction, conn.executed[-1]) == (True, ("COMMIT", ()))  # never answered
    await driver.reset(conn)
    assert (conn.in_transaction, conn.resets) == (False, 1)


async def test_a_cancelled_begin_leaves_the_connection_clean_and_usable() -> None:
    driver = FakeDriver(query_latency=LONG)
    conn = await driver.connect()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(TIMEOUT):
            await conn.execute("BEGIN")
    assert not conn.in_transaction
    driver.query_latency = 0
    driver.script("SELECT 1", [(1,)])
    assert await conn.fetchval("SELECT 1") == 1


# -- transaction() ------------------------------------------------------------------------------


async def test_transaction_commits_on_success() -> None:
    driver = FakeDriver()
    conn = await driver.connect()
    async with driver.transaction(conn) as inside:
        assert (inside, inside.in_transaction) == (conn, True)
        await conn.execute("INSERT INTO t VALUES (1)")
    assert not conn.in_transaction
    assert [sql for sql, _ in conn.executed] == ["BEGIN", "INSERT INTO t VALUES (1)", "COMMIT"]
    assert [sql for _, sql, _ in driver.queries] == [sql for sql, _ in conn.executed]


async def test_transaction_rolls_back_and_reraises_on_error() -> None:
    driver = FakeDriver()
    conn = await driver.connect()
    with pytest.raises(KeyError):
        async with driver.transaction(conn):
            raise KeyError("boom")
    assert not conn.in_transaction
    assert [sql for sql, _ in conn.executed] == ["BEGIN", "ROLLBACK"]


async def test_a_cancelled_transaction_is_left_open_for_reset() -> None:
    driver = FakeDriver()
    conn = await driver.connect()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(TIMEOUT), driver.transaction(conn):
            await asyncio.sleep(LONG)
    assert conn.in_transaction
    assert [sql for sql, _ in conn.executed] == ["BEGIN"]
    await driver.reset(conn)
    assert [sql for sql, _ in conn.executed] == ["BEGIN", "ROLLBACK"]


# -- heal and loops -----------------------------------------------------------------------------


async def test_heal_without_anything_scripted_changes_nothing() -> None:
    driver = FakeDriver()
    conn = await driver.connect()
    driver.break_connection(conn, detected=False)
    driver.script("SELECT 1", [(1,)])
    driver.heal()
    assert conn.broken  # a heal does not bring a dead server back
    other = await driver.connect()
    assert await other.fetchval("SELECT 1") == 1


async def test_heal_releases_every_kind_of_stall_at_once() -> None:
    driver = FakeDriver()
    conn = await driver.connect()
    await conn.execute("BEGIN")
    driver.stall_connects()
    driver.stall_pings()
    driver.stall_resets()
    driver.fail_pings()
    tasks = [
        asyncio.create_task(driver.connect()),
        asyncio.create_task(driver.ping(conn)),
        asyncio.create_task(driver.reset(conn)),
    ]
    await _until(lambda: driver.stalled == 3)
    driver.heal()
    await asyncio.gather(*tasks)
    assert (driver.stalled, driver.opened, conn.pings, conn.resets) == (0, 2, 1, 1)


@pytest.mark.parametrize("loop_factory", _loop_factories())
def test_one_driver_works_across_event_loops(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    # Created outside any loop, then used in two loops in turn, stalls included.
    driver = FakeDriver(query_latency=SHORT)

    async def stall_and_heal() -> None:
        driver.stall_connects()
        task = asyncio.create_task(driver.connect())
        await _until(lambda: driver.stalled == 1)
        driver.heal()
        conn = await task
        async with driver.transaction(conn):
            await conn.execute("SELECT 1")

    for factory in (asyncio.new_event_loop, loop_factory):
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(stall_and_heal())
    assert (driver.opened, driver.stalled) == (2, 0)


# -- repr -----------------------------------------------------------------------------------------


async def test_driver_repr_shows_counts_and_scripted_trouble() -> None:
    driver = FakeDriver()
    conn = await driver.connect()
    await driver.connect()
    await driver.close(conn)
    assert repr(driver) == "<FakeDriver live=1 opened=2 closed=1>"
    driver.fail_connects()
    driver.fail_resets(2)
    driver.stall_pings()
    assert repr(driver) == (
        "<FakeDriver live=1 opened=2 closed=1 failing=connect,reset stalling=ping>"
    )
    driver.heal()
    assert repr(driver) == "<FakeDriver live=1 opened=2 closed=1>"


async def test_connection_repr_shows_its_state() -> None:
    driver = FakeDriver()
    conn = await driver.connect()
    assert repr(conn) == "<FakeConnection 1 open>"
    await conn.execute("BEGIN")
    assert repr(conn) == "<FakeConnection 1 open in_transaction>"
    driver.break_connection(conn, detected=False)
    assert repr(conn) == "<FakeConnection 1 broken (undetected) in_transaction>"
    driver.break_connection(conn)
    assert repr(conn) == "<FakeConnection 1 broken in_transaction>"
    driver.terminate(conn)
    assert repr(conn) == "<FakeConnection 1 closed in_transaction>"


# -- FakeClock ----------------------------------------------------------------------------------


def test_fake_clock_moves_only_when_advanced() -> None:
    clock = FakeClock()
    assert clock() == 0.0
    assert clock.now == 0.0
    clock.advance(1.5)
    clock.advance(0)
    assert clock() == 1.5
    assert clock.now == 1.5
    assert repr(clock) == "FakeClock(now=1.5)"


def test_fake_clock_starts_where_told() -> None:
    clock = FakeClock(100)
    assert clock() == 100.0
    assert isinstance(clock(), float)


@pytest.mark.parametrize("seconds", [-0.001, float("nan")])
def test_fake_clock_never_goes_back(seconds: float) -> None:
    clock = FakeClock(5.0)
    with pytest.raises(ValueError, match="seconds"):
        clock.advance(seconds)
    assert clock() == 5.0


def test_fake_clock_refuses_a_nan_start() -> None:
    with pytest.raises(ValueError, match="start"):
        FakeClock(float("nan"))


def test_fake_clock_is_a_pool_clock() -> None:
    clock: Callable[[], float] = FakeClock(2.0)
    assert clock() == 2.0


# -- from_url -----------------------------------------------------------------------------------


def test_from_url_without_parameters_gives_a_default_driver() -> None:
    driver = from_url("fake://")
    assert isinstance(driver, FakeDriver)
    assert [getattr(driver, option) for option in LATENCIES] == [0.0] * 5


def test_from_url_reads_latencies_and_ignores_host_and_path() -> None:
    driver = from_url(
        "fake://db.example/app?connect_latency=0.01&query_latency=2e-3"
        "&ping_latency=1&reset_latency=0&close_latency=0.5"
    )
    assert driver.connect_latency == 0.01
    assert driver.query_latency == 0.002
    assert driver.ping_latency == 1.0
    assert driver.reset_latency == 0.0
    assert driver.close_latency == 0.5


def test_from_url_options_override_the_url() -> None:
    rng = random.Random(1)
    driver = from_url(
        "FAKE://?connect_latency=0.01", connect_latency=0.5, ping_latency=0.25, rng=rng
    )
    assert (driver.connect_latency, driver.ping_latency) == (0.5, 0.25)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://localhost/db", "not a fake:// URL"),
        ("localhost", "not a fake:// URL"),
        ("fake://?latency=1", "'latency'"),
        ("fake://?connect_latency=fast", "'connect_latency'"),
        ("fake://?query_latency=", "'query_latency'"),
        ("fake://?ping_latency", "'ping_latency'"),
        ("fake://?reset_latency=-1", "reset_latency"),
        ("fake://?close_latency=nan", "close_latency"),
        ("fake://?connect_latency=1&connect_latency=2", "'connect_latency' is given more than"),
    ],
)
def test_from_url_refuses_bad_urls_naming_the_problem(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        from_url(url)


def test_from_url_refuses_unknown_options() -> None:
    with pytest.raises(TypeError, match="latency"):
        from_url("fake://", latency=1.0)


def test_the_fake_scheme_is_registered_as_an_entry_point() -> None:
    (entry_point,) = entry_points(group="aiodbpool.drivers", name="fake")
    assert entry_point.load() is from_url
