"""aiodbpool's pytest plugin: pool fixtures for the tests of code that uses aiodbpool.

pytest loads it in every project that installs aiodbpool (through the ``pytest11`` entry point),
so its fixtures need no import. Loading it is cheap and needs no optional package: pgserver,
asyncpg, aiosqlite, pytest-asyncio and anyio are imported only by the fixtures that need them,
which say what to install when they are missing. No fixture runs unless a test asks for it, and
nothing creates a system user but a started ``postgres_server``.

Fixtures (the testing guide, ``docs/testing.md``, shows each one at work):

``fake_pool`` (function)
    An open :class:`~aiodbpool.integrations.testing.FakePool` named ``"fake_pool"`` on
    ``fake_driver`` and ``fake_clock``, closed after the test.
``fake_driver``, ``fake_clock`` (function)
    A new ``FakeDriver()`` and ``FakeClock()``; override them to configure ``fake_pool``.
``postgres_url`` (session)
    ``$AIODBPOOL_TEST_DSN`` when it is set, otherwise the URL of ``postgres_server``.
``postgres_server`` (session)
    A throwaway :class:`~aiodbpool.integrations.testing.PostgresServer`, started on first use
    and deleted at the end of the session, for tests that need more than a URL: the superuser,
    restarts, killed connections. A test that stops it need not start it again: it is started
    after the test if it is down.
``postgres_pool`` (function)
    An open pool on ``postgres_url`` named ``"postgres_pool"``, closed after the test.
``sqlite_url`` (function), ``sqlite_pool`` (function)
    A SQLite file in the test's temporary directory, and an open pool on it.

The pools take their options from the ``pool_options`` marker, on the test, its class or its
module (the closest wins, option by option)::

    @pytest.mark.pool_options(max_size=1, acquire_timeout=0.5)
    async def test_a_second_borrower_times_out(fake_pool): ...

The pool fixtures open the pool in the event loop that runs the test: the test must be async,
run by pytest-asyncio (strict or auto mode) or by anyio's pytest plugin on its asyncio backend.
"""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import pytest

from . import TEST_DSN_VARIABLE
from ._loops import in_test_loop

if TYPE_CHECKING:
    import aiosqlite
    import asyncpg

    from aiodbpool import Pool
    from aiodbpool.drivers.fake import FakeClock, FakeDriver

    from . import FakePool, PostgresServer

__all__ = [
    "MARKER",
    "fake_clock",
    "fake_driver",
    "fake_pool",
    "postgres_pool",
    "postgres_server",
    "postgres_url",
    "sqlite_pool",
    "sqlite_url",
]

MARKER = "pool_options"
"""The marker whose keyword arguments are the options of the pool fixtures' pools."""

_SERVER = pytest.StashKey["PostgresServer"]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(**options): options of the pool that aiodbpool's fake_pool, postgres_pool and "
        "sqlite_pool fixtures open (any aiodbpool.Pool option, such as max_size=1)",
    )


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    """Start ``postgres_server`` again after a test that left it stopped (before the test's
    fixtures are torn down), so that no later test meets a stopped server."""
    server = item.config.stash.get(_SERVER, None)
    if server is None or "postgres_server" not in getattr(item, "fixturenames", ()):
        return
    if not server.is_running():
        server.start()


# --- the fake database ---------------------------------------------------------------------------


@pytest.fixture
def fake_clock() -> FakeClock:
    """The clock ``fake_pool`` reads, at 0.0: ``fake_clock.advance(60)`` ages its connections."""
    from aiodbpool.drivers.fake import FakeClock

    return FakeClock()


@pytest.fixture
def fake_driver() -> FakeDriver:
    """The fake database ``fake_pool`` connects to; override this fixture to configure it."""
    from aiodbpool.drivers.fake import FakeDriver

    return FakeDriver()


@pytest.fixture
def fake_pool(
    request: pytest.FixtureRequest, fake_driver: FakeDriver, fake_clock: FakeClock
) -> Iterator[FakePool]:
    """An open pool on ``fake_driver`` that reads the time from ``fake_clock``, closed after the
    test; ``fake_pool.driver`` and ``fake_pool.clock`` are those two."""
    from . import FakePool

    pool = FakePool(fake_driver, clock=fake_clock, **_options(request, "fake_pool"))
    yield from in_test_loop(request, lambda: _opened(pool))


# --- PostgreSQL ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_server(request: pytest.FixtureRequest) -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL server from pgserver's binaries, for the whole session."""
    from .postgres import PostgresServer, PostgresServerError

    failure: str | None = None
    try:
        server = PostgresServer()
        server.start()
    except PostgresServerError as error:
        failure = f"postgres_server: {error}"  # (failed below: no traceback of ours to read)
    if failure is not None:
        pytest.fail(failure, pytrace=False)
    request.config.stash[_SERVER] = server
    try:
        yield server
    finally:
        del request.config.stash[_SERVER]
        server.close()


@pytest.fixture(scope="session")
def postgres_url(request: pytest.FixtureRequest) -> str:
    """The URL of the PostgreSQL server for the tests: ``$AIODBPOOL_TEST_DSN`` when set (and
    then no server is started), otherwise that of ``postgres_server``."""
    external = os.environ.get(TEST_DSN_VARIABLE)
    if external:
        return external
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.dsn


@pytest.fixture
def postgres_pool(
    request: pytest.FixtureRequest, postgres_url: str
) -> Iterator[Pool[asyncpg.Connection]]:
    """An open pool on ``postgres_url``, closed after the test (needs ``aiodbpool[postgres]``)."""
    pool = _pool(postgres_url, _options(request, "postgres_pool"))
    yield from in_test_loop(request, lambda: _opened(pool))


# --- SQLite --------------------------------------------------------------------------------------


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """``sqlite://`` URL of a new database file in the test's temporary directory."""
    return f"sqlite:///{quote(str(tmp_path / 'test.sqlite3'))}"


@pytest.fixture
def sqlite_pool(
    request: pytest.FixtureRequest, sqlite_url: str
) -> Iterator[Pool[aiosqlite.Connection]]:
    """An open pool on ``sqlite_url``, closed after the test (needs ``aiodbpool[sqlite]``)."""
    pool = _pool(sqlite_url, _options(request, "sqlite_pool"))
    yield from in_test_loop(request, lambda: _opened(pool))


# --- helpers -------------------------------------------------------------------------------------


def _options(request: pytest.FixtureRequest, name: str) -> dict[str, Any]:
    """The pool's options: its name, then those of the ``pool_options`` markers from the
    farthest (the module) to the closest (the test), each overriding the ones before."""
    options: dict[str, Any] = {"name": name}
    for mark in reversed(list(request.node.iter_markers(MARKER))):
        if mark.args:
            pytest.fail(
                f"@pytest.mark.{MARKER} takes keyword arguments (options of aiodbpool.Pool), "
                f"not {mark.args!r}",
                pytrace=False,
            )
        options.update(mark.kwargs)
    return options


def _pool(url: str, options: dict[str, Any]) -> Pool[Any]:
    from aiodbpool import create_pool

    try:
        return create_pool(url, **options)
    except ImportError as error:  # the driver's package is missing; the message says which
        missing = str(error)
    pytest.fail(missing, pytrace=False)


async def _opened(pool: Pool[Any]) -> AsyncGenerator[Any, None]:
    async with pool:
        yield pool
