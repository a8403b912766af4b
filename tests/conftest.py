"""Shared test set-up: every async test runs twice, under asyncio's default loop and uvloop; and
the PostgreSQL server (with pgbouncer) that the driver tests run on.

PostgreSQL fixtures, all session-scoped and created only when a test asks for them:

``pg_dsn``
    Where ordinary driver tests connect: ``$AIODBPOOL_TEST_DSN`` when set (any server you like),
    otherwise the application role of ``pg_cluster``.
``pg_cluster``
    A :class:`~pgcluster.PgCluster` of our own, for tests that need more than a DSN:
    passwords over TCP, the superuser, restarts, killed connections. A test that stops the
    server need not start it again: it is started after the test if it is down.
``pgbouncer_dsn``
    pgbouncer in transaction mode in front of ``pg_cluster``. Without the ``pgbouncer`` program
    its tests are skipped, except under ``CI=true``, where they fail.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Iterator, Mapping

import pytest
import uvloop
from faultproxy import FaultProxy
from pgcluster import PgCluster, pgbouncer_binary

TEST_DSN_VARIABLE = "AIODBPOOL_TEST_DSN"


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Run each async test under both event loops the pool supports."""
    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """A throwaway PostgreSQL server of our own (created once per session), closed at the end."""
    cluster = PgCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


@pytest.fixture(scope="session")
def pg_dsn(request: pytest.FixtureRequest) -> str:
    """The DSN of the server for ordinary driver tests: ``$AIODBPOOL_TEST_DSN``, or our own."""
    external = os.environ.get(TEST_DSN_VARIABLE)
    if external:
        return external
    cluster: PgCluster = request.getfixturevalue("pg_cluster")
    return cluster.dsn


@pytest.fixture(scope="session")
def pgbouncer_dsn(pg_cluster: PgCluster) -> str:
    """The DSN of pgbouncer, in transaction mode, in front of ``pg_cluster``.

    Through pgbouncer 1.18, asyncpg needs ``statement_cache_size=0``.
    """
    if pgbouncer_binary() is None:
        message = "needs pgbouncer (Debian package 'pgbouncer'; .ci/run installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}, and CI must run every test", pytrace=False)
        pytest.skip(message)
    return pg_cluster.start_pgbouncer("transaction")


@pytest.fixture(autouse=True)
def _pg_cluster_running_again(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a test that used ``pg_cluster`` (directly or through ``pgbouncer_dsn``), start the
    server again if the test left it stopped, so that no later test meets a stopped server."""
    if "pg_cluster" not in request.fixturenames:
        yield
        return
    cluster: PgCluster = request.getfixturevalue("pg_cluster")
    yield
    if not cluster.is_running():
        cluster.start()


@pytest.fixture
async def fault_proxy(pg_cluster: PgCluster) -> AsyncIterator[FaultProxy]:
    """A :class:`~faultproxy.FaultProxy` in front of ``pg_cluster``, started with no fault on
    and stopped after the test (every connection through it is then reset).

    Connect through it with ``fault_proxy.dsn_for(pg_cluster.dsn)``; see ``tests/faultproxy.py``
    for the faults.
    """
    async with FaultProxy(pg_cluster.host, pg_cluster.port) as proxy:
        yield proxy
