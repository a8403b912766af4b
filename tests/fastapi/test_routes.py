"""The routes ``install()`` adds: liveness, readiness, pool stats and Prometheus metrics.

Readiness is checked against a PostgreSQL server that the test stops and starts again; the other
routes run on SQLite files. Every app runs its lifespan for real and is called through httpx's
ASGI transport in the test's event loop.

No ``from __future__ import annotations`` here: FastAPI reads the annotations of the
dependencies defined inside the tests at run time.
"""

import asyncio
import logging
import re
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI, Header, HTTPException

from aiodbpool import Pool, create_pool
from aiodbpool.integrations.fastapi import connection, install, lifespan
from aiodbpool.integrations.testing import PostgresServer


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """``app`` with its lifespan entered, and a client that calls it in this event loop."""
    transport = httpx.ASGITransport(app, raise_app_exceptions=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://app") as client,
    ):
        yield client


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout: float = 30.0, *, message: str
) -> None:
    """Ask ``check`` again and again until it says yes; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"still not true after {timeout}s: {message}", pytrace=False)
        await asyncio.sleep(0.05)


def sqlite_pool(tmp_path: Path, name: str = "default", **options: Any) -> Pool[Any]:
    return create_pool(f"sqlite:///{tmp_path / f'{name}.db'}", name=name, **options)


# ---------------------------------------------------------------------- health


async def test_liveness_answers_while_the_process_runs(tmp_path: Path) -> None:
    pool = sqlite_pool(tmp_path, max_size=1)
    app = FastAPI(lifespan=lifespan(pool))
    install(app)
    async with running(app) as client:
        async with pool.acquire():  # even when the pool has nothing to lend
            response = await client.get("/health/live")
        assert response.status_code == 200
        assert response.json() == {"status": "ok"}


async def test_readiness_pings_every_pool(tmp_path: Path) -> None:
    primary = sqlite_pool(tmp_path, "primary")
    replica = sqlite_pool(tmp_path, "replica", max_size=1, acquire_timeout=30)
    app = FastAPI(lifespan=lifespan(primary, replica))
    install(app, ready_timeout=0.2, ready_cache=0)
    async with running(app) as client:
        ready = await client.get("/health/ready")
        assert ready.status_code == 200
        body = ready.json()
        assert body["status"] == "ok"
        assert list(body["pools"]) == ["primary", "replica"]
        assert all(pool["status"] == "ok" for pool in body["pools"].values())
        assert all(pool["seconds"] >= 0 for pool in body["pools"].values())

        async with replica.acquire():  # the replica has nothing free: busy, but serving
            started = time.perf_counter()
            busy = await client.get("/health/ready")
            elapsed = time.perf_counter() - started
        assert busy.status_code == 200
        assert busy.json() == {
            "status": "ok",
            "pools": {
                "primary": {
                    "status": "ok",
                    "seconds": busy.json()["pools"]["primary"]["seconds"],
                    "breaker": "closed",
                },
                "replica": {"status": "ok", "busy": True, "breaker": "closed"},
            },
        }
        assert elapsed < 10, "the check waited for a connection"
        assert replica.stats().timeouts == 0  # it never queued for one
        assert (await client.get("/health/ready")).status_code == 200
        assert primary.stats().in_use == replica.stats().in_use == 0


async def test_readiness_follows_the_database_down_and_up(postgres_server: PostgresServer) -> None:
    pool = create_pool(postgres_server.dsn, name="main", connect_timeout=5)
    app = FastAPI(lifespan=lifespan(pool))
    install(app, ready_timeout=5, ready_cache=0)

    async def ready(client: httpx.AsyncClient) -> httpx.Response:
        return await client.get("/health/ready")

    async with running(app) as client:
        assert (await ready(client)).status_code == 200
        try:
            await asyncio.to_thread(postgres_server.stop)
            down = await ready(client)
            assert down.status_code == 503
            assert down.json()["status"] == "unavailable"
            assert down.json()["pools"]["main"]["status"] == "unavailable"
            assert down.json()["pools"]["main"]["reason"] in ("ping_failed", "connect_error")
            # Once the broken connection is gone, a down server refuses new ones.
            await eventually(
                lambda: _reason_is(client, "connect_error"),
                message="readiness reports connect_error while the server is down",
            )
            # Connects keep failing: the circuit breaker opens, and readiness says so.
            await eventually(
                lambda: _breaker_is(client, "open"),
                message="readiness reports the open breaker while the server is down",
            )
            assert postgres_server.password not in down.text
        finally:
            await asyncio.to_thread(postgres_server.start)
        await eventually(
            lambda: _status_is(client, 200), message="readiness is 200 once the server is back"
        )
        assert await _breaker_is(client, "closed")
        assert pool.stats().in_use == 0


async def _breaker_is(client: httpx.AsyncClient, state: str) -> bool:
    answer = (await client.get("/health/ready")).json()
    breaker: str = answer["pools"]["main"]["breaker"]
    return breaker == state


async def _status_is(client: httpx.AsyncClient, status: int) -> bool:
    return (await client.get("/health/ready")).status_code == status


async def _reason_is(client: httpx.AsyncClient, reason: str) -> bool:
    pools = (await client.get("/health/ready")).json()["pools"]
    return bool(pools["main"].get("reason") == reason)


# ---------------------------------------------------------------------- stats and metrics


async def test_stats_are_the_pools_snapshots(tmp_path: Path) -> None:
    primary = sqlite_pool(tmp_path, "primary", max_size=3)
    replica = sqlite_pool(tmp_path, "replica", max_size=2)
    app = FastAPI(lifespan=lifespan(primary, replica))
    install(app, stats_path="/pool/stats", metrics_path="/metrics")
    async with running(app) as client:
        async with primary.acquire():
            response = await client.get("/pool/stats")
        assert response.status_code == 200
        pools = response.json()["pools"]
        assert list(pools) == ["primary", "replica"]
        assert pools["primary"]["name"] == "primary"
        assert pools["primary"]["in_use"] == 1
        assert pools["primary"]["max_size"] == 3
        assert pools["replica"]["max_size"] == 2
        assert set(pools["replica"]) == set(replica.stats().as_dict())


async def test_metrics_in_the_prometheus_format(tmp_path: Path) -> None:
    pool = sqlite_pool(tmp_path, "orders")
    app = FastAPI(lifespan=lifespan(pool))
    install(app, stats_path="/pool/stats", metrics_path="/metrics")
    async with running(app) as client:
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert '="orders"' in response.text  # a label naming the pool


async def test_no_metrics_route_without_prometheus_client(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # import fails
    app = FastAPI(lifespan=lifespan(sqlite_pool(tmp_path)))
    install(app, stats_path="/pool/stats", metrics_path="/metrics")
    async with running(app) as client:
        assert (await client.get("/metrics")).status_code == 404
        assert (await client.get("/pool/stats")).status_code == 200


# ---------------------------------------------------------------------- choosing the routes


async def test_routes_can_move_or_be_turned_off(tmp_path: Path) -> None:
    app = FastAPI(lifespan=lifespan(sqlite_pool(tmp_path)))
    install(
        app,
        live_path="/livez",
        ready_path="/readyz",
        stats_path=None,
        metrics_path="/internal/metrics",
    )
    async with running(app) as client:
        assert (await client.get("/livez")).status_code == 200
        assert (await client.get("/readyz")).status_code == 200
        assert (await client.get("/internal/metrics")).status_code == 200
        for gone in ("/health/live", "/health/ready", "/pool/stats", "/metrics"):
            assert (await client.get(gone)).status_code == 404, gone


async def test_routes_stay_out_of_the_openapi_schema_unless_asked(tmp_path: Path) -> None:
    hidden = FastAPI(lifespan=lifespan(sqlite_pool(tmp_path, "hidden")))
    install(hidden)
    shown = FastAPI(lifespan=lifespan(sqlite_pool(tmp_path, "shown")))
    install(shown, include_in_schema=True, stats_path="/pool/stats", metrics_path="/metrics")
    assert hidden.openapi()["paths"] == {}
    assert set(shown.openapi()["paths"]) == {
        "/health/live",
        "/health/ready",
        "/pool/stats",
        "/metrics",
    }


@pytest.mark.parametrize(
    ("options", "error", "named"),
    [
        ({"ready_path": "ready"}, ValueError, "ready_path must be a path starting with '/'"),
        ({"stats_path": b"/stats"}, ValueError, "stats_path must be a path"),
        ({"metrics_path": 9090}, ValueError, "metrics_path must be a path"),
        ({"live_path": ""}, ValueError, "live_path must be a path"),
        ({"ready_timeout": 0}, ValueError, "ready_timeout must be a number of seconds > 0"),
        ({"ready_timeout": "1"}, ValueError, "ready_timeout must be a number"),
        ({"ready_timeout": float("nan")}, ValueError, "ready_timeout must be a number"),
        ({"retry_after": -1}, ValueError, "retry_after must be a whole number"),
        ({"retry_after": 1.5}, ValueError, "retry_after must be a whole number"),
        ({"dependencies": [print]}, TypeError, "dependencies must be a list of Depends"),
    ],
)
def test_install_names_the_option_at_fault(
    options: dict[str, object], error: type[Exception], named: str
) -> None:
    app = FastAPI()
    with pytest.raises(error, match=f"^install\\(\\): {re.escape(named)}"):
        install(app, **options)  # type: ignore[arg-type]
    assert not app.exception_handlers or set(app.exception_handlers) == set(
        FastAPI().exception_handlers
    )  # nothing was added before the refusal


async def test_stats_and_metrics_are_off_unless_turned_on(tmp_path: Path) -> None:
    """They tell anyone how loaded the pool is: an app opts in, and guards them."""
    app = FastAPI(lifespan=lifespan(sqlite_pool(tmp_path)))
    install(app)
    async with running(app) as client:
        for path in ("/pool/stats", "/metrics"):
            assert (await client.get(path)).status_code == 404, path
        assert (await client.get("/health/ready")).status_code == 200


async def test_stats_and_metrics_can_be_protected(tmp_path: Path) -> None:
    def require_admin(x_token: Annotated[str | None, Header()] = None) -> None:
        if x_token is None:
            raise HTTPException(401, "log in first", headers={"WWW-Authenticate": "Token"})
        if x_token != "admin":
            raise HTTPException(403, "admins only")

    app = FastAPI(lifespan=lifespan(sqlite_pool(tmp_path)))
    install(
        app,
        stats_path="/pool/stats",
        metrics_path="/metrics",
        dependencies=[Depends(require_admin)],
    )
    async with running(app) as client:
        for path in ("/pool/stats", "/metrics"):
            assert (await client.get(path)).status_code == 401, path
            assert (await client.get(path, headers={"X-Token": "guest"})).status_code == 403
            assert (await client.get(path, headers={"X-Token": "admin"})).status_code == 200
        # Probes carry no credentials: the health routes stay open.
        assert (await client.get("/health/live")).status_code == 200
        assert (await client.get("/health/ready")).status_code == 200


async def test_routes_without_the_lifespan_say_what_to_do() -> None:
    app = FastAPI()
    install(app, stats_path="/pool/stats", metrics_path="/metrics")
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        for path in ("/health/ready", "/pool/stats", "/metrics"):
            with pytest.raises(RuntimeError, match="no aiodbpool pool"):
                await client.get(path)
        assert (await client.get("/health/live")).status_code == 200


async def test_a_pool_name_that_is_not_valid_utf8_cannot_fail_a_route(tmp_path: Path) -> None:
    """A lone surrogate cannot be encoded as UTF-8: every route escapes it rather than answering
    500, and so does the 503 of a pool that cannot serve."""
    name = "app\ud800"
    pool = create_pool(
        f"sqlite:///{tmp_path / 'odd.db'}", name=name, max_size=1, acquire_timeout=0.05
    )
    app = FastAPI(lifespan=lifespan(pool))
    install(app, stats_path="/pool/stats", metrics_path="/metrics")

    @app.get("/busy")
    async def busy(conn: Annotated[Any, Depends(connection)]) -> None:
        del conn

    async with running(app) as client:
        for path in ("/health/live", "/health/ready", "/pool/stats", "/metrics"):
            response = await client.get(path)
            assert response.status_code == 200, (path, response.text)
        assert "\\ud800" in (await client.get("/pool/stats")).text
        assert "app\\\\ud800" in (await client.get("/metrics")).text
        async with pool.acquire():
            refused = await client.get("/busy")
        assert refused.status_code == 503
        assert refused.json()["pool"] == name


async def test_a_flood_of_readiness_requests_leaves_every_real_request_served(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """200 anonymous readiness GETs while 20 real requests run, on a pool whose queue is bounded
    as the production guide advises: one check serves them all, and no real request is refused."""
    pool = create_pool("fake://", name="main", max_size=2, max_waiting=100, acquire_timeout=5)
    app = FastAPI(lifespan=lifespan(pool))
    install(app)

    @app.get("/work")
    async def work(conn: Annotated[Any, Depends(connection)]) -> dict[str, str]:
        await asyncio.sleep(0.01)
        return {"done": "yes"}

    async with running(app) as client:
        real = [client.get("/work") for _ in range(20)]
        probes = [client.get("/health/ready") for _ in range(200)]
        responses = await asyncio.gather(*real, *probes)
    assert [response.status_code for response in responses[:20]] == [200] * 20
    assert all(response.status_code == 200 for response in responses[20:])
    assert pool.stats().exhausted == 0
    assert len([r for r in caplog.records if "not ready" in r.getMessage()]) == 0


async def test_readiness_failures_are_logged_once_a_minute(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="aiodbpool.fastapi")
    pool = sqlite_pool(tmp_path)
    app = FastAPI(lifespan=lifespan(pool))
    install(app, ready_cache=0)
    async with running(app) as client:
        await pool.close()
        for _ in range(5):
            answer = await client.get("/health/ready")
            assert answer.status_code == 503
            assert answer.json()["pools"]["default"]["reason"] == "closed"
    warnings = [r for r in caplog.records if "not ready" in r.getMessage()]
    assert [r.levelname for r in warnings] == ["WARNING", "DEBUG", "DEBUG", "DEBUG", "DEBUG"]


async def test_concurrent_probes_share_one_check(tmp_path: Path) -> None:
    pool = sqlite_pool(tmp_path)
    app = FastAPI(lifespan=lifespan(pool))
    install(app, ready_cache=0)
    async with running(app) as client:
        before = pool.stats().acquired
        answers = await asyncio.gather(*(client.get("/health/ready") for _ in range(50)))
        assert all(answer.status_code == 200 for answer in answers)
        assert pool.stats().acquired - before < 50  # fewer checks than probes
