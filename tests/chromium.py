"""A headless Chromium for the browser tests, driven over the DevTools protocol.

The tests serve a page from a real app (uvicorn on a free port of 127.0.0.1), load it in
Debian's ``chromium`` (``.ci/run`` installs it, as it installs pgbouncer), and read what the
browser saw with JavaScript: ``await page.evaluate("...")``. Nothing here is a mock of the
browser: it is the browser, headless, with a profile of its own in a temporary directory.

Without Chromium, the tests that ask for it are skipped, except under ``CI=true``, where they
fail (see the ``chromium`` fixture in ``tests/conftest.py``).

The protocol is JSON over a WebSocket: each command has an ``id`` and gets a reply with the same
``id``; events (``Page.loadEventFired``) arrive in between. ``Page`` keeps the events it has seen,
so a test waits for one whether or not it came already.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import re
import shutil
import tempfile
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import websockets

__all__ = ["Page", "another_page", "chromium_binary", "headless_chromium"]

_FLAGS = (
    "--headless=new",
    "--no-sandbox",  # as root in CI, Chromium refuses to start with its sandbox
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    # A machine without a network to the outside: no update checks, sync or field trials,
    # whose refused connections would only slow the browser down.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1200,900",
    "--remote-debugging-port=0",
)
_LISTENING = re.compile(rb"DevTools listening on (ws://[^\s]+)")
_TIMEOUT = 30.0


def chromium_binary() -> str | None:
    """Where Chromium is (Debian's package installs ``/usr/bin/chromium``), or None."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found is not None:
            return found
    return None


class Page:
    """One tab of the browser."""

    def __init__(self, socket: websockets.ClientConnection, target: dict[str, Any]) -> None:
        self._socket = socket
        self.target_id: str = target["id"]
        """The tab's id, as DevTools names it (``/devtools/page/<id>``)."""
        self.address: str = target["webSocketDebuggerUrl"].split("/")[2]
        """The browser's DevTools ``host:port``."""
        self._ids = itertools.count(1)
        self._replies: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._events: list[dict[str, Any]] = []
        self._event_arrived = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for raw in self._socket:
            message = json.loads(raw)
            if "id" in message:
                reply = self._replies.pop(message["id"], None)
                if reply is not None and not reply.done():
                    reply.set_result(message)
            else:
                self._events.append(message)
                self._event_arrived.set()

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        """Run one DevTools command; return its result, or raise with its error."""
        command_id = next(self._ids)
        reply = asyncio.get_running_loop().create_future()
        self._replies[command_id] = reply
        await self._socket.send(json.dumps({"id": command_id, "method": method, "params": params}))
        async with asyncio.timeout(_TIMEOUT):
            message = await reply
        if "error" in message:
            raise RuntimeError(f"{method} failed: {message['error']}")
        result: dict[str, Any] = message.get("result", {})
        return result

    async def wait_for_event(self, method: str) -> dict[str, Any]:
        """The first event called ``method`` not waited for yet (it may have come already)."""
        async with asyncio.timeout(_TIMEOUT):
            while True:
                for index, event in enumerate(self._events):
                    if event["method"] == method:
                        del self._events[index]
                        params: dict[str, Any] = event.get("params", {})
                        return params
                self._event_arrived.clear()
                await self._event_arrived.wait()

    async def goto(self, url: str) -> None:
        """Load ``url`` and wait until its ``load`` event fired."""
        self._events.clear()
        await self.send("Page.navigate", url=url)
        await self.wait_for_event("Page.loadEventFired")

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page; a promise is awaited."""
        result = await self.send(
            "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"the page's script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_until(self, expression: str, timeout: float = 10.0) -> Any:
        """Poll a JavaScript expression until it is truthy; return its value."""
        async with asyncio.timeout(timeout):
            while True:
                value = await self.evaluate(expression)
                if value:
                    return value
                await asyncio.sleep(0.05)  # the page changes on its own: nothing to wait on

    async def screenshot(self, path: Path) -> None:
        """Save what the page shows now as a PNG."""
        result = await self.send("Page.captureScreenshot", format="png")
        await asyncio.to_thread(path.write_bytes, base64.b64decode(result["data"]))

    async def close(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        await self._socket.close()


@contextlib.asynccontextmanager
async def headless_chromium(binary: str) -> AsyncIterator[Page]:
    """Start Chromium with an empty profile; yield its first tab; stop it and remove the
    profile afterwards."""
    profile = tempfile.mkdtemp(prefix="aiodbpool-chromium-")
    process = await asyncio.create_subprocess_exec(
        binary,
        *_FLAGS,
        f"--user-data-dir={profile}",
        "about:blank",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "LANG": "en_US.UTF-8"},
    )
    try:
        browser_url = await _devtools_url(process)
        target = await asyncio.to_thread(_first_page, browser_url)
        async with _driving(target) as page:
            yield page
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                async with asyncio.timeout(10):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()
        shutil.rmtree(profile, ignore_errors=True)


async def _devtools_url(process: asyncio.subprocess.Process) -> str:
    """The browser's DevTools address, which it prints on its standard error when ready."""
    assert process.stderr is not None
    seen: list[bytes] = []
    async with asyncio.timeout(_TIMEOUT):
        while line := await process.stderr.readline():
            seen.append(line)
            found = _LISTENING.search(line)
            if found is not None:
                # Keep reading its standard error, so that the browser never blocks writing it.
                asyncio.get_running_loop().create_task(_drain(process.stderr))
                return found.group(1).decode()
    output = b"".join(seen).decode(errors="replace")
    raise RuntimeError(f"Chromium exited before it was ready:\n{output}")


async def _drain(stream: asyncio.StreamReader) -> None:
    while await stream.readline():
        pass


@contextlib.asynccontextmanager
async def _driving(target: dict[str, Any]) -> AsyncIterator[Page]:
    """Drive the tab described by ``target`` (an entry of ``/json/list``)."""
    async with websockets.connect(target["webSocketDebuggerUrl"], max_size=None) as socket:
        page = Page(socket, target)
        await page.send("Page.enable")
        await page.send("Runtime.enable")
        try:
            yield page
        finally:
            await page.close()


@contextlib.asynccontextmanager
async def another_page(address: str) -> AsyncIterator[Page]:
    """A new tab of the browser at ``address`` (``Page.address``), closed afterwards."""
    target = await asyncio.to_thread(_request, address, "PUT", "/json/new?about:blank")
    try:
        async with _driving(target) as page:
            yield page
    finally:
        await asyncio.to_thread(_request, address, "GET", f"/json/close/{target['id']}")


def _request(address: str, method: str, path: str) -> Any:
    """One request to the browser's DevTools HTTP endpoint; its answer, decoded if JSON."""
    request = urllib.request.Request(f"http://{address}{path}", method=method)
    with urllib.request.urlopen(request, timeout=_TIMEOUT) as response:
        body = response.read()
    try:
        return json.loads(body)
    except ValueError:
        return body.decode(errors="replace")


def _first_page(browser_url: str) -> dict[str, Any]:
    """The browser's first tab, from its ``/json/list``."""
    targets = _request(browser_url.split("/")[2], "GET", "/json/list")
    for target in targets:
        if target.get("type") == "page":
            found: dict[str, Any] = target
            return found
    raise RuntimeError(f"Chromium has no page to drive: {targets}")
