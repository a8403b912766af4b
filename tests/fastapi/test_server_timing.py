"""Server-Timing: a response to a request that borrowed a connection says how long the request
waited for connections and held them; nothing else gets the header; it is off by default and can
be limited to the requests a guard accepts. (What a real browser reads of it:
tests/browser/test_browser_server_timing.py.)"""

from __future__ import annotations

import asyncio
import re
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.responses import JSONResponse
from helpers import wait_until
from serving import asgi_client
from starlette.background import BackgroundTask

from aiodbpool import create_pool
from aiodbpool.drivers.fake import FakeConnection
from aiodbpool.integrations.fastapi import (
    TimingGuard,
    connection,
    install,
    lifespan,
    pool_for,
    transaction,
)

_HEADER = re.compile(
    r'^db-wait;dur=(?P<wait>[0-9.]+);desc="pool wait", '
    r'db;dur=(?P<held>[0-9.]+);desc="connections held"$'
)

Conn = Annotated[FakeConnection, Depends(connection)]


def _app(server_timing: bool | TimingGuard = True, **pool_options: Any) -> FastAPI:
    app = FastAPI(lifespan=lifespan(lambda: create_pool("fake://", **pool_options)))
    install(app, server_timing=server_timing)
    release = asyncio.Event()
    app.state.release = release

    @app.get("/query")
    async def query(conn: Conn) -> str:
        return str(await conn.execute("SELECT 1"))

    @app.get("/hold")
    async def hold(conn: Conn) -> str:
        await asyncio.sleep(0.05)  # at least 50 ms held
        return "held"

    @app.get("/until-released")
    async def until_released(conn: Conn) -> str:
        await release.wait()
        return "released"

    @app.post("/write")
    async def write(conn: Annotated[FakeConnection, Depends(transaction)]) -> str:
        return str(await conn.execute("INSERT 1"))

    @app.get("/no-database")
    async def no_database() -> str:
        return "no pool used"

    @app.get("/still-held")
    async def still_held(request: Request) -> JSONResponse:
        pool = pool_for(request)
        conn = await pool.acquire()
        await asyncio.sleep(0.03)

        async def give_back() -> None:
            await pool.release(conn)

        # The connection goes back only after the response: the header counts it up to then.
        return JSONResponse("streamed", background=BackgroundTask(give_back))

    return app


def _timing(response: httpx.Response) -> tuple[float, float]:
    """The response's (db-wait, db) in milliseconds."""
    found = _HEADER.match(response.headers["server-timing"])
    assert found is not None, response.headers["server-timing"]
    return float(found["wait"]), float(found["held"])


async def test_a_response_that_used_the_pool_carries_the_database_time() -> None:
    async with asgi_client(_app()) as client:
        for path in ("/query", "/query"):  # the first connects, the second takes it idle
            response = await client.get(path)
            assert response.status_code == 200
            waited, held = _timing(response)
            assert waited >= 0.0
            assert held >= 0.0
        response = await client.post("/write")  # the transaction dependency too
        assert response.status_code == 200
        assert "server-timing" in response.headers


async def test_the_time_held_is_the_requests_own() -> None:
    async with asgi_client(_app()) as client:
        _, held = _timing(await client.get("/hold"))
    # The route slept 50 ms holding its connection (uvloop's timers may fire a little early).
    assert held >= 45.0


async def test_the_wait_is_the_time_spent_in_line() -> None:
    app = _app(max_size=1)
    async with asgi_client(app) as client:
        holder = asyncio.create_task(client.get("/until-released"))
        await wait_until(lambda: pool_for(app).stats().in_use == 1)
        waiter = asyncio.create_task(client.get("/query"))
        await wait_until(lambda: pool_for(app).stats().waiting == 1)
        await asyncio.sleep(0.05)  # the waiter waits at least this long
        app.state.release.set()
        waited, _ = _timing(await waiter)
        assert (await holder).status_code == 200
    assert waited >= 45.0  # (uvloop's timers may fire a little early)


async def test_a_connection_still_held_when_the_response_starts_counts_up_to_then() -> None:
    async with asgi_client(_app()) as client:
        _, held = _timing(await client.get("/still-held"))
    assert held >= 25.0  # it slept 30 ms holding it (uvloop's timers may fire a little early)


async def test_a_response_that_used_no_pool_has_no_header() -> None:
    async with asgi_client(_app()) as client:
        response = await client.get("/no-database")
    assert response.status_code == 200
    assert "server-timing" not in response.headers


async def test_it_is_off_by_default() -> None:
    async with asgi_client(_app(server_timing=False)) as client:
        response = await client.get("/query")
    assert response.status_code == 200
    assert "server-timing" not in response.headers


def _is_admin(request: Request) -> bool:
    return request.headers.get("x-admin-token") == "let-me-in"


async def _is_admin_async(request: Request) -> bool:
    await asyncio.sleep(0)
    return _is_admin(request)


def _require_admin(request: Request) -> bool:
    if not _is_admin(request):
        raise HTTPException(403, "admins only")
    return True


@pytest.mark.parametrize("guard", [_is_admin, _is_admin_async, _require_admin])
async def test_a_guard_limits_the_header_to_the_requests_it_accepts(guard: TimingGuard) -> None:
    async with asgi_client(_app(server_timing=guard)) as client:
        refused = await client.get("/query")
        accepted = await client.get("/query", headers={"X-Admin-Token": "let-me-in"})
    assert refused.status_code == accepted.status_code == 200  # the request itself is served
    assert "server-timing" not in refused.headers
    assert "server-timing" in accepted.headers


def _require_admin_token(x_admin_token: Annotated[str, Header()] = "") -> None:
    """A guard as FastAPI guards are written: its parameter comes from a header."""
    if x_admin_token != "let-me-in":
        raise HTTPException(403, "admins only")


async def test_guarded_limits_the_header_to_the_requests_that_pass_the_stats_guard() -> None:
    app = FastAPI(lifespan=lifespan(lambda: create_pool("fake://")))
    install(
        app,
        stats_path="/admin/pool",
        dependencies=[Depends(_require_admin_token)],
        server_timing="guarded",
    )

    @app.post("/write")
    async def write(
        conn: Annotated[FakeConnection, Depends(transaction)], note: dict[str, str]
    ) -> str:
        return str(await conn.execute("INSERT", note["title"]))

    admin = {"X-Admin-Token": "let-me-in"}
    async with asgi_client(app) as client:
        refused = await client.post("/write", json={"title": "anyone's"})
        accepted = await client.post("/write", json={"title": "an admin's"}, headers=admin)
        stats = await client.get("/admin/pool")
    assert refused.status_code == accepted.status_code == 200  # both served, bodies read
    assert "server-timing" not in refused.headers
    assert "server-timing" in accepted.headers
    assert stats.status_code == 403  # the same guard, on its own route


def test_a_bad_value_is_refused_naming_the_option() -> None:
    app = FastAPI()
    with pytest.raises(TypeError, match="install\\(\\): server_timing must be True, False"):
        install(app, server_timing="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"server_timing='guarded' .* none are given"):
        install(app, server_timing="guarded")
