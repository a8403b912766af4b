"""The live pool view: off by default, behind the stats guard, a page that fetches nothing from
elsewhere, and data that holds each pool's stats and its recent history. (The page in a real
browser: tests/browser/test_browser_dashboard.py.)"""

from __future__ import annotations

import re
from typing import Annotated, Any

import pytest
from fastapi import Depends, FastAPI, Header, HTTPException
from serving import asgi_client

from aiodbpool import Pool, create_pool
from aiodbpool.drivers.fake import FakeClock, FakeDriver
from aiodbpool.events import Acquired, Closed, Connected, ConnectFailed, Removed, TimedOut
from aiodbpool.integrations._dashboard import BUCKET, WINDOW, Dashboard, _History
from aiodbpool.integrations.fastapi import install, lifespan, pool_for


def _require_admin(x_admin_token: Annotated[str, Header()] = "") -> None:
    if x_admin_token != "let-me-in":
        raise HTTPException(403, "admins only")


def _app(**options: Any) -> FastAPI:
    app = FastAPI(
        lifespan=lifespan(
            lambda: create_pool("fake://", name="main", min_size=2),
            lambda: create_pool("fake://", name="replica"),
        )
    )
    install(app, **options)
    return app


async def test_it_is_off_by_default() -> None:
    async with asgi_client(_app()) as client:
        assert (await client.get("/pool/dashboard")).status_code == 404
        assert (await client.get("/pool/dashboard/data")).status_code == 404


async def test_the_page_and_its_data_are_behind_the_guard() -> None:
    app = _app(dashboard_path="/pool/dashboard", dependencies=[Depends(_require_admin)])
    admin = {"X-Admin-Token": "let-me-in"}
    async with asgi_client(app) as client:
        for path in ("/pool/dashboard", "/pool/dashboard/data"):
            assert (await client.get(path)).status_code == 403
            assert (await client.get(path, headers=admin)).status_code == 200


async def test_the_page_fetches_nothing_from_elsewhere() -> None:
    async with asgi_client(_app(dashboard_path="/pool/dashboard")) as client:
        response = await client.get("/pool/dashboard")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    assert "<script" in page
    assert not re.search(r"<(script|link|img|iframe)[^>]*(src|href)=", page)
    assert not re.search(
        r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", page.replace("http://www.w3.org/2000/svg", "")
    )
    assert "@import" not in page
    assert 'location.pathname.replace(/\\/$/, "") + "/data"' in page  # its one request


async def test_the_data_holds_each_pools_stats_and_history_in_the_apps_order() -> None:
    app = _app(dashboard_path="/pool/dashboard/")
    async with asgi_client(app) as client:
        pool = pool_for(app, "main")
        for _ in range(3):
            async with pool.acquire():
                pass
        response = await client.get("/pool/dashboard/data")
    assert response.status_code == 200
    data = response.json()
    assert list(data["pools"]) == ["main", "replica"]
    assert data["window_seconds"] == WINDOW
    main = data["pools"]["main"]
    assert main["stats"]["name"] == "main"
    assert main["stats"]["max_size"] == 10
    assert main["stats"]["wait_time"]["counts"][0] >= 3
    history = main["history"]
    assert history["bucket_seconds"] == BUCKET
    assert len(history["lends"]) == WINDOW / BUCKET
    assert sum(history["lends"]) == 3  # counted since the pool opened (lifespan's hook)
    assert sum(history["connects"]) == 2  # the two of min_size, opened with the pool
    assert sum(data["pools"]["replica"]["history"]["lends"]) == 0


def test_the_history_counts_each_kind_in_its_bucket_and_forgets_past_the_window() -> None:
    clock = FakeClock(1000.0)
    history = _History(clock)
    history(Connected("p", 0.1))
    history(ConnectFailed("p", 0.1, OSError("refused")))
    history(Removed("p", "evicted_idle"))
    history(Removed("p", "closed"))  # the pool closing: not a sign of anything
    history(Closed("p"))  # not counted: its Removed was
    history(TimedOut("p", 1.0))
    clock.advance(BUCKET)
    history(Acquired("p", 1, 0.0))
    history(Acquired("p", 2, 0.0))

    series = history.series()
    assert [series[kind][-2:] for kind in ("connects", "connect_errors", "removed")] == [
        [1, 0],
        [1, 0],
        [1, 0],
    ]
    assert series["timeouts"][-2:] == [1, 0]
    assert series["lends"][-2:] == [0, 2]

    clock.advance(WINDOW)
    history(Acquired("p", 3, 0.0))
    series = history.series()
    assert sum(series["connects"]) == 0
    assert sum(series["lends"]) == 1
    assert len(history.buckets) <= WINDOW / BUCKET


async def test_a_pool_is_watched_once_however_often_it_is_asked() -> None:
    dashboard = Dashboard(clock=FakeClock())
    pool: Pool[Any] = Pool(FakeDriver(), clock=FakeClock())
    async with pool:
        dashboard.watch(pool)
        dashboard.watch(pool)
        async with pool.acquire():
            pass
        shown = dashboard.data([pool])
    assert sum(shown["pools"]["default"]["history"]["lends"]) == 1  # not 2


@pytest.mark.parametrize("path", ["pool/dashboard", "", 5])
def test_a_bad_path_is_refused_naming_the_option(path: object) -> None:
    with pytest.raises(ValueError, match="install\\(\\): dashboard_path must be a path"):
        install(FastAPI(), dashboard_path=path)  # type: ignore[arg-type]
