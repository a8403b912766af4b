"""The PostgreSQL server the benchmarks measure against.

``$AIODBPOOL_BENCH_DSN`` if it is set; otherwise a throwaway server started for the run, the same
one the test suite starts (``aiodbpool.integrations.testing.PostgresServer``, built from the
``pgserver`` package's binaries): TCP on 127.0.0.1 with ``scram-sha-256`` passwords, as an
application sees a real server, so that connecting costs what it costs in production,
authentication included.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

__all__ = ["DSN_VARIABLE", "Server", "postgres"]

DSN_VARIABLE = "AIODBPOOL_BENCH_DSN"


@dataclass(frozen=True, slots=True)
class Server:
    """Where the server is, and how the report describes it (never with its password)."""

    dsn: str
    description: str


BENCH_MAX_CONNECTIONS = 300
"""``max_connections`` of the throwaway server: the pools of every contender, open together,
plus the connect-per-use contender's 100 connections in W3, plus room to spare."""


@contextmanager
def postgres() -> Iterator[Server]:
    """The configured server, or a throwaway one for as long as the block runs."""
    configured = os.environ.get(DSN_VARIABLE)
    if configured:
        yield Server(configured, f"the server at ${DSN_VARIABLE}")
        return
    from aiodbpool.integrations.testing import PostgresServer

    # The PostgreSQL workloads hold every pool's connections at once, and connect per use opens
    # up to 100 more: room beyond the default 200.
    with PostgresServer(max_connections=BENCH_MAX_CONNECTIONS) as cluster:
        yield Server(
            cluster.dsn,
            "a throwaway PostgreSQL from the pgserver package's binaries, on 127.0.0.1 over TCP "
            "with scram-sha-256 passwords",
        )
