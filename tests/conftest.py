"""Shared test set-up: every async test runs twice, under asyncio's default loop and uvloop; and
what the PostgreSQL tests need beyond the fixtures of aiodbpool's own pytest plugin.

The plugin (``aiodbpool.integrations.testing.plugin``, loaded through its entry point) gives
this suite, as it gives any user's: ``postgres_url`` (``$AIODBPOOL_TEST_DSN`` when set,
otherwise the throwaway server's), ``postgres_server`` (the throwaway
:class:`~aiodbpool.integrations.testing.PostgresServer`: the superuser, restarts, killed
connections; started again after a test that left it stopped), ``postgres_pool``,
``sqlite_pool`` and ``fake_pool``. See docs/testing.md.

Defined here, on top of ``postgres_server``:

``pgbouncer_dsn``
    pgbouncer in transaction mode in front of ``postgres_server``. Without the ``pgbouncer``
    program its tests are skipped, except under ``CI=true``, where they fail.
``fault_proxy``
    A :class:`~faultproxy.FaultProxy` in front of ``postgres_server``.
``chromium``
    A tab of a headless Chromium (``tests/chromium.py``). Without the ``chromium`` program its
    tests are skipped, except under ``CI=true``, where they fail.

And, for the MySQL driver:

``mariadb_server``, ``mariadb_url``
    A throwaway :class:`~aiodbpool.integrations.testing.MariaDBServer` for the session, and its
    ``mysql://`` URL. Without the ``mariadbd`` program their tests are skipped, except under
    ``CI=true``, where they fail.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator, Mapping

import pytest
import uvloop
from chromium import Page, chromium_binary, headless_chromium
from faultproxy import FaultProxy
from helpers import needs_program

from aiodbpool.integrations.testing import MariaDBServer, PostgresServer
from aiodbpool.integrations.testing.mariadb import mariadb_binaries
from aiodbpool.integrations.testing.postgres import pgbouncer_binary


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Run each async test under both event loops the pool supports."""
    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


@pytest.fixture(scope="session")
def pgbouncer_dsn(postgres_server: PostgresServer) -> str:
    """The DSN of pgbouncer, in transaction mode, in front of ``postgres_server``.

    Through pgbouncer 1.18, asyncpg needs ``statement_cache_size=0``.
    """
    needs_program(pgbouncer_binary(), "pgbouncer", "pgbouncer")
    return postgres_server.start_pgbouncer("transaction")


@pytest.fixture(scope="session")
def mariadb_server() -> Iterator[MariaDBServer]:
    """A throwaway MariaDB server, started on first use and deleted at the end of the session."""
    needs_program(mariadb_binaries(), "mariadbd", "mariadb-server")
    with MariaDBServer() as server:
        yield server


@pytest.fixture(scope="session")
def mariadb_url(mariadb_server: MariaDBServer) -> str:
    """The ``mysql://`` URL, with its password, of ``mariadb_server``'s application user."""
    return mariadb_server.url


@pytest.fixture
async def fault_proxy(postgres_server: PostgresServer) -> AsyncIterator[FaultProxy]:
    """A :class:`~faultproxy.FaultProxy` in front of ``postgres_server``, started with no fault
    on and stopped after the test (every connection through it is then reset).

    Connect through it with ``fault_proxy.dsn_for(postgres_server.dsn)``; see
    ``tests/faultproxy.py`` for the faults.
    """
    async with FaultProxy(postgres_server.host, postgres_server.port) as proxy:
        yield proxy


@pytest.fixture
async def chromium() -> AsyncIterator[Page]:
    """A tab of a headless Chromium, with an empty profile, closed after the test."""
    binary = chromium_binary()
    needs_program(binary, "Chromium", "chromium")
    assert binary is not None
    async with headless_chromium(binary) as page:
        yield page
