"""The fault-injecting proxy (tests/faultproxy.py) in front of a real PostgreSQL server.

The reliability tests trust the proxy to do what it says, so each fault is checked here with
asyncpg on its own, without the pool: what a client sees, and what the proxy counted. A test
waits on conditions (bytes held, connections counted), never on a fixed sleep; the only timings
asserted are lower bounds (a latency of 0.15 s makes a round trip take at least 0.3 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid

import asyncpg
import pytest
from faultproxy import FaultProxy
from helpers import wait_until

from aiodbpool.integrations.testing import PostgresServer
from aiodbpool.integrations.testing.postgres import free_port

LATENCY = 0.15
"""Seconds of latency in the latency tests: long enough to measure, short enough to wait for."""

STALLED_FOR = 0.3
"""How long a test waits to see that a stalled operation does not complete."""

SSL_REQUEST = (8).to_bytes(4, "big") + (80877103).to_bytes(4, "big")
"""PostgreSQL's SSLRequest message: the shortest round trip there is (the test server, which has
no TLS, answers ``N``), for tests that talk to the server over a plain socket."""

# Errors of asyncpg for a connection that broke in the middle of an operation.
CONNECTION_LOST = (asyncpg.PostgresConnectionError, asyncpg.InterfaceError, ConnectionError)


def _app_name() -> str:
    return f"faultproxy-test-{uuid.uuid4().hex[:12]}"


async def _sessions(postgres_server: PostgresServer, app_name: str) -> int:
    """The server's sessions with ``application_name`` ``app_name``, counted over the Unix
    socket, not through the proxy."""
    admin = await asyncpg.connect(postgres_server.admin_dsn)
    try:
        count: int = await admin.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", app_name
        )
        return count
    finally:
        await admin.close()


async def _until_sessions(postgres_server: PostgresServer, app_name: str, expected: int) -> None:
    """Wait until the server counts ``expected`` sessions named ``app_name`` (a backend ends a
    moment after its socket closes)."""
    deadline = time.monotonic() + 15
    while (count := await _sessions(postgres_server, app_name)) != expected:
        if time.monotonic() > deadline:
            pytest.fail(f"the server shows {count} sessions of {app_name}, expected {expected}")
        await asyncio.sleep(0.02)


async def _round_trip(conn: asyncpg.Connection) -> float:
    """Seconds one ``SELECT 1`` takes."""
    began = time.monotonic()
    assert await conn.fetchval("SELECT 1") == 1
    return time.monotonic() - began


async def _can_query(dsn: str) -> None:
    """A new connection gets in and runs a query."""
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        assert await conn.fetchval("SELECT 2") == 2
    finally:
        await conn.close()


def _proxy_tasks() -> list[asyncio.Task[object]]:
    return [task for task in asyncio.all_tasks() if task.get_name().startswith("faultproxy[")]


# ------------------------------------------------------------------ forwarding


async def test_asyncpg_logs_in_with_its_password_and_queries_through_the_proxy(
    fault_proxy: FaultProxy, postgres_server: PostgresServer
) -> None:
    assert fault_proxy.dsn_for(postgres_server.dsn) == postgres_server.dsn.replace(
        f":{postgres_server.port}/", f":{fault_proxy.port}/"
    )
    conn = await asyncpg.connect(fault_proxy.dsn_for(postgres_server.dsn))
    try:
        assert await conn.fetchval("SELECT current_user") == postgres_server.user
        # The server sees a TCP client on its own port: the proxy's connection.
        assert await conn.fetchval("SELECT inet_server_port()") == postgres_server.port
        assert await conn.fetchval("SELECT repeat('x', 200000)") == "x" * 200_000
        assert fault_proxy.connections_open == 1
        assert fault_proxy.connections_total == 1
        assert fault_proxy.bytes_to_client > 200_000
        assert fault_proxy.bytes_to_server > 0
        assert fault_proxy.bytes_held == 0
    finally:
        await conn.close()
    await wait_until(lambda: fault_proxy.connections_open == 0)
    assert fault_proxy.connections_total == 1


async def test_dsn_for_keeps_everything_but_the_host_and_port() -> None:
    proxy = FaultProxy("db.example", 5432)
    with pytest.raises(RuntimeError, match="not been started"):
        proxy.dsn_for("postgresql://app:secret@db.example:5432/app")
    async with proxy:  # the target is not reached until a client connects
        at = f"127.0.0.1:{proxy.port}"
        assert (
            proxy.dsn_for("postgresql://app:p%40ss@db.example:5432/app?sslmode=disable")
            == f"postgresql://app:p%40ss@{at}/app?sslmode=disable"
        )
        assert proxy.dsn_for("postgres://db.example/app") == f"postgres://{at}/app"
        with pytest.raises(ValueError, match="host or port in its options"):
            proxy.dsn_for("postgresql:///app?host=/run/postgresql")
        with pytest.raises(ValueError, match="not a URL"):
            proxy.dsn_for("host=db.example port=5432")


def test_a_latency_must_be_seconds_of_zero_or_more() -> None:
    proxy = FaultProxy("127.0.0.1", 5432)
    for wrong in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="latency"):
            proxy.add_latency(wrong)


# ------------------------------------------------------------------ latency


async def test_latency_adds_to_each_direction_of_an_open_connection(
    fault_proxy: FaultProxy, postgres_server: PostgresServer
) -> None:
    conn = await asyncpg.connect(fault_proxy.dsn_for(postgres_server.dsn))
    try:
        await _round_trip(conn)  # prepared and cached: from now on one round trip
        fault_proxy.add_latency(LATENCY)
        both_ways = await _round_trip(conn)
        fault_proxy.clear_latency()
        fault_proxy.add_latency(LATENCY, direction="to_client")
        one_way = await _round_trip(conn)
        fault_proxy.clear_latency()
        print(f"\nround trip: {both_ways:.3f}s with {LATENCY}s each way, {one_way:.3f}s one way")
        assert both_ways >= 2 * LATENCY
        assert one_way >= LATENCY
    finally:
        await conn.close()


async def test_a_new_connection_gets_the_latency_too(fault_proxy: FaultProxy) -> None:
    fault_proxy.add_latency(LATENCY, direction="to_server")
    reader, writer = await asyncio.open_connection(fault_proxy.host, fault_proxy.port)
    try:
        began = time.monotonic()
        writer.write(SSL_REQUEST)
        assert await asyncio.wait_for(reader.readexactly(1), 10) == b"N"
        assert time.monotonic() - began >= LATENCY
    finally:
        writer.close()
        await writer.wait_closed()


async def test_clearing_the_latency_releases_bytes_already_waiting(
    fault_proxy: FaultProxy, postgres_server: PostgresServer
) -> None:
    conn = await asyncpg.connect(fault_proxy.dsn_for(postgres_server.dsn))
    try:
        fault_proxy.add_latency(600)
        query = asyncio.ensure_future(conn.fetchval("SELECT 1"))
        await wait_until(lambda: fault_proxy.bytes_held > 0)
        fault_proxy.clear_latency()
        assert await asyncio.wait_for(query, 10) == 1
    finally:
        await conn.close()


# ------------------------------------------------------------------ stall


async def test_a_stall_holds_a_query_and_heal_delivers_it(
    fault_proxy: FaultProxy, postgres_server: PostgresServer
) -> None:
    dsn = fault_proxy.dsn_for(postgres_server.dsn)
    conn = await asyncpg.connect(dsn)
    try:
        fault_proxy.stall()
        query = asyncio.ensure_future(conn.fetchval("SELECT 1"))
        await wait_until(lambda: fault_proxy.bytes_held > 0)
        sent = fault_proxy.bytes_to_server
        with pytest.raises(TimeoutError):
            # shield: the query stays in flight (a cancel would make asyncpg cancel it).
            await asyncio.wait_for(asyncio.shield(query), STALLED_FOR)
        assert fault_proxy.bytes_to_server == sent
        assert not conn.is_closed()
        fault_proxy.heal()
        # A hiccup, not a break: the query that was held completes.
        assert await asyncio.wait_for(query, 10) == 1
        assert fault_proxy.bytes_held == 0
        await _can_query(dsn)
    finally:
        await conn.close()


async def test_a_connection_opened_during_a_stall_does_not_reach_the_server(
    fault_proxy: FaultProxy, postgres_server: PostgresServer
) -> None:
    app_name = _app_name()
    dsn = fault_proxy.dsn_for(postgres_server.dsn)
    fault_proxy.stall()
    connecting = asyncio.ensure_future(
        asyncpg.connect(dsn, server_settings={"application_name": app_name})
    )
    # The proxy accepted it and holds its first bytes.
    await wait_until(lambda: fault_proxy.bytes_held > 0)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(asyncio.shield(connecting), STALLED_FOR)
    assert fault_proxy.connections_open == 1
    assert fault_proxy.bytes_to_server == 0
    fault_proxy.heal()
    conn = await asyncio.wait_for(connecting, 10)
    try:
        assert await conn.fetchval("SELECT current_setting('application_name')") == app_name
    finally:
        await conn.close()


async def test_a_cut_during_a_stall_drops_what_was_held(
    fault_proxy: FaultProxy, postgres_server: PostgresServer
) -> None:
    table = f"faultproxy_{uuid.uuid4().hex[:12]}"
    dsn = fault_proxy.dsn_for(postgres_server.dsn)
    conn = await asyncpg.connect(dsn)
    fault_proxy.stall()
    statement = asyncio.ensure_future(conn.execute(f"CREATE TABLE {table} (n int)"))
    await wait_until(lambda: fault_proxy.bytes_held > 0)
    assert fault_proxy.cut() == 1
    with pytest.raises(CONNECTION_LOST):
        await asyncio.wait_for(statement, 10)
    assert conn.is_closed()
    assert fault_proxy.bytes_held == 0
    fault_proxy.heal()
    await _can_query(dsn)
    # The statement never reached the server.
    assert postgres_server.psql(f"SELECT to_regclass('{table}') IS NULL") == "t"


# ------------------------------------------------------------------ cut


async def test_a_cut_closes_an_open_connection_on_both_sides(
    fault_proxy: FaultProxy, postgres_server: PostgresServer
) -> None:
    app_name = _app_name()
    dsn = fault_proxy.dsn_for(postgres_server.dsn)
    conn = await asyncpg.connect(dsn, server_settings={"application_name": app_name})
    try:
        assert await conn.fetchval("SELECT 1") == 1
        assert fault_proxy.cut() == 1
        assert fault_proxy.connections_open == 0
        await wait_until(conn.is_closed)
        with pytest.raises(asyncpg.InterfaceError, match="connection is closed"):
            await conn.fetchval("SELECT 1")
    finally:
        conn.terminate()
    # The server's side was closed as well: its backend ends.
    await _until_sessions(postgres_server, app_name, 0)
    await _can_query(dsn)
    assert fault_proxy.connections_total == 2


async def test_a_cut_is_a_reset_not_an_orderly_close(
    fault_proxy: FaultProxy, postgres_server: PostgresServer
) -> None:
    reader, writer = await asyncio.open_connection(fault_proxy.host, fault_proxy.port)
    try:
        # A round trip to the server, so that the proxy's connection to it is open too.
        writer.write(SSL_REQUEST)
        assert await asyncio.wait_for(reader.readexactly(1), 10) == b"N"
        assert fault_proxy.cut() == 1
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(reader.read(1), 10)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionResetError):  # the error the read raised
            await writer.wait_closed()


# ------------------------------------------------------------------ refuse


async def test_refuse_makes_connects_fail_at_once_and_heal_listens_again(
    fault_proxy: FaultProxy, postgres_server: PostgresServer
) -> None:
    dsn = fault_proxy.dsn_for(postgres_server.dsn)
    port = fault_proxy.port
    conn = await asyncpg.connect(dsn)
    try:
        fault_proxy.refuse()
        began = time.monotonic()
        with pytest.raises(ConnectionRefusedError):
            await asyncio.wait_for(asyncpg.connect(dsn), 10)
        print(f"\nrefused after {time.monotonic() - began:.4f}s")
        # Connections already open carry on.
        assert await conn.fetchval("SELECT 1") == 1
        fault_proxy.heal()
        assert fault_proxy.port == port
        await _can_query(dsn)
        assert await conn.fetchval("SELECT 1") == 1
    finally:
        await conn.close()
    assert fault_proxy.connections_total == 2  # the refused one never reached the proxy


async def test_refuse_after_accept_closes_new_connections_at_once(
    fault_proxy: FaultProxy, postgres_server: PostgresServer
) -> None:
    dsn = fault_proxy.dsn_for(postgres_server.dsn)
    fault_proxy.refuse(after_accept=True)
    with pytest.raises(ConnectionError) as raised:
        await asyncio.wait_for(asyncpg.connect(dsn), 10)
    assert not isinstance(raised.value, ConnectionRefusedError)
    assert fault_proxy.connections_refused >= 1  # asyncpg may try again
    assert fault_proxy.connections_total == 0
    fault_proxy.heal()
    await _can_query(dsn)


async def test_refuse_then_cut_is_a_server_gone_away(
    fault_proxy: FaultProxy, postgres_server: PostgresServer
) -> None:
    dsn = fault_proxy.dsn_for(postgres_server.dsn)
    conn = await asyncpg.connect(dsn)
    try:
        fault_proxy.refuse()
        fault_proxy.cut()
        await wait_until(conn.is_closed)
        with pytest.raises(ConnectionRefusedError):
            await asyncio.wait_for(asyncpg.connect(dsn), 10)
    finally:
        conn.terminate()
    fault_proxy.heal()
    await _can_query(dsn)


# ------------------------------------------------------------------ the proxy's own life


async def test_a_target_that_refuses_makes_the_client_connection_reset() -> None:
    async with FaultProxy("127.0.0.1", free_port()) as proxy:
        reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
        try:
            with pytest.raises(ConnectionResetError):
                await asyncio.wait_for(reader.read(1), 10)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionResetError):  # the error the read raised
                await writer.wait_closed()
        await wait_until(lambda: proxy.connections_open == 0)


async def test_stop_resets_every_connection_and_ends_every_task(
    postgres_server: PostgresServer,
) -> None:
    proxy = FaultProxy(postgres_server.host, postgres_server.port)
    await proxy.start()
    dsn = proxy.dsn_for(postgres_server.dsn)
    forwarded = await asyncpg.connect(dsn)
    proxy.stall()
    held = asyncio.ensure_future(asyncpg.connect(dsn))
    await wait_until(lambda: proxy.connections_open == 2 and proxy.bytes_held > 0)
    assert _proxy_tasks()
    await proxy.stop()
    assert _proxy_tasks() == []
    assert proxy.connections_open == 0
    with pytest.raises(CONNECTION_LOST):
        await asyncio.wait_for(held, 10)
    await wait_until(forwarded.is_closed)
    forwarded.terminate()
    await proxy.stop()  # a second stop does nothing
    with pytest.raises(ConnectionRefusedError):
        await asyncpg.connect(dsn)
    with pytest.raises(RuntimeError, match="started once"):
        await proxy.start()
