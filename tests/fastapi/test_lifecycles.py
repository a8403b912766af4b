"""An app started more than once in one process, as a test suite starts it: once per test.

The app below is built at import time, as the FastAPI guide builds it, with ``lifespan()``
given a function that creates the pool. Each start of the app -- ``with TestClient(app)``, or
entering its lifespan -- must open a new pool, and the dependencies must lend connections of
that start's pool. With the pool itself given to ``lifespan()``, the second start fails with
``PoolClosed: ... cannot be reopened``, and the error names the fix.

The tests come in pairs that each start the module's app, so that whichever runs second meets
a pool its predecessor closed; a third test of each pair starts it twice in a row, which holds
whatever order the tests run in.

No ``from __future__ import annotations`` here: FastAPI reads the annotations of the path
operations at run time, and those defined inside a test name dependencies local to it.
"""

import traceback
import warnings
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import aiosqlite
import asyncpg
import httpx
import pytest
from fastapi import Depends, FastAPI, Request

from aiodbpool import Pool, PoolClosed, PoolConnectError, create_pool
from aiodbpool.drivers.fake import FakeConnectionError, FakeDriver
from aiodbpool.integrations.fastapi import (
    connection,
    connection_for,
    install,
    lifespan,
    pool_for,
    transaction,
)
from aiodbpool.integrations.testing import PostgresServer

with warnings.catch_warnings():
    # Starlette warns when its TestClient runs on httpx rather than httpx2; either works here.
    warnings.filterwarnings("ignore", "Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

made: list[Pool[aiosqlite.Connection]] = []
"""Every pool ``make_pool`` created, in order: the last one is the current start's."""


def make_pool() -> Pool[aiosqlite.Connection]:
    """A new pool on a new in-memory database, each time the app starts."""
    pool: Pool[aiosqlite.Connection] = create_pool("sqlite:///:memory:", name="notes", max_size=2)
    made.append(pool)
    return pool


@asynccontextmanager
async def start_and_stop(app: FastAPI) -> AsyncIterator[None]:
    """The app's own lifespan: the pool is open inside, and the schema is created on it."""
    async with lifespan(make_pool)(app):
        async with pool_for(app).acquire() as conn:
            await conn.execute("CREATE TABLE notes (body TEXT)")
        yield


app = FastAPI(lifespan=start_and_stop)
install(app)


@app.post("/notes/{body}")
async def add_note(body: str, conn: Annotated[aiosqlite.Connection, Depends(transaction)]) -> int:
    await conn.execute("INSERT INTO notes VALUES (?)", (body,))
    [(count,)] = await conn.execute_fetchall("SELECT count(*) FROM notes")
    return int(count)


@app.get("/pool")
async def which_pool(
    request: Request, conn: Annotated[aiosqlite.Connection, Depends(connection)]
) -> dict[str, Any]:
    """Which of the pools made so far lent this request's connection."""
    pool = pool_for(request)
    return {"made": made.index(pool), "in_use": pool.stats().in_use}


@contextmanager
def client_for(app: FastAPI) -> Iterator[TestClient]:
    """``TestClient(app)``, entered: it starts the app in an event loop of its own thread."""
    with TestClient(app) as client:
        yield client


@asynccontextmanager
async def started(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """``app`` with its lifespan entered, in this test's event loop, and a client for it."""
    transport = httpx.ASGITransport(app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://app") as client,
    ):
        yield client


def check_a_start_with_the_test_client() -> None:
    """Start the module's app with ``TestClient``: it serves on a pool of its own, new, which
    its shutdown closes."""
    before = len(made)
    with client_for(app) as client:
        assert len(made) == before + 1, "the start did not create a pool"
        assert client.post("/notes/first").json() == 1  # a new database: the schema is new
        assert client.get("/pool").json() == {"made": before, "in_use": 1}
        assert pool_for(app) is made[-1]  # the app's open pool, from outside a request
    assert made[-1].closed
    assert all(pool.closed for pool in made)


async def check_a_start_with_the_lifespan() -> None:
    """The same with the lifespan entered in the test's own event loop."""
    before = len(made)
    async with started(app) as client:
        assert len(made) == before + 1, "the start did not create a pool"
        assert (await client.post("/notes/first")).json() == 1
        assert (await client.get("/pool")).json() == {"made": before, "in_use": 1}
    assert made[-1].closed
    assert all(pool.closed for pool in made)


# ---------------------------------------------------------------------- the module's app, restarted


def test_a_first_test_starts_the_app_with_the_test_client() -> None:
    check_a_start_with_the_test_client()


def test_a_second_test_starts_it_again_with_the_test_client() -> None:
    check_a_start_with_the_test_client()


def test_two_starts_in_a_row_with_the_test_client() -> None:
    check_a_start_with_the_test_client()
    check_a_start_with_the_test_client()
    assert made[-1] is not made[-2]


async def test_a_first_test_starts_the_app_with_the_lifespan() -> None:
    await check_a_start_with_the_lifespan()


async def test_a_second_test_starts_it_again_with_the_lifespan() -> None:
    await check_a_start_with_the_lifespan()


async def test_two_starts_in_a_row_with_the_lifespan() -> None:
    await check_a_start_with_the_lifespan()
    await check_a_start_with_the_lifespan()
    assert made[-1] is not made[-2]


def test_starts_with_the_test_client_and_the_lifespan_mix() -> None:
    """A test client's start, then one in an event loop of the test's own: each pool belongs to
    the loop that opened it, and each start has one."""
    import asyncio

    check_a_start_with_the_test_client()
    asyncio.run(check_a_start_with_the_lifespan())
    check_a_start_with_the_test_client()


# ---------------------------------------------------------------------- a pool given itself


async def test_a_pool_given_itself_cannot_serve_a_second_start_and_the_error_says_why(
    tmp_path: Path,
) -> None:
    pool = create_pool(f"sqlite:///{tmp_path / 'app.db'}", name="once")
    once = FastAPI(lifespan=lifespan(pool))
    async with started(once):
        assert not pool.closed
    with pytest.raises(PoolClosed) as refused:
        async with started(once):
            pytest.fail("a closed pool was reopened")
    message = str(refused.value)
    assert "pool 'once' is closed and cannot be reopened" in message
    assert "lifespan(lambda: create_pool(url))" in message


# ---------------------------------------------------------------------- functions that create pools


async def test_functions_create_named_pools_at_each_start(tmp_path: Path) -> None:
    """Several functions: the first one's pool is the default; each pool is found by name;
    a pool given itself may stand next to them (it serves the first start)."""
    created: list[str] = []

    def primary() -> Pool[Any]:
        created.append("primary")
        return create_pool(f"sqlite:///{tmp_path / 'primary.db'}", name="primary")

    replica = create_pool(f"sqlite:///{tmp_path / 'replica.db'}", name="replica")
    several = FastAPI(lifespan=lifespan(primary, replica))
    assert created == [], "a function was called before the app started"

    @several.get("/where")
    async def where(
        default: Annotated[aiosqlite.Connection, Depends(connection)],
        other: Annotated[aiosqlite.Connection, Depends(connection_for("replica"))],
    ) -> list[str]:
        names = []
        for conn in (default, other):
            [(_, _, path)] = await conn.execute_fetchall("PRAGMA database_list")
            names.append(Path(str(path)).name)
        return names

    async with started(several) as client:
        assert created == ["primary"]
        assert (await client.get("/where")).json() == ["primary.db", "replica.db"]
        assert pool_for(several, "replica") is replica
    assert replica.closed


async def test_what_a_function_returns_is_checked_at_each_start(tmp_path: Path) -> None:
    def not_a_pool() -> Any:
        return "sqlite:///app.db"

    bad = FastAPI(lifespan=lifespan(not_a_pool))
    with pytest.raises(TypeError, match=r"not_a_pool\(\) returned str, not an aiodbpool pool"):
        async with started(bad):
            pytest.fail("the app started without a pool")

    def named(name: str) -> Any:
        return lambda: create_pool(f"sqlite:///{tmp_path / 'app.db'}", name=name)

    twins = FastAPI(lifespan=lifespan(named("db"), named("db")))
    with pytest.raises(ValueError, match="two pools are named 'db'"):
        async with started(twins):
            pytest.fail("the app started with two pools of one name")


async def test_a_function_that_fails_stops_the_start_and_leaves_nothing_open(
    tmp_path: Path,
) -> None:
    first: list[Pool[Any]] = []

    def opens() -> Pool[Any]:
        first.append(create_pool(f"sqlite:///{tmp_path / 'first.db'}", name="first"))
        return first[-1]

    def fails() -> Pool[Any]:
        raise LookupError("DATABASE_URL is not set")

    failing = FastAPI(lifespan=lifespan(opens, fails))
    with pytest.raises(LookupError, match="DATABASE_URL is not set"):
        async with started(failing):
            pytest.fail("the app started without its second pool")
    assert first[0].stats().size == 0
    with pytest.raises(RuntimeError, match="no aiodbpool pool"):
        pool_for(failing)


def test_lifespan_checks_its_functions_when_called() -> None:
    with pytest.raises(TypeError, match=r"calls create_pool\(\) with no arguments"):
        lifespan(create_pool)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"calls the lambda with no arguments"):
        lifespan(lambda url: create_pool(url))  # type: ignore[arg-type,misc]
    with pytest.raises(TypeError, match="takes aiodbpool pools, got int"):
        lifespan(3)  # type: ignore[arg-type]


async def test_pool_for_an_app_that_is_not_running_says_what_to_do() -> None:
    stopped = FastAPI(lifespan=lifespan(make_pool))
    with pytest.raises(RuntimeError, match=r"open only while the app runs"):
        pool_for(stopped)
    async with started(stopped):
        assert pool_for(stopped) is made[-1]
    with pytest.raises(RuntimeError, match="no aiodbpool pool"):
        pool_for(stopped)


# ------------------------------------------------------------------ checking the pools at start


async def test_check_on_start_makes_a_connection_before_the_app_serves(tmp_path: Path) -> None:
    app = FastAPI(
        lifespan=lifespan(
            lambda: create_pool(f"sqlite:///{tmp_path / 'app.db'}", min_size=0),
            check_on_start=True,
        )
    )
    async with started(app):
        stats = pool_for(app).stats()
        assert (stats.created, stats.idle) == (1, 1)  # made, and kept for the first request


async def test_check_on_start_stops_the_start_when_no_connection_can_be_had() -> None:
    driver = FakeDriver()
    driver.fail_connects(FakeConnectionError("connection refused by the test"))
    pool: Pool[Any] = Pool(driver, name="main")
    app = FastAPI(lifespan=lifespan(lambda: pool, check_on_start=True))

    with pytest.raises(PoolConnectError, match="refused by the test") as refused:
        async with started(app):
            pytest.fail("the app started without a connection")

    assert any("check_on_start=True" in note for note in refused.value.__notes__)
    assert pool.closed
    with pytest.raises(RuntimeError, match="no aiodbpool pool"):
        pool_for(app)


async def test_check_on_start_stops_the_start_on_a_wrong_password(
    postgres_server: PostgresServer,
) -> None:
    wrong = "not-the-right-one-" + postgres_server.password[:4]
    url = postgres_server.dsn.replace(quote(postgres_server.password, safe=""), wrong)
    app = FastAPI(lifespan=lifespan(lambda: create_pool(url), check_on_start=True))

    with pytest.raises(PoolConnectError) as refused:
        async with started(app):
            pytest.fail("the app started with a wrong password")

    assert isinstance(refused.value.__cause__, asyncpg.InvalidPasswordError)
    told = "".join(traceback.format_exception(refused.value))
    assert "check_on_start=True" in told
    assert wrong not in told


def test_check_on_start_must_be_a_boolean() -> None:
    with pytest.raises(TypeError, match="lifespan\\(\\): check_on_start must be True or False"):
        lifespan(lambda: create_pool("fake://"), check_on_start="yes")  # type: ignore[arg-type]
