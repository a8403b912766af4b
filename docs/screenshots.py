"""Regenerate the screenshots of the FastAPI guide: the live pool view, and DevTools' Timing tab
with the Server-Timing of a request.

    .venv/bin/python docs/screenshots.py              # writes docs/assets/images/*.png
    .venv/bin/python docs/screenshots.py --out /tmp   # somewhere else

It serves the demo (``examples/notes``, on a SQLite file in a temporary directory) with uvicorn,
puts it under load for a few seconds (requests, and tasks that hold connections so that others
wait), and photographs it in headless Chromium (Debian's ``chromium``): the dashboard as it is
then, and the DevTools front end that the browser itself serves, attached to a tab that loaded
the demo's page, on the Network panel's Timing tab of its ``/notes`` request.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import random
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "examples")]  # the browser driver, the demo

from chromium import Page, another_page, chromium_binary, headless_chromium  # noqa: E402
from serving import serving  # noqa: E402

from aiodbpool.integrations.fastapi import pool_for  # noqa: E402

LOAD_SECONDS = 6.0

_FIND_EVERYWHERE = """
window.findAll = selector => {
  const found = [];
  const walk = root => {
    found.push(...root.querySelectorAll(selector));
    for (const element of root.querySelectorAll("*")) {
      if (element.shadowRoot) walk(element.shadowRoot);
    }
  };
  walk(document);
  return found;
};
"""
"""DevTools is made of web components: its elements are inside shadow roots, where
``querySelectorAll`` does not look. ``findAll`` looks in all of them."""


async def main(out: Path) -> list[Path]:
    binary = chromium_binary()
    if binary is None:
        raise SystemExit("needs Chromium (Debian package 'chromium')")
    await asyncio.to_thread(out.mkdir, parents=True, exist_ok=True)
    create_app: Callable[..., Any] = importlib.import_module("notes.app").create_app
    with tempfile.TemporaryDirectory() as directory:
        app = create_app(f"sqlite:///{directory}/notes.db", max_size=4)
        async with serving(app) as port, headless_chromium(binary) as page:
            base = f"http://127.0.0.1:{port}"
            load = asyncio.ensure_future(_load(app, base))
            try:
                dashboard = await _dashboard(page, base, out)
            finally:
                load.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await load
            timing = await _devtools_timing(page, base, out)
    return [dashboard, timing]


async def _load(app: Any, base: str) -> None:
    """Requests from several clients, and tasks that hold connections a while, until cancelled."""
    pool = pool_for(app)

    async def client(number: int) -> None:
        async with httpx.AsyncClient(base_url=base) as http:
            while True:
                await http.post("/notes", json={"title": f"note {number}", "body": "..."})
                await http.get("/notes", params={"limit": 20})

    async def holder() -> None:
        while True:
            async with pool.acquire():
                await asyncio.sleep(random.uniform(0.05, 0.4))
            await asyncio.sleep(random.uniform(0.0, 0.2))

    tasks = [client(number) for number in range(6)] + [holder() for _ in range(3)]
    await asyncio.gather(*tasks)


async def _dashboard(page: Page, base: str, out: Path) -> Path:
    await page.send("Emulation.setDeviceMetricsOverride", **_screen(1000, 700))
    await page.goto(f"{base}/pool/dashboard")
    await asyncio.sleep(LOAD_SECONDS)  # let the history fill
    await page.wait_until("Number(document.body.dataset.updates) >= 3")
    path = out / "dashboard.png"
    await page.screenshot(path)
    return path


async def _devtools_timing(page: Page, base: str, out: Path) -> Path:
    await page.goto("about:blank")
    async with another_page(page.address) as tools:
        await tools.send("Emulation.setDeviceMetricsOverride", **_screen(1400, 760))
        address, target = page.address, page.target_id
        await tools.goto(
            f"http://{address}/devtools/inspector.html?ws={address}/devtools/page/{target}"
            "&panel=network"
        )
        await tools.evaluate(_FIND_EVERYWHERE)
        toggle = "findAll('[aria-label=\"Toggle screencast\"]')[0]"
        await tools.wait_until(f"Boolean({toggle})")
        await _click(tools, toggle)  # DevTools alone, without the picture of the page

        # The page fetches /notes, the request to show. DevTools records the network from a
        # moment after it has loaded, which nothing announces: load the page until it shows.
        request = "findAll('td.name-column').find(cell => cell.textContent.includes('notes?'))"
        for _ in range(20):
            await page.goto(f"{base}/")
            await page.wait_until("document.body.dataset.loaded === 'yes'")
            with contextlib.suppress(TimeoutError):
                await tools.wait_until(f"Boolean({request})", timeout=2)
                break
        await _click(tools, request)
        timing_tab = (
            "findAll('.tabbed-pane-header-tab-title').find(tab => tab.textContent === 'Timing')"
        )
        await tools.wait_until(f"Boolean({timing_tab})")
        await _click(tools, timing_tab)
        await tools.wait_until(
            "findAll('*').some(element => element.textContent.trim() === 'Server Timing')"
        )
        path = out / "devtools-timing.png"
        await tools.screenshot(path)
        return path


async def _click(page: Page, expression: str) -> None:
    """Click the middle of the element ``expression`` finds, as a mouse would."""
    middle = await page.evaluate(
        f"(() => {{ const box = ({expression}).getBoundingClientRect();"
        " return [box.x + box.width / 2, box.y + box.height / 2]; })()"
    )
    for kind in ("mousePressed", "mouseReleased"):
        await page.send(
            "Input.dispatchMouseEvent",
            type=kind,
            x=middle[0],
            y=middle[1],
            button="left",
            clickCount=1,
        )


def _screen(width: int, height: int) -> dict[str, Any]:
    return {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "assets" / "images")
    for written in asyncio.run(main(parser.parse_args().out)):
        print(written)
