"""The FastAPI integration's lifespan and dependencies, on SQLite files and on PostgreSQL.

Each app runs its lifespan for real (``app.router.lifespan_context``) and is called through
httpx's ASGI transport, in the test's own event loop. What is checked: requests share a small
pool and give every connection back, whatever the path operation does; transactions commit and
roll back, and commit before the response is sent; a pool that cannot serve answers 503, and
so does a request whose connection the database ended under it;
several named pools in one app; and the errors that point at a missing lifespan.

No ``from __future__ import annotations`` here: FastAPI reads the annotations of the path
operations at run time, and those defined inside a test name dependencies local to it.
"""

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, TypeAlias

import aiosqlite
import asyncpg
import httpx
import pytest
from fastapi import Depends, FastAPI, HTTPException, Request, WebSocket
from helpers import MinimalDriver, wait_until

from aiodbpool import ConnectionReleased, Pool, PoolConnectError, create_pool
from aiodbpool.drivers.fake import FakeConnection, FakeConnectionError, FakeDriver
from aiodbpool.integrations.fastapi import (
    ConnectionLost,
    connection,
    connection_for,
    install,
    lifespan,
    pool_for,
    transaction,
    transaction_for,
)
from aiodbpool.integrations.testing.postgres import free_port

Connection: TypeAlias = asyncpg.Connection | aiosqlite.Connection
Row: TypeAlias = tuple[Any, ...]
Replica: TypeAlias = Annotated[aiosqlite.Connection, Depends(connection_for("replica"))]
ReplicaWriter: TypeAlias = Annotated[aiosqlite.Connection, Depends(transaction_for("replica"))]


@asynccontextmanager
async def running(
    app: FastAPI, *, raise_app_exceptions: bool = False
) -> AsyncIterator[httpx.AsyncClient]:
    """``app`` with its lifespan entered, and a client that calls it in this event loop.

    Unhandled exceptions become 500 responses, as a server would send, unless
    ``raise_app_exceptions``.
    """
    transport = httpx.ASGITransport(app, raise_app_exceptions=raise_app_exceptions)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://app") as client,
    ):
        yield client


async def query(conn: Connection, sql: str, *args: object) -> list[Row]:
    """Run ``sql``, written with ``$1`` parameters, on either database; the rows as tuples."""
    if isinstance(conn, aiosqlite.Connection):
        rows = await conn.execute_fetchall(re.sub(r"\$(\d+)", r"?\1", sql), args)
        return [tuple(row) for row in rows]
    return [tuple(record) for record in await conn.fetch(sql, *args)]


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database of each kind: a SQLite file of the test's own, or the test PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'app.db'}"
    dsn: str = request.getfixturevalue("postgres_url")
    return dsn


@pytest.fixture
def table() -> str:
    """A table name no other test uses (the PostgreSQL database is shared by the session)."""
    return f"items_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def drop_afterwards(database_url: str, table: str) -> Iterator[None]:
    """Drop the test's table from the shared PostgreSQL database when the test ends."""
    yield
    if database_url.startswith("postgresql"):

        async def drop() -> None:
            conn = await asyncpg.connect(database_url)
            try:
                await conn.execute(f"DROP TABLE IF EXISTS {table}")
            finally:
                await conn.close()

        asyncio.run(drop())


async def create_table(pool: Pool[Any], table: str) -> None:
    async with pool.acquire() as conn:
        await query(conn, f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, name TEXT NOT NULL)")


async def names_in(pool: Pool[Any], table: str) -> list[str]:
    """The names stored in ``table``, read on a connection of the test's own."""
    async with pool.acquire() as conn:
        return [row[0] for row in await query(conn, f"SELECT name FROM {table} ORDER BY id")]


def items_app(pool: Pool[Any], table: str, **install_options: Any) -> FastAPI:
    """An app that reads, writes and fails on ``table``, with the pool errors installed."""
    app = FastAPI(lifespan=lifespan(pool))
    install(app, **install_options)

    @app.get("/echo/{number}")
    async def echo(number: int, conn: Annotated[Connection, Depends(connection)]) -> int:
        [(value,)] = await query(conn, "SELECT CAST($1 AS INTEGER)", number)
        return int(value)

    @app.post("/items/{item_id}")
    async def add(
        item_id: int, name: str, conn: Annotated[Connection, Depends(transaction)]
    ) -> dict[str, int]:
        await query(conn, f"INSERT INTO {table} (id, name) VALUES ($1, $2)", item_id, name)
        if name == "boom":
            raise RuntimeError("the path operation failed after its write")
        if name == "taken":
            raise HTTPException(409, "that name is taken")
        return {"id": item_id}

    @app.get("/crash")
    async def crash(conn: Annotated[Connection, Depends(connection)]) -> None:
        await query(conn, "SELECT 1")
        raise ValueError("the path operation failed")

    return app


# ---------------------------------------------------------------------- lending connections


@pytest.mark.usefixtures("drop_afterwards")
async def test_200_concurrent_requests_through_a_pool_of_3(database_url: str, table: str) -> None:
    pool = create_pool(database_url, max_size=3)
    async with running(items_app(pool, table)) as client:
        await create_table(pool, table)  # and SQLite's file, before connections open together
        acquired = pool.stats().acquired
        started = time.perf_counter()
        responses = await asyncio.gather(*(client.get(f"/echo/{n}") for n in range(200)))
        elapsed = time.perf_counter() - started
        assert [response.status_code for response in responses] == [200] * 200
        assert [response.json() for response in responses] == list(range(200))
        stats = pool.stats()
        assert stats.in_use == 0
        assert stats.size <= 3
        assert stats.acquired == acquired + 200
        assert stats.waited > 0, "the requests never had to share the connections"
    print(f"\n200 requests through a pool of 3 ({database_url.split(':')[0]}): {elapsed:.3f}s")
    assert pool.closed


@pytest.mark.usefixtures("drop_afterwards")
async def test_failing_requests_give_their_connection_back(database_url: str, table: str) -> None:
    pool = create_pool(database_url, max_size=2)
    async with running(items_app(pool, table)) as client:
        await create_table(pool, table)
        for _ in range(3):  # more failures than connections: none may be kept
            assert (await client.get("/crash")).status_code == 500
            assert (await client.post("/items/1", params={"name": "boom"})).status_code == 500
            assert (await client.post("/items/1", params={"name": "taken"})).status_code == 409
            assert pool.stats().in_use == 0
        assert (await client.get("/echo/7")).json() == 7


async def test_the_request_shares_one_connection(tmp_path: Path) -> None:
    """``connection`` and ``transaction``, asked for by several dependencies of one request,
    give one connection: the transaction runs on it."""
    pool = create_pool(f"sqlite:///{tmp_path / 'app.db'}", max_size=4)
    app = FastAPI(lifespan=lifespan(pool))

    async def repository(conn: Annotated[aiosqlite.Connection, Depends(connection)]) -> Any:
        return conn

    @app.get("/")
    async def handler(
        plain: Annotated[aiosqlite.Connection, Depends(connection)],
        in_transaction: Annotated[aiosqlite.Connection, Depends(transaction)],
        from_repository: Annotated[aiosqlite.Connection, Depends(repository)],
    ) -> dict[str, bool]:
        return {
            "same": plain is in_transaction is from_repository,
            "in_transaction": plain.in_transaction,
            "borrowed": pool.stats().in_use == 1,
        }

    async with running(app) as client:
        assert (await client.get("/")).json() == {
            "same": True,
            "in_transaction": True,
            "borrowed": True,
        }
        assert pool.stats().in_use == 0


# ---------------------------------------------------------------------- transactions


@pytest.mark.usefixtures("drop_afterwards")
async def test_transaction_commits_or_rolls_back(database_url: str, table: str) -> None:
    pool = create_pool(database_url, max_size=2)
    async with running(items_app(pool, table)) as client:
        await create_table(pool, table)
        assert (await client.post("/items/1", params={"name": "kept"})).status_code == 200
        assert (await client.post("/items/2", params={"name": "boom"})).status_code == 500
        assert (await client.post("/items/3", params={"name": "taken"})).status_code == 409
        assert (await client.post("/items/1", params={"name": "twice"})).status_code == 500
        assert await names_in(pool, table) == ["kept"]
        assert pool.stats().in_use == 0


async def test_a_failed_sqlite_commit_is_an_error_response(tmp_path: Path) -> None:
    """A deferred foreign key is checked by COMMIT: the commit must fail before the response
    is sent, so the client gets a 500, never a 200 for a row that is not there."""
    pool: Pool[aiosqlite.Connection] = create_pool(f"sqlite:///{tmp_path / 'app.db'}")
    app = FastAPI(lifespan=lifespan(pool))

    @app.post("/children/{parent_id}")
    async def add_child(
        parent_id: int, conn: Annotated[aiosqlite.Connection, Depends(transaction)]
    ) -> dict[str, str]:
        await conn.execute("INSERT INTO child (parent_id) VALUES (?)", (parent_id,))
        return {"status": "saved"}  # not yet: the constraint is checked at commit

    async with running(app) as client:
        async with pool.acquire() as conn:
            await conn.executescript(
                "CREATE TABLE parent (id INTEGER PRIMARY KEY);"
                "CREATE TABLE child (parent_id INTEGER REFERENCES parent (id)"
                " DEFERRABLE INITIALLY DEFERRED);"
                "INSERT INTO parent VALUES (1);"
            )
        assert (await client.post("/children/1")).status_code == 200
        failed = await client.post("/children/2")
        assert failed.status_code == 500
        assert "saved" not in failed.text
        async with pool.acquire() as conn:
            assert list(await conn.execute_fetchall("SELECT parent_id FROM child")) == [(1,)]
        assert pool.stats().in_use == 0


async def test_a_failed_postgres_commit_is_an_error_response(postgres_url: str, table: str) -> None:
    """The same with a PostgreSQL constraint checked at commit (DEFERRABLE INITIALLY DEFERRED)."""
    pool: Pool[asyncpg.Connection] = create_pool(postgres_url)
    app = FastAPI(lifespan=lifespan(pool))

    @app.post("/codes/{code}")
    async def add_code(
        code: str, conn: Annotated[asyncpg.Connection, Depends(transaction)]
    ) -> dict[str, str]:
        await conn.execute(f"INSERT INTO {table} (code) VALUES ($1)", code)
        return {"status": "saved"}

    async with running(app) as client:
        async with pool.acquire() as conn:
            await conn.execute(
                f"CREATE TABLE {table} (code TEXT, UNIQUE (code) DEFERRABLE INITIALLY DEFERRED)"
            )
        try:
            assert (await client.post("/codes/a")).status_code == 200
            failed = await client.post("/codes/a")
            assert failed.status_code == 500
            assert "saved" not in failed.text
            async with pool.acquire() as conn:
                assert await conn.fetchval(f"SELECT count(*) FROM {table}") == 1
            assert pool.stats().in_use == 0
        finally:
            async with pool.acquire() as conn:
                await conn.execute(f"DROP TABLE {table}")


async def test_transaction_needs_a_driver_that_can_run_one() -> None:
    pool = Pool(MinimalDriver(), name="minimal")
    app = FastAPI(lifespan=lifespan(pool))

    @app.get("/")
    async def handler(conn: Annotated[object, Depends(transaction)]) -> None:
        pass

    async with running(app, raise_app_exceptions=True) as client:
        with pytest.raises(TypeError, match=r"pool 'minimal' \(MinimalDriver\) cannot run"):
            await client.get("/")
        assert pool.stats().in_use == 0


# ---------------------------------------------------------------------- a pool that cannot serve


async def test_a_busy_pool_answers_503_within_the_acquire_timeout(tmp_path: Path) -> None:
    pool = create_pool(f"sqlite:///{tmp_path / 'app.db'}", max_size=1, acquire_timeout=0.2)
    async with running(items_app(pool, "unused")) as client:
        async with pool.acquire():  # the only connection is taken
            started = time.perf_counter()
            response = await client.get("/echo/1")
            elapsed = time.perf_counter() - started
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "1"
        assert response.json() == {
            "detail": "no database connection became free in time",
            "pool": "default",
            "reason": "timeout",
        }
        assert 0.15 < elapsed < 10, "answered well before the timeout, or long after it"
        assert (await client.get("/echo/1")).status_code == 200


async def test_a_full_queue_answers_503_at_once(tmp_path: Path) -> None:
    pool = create_pool(f"sqlite:///{tmp_path / 'app.db'}", max_size=1, max_waiting=0, name="db")
    async with running(items_app(pool, "unused", retry_after=7)) as client:
        async with pool.acquire():
            response = await client.get("/echo/1")
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "7"
        assert response.json()["reason"] == "exhausted"
        assert response.json()["pool"] == "db"


async def test_an_unreachable_database_answers_503_without_revealing_it() -> None:
    port = free_port()  # nothing listens there
    pool = create_pool(f"postgresql://app:s3cret@127.0.0.1:{port}/db", name="main")
    async with running(items_app(pool, "unused")) as client:
        response = await client.get("/echo/1")
    assert response.status_code == 503
    assert response.json() == {
        "detail": "the database cannot be reached",
        "pool": "main",
        "reason": "connect_error",
    }
    for secret in ("s3cret", str(port), "127.0.0.1", "app:"):
        assert secret not in response.text


async def test_a_closed_pool_answers_503(tmp_path: Path) -> None:
    """Requests that arrive while the pools close at shutdown get a 503, not a 500."""
    pool = create_pool(f"sqlite:///{tmp_path / 'app.db'}")
    async with running(items_app(pool, "unused")) as client:
        await pool.close()
        response = await client.get("/echo/1")
        assert response.status_code == 503
        assert response.json()["reason"] == "closed"


@pytest.mark.parametrize("dependency", [connection, transaction], ids=["connection", "transaction"])
async def test_a_session_ended_under_a_statement_answers_503(
    postgres_url: str, dependency: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The server ends the request's session mid-statement (here the session terminates itself,
    as an administrator or a restart would): a 503 with Retry-After, not a 500."""
    pool = create_pool(postgres_url, max_size=1, name="main")
    app = FastAPI(lifespan=lifespan(pool))
    install(app)

    @app.get("/ended")
    async def ended(conn: Annotated[asyncpg.Connection, Depends(dependency)]) -> None:
        await conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")

    async with running(app) as client:
        response = await client.get("/ended")
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "1"
        assert response.json() == {
            "detail": "the database connection was lost during the request",
            "pool": "main",
            "reason": "connection_lost",
        }
        stats = pool.stats()
        assert (stats.in_use, stats.size, stats.discarded) == (0, 0, 1)
        ended_once = pool.stats().acquired
        async with pool.acquire() as conn:  # the pool opens a new one
            assert await conn.fetchval("SELECT 1") == 1
        assert pool.stats().acquired == ended_once + 1
    [record] = [r for r in caplog.records if r.name == "aiodbpool.fastapi"]
    message = record.getMessage()
    assert re.search(r"503 \(connection_lost\): .* in use: \w+Error: ", message), message
    assert postgres_url.split("@")[0].split(":")[-1] not in message  # no password


async def test_only_a_closed_connection_makes_a_failure_a_503() -> None:
    """The fake driver's broken connection answers 503; the same failure on a sound connection
    stays a 500, and a request that closed its connection itself, then succeeded, is a 200."""
    driver = FakeDriver()
    pool = Pool(driver, max_size=1)
    app = FastAPI(lifespan=lifespan(pool))
    install(app)

    @app.get("/broken/{detected}")
    async def broken(detected: bool, conn: Annotated[FakeConnection, Depends(transaction)]) -> None:
        driver.break_connection(conn, detected=detected)
        await conn.execute("SELECT 1")

    @app.get("/failing")
    async def failing(conn: Annotated[FakeConnection, Depends(connection)]) -> None:
        raise FakeConnectionError("a driver error on a connection that still works")

    @app.get("/closed-on-purpose")
    async def closed_on_purpose(conn: Annotated[FakeConnection, Depends(connection)]) -> str:
        await driver.close(conn)
        return "fine"

    async with running(app) as client:
        for detected in ("true", "false"):  # noticed at once, or only by the failed statement
            response = await client.get(f"/broken/{detected}")
            assert response.status_code == 503
            assert response.json()["reason"] == "connection_lost"
        assert (await client.get("/failing")).status_code == 500
        assert (pool.stats().size, pool.stats().discarded) == (1, 2)  # still sound, kept
        assert (await client.get("/closed-on-purpose")).status_code == 200
        assert (pool.stats().size, pool.stats().discarded) == (0, 3)
        assert pool.stats().in_use == 0


async def test_without_install_a_lost_connection_is_a_500_that_names_its_cause() -> None:
    driver = FakeDriver()
    pool = Pool(driver, max_size=1)
    app = FastAPI(lifespan=lifespan(pool))

    @app.get("/broken")
    async def broken(conn: Annotated[FakeConnection, Depends(connection)]) -> None:
        driver.break_connection(conn)
        await conn.execute("SELECT 1")

    async with running(app, raise_app_exceptions=True) as client:
        with pytest.raises(ConnectionLost) as raised:
            await client.get("/broken")
    assert isinstance(raised.value.__cause__, FakeConnectionError)
    assert raised.value.pool_name == pool.name
    assert pool.stats().in_use == 0


async def test_a_connection_used_after_its_release_is_a_500() -> None:
    """``ConnectionReleased`` is a bug in the path operation, not an outage: a 500, never the
    503 of a lost connection. A connection kept from an earlier request refuses without sending
    anything, and the request's own connection, sound, stays in the pool. The same goes for a
    connection the path operation gave back itself and then used."""
    driver = FakeDriver()
    pool = Pool(driver, max_size=1)
    app = FastAPI(lifespan=lifespan(pool))
    install(app)
    kept: list[FakeConnection] = []

    @app.get("/keep")
    async def keep(conn: Annotated[FakeConnection, Depends(connection)]) -> None:
        kept.append(conn)  # the bug: a connection kept past its request

    @app.get("/stale")
    async def stale(conn: Annotated[FakeConnection, Depends(connection)]) -> None:
        await conn.execute("SELECT 'current'")
        await kept[0].execute("SELECT 'stale'")

    @app.get("/given-back")
    async def given_back(
        request: Request, conn: Annotated[FakeConnection, Depends(connection)]
    ) -> None:
        await pool_for(request).release(conn)
        await conn.execute("SELECT 'after its release'")

    async with running(app) as client:
        assert (await client.get("/keep")).status_code == 200
        response = await client.get("/stale")
        assert response.status_code == 500
        assert "Retry-After" not in response.headers
        assert [sql for _, sql, _ in driver.queries] == ["SELECT 'current'"]
        stats = pool.stats()
        assert (stats.in_use, stats.size, stats.discarded, stats.stale_uses) == (0, 1, 0, 1)

        assert (await client.get("/given-back")).status_code == 500
        assert "SELECT 'after its release'" not in [sql for _, sql, _ in driver.queries]
        stats = pool.stats()
        assert (stats.in_use, stats.size, stats.discarded, stats.stale_uses) == (0, 1, 0, 2)
        assert (await client.get("/keep")).status_code == 200  # the pool serves on


async def test_without_install_a_stale_connection_raises_connection_released() -> None:
    driver = FakeDriver()
    pool = Pool(driver, max_size=1)
    app = FastAPI(lifespan=lifespan(pool))
    kept: list[FakeConnection] = []

    @app.get("/keep")
    async def keep(conn: Annotated[FakeConnection, Depends(connection)]) -> None:
        kept.append(conn)

    @app.get("/stale")
    async def stale(conn: Annotated[FakeConnection, Depends(transaction)]) -> None:
        await kept[0].execute("SELECT 'stale'")

    async with running(app, raise_app_exceptions=True) as client:
        await client.get("/keep")
        with pytest.raises(ConnectionReleased, match="released back to pool"):
            await client.get("/stale")
        assert pool.stats().in_use == 0
        # The stale statement sent nothing; the request's own transaction was rolled back.
        assert [sql for _, sql, _ in driver.queries] == ["BEGIN", "ROLLBACK"]


@pytest.mark.parametrize("when", ["mid-statement", "after"])
async def test_a_connection_the_pools_close_terminated_is_a_503(when: str) -> None:
    """At shutdown, ``close()`` terminates the connections still lent once its timeout is over.
    A request whose statement was under way then, or that sends one afterwards (its connection
    refuses with ``ConnectionReleased``), met an outage, not a bug of its own: a 503."""
    driver = FakeDriver()
    pool = Pool(driver, max_size=1)
    app = FastAPI(lifespan=lifespan(pool))
    install(app)
    entered, go_on = asyncio.Event(), asyncio.Event()

    @app.get("/work")
    async def work(conn: Annotated[FakeConnection, Depends(connection)]) -> None:
        entered.set()
        await go_on.wait()
        await conn.execute("SELECT 'work'")

    async with running(app) as client:
        request = asyncio.create_task(client.get("/work"))
        await entered.wait()  # the path operation holds its connection
        if when == "mid-statement":
            driver.query_latency = 0.1
            go_on.set()
            await wait_until(lambda: bool(driver.queries), message="the statement is sent")
            await pool.close(timeout=0)
        else:
            await pool.close(timeout=0)
            go_on.set()
        response = await request
    assert response.status_code == 503
    assert response.json()["reason"] == "connection_lost"
    assert driver.live == 0


# ---------------------------------------------------------------------- several pools


async def test_several_named_pools(tmp_path: Path) -> None:
    primary = create_pool(f"sqlite:///{tmp_path / 'primary.db'}", name="primary")
    replica = create_pool(
        f"sqlite:///{tmp_path / 'replica.db'}", name="replica", max_size=1, acquire_timeout=0.1
    )
    app = FastAPI(lifespan=lifespan(primary, replica))
    install(app)

    @app.get("/where")
    async def where(
        default: Annotated[aiosqlite.Connection, Depends(connection)],
        on_replica: Replica,
        again: Annotated[aiosqlite.Connection, Depends(connection_for("replica"))],
    ) -> dict[str, str]:
        async def database(conn: aiosqlite.Connection) -> str:
            [(_, _, path)] = await conn.execute_fetchall("PRAGMA database_list")
            return Path(str(path)).name

        assert on_replica is again  # one connection of each pool per request
        return {"default": await database(default), "replica": await database(on_replica)}

    @app.post("/replica/notes")
    async def note(conn: ReplicaWriter) -> None:
        await conn.execute("CREATE TABLE IF NOT EXISTS notes (body TEXT)")
        await conn.execute("INSERT INTO notes VALUES ('on the replica')")

    async with running(app) as client:
        assert (await client.get("/where")).json() == {
            "default": "primary.db",
            "replica": "replica.db",
        }
        assert (await client.post("/replica/notes")).status_code == 200
        async with replica.acquire() as conn:
            assert list(await conn.execute_fetchall("SELECT body FROM notes")) == [
                ("on the replica",)
            ]
            # The replica is busy: its dependency answers 503 naming it, the primary still works.
            response = await client.get("/where", timeout=30)
            assert response.status_code == 503
            assert response.json()["pool"] == "replica"
        assert primary.stats().in_use == replica.stats().in_use == 0
    assert primary.closed
    assert replica.closed


async def test_connection_for_returns_one_dependency_per_name() -> None:
    assert connection_for("replica") is connection_for("replica")
    assert transaction_for("replica") is transaction_for("replica")
    assert connection_for("replica") is not connection_for("other")
    assert connection_for("replica") is not connection
    with pytest.raises(ValueError, match="non-empty string"):
        connection_for("")


# ---------------------------------------------------------------------- the lifespan


async def test_the_lifespan_nests_in_the_apps_own(tmp_path: Path) -> None:
    pool: Pool[aiosqlite.Connection] = create_pool(f"sqlite:///{tmp_path / 'app.db'}")
    events: list[str] = []

    @asynccontextmanager
    async def app_lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with lifespan(pool)(app):
            async with pool.acquire() as conn:  # the pool is open for the app's start-up
                await conn.execute("CREATE TABLE notes (body TEXT)")
            events.append("started")
            yield
            events.append("stopping")
            assert not pool.closed  # and still open for its shutdown
        events.append(f"pool closed: {pool.closed}")

    app = FastAPI(lifespan=app_lifespan)

    @app.get("/notes")
    async def notes(conn: Annotated[aiosqlite.Connection, Depends(connection)]) -> int:
        return len(list(await conn.execute_fetchall("SELECT * FROM notes")))

    async with running(app) as client:
        assert (await client.get("/notes")).json() == 0
    assert events == ["started", "stopping", "pool closed: True"]


async def test_a_pool_that_cannot_open_stops_the_startup(tmp_path: Path) -> None:
    """With ``min_size``, a database that is down at startup fails the startup; the pools
    opened before it are closed again, and none stays registered."""
    first = create_pool(f"sqlite:///{tmp_path / 'first.db'}", name="first", min_size=1)
    down = f"postgresql://app:s3cret@127.0.0.1:{free_port()}/db"
    second = create_pool(down, name="second", min_size=1, connect_timeout=5)
    app = FastAPI(lifespan=lifespan(first, second))
    with pytest.raises(PoolConnectError, match="'second' could not open a connection"):
        async with app.router.lifespan_context(app):
            pytest.fail("the app started without its second pool")
    assert first.closed
    assert first.stats().size == second.stats().size == 0
    # Nothing stays registered: pools of the same names can open on the app.
    again = create_pool(f"sqlite:///{tmp_path / 'again.db'}", name="first")
    async with lifespan(again)(app):
        assert not again.closed


async def test_apps_in_one_process_have_their_own_pools(tmp_path: Path) -> None:
    first = create_pool(f"sqlite:///{tmp_path / 'first.db'}")
    second = create_pool(f"sqlite:///{tmp_path / 'second.db'}")
    apps = [FastAPI(lifespan=lifespan(first)), FastAPI(lifespan=lifespan(second))]
    for app in apps:

        @app.get("/pool")
        async def which(conn: Annotated[aiosqlite.Connection, Depends(connection)]) -> str:
            [(_, _, path)] = await conn.execute_fetchall("PRAGMA database_list")
            return Path(str(path)).name

    async with running(apps[0]) as one, running(apps[1]) as two:
        assert (await one.get("/pool")).json() == "first.db"
        assert (await two.get("/pool")).json() == "second.db"


async def test_without_the_lifespan_the_error_says_what_to_do() -> None:
    app = FastAPI()

    @app.get("/")
    async def handler(conn: Annotated[object, Depends(connection)]) -> None:
        pass

    async with running(app, raise_app_exceptions=True) as client:
        with pytest.raises(RuntimeError, match=r"no aiodbpool pool: create it with FastAPI\("):
            await client.get("/")


async def test_an_unknown_pool_name_is_reported(tmp_path: Path) -> None:
    pool = create_pool(f"sqlite:///{tmp_path / 'app.db'}", name="primary")
    app = FastAPI(lifespan=lifespan(pool))

    @app.get("/")
    async def handler(conn: Annotated[object, Depends(connection_for("replica"))]) -> None:
        pass

    async with running(app, raise_app_exceptions=True) as client:
        with pytest.raises(RuntimeError, match=r"no pool named 'replica' \(its pools: 'primary'\)"):
            await client.get("/")


async def test_pool_for_reaches_the_pools_from_a_request(tmp_path: Path) -> None:
    primary = create_pool(f"sqlite:///{tmp_path / 'primary.db'}", name="primary")
    replica = create_pool(f"sqlite:///{tmp_path / 'replica.db'}", name="replica")
    app = FastAPI(lifespan=lifespan(primary, replica))
    found: list[Pool[Any]] = []

    @app.get("/find")
    async def find(request: Request) -> None:
        found.extend([pool_for(request), pool_for(request, "replica")])

    async with running(app) as client:
        assert (await client.get("/find")).status_code == 200
    assert found == [primary, replica]


def test_lifespan_checks_its_pools(tmp_path: Path) -> None:
    one = create_pool(f"sqlite:///{tmp_path / 'one.db'}", name="db")
    two = create_pool(f"sqlite:///{tmp_path / 'two.db'}", name="db")
    with pytest.raises(ValueError, match="two pools are named 'db'"):
        lifespan(one, two)
    with pytest.raises(TypeError, match="needs at least one pool"):
        lifespan()
    with pytest.raises(TypeError, match="takes aiodbpool pools, got str"):
        lifespan("sqlite:///app.db")  # type: ignore[arg-type]
    for wrong in (-1, "10", float("nan"), True):
        with pytest.raises(ValueError, match=r"^lifespan\(\): close_timeout must be a number"):
            lifespan(one, close_timeout=wrong)  # type: ignore[arg-type]


async def test_one_name_per_app_across_nested_lifespans(tmp_path: Path) -> None:
    outer = create_pool(f"sqlite:///{tmp_path / 'outer.db'}", name="db")
    inner = create_pool(f"sqlite:///{tmp_path / 'inner.db'}", name="db")
    app = FastAPI()
    async with lifespan(outer)(app):
        with pytest.raises(ValueError, match="already has an open pool named 'db'"):
            async with lifespan(inner)(app):
                pass
    assert outer.closed


@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient` is deprecated")
def test_starlettes_test_client_and_websockets(tmp_path: Path) -> None:
    """``TestClient`` runs the lifespan and the app in a loop of its own, and websocket
    endpoints take the dependencies like path operations do."""
    from fastapi.testclient import TestClient  # imported here, where its warning is filtered

    pool: Pool[aiosqlite.Connection] = create_pool(f"sqlite:///{tmp_path / 'app.db'}")
    app = FastAPI(lifespan=lifespan(pool))

    @app.get("/answer")
    async def answer(conn: Annotated[aiosqlite.Connection, Depends(connection)]) -> Any:
        [(value,)] = await conn.execute_fetchall("SELECT 42")
        return value

    @app.websocket("/echo")
    async def echo(
        websocket: WebSocket, conn: Annotated[aiosqlite.Connection, Depends(connection)]
    ) -> None:
        await websocket.accept()
        text = await websocket.receive_text()
        [(upper,)] = await conn.execute_fetchall("SELECT upper(?)", (text,))
        await websocket.send_text(str(upper))
        await websocket.close()

    with TestClient(app) as client:
        assert client.get("/answer").json() == 42
        with client.websocket_connect("/echo") as websocket:
            websocket.send_text("hello")
            assert websocket.receive_text() == "HELLO"
        assert pool.stats().in_use == 0
    assert pool.closed
