"""What the fake driver does the same whatever client API its connections speak: failure
scripting (latency, failing and stalled connects, broken connections, FakeClock), the zero-cost
fast path, the pool's reset, and leases. Every test runs over the three APIs.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

import pytest
from helpers import finishes_at_once

from aiodbpool import ConnectionReleased, Pool, PoolConnectError, create_pool
from aiodbpool.drivers.fake import (
    FakeAiosqliteConnection,
    FakeAsyncpgConnection,
    FakeClock,
    FakeConnection,
    FakeConnectionError,
    FakeDriver,
)

LONG = 60.0
"""A latency no test waits out: a short timeout must interrupt it."""
TIMEOUT = 0.01

APIS = ["default", "asyncpg", "aiosqlite"]
CONNECTION_CLASSES = {
    "default": FakeConnection,
    "asyncpg": FakeAsyncpgConnection,
    "aiosqlite": FakeAiosqliteConnection,
}


@pytest.fixture(params=APIS)
def api(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


async def _run(conn: Any, sql: str) -> None:
    """Send a statement, the way each API does (``await conn.execute(sql)`` for all three)."""
    await conn.execute(sql)


async def _rows(conn: Any, sql: str) -> list[tuple[object, ...]]:
    """The rows of a query, as tuples, through each API's usual call."""
    if isinstance(conn, FakeAiosqliteConnection):
        return list(await conn.execute_fetchall(sql))
    return [tuple(row) for row in await conn.fetch(sql)]


async def test_connections_speak_the_api_asked_for(api: str) -> None:
    driver = FakeDriver(api=api)
    conn = await driver.connect()
    assert type(conn) is CONNECTION_CLASSES[api]
    assert driver.connections == [conn]
    assert repr(conn) == f"<{CONNECTION_CLASSES[api].__name__} 1 open>"
    async with create_pool(f"fake://?api={api}") as pool, pool.acquire() as lent:
        assert isinstance(lent, CONNECTION_CLASSES[api])


async def test_the_api_types_the_connections() -> None:
    # What a type checker sees (mypy checks these annotations); at run time, what they say.
    default: FakeConnection = await FakeDriver().connect()
    asyncpg_like: FakeAsyncpgConnection = await FakeDriver(api="asyncpg").connect()
    aiosqlite_like: FakeAiosqliteConnection = await FakeDriver(api="aiosqlite").connect()
    assert (await default.fetch("SELECT 1"), await asyncpg_like.fetch("SELECT 1")) == ([], [])
    assert list(await aiosqlite_like.execute_fetchall("SELECT 1")) == []


async def test_scripted_rows_read_alike_through_every_api(api: str) -> None:
    driver = FakeDriver(api=api, strict=True)
    driver.script(
        "SELECT id, name FROM users", [{"id": 1, "name": "ann"}, {"id": 2, "name": "bob"}]
    )
    conn = await driver.connect()
    assert await _rows(conn, "SELECT id,\n  name FROM users;") == [(1, "ann"), (2, "bob")]
    assert driver.queries == [(1, "SELECT id,\n  name FROM users;", ())]


async def test_a_statement_costs_nothing_when_nothing_is_scripted(api: str) -> None:
    driver = FakeDriver(api=api)
    conn = await driver.connect()
    assert finishes_at_once(_run(conn, "SELECT 1"))
    assert finishes_at_once(driver.reset(conn))


async def test_query_latency_is_interrupted_and_leaves_the_connection_usable(api: str) -> None:
    driver = FakeDriver(api=api, query_latency=LONG)
    conn = await driver.connect()
    driver.query_latency = 0
    await _run(conn, "BEGIN")
    driver.query_latency = LONG
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(TIMEOUT):
            await _run(conn, "COMMIT")
    # The COMMIT never reached the server: the transaction is still open, for reset to end.
    assert conn.in_transaction
    driver.query_latency = 0
    await driver.reset(conn)
    assert (conn.in_transaction, conn.resets) == (False, 1)
    assert [sql for sql, _ in conn.executed] == ["BEGIN", "COMMIT", "ROLLBACK"]


@pytest.mark.parametrize("detected", [True, False], ids=["detected", "silent"])
async def test_a_broken_connection_fails_its_next_statement(api: str, detected: bool) -> None:
    driver = FakeDriver(api=api)
    conn = await driver.connect()
    driver.break_connection(conn, detected=detected)
    assert driver.is_closed(conn) is detected
    with pytest.raises(FakeConnectionError, match="lost"):
        await _run(conn, "SELECT 1")
    assert driver.is_closed(conn)


async def test_a_closed_connection_refuses_statements(api: str) -> None:
    driver = FakeDriver(api=api)
    conn = await driver.connect()
    driver.terminate(conn)
    with pytest.raises(FakeConnectionError, match="closed"):
        await _run(conn, "SELECT 1")
    if api != "default":  # the default API has no executemany
        with pytest.raises(FakeConnectionError, match="closed"):
            await conn.executemany("SELECT 1", [()])


async def test_a_lent_connection_can_be_broken_through_its_lease(api: str) -> None:
    driver = FakeDriver(api=api)
    async with Pool(driver, max_size=1) as pool:
        async with pool.acquire() as conn:
            driver.break_connection(conn)
        assert conn.closed  # noticed at the release: discarded


async def test_the_pool_recovers_after_an_outage(api: str) -> None:
    driver = FakeDriver(api=api)
    async with Pool(driver, max_size=2) as pool:
        driver.fail_connects()
        with pytest.raises(PoolConnectError) as caught:
            await pool.acquire()
        assert isinstance(caught.value.__cause__, FakeConnectionError)
        driver.heal()
        async with pool.acquire() as conn:
            await _run(conn, "SELECT 1")
    assert (driver.connect_attempts, driver.opened, driver.live) == (2, 1, 0)


async def test_a_black_holed_server_fails_within_connect_timeout(api: str) -> None:
    driver = FakeDriver(api=api)
    driver.stall_connects()
    async with Pool(driver, connect_timeout=TIMEOUT) as pool:
        with pytest.raises(PoolConnectError):
            await pool.acquire()
    driver.heal()


async def test_a_silently_dropped_connection_is_replaced_after_idle(api: str) -> None:
    clock = FakeClock()
    driver = FakeDriver(api=api)
    async with Pool(driver, clock=clock, validate_after_idle=1.0) as pool:
        async with pool.acquire() as conn:
            first = conn.id
        driver.break_connection(driver.connections[0], detected=False)
        clock.advance(5.0)
        async with pool.acquire() as conn:
            assert conn.id != first
            await _run(conn, "SELECT 1")
        assert pool.stats().validation_failures == 1


async def test_a_transaction_left_open_is_rolled_back_on_release(api: str) -> None:
    driver = FakeDriver(api=api, reset_latency=0.001)
    async with Pool(driver, max_size=1) as pool:
        async with pool.acquire() as conn:
            await _run(conn, "BEGIN")
            await _run(conn, "UPDATE accounts SET balance = 0")
        assert (conn.in_transaction, conn.resets) == (False, 1)
        assert conn.executed[-1] == ("ROLLBACK", ())
        driver.fail_resets(1)
        async with pool.acquire() as conn:
            pass
        assert conn.closed  # a failed reset discards the connection
    assert driver.live == 0


async def test_the_drivers_transaction_commits_and_rolls_back(api: str) -> None:
    driver = FakeDriver(api=api)
    conn = await driver.connect()
    async with driver.transaction(conn) as inside:
        assert inside is conn
        assert conn.in_transaction
    with pytest.raises(KeyError):
        async with driver.transaction(conn):
            raise KeyError("boom")
    assert not conn.in_transaction
    ends = [sql.rstrip(";") for sql, _ in conn.executed if not sql.startswith("BEGIN")]
    assert ends == ["COMMIT", "ROLLBACK"]


async def test_what_a_test_reads_stays_readable_after_the_release(api: str) -> None:
    driver = FakeDriver(api=api)
    async with Pool(driver, max_size=1) as pool:
        async with pool.acquire() as conn:
            await _run(conn, "SELECT 1")
        with pytest.raises(ConnectionReleased):
            await _run(conn, "SELECT 2")
        assert (conn.id, conn.closed, conn.broken, conn.in_transaction) == (1, False, False, False)
        assert (conn.resets, conn.pings, conn.executed) == (0, 0, [("SELECT 1", ())])
        assert pool.stats().stale_uses == 1


async def test_a_release_waits_for_a_statement_still_running(api: str) -> None:
    driver = FakeDriver(api=api, query_latency=0.05)
    async with Pool(driver, max_size=1) as pool:
        conn = await pool.acquire()
        running = asyncio.create_task(_run(conn, "SELECT 1"))
        await asyncio.sleep(0)  # the statement is under way
        await pool.release(conn)
        assert running.done()  # the release waited for it
        await running


def test_the_fake_needs_neither_asyncpg_nor_aiosqlite() -> None:
    """Each API works in an environment where importing the real library fails."""
    code = """
import asyncio, sys
sys.modules["asyncpg"] = sys.modules["aiosqlite"] = None  # importing either now fails
from aiodbpool import create_pool

async def main():
    for api in ("asyncpg", "aiosqlite"):
        async with create_pool(f"fake://?api={api}") as pool, pool.acquire() as conn:
            await conn.execute("SELECT 1")
            print(conn.__class__.__name__)

asyncio.run(main())
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["FakeAsyncpgConnection", "FakeAiosqliteConnection"]
