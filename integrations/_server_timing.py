"""Server-Timing: how long a request waited for database connections, and held them.

``install(app, server_timing=True)`` adds this middleware. For each request that borrowed a
connection from one of the app's pools, the response carries a header the browser's developer
tools show under Timing, and scripts read through the Resource Timing API
(``PerformanceResourceTiming.serverTiming``)::

    Server-Timing: db-wait;dur=0.021;desc="pool wait", db;dur=1.304;desc="connections held"

Durations are in milliseconds, summed over the request's connections: ``db-wait`` is the time
its acquires took (zero when an idle connection was ready), ``db`` the time it held them. A
connection still held when the response starts (a streamed response, say) counts up to then.

How a pool's events find their request: the middleware puts a fresh ``_RequestTiming`` in a
context variable before the app runs; the pools' listener (``_record``), which runs in the task
that acquires or releases, adds to the one it finds there. The app's dependencies, its path
operations and the tasks they start all see the request's context; anything else -- the
readiness check, maintenance -- finds none and is not counted.
"""

from __future__ import annotations

import inspect
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aiodbpool import Pool
from aiodbpool.events import Acquired, PoolEvent, Released

__all__ = ["GUARD_CHECK", "ServerTimingMiddleware", "TimingGuard"]

GUARD_CHECK = "aiodbpool.guard_check"
"""The key of a request's scope that marks a check of the guard (``server_timing="guarded"``),
which the middleware passes on as it is."""

TimingGuard = Callable[[Request], bool | Awaitable[bool]]
"""Which requests get the header: a function of the request (it may be async) that returns True
for those that do, and False -- or raises ``HTTPException``, as a FastAPI guard does -- for the
others."""


@dataclass(slots=True)
class _RequestTiming:
    """One request's connections: what its acquires waited, what it held."""

    waited: float = 0.0
    held: float = 0.0
    lends: int = 0
    # The connections it holds now, by pool and lend number, with when it got each.
    holding: dict[tuple[str, int], float] = field(default_factory=dict)

    def header(self, now: float) -> str:
        held = self.held + sum(now - since for since in self.holding.values())
        return (
            f'db-wait;dur={self.waited * 1000:.3f};desc="pool wait", '
            f'db;dur={held * 1000:.3f};desc="connections held"'
        )


_CURRENT: ContextVar[_RequestTiming | None] = ContextVar("aiodbpool_server_timing", default=None)


def _record(event: PoolEvent) -> None:
    """The pools' listener: count an acquire or a release in the request it belongs to."""
    timing = _CURRENT.get()
    if timing is None:
        return
    if isinstance(event, Acquired):
        timing.waited += event.wait
        timing.lends += 1
        timing.holding[event.pool, event.lend] = time.perf_counter()
    # (A connection lent before the request began, and given back in it, is not its own.)
    elif isinstance(event, Released) and (event.pool, event.lend) in timing.holding:
        del timing.holding[event.pool, event.lend]
        timing.held += event.held


class ServerTimingMiddleware:
    """The ASGI middleware that adds ``Server-Timing`` to responses that used a pool.

    ``pools_of(app)`` lists the app's open pools; each is given the listener the first time a
    request meets it. ``allowed`` limits the header to the requests it accepts.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        pools_of: Callable[[Any], Iterable[Pool[Any]]],
        allowed: TimingGuard | None = None,
    ) -> None:
        self._app = app
        self._pools_of = pools_of
        self._allowed = allowed
        self._listened: weakref.WeakSet[Pool[Any]] = weakref.WeakSet()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or GUARD_CHECK in scope or not await self._wanted(scope):
            await self._app(scope, receive, send)
            return
        for pool in self._pools_of(scope["app"]):
            if pool not in self._listened:
                pool.add_listener(_record)
                self._listened.add(pool)
        timing = _RequestTiming()

        async def send_with_timing(message: Message) -> None:
            if message["type"] == "http.response.start" and timing.lends:
                headers = MutableHeaders(scope=message)
                headers.append("Server-Timing", timing.header(time.perf_counter()))
            await send(message)

        token = _CURRENT.set(timing)
        try:
            await self._app(scope, receive, send_with_timing)
        finally:
            _CURRENT.reset(token)

    async def _wanted(self, scope: Scope) -> bool:
        """Whether this request gets the header: always, or when ``allowed`` says so."""
        if self._allowed is None:
            return True
        try:
            answer = self._allowed(Request(scope))
            if inspect.isawaitable(answer):
                answer = await answer
        except HTTPException:  # a FastAPI guard's refusal
            return False
        return answer is True
