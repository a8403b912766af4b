"""The notes demo (``examples/notes``, served by ``examples/serve``): its API on SQLite and on
PostgreSQL, a real uvicorn server under concurrent requests, and the script that serves it.

The app is loaded the way ``examples/serve`` makes uvicorn load it: the script's ``--app-dir``
goes first on ``sys.path``, and its import string is resolved by uvicorn's own importer.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

import asyncpg
import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from helpers import wait_until
from uvicorn.importer import import_from_string

from aiodbpool.integrations.fastapi import pool_for

ROOT = Path(__file__).resolve().parents[2]
SERVE = ROOT / "examples" / "serve"

AppFactory = Callable[..., FastAPI]


def _uvicorn_target() -> tuple[Path, str]:
    """The ``--app-dir`` and the factory's import string that ``examples/serve`` gives uvicorn."""
    script = SERVE.read_text()
    app_dir = re.search(r"--app-dir (\S+)", script)
    factory = re.search(r"--factory (\S+)", script)
    assert app_dir is not None, "examples/serve passes no --app-dir"
    assert factory is not None, "examples/serve passes no --factory import string"
    return ROOT / app_dir.group(1), factory.group(1)


@pytest.fixture
def create_app(monkeypatch: pytest.MonkeyPatch) -> AppFactory:
    """``notes.app:create_app``, imported as uvicorn imports it when ``examples/serve`` runs."""
    app_dir, factory = _uvicorn_target()
    monkeypatch.syspath_prepend(str(app_dir))
    return cast(AppFactory, import_from_string(factory))


@asynccontextmanager
async def _pg_schema(dsn: str) -> AsyncIterator[str]:
    """A new, empty schema, dropped afterwards: the app's tables go there (``search_path``)."""
    schema = f"notes_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(f"CREATE SCHEMA {schema}")
        try:
            yield schema
        finally:
            await admin.execute(f"DROP SCHEMA {schema} CASCADE")
    finally:
        await admin.close()


@pytest.fixture(params=["sqlite", "postgresql"])
async def database(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """A database URL and the pool options that give the app a database of its own."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'notes.db'}", {}
        return
    dsn: str = request.getfixturevalue("postgres_url")
    async with _pg_schema(dsn) as schema:
        yield dsn, {"server_settings": {"search_path": schema}}


@asynccontextmanager
async def _serving(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client of ``app`` in this process, with the app's lifespan run around it."""
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://notes") as client,
    ):
        yield client


@pytest.fixture
async def client(
    create_app: AppFactory, database: tuple[str, dict[str, Any]]
) -> AsyncIterator[httpx.AsyncClient]:
    url, options = database
    async with _serving(create_app(url, **options)) as client:
        yield client


async def _create(client: httpx.AsyncClient, title: str, body: str = "") -> dict[str, Any]:
    response = await client.post("/notes", json={"title": title, "body": body})
    assert response.status_code == 201, response.text
    note: dict[str, Any] = response.json()
    return note


async def test_create_read_update_delete(client: httpx.AsyncClient) -> None:
    note = await _create(client, "groceries", "milk, eggs")
    assert note["title"] == "groceries"
    assert note["body"] == "milk, eggs"
    assert isinstance(note["id"], int)
    assert note["created_at"].endswith("Z")  # an ISO 8601 instant in UTC, on both databases

    url = f"/notes/{note['id']}"
    assert (await client.get(url)).json() == note

    response = await client.patch(url, json={"body": "milk, eggs, bread"})
    assert response.status_code == 200
    assert response.json() == {**note, "body": "milk, eggs, bread"}
    response = await client.patch(url, json={"title": "shopping"})
    assert response.json() == {**note, "title": "shopping", "body": "milk, eggs, bread"}

    response = await client.delete(url)
    assert response.status_code == 204
    assert response.content == b""
    for response in (
        await client.get(url),
        await client.patch(url, json={"title": "again"}),
        await client.delete(url),
    ):
        assert response.status_code == 404
        assert response.json() == {"detail": f"no note {note['id']}"}


async def test_pages_follow_the_ids(client: httpx.AsyncClient) -> None:
    ids = [(await _create(client, f"note {number}"))["id"] for number in range(5)]
    assert ids == sorted(ids)
    await client.delete(f"/notes/{ids[2]}")

    pages = []
    after = 0
    while True:
        response = await client.get("/notes", params={"limit": 2, "after": after})
        assert response.status_code == 200
        page = response.json()
        pages.append([item["id"] for item in page["items"]])
        if page["next_after"] is None:
            break
        after = page["next_after"]
    assert pages == [[ids[0], ids[1]], [ids[3], ids[4]]]  # a full last page has no next one

    everything = (await client.get("/notes")).json()  # 20 by default
    assert [item["title"] for item in everything["items"]] == [
        "note 0",
        "note 1",
        "note 3",
        "note 4",
    ]
    assert everything["next_after"] is None
    assert (await client.get("/notes", params={"after": ids[4]})).json() == {
        "items": [],
        "next_after": None,
    }


@pytest.mark.parametrize(
    ("method", "url", "payload"),
    [
        ("POST", "/notes", {}),
        ("POST", "/notes", {"title": ""}),
        ("POST", "/notes", {"title": "x" * 201}),
        ("POST", "/notes", {"title": "x", "body": "x" * 10_001}),
        ("POST", "/notes", {"title": "x", "colour": "red"}),
        ("POST", "/notes", {"title": 42}),
        ("POST", "/notes", None),
        ("PATCH", "/notes/1", {"title": ""}),
        ("GET", "/notes/abc", None),
        ("GET", "/notes/0", None),
        ("GET", f"/notes/{2**63}", None),
        ("DELETE", "/notes/-1", None),
        ("GET", "/notes?limit=0", None),
        ("GET", "/notes?limit=101", None),
        ("GET", "/notes?after=-1", None),
        ("GET", "/notes?after=x", None),
    ],
)
async def test_invalid_requests_get_422(
    create_app: AppFactory, tmp_path: Path, method: str, url: str, payload: object
) -> None:
    async with _serving(create_app(f"sqlite:///{tmp_path / 'notes.db'}")) as client:
        response = await client.request(method, url, json=payload)
        assert response.status_code == 422, response.text
        assert response.json()["detail"]


async def test_the_schema_is_created_once(
    create_app: AppFactory, database: tuple[str, dict[str, Any]]
) -> None:
    url, options = database
    async with _serving(create_app(url, **options)) as client:
        note = await _create(client, "kept")
    async with _serving(create_app(url, **options)) as client:  # CREATE TABLE IF NOT EXISTS
        assert (await client.get(f"/notes/{note['id']}")).json() == note
        assert (await _create(client, "next"))["id"] > note["id"]


async def test_one_app_starts_again_on_a_new_pool(
    create_app: AppFactory, database: tuple[str, dict[str, Any]]
) -> None:
    """The same app started twice, as a test suite starts it once per test: each start opens
    a pool of its own, and the first start's pool stays closed."""
    url, options = database
    app = create_app(url, **options)
    async with _serving(app) as client:
        note = await _create(client, "kept")
        first = pool_for(app)
    async with _serving(app) as client:
        assert (await client.get(f"/notes/{note['id']}")).json() == note
        assert pool_for(app) is not first
        assert not pool_for(app).closed
    assert first.closed


async def test_the_database_comes_from_database_url(
    create_app: AppFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = tmp_path / "from-env.db"
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{database}")
    async with _serving(create_app()) as client:
        await _create(client, "where am I")
    assert database.exists()


def test_the_default_database_is_next_to_the_app(create_app: AppFactory) -> None:
    default = import_from_string("notes.app:DEFAULT_DATABASE_URL")
    assert default == f"sqlite:///{ROOT / 'examples' / 'notes' / 'notes.db'}"


def test_other_databases_are_refused(create_app: AppFactory) -> None:
    with pytest.raises(ValueError, match=r"postgresql:// or sqlite:/// URLs, not mysql://"):
        create_app("mysql://localhost/notes")


async def test_health_stats_and_metrics(client: httpx.AsyncClient) -> None:
    assert (await client.get("/health/live")).status_code == 200
    assert (await client.get("/health/ready")).status_code == 200
    stats = (await client.get("/pool/stats")).json()["pools"]["notes"]
    assert stats["max_size"] == 10
    assert stats["in_use"] == 0
    assert stats["acquired"] >= 2  # the schema at start-up, then the readiness check
    metrics = await client.get("/metrics")
    assert metrics.status_code == 200
    assert 'db_client_connection_max{pool_name="notes"} 10.0' in metrics.text


async def _sessions(monitor: asyncpg.Connection, application_name: str) -> int:
    count: int = await monitor.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", application_name
    )
    return count


async def _sessions_left(monitor: asyncpg.Connection, application_name: str, timeout: float) -> int:
    """The sessions of ``application_name`` once they are gone, or after ``timeout`` seconds: a
    backend ends a moment after its client's socket closes."""
    deadline = time.monotonic() + timeout
    while True:
        left = await _sessions(monitor, application_name)
        if left == 0 or time.monotonic() > deadline:
            return left
        await asyncio.sleep(0.01)


async def test_a_real_server_under_100_concurrent_requests(
    create_app: AppFactory, postgres_url: str
) -> None:
    """uvicorn on a real socket, 100 requests at once through a pool of 4 PostgreSQL
    connections: all succeed, PostgreSQL never sees more than 4 sessions of the app, and none
    once the server has stopped."""
    name = f"notes-{uuid.uuid4().hex[:12]}"
    max_size = 4
    async with _pg_schema(postgres_url) as schema:
        settings = {"application_name": name, "search_path": schema}
        app = create_app(postgres_url, max_size=max_size, server_settings=settings)
        listener = socket.create_server(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        config = uvicorn.Config(
            app, lifespan="on", log_config=None, log_level="warning", access_log=False
        )
        server = uvicorn.Server(config)
        serving = asyncio.create_task(server.serve(sockets=[listener]))
        monitor = await asyncpg.connect(postgres_url)
        try:
            await wait_until(lambda: server.started or serving.done(), timeout=30)
            assert server.started, "uvicorn did not start"

            most = 0
            load_done = asyncio.Event()

            async def watch() -> None:
                nonlocal most
                while not load_done.is_set():
                    most = max(most, await _sessions(monitor, name))
                    await asyncio.sleep(0.001)

            watcher = asyncio.create_task(watch())
            try:
                # httpx's default limits: up to 100 connections at once, 20 of them kept alive.
                async with httpx.AsyncClient(
                    base_url=f"http://127.0.0.1:{port}", timeout=30
                ) as http:
                    started = time.perf_counter()
                    created = await asyncio.gather(
                        *(http.post("/notes", json={"title": f"note {n}"}) for n in range(100))
                    )
                    elapsed = time.perf_counter() - started
                    assert [response.status_code for response in created] == [201] * 100
                    ids = sorted(response.json()["id"] for response in created)
                    assert len(set(ids)) == 100

                    read = await asyncio.gather(
                        *(http.get(f"/notes/{note_id}") for note_id in ids[:50]),
                        *(http.get("/notes", params={"limit": 10, "after": a}) for a in ids[:50]),
                    )
                    assert [response.status_code for response in read] == [200] * 100
                    assert [response.json()["id"] for response in read[:50]] == ids[:50]
                    stats = (await http.get("/pool/stats")).json()["pools"]["notes"]
            finally:
                load_done.set()
                await watcher

            assert 1 <= most <= max_size, f"{most} sessions of {name} at once"
            assert stats["max_size"] == max_size
            assert stats["size"] <= max_size
            print(f"\n100 concurrent POST /notes through uvicorn: {elapsed * 1000:.0f} ms")

            server.should_exit = True
            await asyncio.wait_for(serving, timeout=30)
            left = await _sessions_left(monitor, name, timeout=10)
            assert left == 0, f"{left} sessions of {name} after the server stopped"
        finally:
            server.should_exit = True
            await asyncio.wait_for(serving, timeout=30)
            listener.close()
            await monitor.close()


def test_the_serve_script_is_ready_to_run() -> None:
    assert os.access(SERVE, os.X_OK), "examples/serve is not executable"
    subprocess.run(["bash", "-n", str(SERVE)], check=True)
    script = SERVE.read_text()
    assert script.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in script
    assert '--port "${PORT:-8000}"' in script
    app_dir, factory = _uvicorn_target()
    assert app_dir == ROOT / "examples"
    assert factory == "notes.app:create_app"
