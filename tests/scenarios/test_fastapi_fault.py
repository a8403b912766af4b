"""Scenario: the notes demo behind a real uvicorn, on real PostgreSQL, while the database
restarts and then stays down for a while, under 30 HTTP clients that never stop.

The promise under test: every request gets its answer (200 or 201), or a fast ``503`` with a
``Retry-After`` header; none waits longer than the pool's ``acquire_timeout`` plus a margin; the
service serves again by itself once the database is back; and nothing leaks: no connection stays
lent, PostgreSQL shows exactly the pool's sessions, and none once the server has stopped.

A ``503`` comes either from the pool (no connection could be had) or from a statement that was
running when the database went away: the integration's ``ConnectionLost``, reason
``connection_lost``. There is at most one of those per connection the database dropped, so at
most ``max_size`` per outage. Any other answer fails the test: a ``500`` is matched, by a request
id, with the exception the app raised, so the failure says what it was.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import re
import socket
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import asyncpg
import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from helpers import wait_until
from starlette.types import ASGIApp, Receive, Scope, Send
from tally import Tally
from uvicorn.importer import import_from_string

from aiodbpool.integrations.testing import PostgresServer

ROOT = Path(__file__).resolve().parents[2]
SERVE = ROOT / "examples" / "serve"

AppFactory = Callable[..., FastAPI]

CLIENTS = 30
MAX_SIZE = 5
ACQUIRE_TIMEOUT = 2.0
RETRY_AFTER = "1"  # install()'s default
BOUND = ACQUIRE_TIMEOUT + 3.0
"""The longest any request may take, outage or not: the acquire timeout and a margin for a
loaded machine. A request still running then counts as hung."""
RECOVERY_BOUND = 20.0
"""Seconds from the database being back to the first success, at most: generous, since it is
one backoff delay of the circuit breaker's probes (0.5 s at first), usually well under a second."""
OUTAGE = 2.0
"""How long the database stays stopped (at least; and until the clients have met 40 503s)."""


class ServiceUnavailable(Exception):
    """A 503 with ``Retry-After``: the pool could not lend a connection, or lost it. Fails
    cleanly."""


class UnexpectedResponse(Exception):
    """Any other answer: a 500, another status, a 503 without Retry-After."""


def _create_app(monkeypatch: pytest.MonkeyPatch) -> AppFactory:
    """``notes.app:create_app``, imported as uvicorn imports it when ``examples/serve`` runs
    (as in ``tests/fastapi/test_demo_app.py``): the script's ``--app-dir`` first on ``sys.path``."""
    script = SERVE.read_text()
    app_dir = re.search(r"--app-dir (\S+)", script)
    factory = re.search(r"--factory (\S+)", script)
    assert app_dir is not None
    assert factory is not None
    monkeypatch.syspath_prepend(str(ROOT / app_dir.group(1)))
    return cast(AppFactory, import_from_string(factory.group(1)))


class ErrorsByRequest:
    """ASGI middleware around the app: remembers the exception each failed request raised, by
    its ``x-request-id`` header. (Starlette sends the 500, then re-raises for the server.)"""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.errors: dict[str, Exception] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        except Exception as error:
            if scope["type"] == "http":
                headers = dict(scope["headers"])
                self.errors[headers.get(b"x-request-id", b"").decode()] = error
            raise


def _root_causes(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [cause for inner in error.exceptions for cause in _root_causes(inner)]
    return [error]


@asynccontextmanager
async def _schema(dsn: str) -> AsyncIterator[str]:
    """A new, empty schema for the app's table, dropped afterwards."""
    schema = f"notes_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(f"CREATE SCHEMA {schema}")
    finally:
        await admin.close()
    try:
        yield schema
    finally:
        admin = await asyncpg.connect(dsn)
        try:
            await admin.execute(f"DROP SCHEMA {schema} CASCADE")
        finally:
            await admin.close()


async def _sessions(postgres_server: PostgresServer, application_name: str) -> int:
    """The app's sessions as PostgreSQL counts them (a new connection each time: the server
    restarts)."""
    admin = await asyncpg.connect(postgres_server.admin_dsn)
    try:
        count: int = await admin.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", application_name
        )
        return count
    finally:
        await admin.close()


@dataclass
class Load:
    """What the clients saw: when each request started, and how it ended."""

    tally: Tally
    successes: list[float] = field(default_factory=list)  # start times of 200s and 201s
    unavailable: list[float] = field(default_factory=list)  # start times of 503s
    lost: list[float] = field(default_factory=list)  # start times of connection_lost 503s
    slowest: dict[int, float] = field(default_factory=dict)  # by status
    problems: list[str] = field(default_factory=list)
    reasons: Counter[str] = field(default_factory=Counter)  # of the 503s
    note_ids: list[int] = field(default_factory=list)

    def successes_since(self, moment: float) -> int:
        return sum(started >= moment for started in self.successes)

    def first_success_since(self, moment: float) -> float | None:
        return min((started for started in self.successes if started >= moment), default=None)


async def test_the_notes_service_rides_out_database_restarts_under_load(
    postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    create_app = _create_app(monkeypatch)
    name = f"notes-fault-{uuid.uuid4().hex[:12]}"
    tally = Tally("FastAPI under database restarts", allowed=(ServiceUnavailable,))
    load = Load(tally)
    request_ids = itertools.count()
    stop = asyncio.Event()

    async with _schema(postgres_server.dsn) as schema:
        app = ErrorsByRequest(
            create_app(
                postgres_server.dsn,
                max_size=MAX_SIZE,
                acquire_timeout=ACQUIRE_TIMEOUT,
                server_settings={"application_name": name, "search_path": schema},
            )
        )
        listener = socket.create_server(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        config = uvicorn.Config(
            app, lifespan="on", log_config=None, log_level="warning", access_log=False
        )
        server = uvicorn.Server(config)
        serving = asyncio.create_task(server.serve(sockets=[listener]))

        async def one_request(http: httpx.AsyncClient, rng: random.Random) -> None:
            request_id = str(next(request_ids))
            headers = {"x-request-id": request_id}
            started = time.monotonic()
            roll = rng.random()
            if roll < 0.3 or not load.note_ids:
                response = await http.post(
                    "/notes", json={"title": f"note {request_id}"}, headers=headers
                )
            elif roll < 0.8:
                note_id = rng.choice(load.note_ids)
                response = await http.get(f"/notes/{note_id}", headers=headers)
            else:
                after = rng.choice(load.note_ids)
                response = await http.get(
                    "/notes", params={"limit": 5, "after": after}, headers=headers
                )
            status = response.status_code
            load.slowest[status] = max(load.slowest.get(status, 0.0), time.monotonic() - started)
            if status in (200, 201):
                if status == 201:
                    load.note_ids.append(response.json()["id"])
                load.successes.append(started)
                return
            if status == 503:
                reason = response.json().get("reason")
                if response.headers.get("retry-after") != RETRY_AFTER:
                    raise UnexpectedResponse(f"503 without Retry-After: {response.headers}")
                load.unavailable.append(started)
                load.reasons[str(reason)] += 1
                if reason == "connection_lost":
                    load.lost.append(started)
                raise ServiceUnavailable(reason)
            if status == 500:
                # Starlette sends the 500 before it re-raises the error to the middleware.
                await wait_until(lambda: request_id in app.errors, timeout=BOUND)
                causes = _root_causes(app.errors[request_id])
                raise UnexpectedResponse(f"500 caused by {causes!r}")
            raise UnexpectedResponse(f"{status}: {response.text}")

        async def client(number: int) -> None:
            rng = random.Random(number)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
                while not stop.is_set():
                    try:
                        if await tally.run(lambda: one_request(http, rng), bound=BOUND):
                            continue
                    except UnexpectedResponse as unexpected:
                        load.problems.append(str(unexpected))
                    # After a failure a client pauses a moment (Retry-After asks for a second;
                    # a shorter pause lets the test see the recovery as soon as it happens).
                    await asyncio.sleep(rng.uniform(0.02, 0.1))

        clients: list[asyncio.Task[None]] = []
        try:
            await wait_until(lambda: server.started or serving.done(), timeout=30)
            assert server.started, "uvicorn did not start"
            clients = [asyncio.create_task(client(number)) for number in range(CLIENTS)]
            await wait_until(lambda: len(load.successes) >= 100, timeout=30)

            # Fault 1: a restart (every session ended, the server back at once).
            began = time.monotonic()
            await asyncio.to_thread(postgres_server.restart)
            back_after_restart = time.monotonic()
            await wait_until(
                lambda: load.first_success_since(back_after_restart) is not None, timeout=60
            )
            restart_took = back_after_restart - began

            # Fault 2: the database stopped for OUTAGE seconds, answered by 503s meanwhile.
            await asyncio.to_thread(postgres_server.stop)
            down = time.monotonic()
            await wait_until(
                lambda: (
                    sum(started >= down for started in load.unavailable) >= 40
                    and time.monotonic() - down >= OUTAGE
                ),
                timeout=30,
            )
            await asyncio.to_thread(postgres_server.start)
            back_after_stop = time.monotonic()
            down_for = back_after_stop - down
            await wait_until(
                lambda: load.first_success_since(back_after_stop) is not None, timeout=60
            )

            # Then the service serves as before.
            recovered = load.first_success_since(back_after_stop)
            assert recovered is not None
            await wait_until(lambda: load.successes_since(recovered) >= 200, timeout=30)
            stop.set()
            await asyncio.gather(*clients)
        finally:
            stop.set()
            for task in clients:
                task.cancel()
            await asyncio.gather(*clients, return_exceptions=True)
            if not postgres_server.is_running():
                await asyncio.to_thread(postgres_server.start)

        try:
            # Nothing is lent any more, and PostgreSQL shows exactly the pool's sessions
            # (backends of closed connections end a moment after their sockets close).
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                deadline = time.monotonic() + 15
                while True:
                    stats = (await http.get("/pool/stats")).json()["pools"]["notes"]
                    shown = await _sessions(postgres_server, name)
                    settled = stats["opening"] == stats["closing"] == 0
                    if (settled and shown == stats["size"]) or time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.05)
        finally:
            server.should_exit = True
            await asyncio.wait_for(serving, timeout=30)
            listener.close()

        deadline = time.monotonic() + 15
        while (shown_after_stop := await _sessions(postgres_server, name)) != 0:
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)

    recovery_restart = load.first_success_since(back_after_restart)
    assert recovery_restart is not None
    leaked = stats["in_use"] + abs(shown - stats["size"]) + shown_after_stop
    row = tally.report(
        faults=f"restart ({restart_took:.1f} s); stopped {down_for:.1f} s, then started",
        leaked=leaked,
        recovery=(
            f"first success {recovery_restart - back_after_restart:.2f} s after the restart, "
            f"{recovered - back_after_stop:.2f} s after the start"
        ),
    )
    slowest = ", ".join(f"{status} {s:.2f} s" for status, s in sorted(load.slowest.items()))
    print(f"slowest answer by status: {slowest}; 503 reasons: {dict(load.reasons)}")
    assert load.problems == [], load.problems
    assert tally.hung == 0, row
    assert max(load.slowest.values()) <= BOUND, load.slowest
    assert leaked == 0, f"{stats}; the server showed {shown}, then {shown_after_stop}"
    assert stats["size"] <= MAX_SIZE, stats
    assert recovery_restart - back_after_restart < RECOVERY_BOUND
    assert recovered - back_after_stop < RECOVERY_BOUND
    # Statements the two outages cut: at most one per connection each time.
    assert len(load.lost) <= 2 * MAX_SIZE, row
    assert all(started < recovered for started in load.lost), row
