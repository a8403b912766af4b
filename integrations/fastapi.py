"""FastAPI integration: open pools with the app, lend connections to requests, report health.

In short (the FastAPI guide has complete, tested examples):

    def make_pool() -> Pool[asyncpg.Connection]:
        return create_pool(os.environ["DATABASE_URL"], max_size=10, acquire_timeout=5)

    app = FastAPI(lifespan=lifespan(make_pool))  # each start opens a new pool; shutdown closes it
    install(app)  # 503 when no connection can be had; health routes (stats, metrics: opt in)

    @app.get("/items")
    async def items(conn: Annotated[asyncpg.Connection, Depends(connection)]) -> list[str]: ...

How the pieces meet
-------------------
* ``lifespan`` creates the pools (given functions that create them, it calls them at each
  start of the app), opens them and records them, by name, in the app's ``state``. The
  dependencies look them up there through the request, so each app in a process has its own
  pools, and each start of an app -- each test that starts it -- has pools of its own.
* ``connection`` and ``transaction`` lend one connection per request and pool; the
  transaction runs on that same connection. Both give the connection back when the path
  operation returns, *before* the response is sent: a transaction is committed before the
  client hears anything, so a commit that fails becomes an error response, never a 200.

When FastAPI exits a dependency
-------------------------------
FastAPI runs the code after a dependency's ``yield`` either when the path operation function
returns (``Depends(..., scope="function")``) or after the response has been sent (the default
for dependencies with ``yield``). Users write ``Depends(transaction)``, without a scope, so
``transaction`` is a plain ``async def`` that only passes on the connection, and the work
with ``yield`` -- acquire and release, begin and commit -- lives in sub-dependencies declared
with ``scope="function"``. The scope belongs to the ``Depends`` that declares a dependency, and
these ``Depends`` are ours.

This module does not use ``from __future__ import annotations``: FastAPI reads the dependencies'
signatures at run time, and those made per pool name refer to functions of their own closure,
which a string annotation could not name.
"""

import asyncio
import inspect
import json
import logging
import math
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal

from fastapi import Depends, FastAPI, params
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection, Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from aiodbpool import (
    ConnectionReleased,
    Pool,
    PoolClosed,
    PoolConnectError,
    PoolError,
    PoolExhausted,
    PoolTimeout,
    SupportsTransaction,
)

from ._dashboard import Dashboard
from ._server_timing import GUARD_CHECK, ServerTimingMiddleware, TimingGuard

__all__ = [
    "ConnectionLost",
    "TimingGuard",
    "connection",
    "connection_for",
    "install",
    "lifespan",
    "pool_for",
    "transaction",
    "transaction_for",
]

logger = logging.getLogger("aiodbpool.fastapi")

_STATE_ATTRIBUTE: Final = "aiodbpool_pools"
"""The attribute of ``app.state`` where ``lifespan`` keeps the app's open pools by name."""

_ON_OPEN_ATTRIBUTE: Final = "aiodbpool_on_open"
"""The attribute of ``app.state`` with what ``install`` asks ``lifespan`` to do with each pool
just before opening it (the dashboard starts its history)."""

_UNAVAILABLE: Final[dict[type[PoolError], tuple[str, str]]] = {
    PoolTimeout: ("timeout", "no database connection became free in time"),
    PoolExhausted: ("exhausted", "too many requests are already waiting for a database connection"),
    PoolConnectError: ("connect_error", "the database cannot be reached"),
    PoolClosed: ("closed", "the database pool is closed"),
}
"""The pool errors that mean "the service cannot serve now, try again": the ``reason`` each one
gives in a 503 response, and its ``detail``. Deliberately fixed texts: the errors' own messages
may name hosts and ports, which the clients have no business seeing."""


_LOST: Final = ("connection_lost", "the database connection was lost during the request")
"""The ``reason`` and ``detail`` of a 503 for ``ConnectionLost``."""


class ConnectionLost(Exception):
    """The database closed a request's connection while the request was using it.

    Raised by ``connection`` and ``transaction`` in place of the driver's error (chained
    as ``__cause__``) when the path operation failed and the pool's driver then reports its
    connection closed: the server restarted, a network cut ended the session, an administrator
    terminated the backend; or the pool's ``close()`` terminated it at shutdown. The connection
    was sound when it was lent; the request met an outage rather than a bug, so ``install``
    answers it like the pool's own "cannot serve now" errors, with a 503 and ``Retry-After``.
    Whether a write the request sent was committed is unknown, as it is whenever a connection
    drops mid-statement.

    A connection used after its release (``aiodbpool.ConnectionReleased``: one kept from an
    earlier request, or one the path operation gave back itself) is a bug, not an outage: it
    stays a 500.
    """

    def __init__(self, pool_name: str) -> None:
        super().__init__(f"the database closed the connection of pool {pool_name!r} in use")
        self.pool_name = pool_name


# ---------------------------------------------------------------------- opening the pools


def lifespan(
    *pools: Pool[Any] | Callable[[], Pool[Any]],
    close_timeout: float = 10.0,
    check_on_start: bool = False,
) -> Callable[[Starlette], AbstractAsyncContextManager[None]]:
    """An app lifespan that opens pools at start-up and closes them at shutdown.

    Each of ``pools`` is a function that creates a pool, or a pool. A function is called at
    every start of the app, so each start opens new pools: ``FastAPI(lifespan=lifespan(make_pool))``
    with ``def make_pool(): return create_pool(url)``, or ``lifespan(lambda: create_pool(url))``.
    That is the form that works when the app starts more than once in a process, as it does in
    a test suite where each test starts it (with ``TestClient``, or by entering its lifespan): a
    pool, once closed, cannot be reopened. A pool given itself opens at the first start only,
    which suits an app that a server starts once.

    Pass it as ``FastAPI(lifespan=lifespan(make_pool))``. With an app lifespan of your own,
    enter this one inside it -- ``async with lifespan(make_pool)(app):`` -- so the pools are open
    while your start-up and shutdown code runs; ``pool_for(app)`` gives them there.

    The first pool is the default one, lent by ``connection`` and ``transaction``;
    every pool is reachable by its name with ``connection_for`` and ``transaction_for``.
    Pool names must be unique within the app. At shutdown the pools are closed together;
    connections still in use after ``close_timeout`` seconds are terminated.

    ``check_on_start=True`` makes each pool lend one working connection before the app serves,
    even with ``min_size=0``: a wrong password or an unreachable database then stops the start
    with ``PoolConnectError`` (its cause, the driver's error, chained; the password never in it)
    instead of a 503 for every request. The connection stays in the pool for the first request.
    """
    if not pools:
        raise TypeError("lifespan() needs at least one pool, or a function that creates one")
    for made in pools:
        if not isinstance(made, Pool):
            _check_pool_function(made)
    _check_names([made for made in pools if isinstance(made, Pool)])
    if not _seconds(close_timeout, zero_allowed=True):
        raise ValueError(
            f"lifespan(): close_timeout must be a number of seconds >= 0, got {close_timeout!r}"
        )
    if not isinstance(check_on_start, bool):
        raise TypeError(f"lifespan(): check_on_start must be True or False, got {check_on_start!r}")

    @asynccontextmanager
    async def open_pools(app: Starlette) -> AsyncIterator[None]:
        started = [_created(made) for made in pools]  # no I/O: created pools are not open yet
        _check_names(started)
        registered = _pools_of(app, create=True)
        taken = [pool.name for pool in started if pool.name in registered]
        if taken:
            raise ValueError(
                f"this app already has an open pool named {taken[0]!r}: give each pool of an "
                "app its own name, e.g. create_pool(url, name='replica')"
            )
        opened: list[Pool[Any]] = []
        try:
            for pool in started:
                for hook in _on_open(app):
                    hook(pool)  # before open(), so that it sees the first connects too
                await pool.open()
                opened.append(pool)
                registered[pool.name] = pool
                if check_on_start:
                    await _check_at_start(pool)
            yield
        finally:
            try:
                # Closed together, so shutdown takes one close_timeout at most, not one per
                # pool. Requests still running meanwhile find the pools registered but closed,
                # and get PoolClosed (a 503 with install()) rather than "no pool".
                await asyncio.gather(*(pool.close(close_timeout) for pool in opened))
            finally:
                for pool in opened:
                    del registered[pool.name]

    return open_pools


async def _check_at_start(pool: Pool[Any]) -> None:
    """Lend one connection of ``pool`` and give it back: the start fails if none can be had."""
    try:
        async with pool.acquire():
            pass
    except PoolError as error:
        error.add_note(
            f"lifespan(check_on_start=True): pool {pool.name!r} could not lend a connection, so "
            "the app does not start; check the database URL, the password and that the "
            "database is reachable"
        )
        raise


def _check_pool_function(made: object) -> None:
    """Refuse, when ``lifespan()`` is called, what is neither a pool nor a function that can be
    called without arguments."""
    if not callable(made):
        raise TypeError(
            f"lifespan() takes aiodbpool pools, got {type(made).__name__} (pass a function that "
            "creates the pool, e.g. lifespan(lambda: aiodbpool.create_pool(url)), or a pool)"
        )
    try:
        inspect.signature(made).bind()
    except ValueError:  # no signature to read (some built-ins): called as it is
        return
    except TypeError:
        raise TypeError(
            f"lifespan() calls {_described(made)} with no arguments at each start of the app, "
            "and it needs some: pass lifespan(lambda: create_pool(url, ...)) instead"
        ) from None


def _created(made: Pool[Any] | Callable[[], Pool[Any]]) -> Pool[Any]:
    """The pool ``made`` is, or a new one it creates."""
    if isinstance(made, Pool):
        return made
    pool = made()
    if not isinstance(pool, Pool):
        raise TypeError(
            f"lifespan(): {_described(made)} returned {type(pool).__name__}, not an aiodbpool "
            "pool (return aiodbpool.create_pool(url), unopened)"
        )
    return pool


def _check_names(pools: Sequence[Pool[Any]]) -> None:
    names = [pool.name for pool in pools]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(
            f"two pools are named {repeated[0]!r}: give each pool of an app its own name, "
            "e.g. create_pool(url, name='replica')"
        )


def _described(function: object) -> str:
    """How an error names a function the user gave: ``make_pool()``, or ``the lambda``."""
    name = getattr(function, "__qualname__", None)
    if not isinstance(name, str):
        return repr(function)
    return "the lambda" if name.endswith("<lambda>") else f"{name}()"


def pool_for(where: HTTPConnection | Starlette, /, name: str | None = None) -> Pool[Any]:
    """The open pool called ``name`` of the app serving a request, or of an app; by default,
    its first pool.

    ``where`` is the request (or websocket), or the app itself. With the request: for work the
    dependencies do not cover, such as a background task or a streamed response that needs a
    connection after the path operation returned: ``async with pool_for(request).acquire() as
    conn: ...``. With the app: in the app's own lifespan, or in a test while the app runs, to
    reach the pools its current start opened (``lifespan`` given functions opens new ones at
    each start).
    """
    registered = _open_pools(where.app if isinstance(where, HTTPConnection) else where)
    if name is None:
        return next(iter(registered.values()))
    try:
        return registered[name]
    except KeyError:
        known = ", ".join(repr(known) for known in registered)
        raise RuntimeError(
            f"this app has no pool named {name!r} (its pools: {known}); pass that pool to "
            "lifespan()"
        ) from None


def _open_pools(app: Starlette) -> dict[str, Pool[Any]]:
    """The open pools of ``app``; a clear error when its lifespan opened none."""
    registered = _pools_of(app)
    if not registered:
        raise RuntimeError(
            "this app has no aiodbpool pool: create it with "
            "FastAPI(lifespan=aiodbpool.integrations.fastapi.lifespan(make_pool)), or enter "
            "lifespan(make_pool)(app) in the app's own lifespan; the pools are open only while "
            "the app runs (in a test: inside `with TestClient(app)`)"
        )
    return registered


def _on_open(app: Starlette) -> list[Callable[[Pool[Any]], None]]:
    """What ``lifespan`` does with each pool of ``app`` before opening it (``install`` adds to
    it)."""
    hooks: list[Callable[[Pool[Any]], None]] | None = getattr(app.state, _ON_OPEN_ATTRIBUTE, None)
    if hooks is None:
        hooks = []
        setattr(app.state, _ON_OPEN_ATTRIBUTE, hooks)
    return hooks


def _pools_of(app: Starlette, *, create: bool = False) -> dict[str, Pool[Any]]:
    """The app's open pools by name, in the order they were opened (the first is the default)."""
    registered: dict[str, Pool[Any]] | None = getattr(app.state, _STATE_ATTRIBUTE, None)
    if registered is None:
        registered = {}
        if create:
            setattr(app.state, _STATE_ATTRIBUTE, registered)
    return registered


# ---------------------------------------------------------------------- the dependencies


@dataclass(frozen=True, slots=True)
class _Dependencies:
    """The two dependencies that serve one pool of an app."""

    connection: Callable[..., Awaitable[Any]]
    transaction: Callable[..., Awaitable[Any]]


def _make_dependencies(name: str | None) -> _Dependencies:
    """Build the dependencies for the pool called ``name`` (``None``: the app's first pool)."""

    async def lend(request: HTTPConnection) -> AsyncIterator[Any]:
        # Given back on every way out of the path operation: its return, its exception, or its
        # cancellation; the pool's release is safe when cancelled (see Pool.release).
        pool = pool_for(request, name)
        async with pool.acquire() as conn:
            try:
                yield conn
            except Exception as error:
                # Asked after the failure, so a connection the request closed on purpose and
                # then went on fine does not count; the release discards it either way.
                if _lost(pool, conn, error):
                    raise ConnectionLost(pool.name) from error
                raise

    async def begin(
        request: HTTPConnection, conn: Annotated[Any, Depends(lend, scope="function")]
    ) -> AsyncIterator[Any]:
        async with _transaction(pool_for(request, name), conn):
            yield conn

    async def connection(conn: Annotated[Any, Depends(lend, scope="function")]) -> Any:
        """A connection of the pool, lent for this request.

        It goes back to the pool when the path operation returns or raises, before the response
        is sent; every dependency of the request that asks for it gets the same connection.
        """
        return conn

    async def transaction(conn: Annotated[Any, Depends(begin, scope="function")]) -> Any:
        """The request's connection of the pool, inside a transaction.

        Committed when the path operation returns, before the response is sent; rolled back
        when it raises (an ``HTTPException`` too). A commit that fails raises in place of the
        response: the client gets an error, never a success for data that was not saved.
        """
        return conn

    return _Dependencies(connection, transaction)


def _lost(pool: Pool[Any], conn: Any, error: Exception) -> bool:
    """Whether the request's connection ``conn`` was closed under it, given the path
    operation's ``error``.

    The driver says so for a connection the database ended. A connection used after its lease
    ended (``error`` is ``ConnectionReleased``; or the lease refuses the question itself) was
    lost only if the pool's ``close()`` terminated it at shutdown; otherwise the path operation
    kept it from an earlier request, or released or detached it itself: its own bug, a 500.
    """
    if isinstance(error, ConnectionReleased):
        return pool.closed  # decided without asking the connection, which would refuse again
    try:
        return pool.driver.is_closed(conn)
    except ConnectionReleased:
        return pool.closed


def _transaction(pool: Pool[Any], conn: Any) -> AbstractAsyncContextManager[object]:
    driver = pool.driver
    if not isinstance(driver, SupportsTransaction):
        raise TypeError(
            f"the driver of pool {pool.name!r} ({type(driver).__name__}) cannot run "
            "transactions: it has no transaction() method (see aiodbpool.SupportsTransaction); "
            "use the connection dependency instead"
        )
    return driver.transaction(conn)


_DEFAULT: Final = _make_dependencies(None)
_NAMED: dict[str, _Dependencies] = {}

connection: Final = _DEFAULT.connection
"""Dependency: a connection of the app's default pool (the first given to ``lifespan``).

``conn: Annotated[asyncpg.Connection, Depends(connection)]``. Lent for the request and given
back when the path operation returns or raises, before the response is sent. Several
dependencies of one request that ask for it share one connection.
"""

transaction: Final = _DEFAULT.transaction
"""Dependency: the request's connection of the default pool, inside a transaction.

``conn: Annotated[asyncpg.Connection, Depends(transaction)]``. Committed before the response is
sent when the path operation returns; rolled back when it raises (``HTTPException`` included).
A failed commit becomes an error response. It is the same connection that ``connection``
gives in that request.
"""


def connection_for(name: str) -> Callable[..., Awaitable[Any]]:
    """The ``connection`` dependency for the pool called ``name``.

    ``replica = connection_for("replica")``, then ``Depends(replica)``. Calls with the same name
    return the same dependency, so a request gets one connection of that pool however many
    times it is asked for.
    """
    return _named(name, "connection_for").connection


def transaction_for(name: str) -> Callable[..., Awaitable[Any]]:
    """The ``transaction`` dependency for the pool called ``name``."""
    return _named(name, "transaction_for").transaction


def _named(name: str, call: str) -> _Dependencies:
    if not isinstance(name, str) or not name:
        raise ValueError(
            f"{call}(): name must be a non-empty string, the name of a pool given to "
            f"lifespan(); got {name!r}"
        )
    found = _NAMED.get(name)
    if found is None:
        found = _NAMED[name] = _make_dependencies(name)
    return found


# ---------------------------------------------------------------------- error responses and routes


class _JSONResponse(JSONResponse):
    """JSON in ASCII: every non-ASCII character escaped, so that a string that is not valid UTF-8
    (a pool name with a lone surrogate) is sent as an escape instead of failing the response."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def _seconds(value: object, *, zero_allowed: bool) -> bool:
    """Whether ``value`` is a finite number of seconds, above zero (or zero, if allowed)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return 0 <= value < math.inf if zero_allowed else 0 < value < math.inf


def install(
    app: FastAPI,
    *,
    live_path: str | None = "/health/live",
    ready_path: str | None = "/health/ready",
    stats_path: str | None = None,
    metrics_path: str | None = None,
    dependencies: Sequence[params.Depends] = (),
    ready_timeout: float = 1.0,
    ready_cache: float = 1.0,
    retry_after: int = 1,
    include_in_schema: bool = False,
    server_timing: bool | Literal["guarded"] | TimingGuard = False,
    dashboard_path: str | None = None,
) -> None:
    """Answer 503 when the pools cannot serve, and add health routes (and, if asked, stats and
    metrics routes).

    * ``PoolTimeout``, ``PoolExhausted``, ``PoolConnectError`` and ``PoolClosed`` become ``503
      Service Unavailable`` with ``Retry-After: <retry_after>`` and a JSON body naming the pool
      and the reason; the error itself is logged, not shown. So does ``ConnectionLost``:
      a request whose connection the database closed under it.
    * ``live_path``: 200 while the process serves requests.
    * ``ready_path``: each pool lends a connection and pings it within ``ready_timeout``
      seconds; 200 when all succeed, else 503. Keep it below the probe's own timeout. Each
      pool's answer also says whether its circuit breaker is ``"open"`` or ``"closed"``. The
      check never queues behind the app's own requests: a pool with nothing free to lend is
      reported from its own state (busy with a closed breaker: ready). One check runs per pool
      at a time, its answer shared by every probe that asks meanwhile and kept ``ready_cache``
      seconds, so a flood of readiness requests cannot take connections from real ones.
    * ``stats_path`` (off unless given, e.g. ``"/pool/stats"``): every pool's ``PoolStats`` as
      JSON.
    * ``metrics_path`` (off unless given, e.g. ``"/metrics"``): the pools' metrics in
      Prometheus' text format; only when ``prometheus-client`` is installed.

    * ``dashboard_path`` (off unless given, e.g. ``"/pool/dashboard"``): a live view of the
      pools, one self-contained page that polls ``<dashboard_path>/data`` (JSON) once a
      second: connections by state, waiters, the wait-time histogram, the circuit breaker,
      and connects, connections let go, failed connects and timeouts over the last ten
      minutes. Behind ``dependencies``, like the stats.
    * ``server_timing`` (off unless given): each response to a request that borrowed a
      connection carries a ``Server-Timing`` header with the time its acquires waited and the
      time it held its connections (``db-wait;dur=0.02, db;dur=1.3``, in milliseconds), which
      the browser's developer tools show under Timing. ``True`` adds it to every such
      response; ``"guarded"``, to those whose request passes ``dependencies``, the guard of
      the stats routes; a function of the request, to those for which it returns True (it
      may be async, and it may refuse by raising ``HTTPException``, as a guard does).

    Stats, metrics, the dashboard and Server-Timing tell anyone who can read them how loaded the
    pools are, so they are off unless the app turns them on: behind ``dependencies`` (e.g.
    ``[Depends(require_admin)]``, which run before the stats, metrics and dashboard routes, and
    for Server-Timing with ``"guarded"``), or on an app of their own
    served on an internal port (see the FastAPI guide). A path set to ``None`` turns its route
    off; the health routes stay open to probes.
    """
    if isinstance(retry_after, bool) or not isinstance(retry_after, int) or retry_after < 0:
        raise ValueError(
            f"install(): retry_after must be a whole number of seconds >= 0, got {retry_after!r}"
        )
    if not _seconds(ready_timeout, zero_allowed=False):
        raise ValueError(
            f"install(): ready_timeout must be a number of seconds > 0, got {ready_timeout!r}"
        )
    if not _seconds(ready_cache, zero_allowed=True):
        raise ValueError(
            f"install(): ready_cache must be a number of seconds >= 0, got {ready_cache!r}"
        )
    paths = {
        "live_path": live_path,
        "ready_path": ready_path,
        "stats_path": stats_path,
        "metrics_path": metrics_path,
        "dashboard_path": dashboard_path,
    }
    for option, path in paths.items():
        if path is not None and not (isinstance(path, str) and path.startswith("/")):
            raise ValueError(
                f"install(): {option} must be a path starting with '/' (or None: no route), "
                f"got {path!r}"
            )
    if not (isinstance(server_timing, bool) or callable(server_timing)) and (
        server_timing != "guarded"
    ):
        raise TypeError(
            "install(): server_timing must be True, False, 'guarded' (for the requests that pass "
            "dependencies), or a function of the request that says which responses get the "
            f"header; got {server_timing!r}"
        )
    if server_timing == "guarded" and not dependencies:
        raise ValueError(
            "install(): server_timing='guarded' limits the header to the requests that pass "
            "dependencies, and none are given: pass dependencies=[Depends(...)], or "
            "server_timing=True"
        )
    for dependency in dependencies:
        if not isinstance(dependency, params.Depends):
            raise TypeError(
                "install(): dependencies must be a list of Depends(...), e.g. "
                f"[Depends(require_admin)]; got {dependency!r}"
            )

    async def pool_unavailable(request: Request, error: Exception) -> Response:
        assert isinstance(error, PoolError | ConnectionLost)  # only registered for these
        if isinstance(error, ConnectionLost):
            reason, detail = _LOST
            cause = error.__cause__
            told = f"{error}: {type(cause).__name__}: {cause}"
        else:
            reason, detail = _unavailable(error)
            told = str(error)
        logger.warning("%s %s: 503 (%s): %s", request.method, request.url.path, reason, told)
        return _JSONResponse(
            {"detail": detail, "pool": error.pool_name, "reason": reason},
            status_code=503,
            headers={"Retry-After": str(retry_after)},
        )

    for error_class in (*_UNAVAILABLE, ConnectionLost):
        app.add_exception_handler(error_class, pool_unavailable)

    if server_timing is not False:
        allowed: TimingGuard | None
        if server_timing == "guarded":
            allowed = _passes(app, dependencies)
        elif server_timing is True:
            allowed = None
        else:
            allowed = server_timing
        app.add_middleware(
            ServerTimingMiddleware, pools_of=lambda app: _pools_of(app).values(), allowed=allowed
        )

    if live_path is not None:
        app.add_api_route(
            live_path, _live, methods=["GET"], include_in_schema=include_in_schema, tags=["health"]
        )
    if ready_path is not None:
        readiness: weakref.WeakKeyDictionary[Pool[Any], _Readiness] = weakref.WeakKeyDictionary()

        async def ready(request: Request) -> JSONResponse:
            """Whether every pool can lend a working connection now."""
            registered = _open_pools(request.app)
            checks = await asyncio.gather(
                *(
                    readiness.setdefault(pool, _Readiness()).answer(
                        pool, ready_timeout, ready_cache
                    )
                    for pool in registered.values()
                )
            )
            by_name = dict(zip(registered, checks, strict=True))
            fit = all(check["status"] == "ok" for check in checks)
            return _JSONResponse(
                {"status": "ok" if fit else "unavailable", "pools": by_name},
                status_code=200 if fit else 503,
            )

        app.add_api_route(
            ready_path, ready, methods=["GET"], include_in_schema=include_in_schema, tags=["health"]
        )

    def add_guarded_route(path: str, endpoint: Callable[..., Awaitable[Response]]) -> None:
        """A GET route behind ``dependencies``: stats, metrics, the live view."""
        app.add_api_route(
            path,
            endpoint,
            methods=["GET"],
            dependencies=dependencies,
            include_in_schema=include_in_schema,
            tags=["pool"],
        )

    if stats_path is not None:
        add_guarded_route(stats_path, _stats)
    if dashboard_path is not None:
        dashboard = Dashboard()
        _on_open(app).append(dashboard.watch)  # its history starts when a pool opens

        async def dashboard_page() -> HTMLResponse:
            """The live view of the pools."""
            return HTMLResponse(dashboard.page)

        async def dashboard_data(request: Request) -> JSONResponse:
            """What the live view shows: each pool's stats and recent history."""
            return _JSONResponse(dashboard.data(_pools_of(request.app).values()))

        add_guarded_route(dashboard_path, dashboard_page)
        add_guarded_route(dashboard_path.rstrip("/") + "/data", dashboard_data)
    if metrics_path is not None and _metrics_available():
        from .prometheus import render  # here: it needs prometheus-client

        async def metrics(request: Request) -> Response:
            """The pools' metrics, for Prometheus to scrape."""
            body, content_type = render(_open_pools(request.app).values())
            return Response(body, headers={"Content-Type": content_type})

        add_guarded_route(metrics_path, metrics)


_GUARD_PATH: Final = "/.aiodbpool/guard"
"""The route through which ``server_timing="guarded"`` runs the guard of the stats routes."""


def _passes(app: FastAPI, dependencies: Sequence[params.Depends]) -> TimingGuard:
    """Whether a request passes ``dependencies``, asked of FastAPI itself: the dependencies guard
    a route of their own, which answers 204 when they let the request through. The app serves a
    copy of the request to that route -- its headers, client and cookies, without its body --
    through its whole stack, so the guard runs as it does before the stats route, exception
    handlers included. A client that finds the route learns nothing: it answers 204 or the
    guard's refusal, as the stats route would."""

    async def passed() -> Response:
        return Response(status_code=204)

    app.add_api_route(
        _GUARD_PATH, passed, methods=["GET"], dependencies=dependencies, include_in_schema=False
    )

    async def passes(request: Request) -> bool:
        scope = {
            **request.scope,
            "method": "GET",
            "path": _GUARD_PATH,
            "raw_path": _GUARD_PATH.encode(),
            "query_string": b"",
            GUARD_CHECK: True,  # the middleware lets it through untimed
        }
        answered: list[int] = []

        async def no_body() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def keep_status(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                answered.append(message["status"])

        try:
            await request.app(scope, no_body, keep_status)
        except HTTPException:  # (only without the app's exception handlers)
            return False
        return bool(answered) and 200 <= answered[0] < 300

    return passes


async def _live() -> dict[str, str]:
    """The process is up and serving requests."""
    return {"status": "ok"}


async def _stats(request: Request) -> JSONResponse:
    """A snapshot of every pool's gauges and counters."""
    registered = _open_pools(request.app)
    return _JSONResponse(
        {"pools": {name: pool.stats().as_dict() for name, pool in registered.items()}}
    )


READY_WARNING_INTERVAL: Final = 60.0
"""Seconds between two warnings about one pool's failed readiness checks (the others are
logged at DEBUG): probes every few seconds during an outage would otherwise flood the log."""


class _Readiness:
    """One pool's readiness: one check at a time, its answer shared and kept for a while.

    Probes, and anyone else who can reach the route, may ask as often as they like: the pool
    sees at most one check per ``cache`` seconds, never a queue of borrowers competing with the
    app's own requests for connections.
    """

    __slots__ = ("_answer", "_checked_at", "_checking", "_warned_at")

    def __init__(self) -> None:
        self._answer: dict[str, Any] | None = None
        self._checked_at = -math.inf
        self._checking: asyncio.Future[dict[str, Any]] | None = None
        self._warned_at = -math.inf

    async def answer(self, pool: Pool[Any], timeout: float, cache: float) -> dict[str, Any]:
        fresh = time.monotonic() - self._checked_at < cache
        if self._answer is not None and fresh and not pool.closed:
            return self._answer
        if self._checking is None or self._checking.done():
            self._checking = asyncio.ensure_future(self._check(pool, timeout))
        # cancel: only this probe stops waiting; the check goes on for the others
        return await asyncio.shield(self._checking)

    async def _check(self, pool: Pool[Any], timeout: float) -> dict[str, Any]:
        answer, failure = await _check(pool, timeout)
        now = time.monotonic()
        self._answer, self._checked_at = answer, now
        if failure:
            warn = now - self._warned_at >= READY_WARNING_INTERVAL
            if warn:
                self._warned_at = now
            logger.log(
                logging.WARNING if warn else logging.DEBUG,
                "pool %r is not ready (%s): %s",
                pool.name,
                answer["reason"],
                failure,
            )
        return answer


async def _check(pool: Pool[Any], timeout: float) -> tuple[dict[str, Any], str]:
    """Borrow a connection of ``pool`` and ping it, all within ``timeout`` seconds, unless
    borrowing would wait behind the app's own requests: then the pool's state answers.

    Returns the pool's readiness answer, and what went wrong for the log ("" when ready).
    """
    if pool.closed:
        return _not_ready("closed", pool, "the pool is closing")
    stats = pool.stats()
    free = stats.idle > 0 or (stats.size < stats.max_size and not stats.breaker_open)
    if stats.waiting or not free:
        # Busy: every connection is lent (or requests already wait). A pool that can still
        # open connections when it needs them is serving, only loaded.
        if stats.breaker_open:
            return _not_ready("connect_error", pool, "the circuit breaker is open")
        return {"status": "ok", "busy": True, "breaker": "closed"}, ""
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout), pool.acquire(timeout) as conn:
            await pool.driver.ping(conn)
    except Exception as error:
        return _not_ready(_reason(error), pool, f"{type(error).__name__}: {error}")
    seconds = round(time.perf_counter() - started, 6)
    return {"status": "ok", "seconds": seconds, "breaker": _breaker(pool)}, ""


def _not_ready(reason: str, pool: Pool[Any], failure: str) -> tuple[dict[str, Any], str]:
    return {"status": "unavailable", "reason": reason, "breaker": _breaker(pool)}, failure


def _breaker(pool: Pool[Any]) -> str:
    """The state of the pool's circuit breaker, for the readiness answer."""
    return "open" if pool.stats().breaker_open else "closed"


def _unavailable(error: Exception) -> tuple[str, str]:
    """The ``reason`` and ``detail`` of a pool error in ``_UNAVAILABLE`` (or a subclass)."""
    for error_class, answer in _UNAVAILABLE.items():
        if isinstance(error, error_class):
            return answer
    raise LookupError(f"not an error that means 'unavailable': {error!r}")


def _reason(error: Exception) -> str:
    """Why a readiness check failed, in one word for the JSON answer."""
    if isinstance(error, tuple(_UNAVAILABLE)):
        return _unavailable(error)[0]
    if isinstance(error, TimeoutError):
        return "timeout"  # the ping itself took too long
    return "ping_failed"


def _metrics_available() -> bool:
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        logger.info("prometheus-client is not installed: no metrics route")
        return False
    return True
