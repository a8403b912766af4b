"""The live pool view in a real browser: the demo app serves it over HTTP, headless Chromium
renders it with the data of the running pool, and the page follows the pool as its load changes
(connections lent, acquirers waiting, the circuit breaker opening)."""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest
from chromium import Page
from fastapi import FastAPI
from serving import serving

from aiodbpool import PoolConnectError
from aiodbpool.integrations.fastapi import pool_for

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def demo_app(monkeypatch: pytest.MonkeyPatch) -> FastAPI:
    """The notes demo on the fake driver, with room for three connections, so that the test can
    make it fail connects on demand."""
    monkeypatch.syspath_prepend(str(ROOT / "examples"))  # as examples/serve's --app-dir does
    create_app = cast(Callable[..., FastAPI], importlib.import_module("notes.app").create_app)
    monkeypatch.setattr("notes.app.queries_for", lambda url: _FakeQueries())
    return create_app("fake://", max_size=3, breaker_threshold=1)


class _FakeQueries:
    """The demo's only statement at start-up, for the fake driver."""

    create_table = "CREATE TABLE IF NOT EXISTS notes (...)"


def _field(name: str, field: str) -> str:
    """JavaScript: the text of one number of a pool's card."""
    return f'document.querySelector(\'[data-pool="{name}"] [data-field="{field}"]\')?.textContent'


async def _shows(page: Page, expression: str, expected: str) -> None:
    """Wait until the page, which refreshes itself every second, shows ``expected``."""
    await page.wait_until(f"({expression}) === {expected!r}", timeout=15)


async def test_the_page_shows_the_pool_and_follows_its_load(
    demo_app: FastAPI, chromium: Page, tmp_path: Path
) -> None:
    async with serving(demo_app) as port:
        await chromium.goto(f"http://127.0.0.1:{port}/pool/dashboard")
        await chromium.wait_until("Number(document.body.dataset.updates) >= 1")
        pool = pool_for(demo_app)
        stats = pool.stats()

        # Rendered with the running pool's data: its name, its size, its breaker.
        assert await chromium.evaluate("document.querySelector('[data-pool] h2').firstChild.data")
        await _shows(chromium, _field("notes", "size"), str(stats.size))
        await _shows(chromium, _field("notes", "in_use"), "0")
        breaker = "document.querySelector('[data-pool=\"notes\"] [data-breaker]').dataset.breaker"
        await _shows(chromium, breaker, "closed")
        assert await chromium.evaluate("document.querySelectorAll('script[src], link').length") == 0

        # Load: every connection lent, then an acquirer waiting.
        held = [await pool.acquire() for _ in range(3)]
        waiter = asyncio.ensure_future(pool.acquire())
        await _shows(chromium, _field("notes", "in_use"), "3")
        await _shows(chromium, _field("notes", "waiting"), "1")
        width = (
            'parseFloat(document.querySelector(\'[data-pool="notes"] [data-state="in_use"]\')'
            ".style.width) > 99"
        )
        await chromium.wait_until(width)
        lends = 'document.querySelector(\'[data-pool="notes"] [data-total="lends"]\').textContent'
        await chromium.wait_until(f"Number({lends}) >= 3")
        await chromium.screenshot(tmp_path / "busy.png")  # (kept by pytest if the test fails)

        # The load goes: the page follows.
        for conn in held:
            await pool.release(conn)
        await pool.release(await waiter)
        await _shows(chromium, _field("notes", "in_use"), "0")
        await _shows(chromium, _field("notes", "waiting"), "0")

        # The database refuses connections: the breaker opens, the page says so.
        driver: Any = pool.driver
        driver.fail_connects()
        pool.expire()  # the idle connections go; the next acquire must connect
        with pytest.raises(PoolConnectError):
            await pool.acquire()
        await _shows(chromium, breaker, "open")
        failed = (
            'document.querySelector(\'[data-pool="notes"] [data-total="connect_errors"]\')'
            ".textContent"
        )
        await chromium.wait_until(f"Number({failed}) >= 1")
        driver.heal()

    assert (tmp_path / "busy.png").stat().st_size > 10_000
