"""The notes API: create, list (by pages), read, update and delete notes.

Run it with ``examples/serve``, or ``uvicorn --app-dir examples --factory notes.app:create_app``.
The database is ``$DATABASE_URL`` (``postgresql://...`` or ``sqlite:///...``), and by default
the SQLite file ``notes.db`` next to this module. The table is created at start-up if missing.

Besides ``/notes``, :func:`aiodbpool.integrations.fastapi.install` adds ``/health/live`` and
``/health/ready``, and answers 503 when no connection can be had. The demo also turns on
``/pool/stats``, ``/metrics``, the live view ``/pool/dashboard`` and the ``Server-Timing``
header, which are off by default: it serves on localhost. ``/`` is a small page that lists and
adds notes, and shows the database time of its last request, read from Server-Timing as the
browser's developer tools show it.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, status
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse

from aiodbpool import Pool, create_pool
from aiodbpool.integrations.fastapi import (
    connection,
    install,
    lifespan,
    pool_for,
    transaction,
)

from .db import Connection, execute, fetch_all, fetch_one
from .models import MAX_ID, Note, NoteCreate, NotePage, NoteUpdate
from .queries import Queries, queries_for

__all__ = ["DEFAULT_DATABASE_URL", "create_app"]

DEFAULT_DATABASE_URL: Final = f"sqlite:///{Path(__file__).resolve().parent / 'notes.db'}"
"""``examples/notes/notes.db``, wherever the service is started from."""

PAGE: Final = Path(__file__).resolve().parent / "index.html"
"""The page served at ``/``: plain HTML and a script, nothing fetched from elsewhere."""

Reader = Annotated[Connection, Depends(connection)]
Writer = Annotated[Connection, Depends(transaction)]
NoteId = Annotated[int, PathParam(ge=1, le=MAX_ID)]


def create_app(database_url: str | None = None, **pool_options: Any) -> FastAPI:
    """The notes API on the database at ``database_url`` (default: ``$DATABASE_URL``, else
    :data:`DEFAULT_DATABASE_URL`). ``pool_options`` go to :func:`aiodbpool.create_pool`."""
    url = database_url or os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    queries = queries_for(url)
    options = {"name": "notes", "max_size": 10, **pool_options}

    def make_pool() -> Pool[Connection]:
        return create_pool(url, **options)

    # A new pool at each start of the app (a closed pool cannot be reopened), so a test suite
    # may start the same app once per test.
    open_pool = lifespan(make_pool)

    @asynccontextmanager
    async def start_and_stop(app: FastAPI) -> AsyncIterator[None]:
        async with open_pool(app):  # the pool is open inside, and closed at shutdown
            async with pool_for(app).acquire() as conn:
                await execute(conn, queries.create_table)
            yield

    app = FastAPI(title="notes", lifespan=start_and_stop)
    # Stats, metrics and Server-Timing are off by default (they show the pool's load to whoever
    # asks); the demo serves on localhost, so it turns them on. A public app guards them or
    # serves them on an internal port: see docs/fastapi.md.
    install(
        app,
        stats_path="/pool/stats",
        metrics_path="/metrics",
        dashboard_path="/pool/dashboard",
        server_timing=True,
    )
    app.include_router(_notes_router(queries))
    page = PAGE.read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> str:
        return page

    return app


def _notes_router(queries: Queries) -> APIRouter:
    router = APIRouter(prefix="/notes", tags=["notes"])

    @router.post("", status_code=status.HTTP_201_CREATED)
    async def create_note(note: NoteCreate, conn: Writer) -> Note:
        row = await fetch_one(conn, queries.insert, note.title, note.body)
        assert row is not None  # INSERT ... RETURNING returns the row it inserted
        return Note.model_validate(row)

    @router.get("")
    async def list_notes(
        conn: Reader,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
        after: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
    ) -> NotePage:
        # One row more than asked tells whether another page follows.
        rows = await fetch_all(conn, queries.page, after, limit + 1)
        items = [Note.model_validate(row) for row in rows[:limit]]
        return NotePage(items=items, next_after=items[-1].id if len(rows) > limit else None)

    @router.get("/{note_id}")
    async def get_note(note_id: NoteId, conn: Reader) -> Note:
        return _found(await fetch_one(conn, queries.get, note_id), note_id)

    @router.patch("/{note_id}")
    async def update_note(note_id: NoteId, changes: NoteUpdate, conn: Writer) -> Note:
        row = await fetch_one(conn, queries.update, note_id, changes.title, changes.body)
        return _found(row, note_id)

    @router.delete("/{note_id}", status_code=status.HTTP_204_NO_CONTENT)
    async def delete_note(note_id: NoteId, conn: Writer) -> None:
        _found(await fetch_one(conn, queries.delete, note_id), note_id)

    return router


def _found(row: dict[str, Any] | None, note_id: int) -> Note:
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no note {note_id}")
    return Note.model_validate(row)
