"""The two notes apps that workload W5 (:mod:`bench.http_load`) serves with uvicorn.

Both are the demo of ``examples/notes`` built by its own ``create_app``; only the pool options
differ, so whatever else a request costs (routing, validation, JSON, the query) is the same on
both sides. uvicorn loads them with ``--factory`` and ``--app-dir examples`` (so that ``notes``
is importable), from the repository root (so that ``bench`` is)::

    DATABASE_URL=postgresql://... AIODBPOOL_W5_CLIENTS=32 \\
        uvicorn --app-dir examples --factory bench._w5_app:per_request

The environment says what to serve, since a factory takes no arguments:

* ``DATABASE_URL``: the database (required);
* ``AIODBPOOL_W5_CLIENTS``: how many clients the load generator runs, which bounds how many
  connections the connect-per-request app may have open at once;
* ``AIODBPOOL_W5_SCHEMA`` (optional): a schema of the benchmark's own, put first on the
  ``search_path`` of every connection, so that the notes table the app creates lives there and
  the run leaves nothing behind on a server it was pointed at. The setting travels in the
  connection's start-up message, so it adds no round trip to either side.
"""

from __future__ import annotations

import os
from typing import Any, Final

from fastapi import FastAPI

__all__ = ["CLIENTS_VARIABLE", "DSN_VARIABLE", "SCHEMA_VARIABLE", "per_request", "pooled"]

DSN_VARIABLE: Final = "DATABASE_URL"
CLIENTS_VARIABLE: Final = "AIODBPOOL_W5_CLIENTS"
SCHEMA_VARIABLE: Final = "AIODBPOOL_W5_SCHEMA"


def pooled() -> FastAPI:
    """The demo as shipped: a pool of at most 10 connections, reused from request to request."""
    return _create_app(_required(DSN_VARIABLE), **_schema_options())


def per_request() -> FastAPI:
    """The same app with a pool that never reuses a connection: every request opens one.

    ``max_uses=1`` retires a connection when it is released, ``max_size`` lets every client
    have its own, and with ``validate_after_idle=None`` no connection is pinged before use (none
    is ever reused anyway).
    """
    return _create_app(
        _required(DSN_VARIABLE),
        max_uses=1,
        max_size=int(_required(CLIENTS_VARIABLE)),
        validate_after_idle=None,
        **_schema_options(),
    )


def _create_app(database_url: str, **pool_options: Any) -> FastAPI:
    # Imported here, not at the top: bench.http_load imports this module for the variables'
    # names, without examples/ on its path; only uvicorn's process (--app-dir) has it.
    from notes.app import create_app

    return create_app(database_url, **pool_options)


def _required(variable: str) -> str:
    value = os.environ.get(variable)
    if not value:
        raise RuntimeError(f"${variable} is not set; bench.http_load sets it for the app")
    return value


def _schema_options() -> dict[str, Any]:
    schema = os.environ.get(SCHEMA_VARIABLE)
    return {"server_settings": {"search_path": schema}} if schema else {}
