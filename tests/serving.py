"""Serving an app to the tests: in the process, through httpx (``asgi_client``), or over real
HTTP for the tests that need a real server (``serving``: uvicorn runs as a task in the test's
event loop, on a socket of 127.0.0.1 the test opened)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import uvicorn
from fastapi import FastAPI
from helpers import wait_until
from starlette.types import ASGIApp

__all__ = ["asgi_client", "serving"]


@asynccontextmanager
async def serving(app: ASGIApp) -> AsyncIterator[int]:
    """Serve ``app`` with uvicorn in this event loop, lifespan on; yields the port.

    On the way out the server is asked to stop, and the shutdown (lifespan included) awaited.
    """
    listener = socket.create_server(("127.0.0.1", 0))
    port: int = listener.getsockname()[1]
    config = uvicorn.Config(
        app, lifespan="on", log_config=None, log_level="warning", access_log=False
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[listener]))
    try:
        await wait_until(lambda: server.started or task.done(), timeout=30)
        assert server.started, "uvicorn did not start"
        yield port
    finally:
        server.should_exit = True
        async with asyncio.timeout(30):
            await task
        listener.close()


@asynccontextmanager
async def asgi_client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client of ``app`` in this process, with the app's lifespan run around it."""
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://test") as client,
    ):
        yield client
