"""What a real browser sees of Server-Timing: the demo app (``examples/notes``, as
``examples/serve`` runs it) serves its page over HTTP, headless Chromium loads it, and the
page's script reads the database time of its requests back through the Resource Timing API
(``PerformanceResourceTiming.serverTiming``), as DevTools shows it under Network > Timing."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest
from chromium import Page
from fastapi import FastAPI
from serving import serving

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def demo_app(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FastAPI:
    """The notes demo on a SQLite file of its own."""
    monkeypatch.syspath_prepend(str(ROOT / "examples"))  # as examples/serve's --app-dir does
    create_app = cast(Callable[..., FastAPI], importlib.import_module("notes.app").create_app)
    return create_app(f"sqlite:///{tmp_path / 'notes.db'}")


_SERVER_TIMING_OF = """
(path) => performance.getEntriesByType("resource")
  .filter(entry => new URL(entry.name).pathname === path)
  .map(entry => entry.serverTiming.map(t => [t.name, t.duration, t.description]))
"""


async def _server_timing(page: Page, path: str) -> list[list[list[Any]]]:
    """For each request of the page to ``path``: its Server-Timing entries, as the browser
    parsed them (name, duration in ms, description)."""
    entries: list[list[list[Any]]] = await page.evaluate(f"({_SERVER_TIMING_OF})({path!r})")
    return entries


async def test_the_browser_reads_the_database_time_of_each_request(
    demo_app: FastAPI, chromium: Page
) -> None:
    async with serving(demo_app) as port:
        await chromium.goto(f"http://127.0.0.1:{port}/")
        await chromium.wait_until("document.body.dataset.loaded === 'yes'")

        # The page adds a note (POST, in a transaction), then lists the notes again.
        await chromium.evaluate(
            "document.querySelector('input[name=title]').value = 'seen by a browser'"
        )
        await chromium.evaluate("document.getElementById('new').requestSubmit()")
        await chromium.wait_until(
            "[...document.querySelectorAll('#notes li')]"
            ".some(item => item.textContent === 'seen by a browser')"
        )

        # The browser files a resource's timing once its response has ended, a moment later.
        await chromium.wait_until(
            "performance.getEntriesByType('resource')"
            ".filter(entry => new URL(entry.name).pathname === '/notes').length === 3"
        )
        listed = await _server_timing(chromium, "/notes")
        shown = await chromium.evaluate("document.getElementById('timing').textContent")
        health = await _server_timing(chromium, "/health/live")

    assert len(listed) == 3  # the first list, the POST, the second list
    for timings in listed:
        names = [name for name, _, _ in timings]
        assert names == ["db-wait", "db"]
        for _, duration, _ in timings:
            assert isinstance(duration, int | float)
            assert duration >= 0
        assert [description for _, _, description in timings] == [
            "pool wait",
            "connections held",
        ]
    assert "waited" in shown
    assert "held it" in shown
    assert "?" not in shown  # the page found both values
    assert health == []  # the page never asked for it


async def test_a_request_that_used_no_database_shows_no_timing(
    demo_app: FastAPI, chromium: Page
) -> None:
    async with serving(demo_app) as port:
        await chromium.goto(f"http://127.0.0.1:{port}/")
        await chromium.wait_until("document.body.dataset.loaded === 'yes'")
        await chromium.evaluate("fetch('/health/live').then(response => response.json())")
        await chromium.wait_until(
            "performance.getEntriesByType('resource')"
            ".some(entry => new URL(entry.name).pathname === '/health/live')"
        )
        live = await _server_timing(chromium, "/health/live")
    assert live == [[]]
