"""The FastAPI integration behind a real uvicorn server: clients that leave mid-request.

uvicorn runs as a task in the test's event loop, on a socket the test opened, with its
lifespan on. A raw TCP client sends a request to a slow path operation and closes its socket
while the request is still being worked on. Whether the server lets the path operation finish
(uvicorn's way) or cancels it (what an app that stops work for departed clients does), the
connection must go back to the pool; and when the server stops, the pool is closed.

No ``from __future__ import annotations`` here: FastAPI reads the annotations of the path
operations defined inside the tests at run time.
"""

import asyncio
import uuid
from contextlib import suppress
from pathlib import Path
from typing import Annotated, Any

import aiosqlite
import asyncpg
import httpx
from fastapi import Depends, FastAPI, Request
from helpers import wait_until
from serving import serving
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aiodbpool import Pool, create_pool
from aiodbpool.integrations.fastapi import connection, install, lifespan, transaction


async def leave_mid_request(port: int, path: str, entered: asyncio.Event) -> None:
    """Send ``GET path`` on a raw socket, wait until the path operation runs, and hang up."""
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
    await writer.drain()
    async with asyncio.timeout(30):
        await entered.wait()
    writer.close()
    await writer.wait_closed()


async def wait_for_disconnect(request: Request) -> None:
    """Return once the client has gone (the request has no body left to read)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


class CancelOnDisconnect:
    """ASGI middleware that cancels a request's work as soon as its client disconnects.

    Some services run one to stop spending database time on answers nobody will read; with
    it, the dependencies exit with ``CancelledError`` in the middle of a statement.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        inbox: asyncio.Queue[Message] = asyncio.Queue()
        work = asyncio.ensure_future(self.app(scope, inbox.get, send))

        async def watch() -> None:
            while True:
                message = await receive()
                inbox.put_nowait(message)
                if message["type"] == "http.disconnect":
                    work.cancel()
                    return

        watcher = asyncio.ensure_future(watch())
        try:
            with suppress(asyncio.CancelledError):
                await work  # cancelled only by the watcher: the client is gone, nothing to send
        finally:
            watcher.cancel()


async def test_a_client_leaving_mid_request_gets_its_connection_returned(
    tmp_path: Path,
) -> None:
    """uvicorn lets the path operation finish after its client left: the connection still
    works, and goes back to the pool when the path operation returns."""
    pool: Pool[aiosqlite.Connection] = create_pool(f"sqlite:///{tmp_path / 'app.db'}", max_size=2)
    app = FastAPI(lifespan=lifespan(pool))
    install(app)
    entered = asyncio.Event()
    finished: list[int] = []

    @app.get("/slow")
    async def slow(
        request: Request, conn: Annotated[aiosqlite.Connection, Depends(connection)]
    ) -> None:
        entered.set()
        await wait_for_disconnect(request)
        [(answer,)] = await conn.execute_fetchall("SELECT 42")
        finished.append(answer)

    async with serving(app) as port:
        await leave_mid_request(port, "/slow", entered)
        await wait_until(lambda: finished == [42] and pool.stats().in_use == 0, timeout=30)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            assert (await client.get("/health/ready")).status_code == 200
    assert pool.closed
    assert pool.stats().size == 0


async def test_a_request_cancelled_mid_statement_rolls_back_and_returns_its_connection(
    postgres_url: str,
) -> None:
    """The path operation is cancelled while PostgreSQL runs its statement, inside a
    transaction: the write is rolled back and the pool's only connection serves again."""
    table = f"visits_{uuid.uuid4().hex[:12]}"
    pool: Pool[asyncpg.Connection] = create_pool(postgres_url, max_size=1, acquire_timeout=20)
    app = FastAPI(lifespan=lifespan(pool))
    install(app)
    entered = asyncio.Event()

    @app.get("/slow")
    async def slow(conn: Annotated[asyncpg.Connection, Depends(transaction)]) -> None:
        await conn.execute(f"INSERT INTO {table} VALUES ('never committed')")
        entered.set()
        await conn.execute("SELECT pg_sleep(60)")

    @app.get("/count")
    async def count(conn: Annotated[asyncpg.Connection, Depends(connection)]) -> Any:
        return await conn.fetchval(f"SELECT count(*) FROM {table}")

    admin = await asyncpg.connect(postgres_url)
    await admin.execute(f"CREATE TABLE {table} (note TEXT)")
    try:
        async with serving(CancelOnDisconnect(app)) as port:
            await leave_mid_request(port, "/slow", entered)
            await wait_until(lambda: pool.stats().in_use == 0, timeout=30)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
                response = await client.get("/count")
            assert response.status_code == 200
            assert response.json() == 0
            sleeping = await admin.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(60)'"
                " AND state = 'active'"
            )
            assert sleeping == 0, "the cancelled statement still runs on the server"
        assert pool.closed
        assert pool.stats().size == 0
    finally:
        await admin.execute(f"DROP TABLE {table}")
        await admin.close()
